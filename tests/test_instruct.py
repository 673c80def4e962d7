"""workbench.instruct: the chat template, the loss mask, the instruction set read from the plays, fine-tuning and
answer accuracy."""

from __future__ import annotations

import pytest
import torch

from workbench import SamplingConfig, generate, instruct
from workbench.checkpoint import SHIPPED_DIR
from workbench.data import HELD_OUT_PLAYS
from workbench.instruct import IGNORE, Example
from workbench.model import GPT, GPTConfig
from workbench.tokenizers import CharTokenizer, load_tokenizer

SCENE = """ACT I.

SCENE I. A room.

[Enter Anna and Bruno.]

ANNA.
Good morrow, Bruno.
How fares the day?

BRUNO.
[Aside.] Ill enough.
Well, lady.

ANNA.
Then go.

SCENE II. Another room.

BRUNO.
Alone at last.

ANNA.
Not quite.

BRUNO.
Alas.

Adieu.
"""


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(SHIPPED_DIR / "shakespeare")


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=4096, block_size=256, n_layer=1, n_head=2, n_embd=16, dropout=0.0)).eval()


def test_sft_targets_score_the_answer_and_the_end_token_only():
    x, y = instruct.sft_targets([10, 11, 12], [20, 21], end=0)
    assert x.tolist() == [10, 11, 12, 20, 21]
    assert y.tolist() == [IGNORE, IGNORE, 20, 21, 0]  # y[2] is the token after x[2] = 12: the first answer token


def test_sft_targets_refuse_an_empty_prompt_or_answer():
    for prompt, answer in (([], [1]), ([1], [])):
        with pytest.raises(ValueError, match="at least one token"):
            instruct.sft_targets(prompt, answer, end=0)


def test_the_template_ends_with_the_assistants_turn_and_the_end_token_is_one_token(tok):
    assert instruct.chat_prompt("Why?") == "USER.\nWhy?\n\nASSISTANT.\n"
    assert tok.decode([instruct.end_id(tok)]) == instruct.END_OF_ANSWER
    with pytest.raises(ValueError, match="as one"):
        instruct.end_id(CharTokenizer.from_text("abc<|endoftext|>"))


def test_read_scenes_keeps_speeches_drops_stage_directions_and_splits_scenes():
    scenes = instruct.read_scenes(SCENE)
    assert [[s.speaker for s in scene] for scene in scenes] == [["ANNA", "BRUNO", "ANNA"], ["BRUNO", "ANNA", "BRUNO"]]
    assert scenes[0][1].lines == ("Well, lady.",)  # "[Aside.] ..." is a stage direction
    assert all(s.speaker != "Adieu" for scene in scenes for s in scene)  # a one-off "label" is a line


def test_speaker_questions_show_two_speeches_and_the_next_line(monkeypatch):
    monkeypatch.setattr(instruct, "load_play", lambda play: SCENE)
    examples = instruct.play_examples("any")
    speaker = [e for e in examples if e.task == "speaker"]
    assert [e.answer for e in speaker] == ["ANNA", "BRUNO"]
    assert speaker[0].question == "Who speaks next?\n\nANNA.\nGood morrow, Bruno.\n\nBRUNO.\nWell, lady.\n\nThen go."
    assert instruct.speaker_before_last(speaker[0]) == "ANNA"
    cont = [e for e in examples if e.task == "continue"]
    assert [(e.question, e.answer) for e in cont] == [("Continue this line:\nGood morrow, Bruno.", "How fares the day?")]


def test_the_splits_read_training_plays_or_held_out_plays_only():
    val = instruct.build_instructions("val")
    assert {e.play for e in val} <= set(HELD_OUT_PLAYS) and {e.task for e in val} == set(instruct.TASKS)
    train = instruct.build_instructions("train", per_task=50, seed=1)
    assert not {e.play for e in train} & set(HELD_OUT_PLAYS)
    assert [sum(e.task == t for e in train) for t in instruct.TASKS] == [50, 50]
    assert train == instruct.build_instructions("train", per_task=50, seed=1)
    with pytest.raises(ValueError, match="split"):
        instruct.build_instructions("all")


def test_collate_pads_inputs_with_the_pad_token_and_targets_with_ignore():
    x, y = instruct.collate([(torch.tensor([1, 2, 3]), torch.tensor([IGNORE, 3, 4])),
                             (torch.tensor([5]), torch.tensor([6]))], pad=0)
    assert x.tolist() == [[1, 2, 3], [5, 0, 0]] and y.tolist() == [[IGNORE, 3, 4], [6, IGNORE, IGNORE]]


def test_answer_scores_exact_means_greedy_decoding_writes_the_answer_and_stops(tok, monkeypatch):
    """A random model never picks the end token, so the test makes it the token greedy decoding writes after the
    answer: then the answer is exact; with its last token changed, it is not. The scores
    come from one teacher-forced pass, the greedy text from generate with its KV cache."""
    model = tiny_gpt()
    tested = 0
    for question in ["Who?", "Continue this line:\nO Romeo", "Who speaks next?"]:
        prompt = instruct.chat_prompt(question)
        ids = generate(model, tok, prompt, SamplingConfig(max_new_tokens=4, temperature=0), capture=False).token_ids
        answer, stop = tok.decode(ids[:3]), ids[3]
        if tok.encode(answer) != ids[:3]:  # the decoded text must tokenize back to the same ids
            continue
        monkeypatch.setattr(instruct, "end_id", lambda _tok, stop=stop: stop)
        changed = tok.decode(ids[:2] + [(ids[2] + 1) % 4096])
        cases = [Example("continue", question, text, "test") for text in (answer, changed)]
        hits, losses = instruct.answer_scores(model, tok, cases)
        assert hits == [True, False] and all(loss > 0 for loss in losses)
        tested += 1
    assert tested, "no greedy answer tokenized back to itself"


def test_fine_tune_trains_only_what_requires_a_gradient(tok):
    model = tiny_gpt()
    frozen = model.transformer.wte.weight.detach().clone()
    model.transformer.wte.weight.requires_grad_(False)
    examples = instruct.build_instructions("train", per_task=8)
    losses = instruct.fine_tune(model, tok, examples, steps=3, batch_size=4)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert torch.equal(model.transformer.wte.weight, frozen) and not model.training
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to fine-tune"):
        instruct.fine_tune(model, tok, examples, steps=1)


def test_accuracy_is_the_fraction_of_hits():
    assert instruct.accuracy([True, False, True, True]) == 0.75 and instruct.accuracy([]) == 0.0
