"""From a base model to an assistant: a small chat template, an instruction set built offline from the Shakespeare
corpus, the loss mask of supervised fine-tuning (SFT), the fine-tuning loop and answer accuracy (lesson 15).

The template writes a conversation the way the plays write dialogue, with two roles as speaker names the tokenizer
already knows how to spell::

    USER.
    Who speaks next? ...

    ASSISTANT.
    HORATIO<|endoftext|>

Real templates do the same with tokens reserved for it (ChatML: ``<|im_start|>user ... <|im_end|>``); ours needs no
new token because ``<|endoftext|>``, already in the vocabulary, ends the answer.  Only the answer and its end token
are trained on: the prompt's targets are ``-100``, which :class:`workbench.model.GPT`'s loss ignores.

Two tasks, both read from the plays' text, so nothing is written by hand and nothing is downloaded:

- ``speaker``: two speeches of a scene and the first line of the next; the answer is who speaks it.
- ``continue``: one line of a speech; the answer is the line after it.

Training examples come from the training works, evaluation examples from :data:`workbench.data.HELD_OUT_PLAYS`.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Iterable, NamedTuple, Sequence

import torch

from workbench.data import HELD_OUT_PLAYS, list_plays, load_play
from workbench.generate import generate
from workbench.model import GPT
from workbench.sampling import SamplingConfig
from workbench.tokenizers import Tokenizer

USER = "USER.\n"
ASSISTANT = "ASSISTANT.\n"
END_OF_ANSWER = "<|endoftext|>"
IGNORE = -100  # the target F.cross_entropy (and so GPT's loss) skips
TASKS = ("speaker", "continue")

SPEAKER_QUESTION = "Who speaks next?"
CONTINUE_QUESTION = "Continue this line:"
MAX_LINES_PER_SPEECH = 1  # of each speech shown in a speaker question: short prompts train fast


class Speech(NamedTuple):
    speaker: str  # the label without its full stop: "HORATIO", or "Hor" in Hamlet's abbreviations
    lines: tuple[str, ...]


class Example(NamedTuple):
    """One instruction: the question (the user's turn), the answer it should get, and where it comes from."""

    task: str
    question: str
    answer: str
    play: str


# ------------------------------------------------------------------------------------------------ the template


def chat_prompt(question: str) -> str:
    """The text the model reads before answering ``question``: the user's turn, then the assistant's name."""
    return f"{USER}{question}\n\n{ASSISTANT}"


def end_id(tok: Tokenizer) -> int:
    """The id of the end-of-answer token; a ``ValueError`` when ``tok`` does not have it as one token."""
    ids = tok.encode(END_OF_ANSWER)
    if len(ids) != 1:
        raise ValueError(f"the tokenizer spells {END_OF_ANSWER!r} as {len(ids)} tokens; the template needs it as one")
    return ids[0]


def sft_targets(prompt_ids: Sequence[int], answer_ids: Sequence[int], end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs and targets of one SFT example: ``(x, y)``, both ``(T,)`` long with ``T = len(prompt) +
    len(answer)``.

    The sequence is ``prompt + answer + [end]``; ``x`` is all of it but the last token, ``y`` all of it but the first
    (the next token at each position, as in pretraining).  Targets that are prompt tokens are ``IGNORE``: the model
    is not taught to write questions, only to answer them, and to stop (the end token is a target).
    """
    if not prompt_ids or not answer_ids:
        raise ValueError("an SFT example needs a prompt and an answer of at least one token each")
    sequence = torch.tensor([*prompt_ids, *answer_ids, end], dtype=torch.long)
    x, y = sequence[:-1], sequence[1:].clone()
    y[: len(prompt_ids) - 1] = IGNORE  # y[t] is token t + 1: the first answer token is y[len(prompt) - 1]
    return x, y


def encode(tok: Tokenizer, example: Example) -> tuple[list[int], list[int]]:
    """The prompt's and the answer's token ids of ``example`` (the end token is added by :func:`sft_targets`)."""
    return tok.encode(chat_prompt(example.question)), tok.encode(example.answer)


# ---------------------------------------------------------------------------------------- the instruction set

_LABEL = re.compile(r"^([A-Z][A-Za-z' ]{0,28}[A-Za-z])\.$")  # "HORATIO." / "FIRST WITCH." / "Hor."
_NOT_SPEAKERS = ("ACT", "SCENE", "PROLOGUE", "EPILOGUE")


def read_scenes(text: str) -> list[list[Speech]]:
    """The speeches of a play, scene by scene.  A speech is a block (between blank lines) whose first line is a
    speaker's label; stage directions (lines in brackets) are dropped; a new scene or act starts a new list."""
    blocks = [b.split("\n") for b in re.split(r"\n\s*\n", text)]
    labels = Counter(m.group(1) for b in blocks if (m := _LABEL.match(b[0].strip())))
    scenes: list[list[Speech]] = [[]]
    for block in blocks:
        head = block[0].strip()
        if head.startswith(_NOT_SPEAKERS):
            scenes.append([])
            continue
        m = _LABEL.match(head)
        # A label seen fewer than 3 times is more likely a one-word line ("Adieu.") than a speaker.
        if m is None or labels[m.group(1)] < 3:
            continue
        lines = tuple(line.strip() for line in block[1:] if line.strip() and not line.strip().startswith("["))
        if lines:
            scenes[-1].append(Speech(m.group(1), lines))
    return [scene for scene in scenes if scene]


def _speaker_question(before: Sequence[Speech], line: str) -> str:
    shown = "\n\n".join(f"{s.speaker}.\n" + "\n".join(s.lines[:MAX_LINES_PER_SPEECH]) for s in before)
    return f"{SPEAKER_QUESTION}\n\n{shown}\n\n{line}"


def play_examples(play: str) -> list[Example]:
    """Every instruction of both tasks that ``play`` yields, in the order of the text."""
    examples = []
    for scene in read_scenes(load_play(play)):
        for i, speech in enumerate(scene):
            if i >= 2:
                question = _speaker_question(scene[i - 2 : i], speech.lines[0])
                examples.append(Example("speaker", question, speech.speaker, play))
            for line, following in zip(speech.lines, speech.lines[1:]):
                examples.append(Example("continue", f"{CONTINUE_QUESTION}\n{line}", following, play))
    return examples


def build_instructions(split: str, per_task: int | None = None, seed: int = 0) -> list[Example]:
    """The instruction set of a split: ``"train"`` reads the training works, ``"val"`` the held-out ones
    (:data:`workbench.data.HELD_OUT_PLAYS`).  ``per_task`` keeps that many examples of each task, drawn with
    ``seed`` (all of them when ``None``); the result is shuffled."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    plays = [p for p in list_plays() if (p in HELD_OUT_PLAYS) == (split == "val")]
    examples = [e for play in plays for e in play_examples(play)]
    rng = random.Random(seed)
    if per_task is not None:
        examples = [e for task in TASKS for e in _sample([e for e in examples if e.task == task], per_task, rng)]
    rng.shuffle(examples)
    return examples


def _sample(items: list[Example], n: int, rng: random.Random) -> list[Example]:
    return rng.sample(items, n) if len(items) > n else list(items)


def speaker_before_last(example: Example) -> str:
    """A baseline that reads the question: dialogue often goes A, B, A, so guess the speaker of the first speech."""
    if example.task != "speaker":
        raise ValueError("speaker_before_last answers speaker questions only")
    return example.question.split("\n\n")[1].split("\n")[0].removesuffix(".")


# -------------------------------------------------------------------------------------- batches and training


def collate(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(x, y)`` pairs of different lengths into ``(B, T)`` batches: ``x`` padded with ``pad`` (any token:
    padding comes after the example, so causal attention keeps it out of every real position), ``y`` with IGNORE."""
    length = max(len(x) for x, _ in pairs)
    xs = torch.full((len(pairs), length), pad, dtype=torch.long)
    ys = torch.full((len(pairs), length), IGNORE, dtype=torch.long)
    for row, (x, y) in enumerate(pairs):
        xs[row, : len(x)], ys[row, : len(y)] = x, y
    return xs, ys


def fits(tok: Tokenizer, example: Example, block_size: int) -> bool:
    """Whether prompt, answer and end token fit in the model's context."""
    prompt, answer = encode(tok, example)
    return len(prompt) + len(answer) <= block_size


def fine_tune(
    model: GPT,
    tok: Tokenizer,
    examples: Sequence[Example],
    steps: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
) -> list[float]:
    """Supervised fine-tuning: AdamW on the masked loss, over the parameters that require a gradient (all of them
    for full fine-tuning, the adapters' for LoRA), the rate decaying linearly to zero.  Returns each step's loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no parameter of the model requires a gradient: nothing to fine-tune")
    end = end_id(tok)
    pairs = [sft_targets(*encode(tok, e), end) for e in examples]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    rng = random.Random(seed)
    losses = []
    model.train()
    for _ in range(steps):
        x, y = collate(rng.sample(pairs, batch_size), pad=end)
        _, loss = model(x.to(model.device), y.to(model.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses


# --------------------------------------------------------------------------------------------- measuring it


@torch.no_grad()
def answer_scores(
    model: GPT, tok: Tokenizer, examples: Sequence[Example], batch_size: int = 32
) -> tuple[list[bool], list[float]]:
    """For each example: would greedy decoding write exactly its answer (end token included), and the answer's loss
    (nats per token, end token included).

    Both come from one forward pass over prompt + answer.  Greedy decoding writes the answer exactly when, at every
    answer position, the most likely next token is the answer's own: until the first miss, greedy decoding and the
    answer are the same sequence, so the model sees the same prefix either way.
    """
    end = end_id(tok)
    exact, losses = [], []
    model.eval()
    for start in range(0, len(examples), batch_size):
        pairs = [sft_targets(*encode(tok, e), end) for e in examples[start : start + batch_size]]
        x, y = collate(pairs, pad=end)
        logits = model(x.to(model.device)).float().cpu()  # (B, T, vocab)
        scored = y != IGNORE
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE, reduction="none")
        hit = (logits.argmax(-1) == y) | ~scored
        exact += hit.all(dim=1).tolist()
        losses += (nll.sum(1) / scored.sum(1)).tolist()
    return exact, losses


def greedy_answer(model: GPT, tok: Tokenizer, question: str, max_new_tokens: int = 16) -> str:
    """What the model answers to ``question`` under the template, greedily, up to its end token (without it).  An
    answer that has not ended within ``max_new_tokens`` comes back as far as it got, followed by "..."."""
    ids = generate(model, tok, chat_prompt(question), SamplingConfig(max_new_tokens=max_new_tokens, temperature=0),
                   capture=False).token_ids
    end = end_id(tok)
    return tok.decode(ids[: ids.index(end)]) if end in ids else tok.decode(ids) + "..."


def accuracy(hits: Iterable[bool]) -> float:
    """The fraction of true values (0.0 for none)."""
    hits = list(hits)
    return sum(hits) / len(hits) if hits else 0.0
