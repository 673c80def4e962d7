"""Streaming generation: HF-equal greedy, seeded sampling, the pipeline stages, captured rows, context edges."""

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from workbench import GPT, GPTConfig, SamplingConfig, generate, stream
from workbench.generate import N_LENS, sampling_pipeline, top_k
from workbench.tokenizers import CharTokenizer

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n我 爱 吃 饭\n"


@pytest.fixture(scope="module")
def char_model():
    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=24, n_layer=2, n_head=3, n_embd=24)).eval()
    return model, tok


def test_greedy_equals_hf_generate():
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=120, n_positions=64, n_embd=80, n_layer=3, n_head=5,
                                    bos_token_id=0, eos_token_id=0, attn_implementation="eager")).eval()
    model = GPT.from_hf(hf).eval()
    prompt = torch.randint(0, 120, (1, 10))
    ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=40, do_sample=False,
                      pad_token_id=0, eos_token_id=None)[0, 10:].tolist()
    for capture in (False, True):
        out = generate(model, None, prompt[0].tolist(), SamplingConfig(max_new_tokens=40, temperature=0),
                       capture=capture)
        assert out.token_ids == ref


def test_seeded_sampling_is_reproducible_and_seeds_differ(char_model):
    model, tok = char_model
    cfg = SamplingConfig(max_new_tokens=30, temperature=1.0, seed=123)
    a = generate(model, tok, "ROMEO:", cfg).token_ids
    b = generate(model, tok, "ROMEO:", cfg, capture=False).token_ids
    c = generate(model, tok, "ROMEO:", SamplingConfig(max_new_tokens=30, temperature=1.0, seed=124)).token_ids
    assert a == b
    assert a != c


def test_every_stage_sums_to_one_and_respects_filters():
    torch.manual_seed(0)
    logits = torch.randn(200) * 3
    cfg = SamplingConfig(temperature=0.7, top_k=20, top_p=0.6, repetition_penalty=1.5, banned_token_ids=[int(logits.argmax())])
    token, dists = sampling_pipeline(logits, cfg, context=[1, 2, 3], banned=[[int(logits.argmax())]],
                                     generator=torch.Generator().manual_seed(0))
    names = [n for n, _ in dists]
    assert names == ["raw", "penalties", "temperature", "top-k", "top-p"]
    for name, probs in dists:
        assert probs.sum().item() == pytest.approx(1.0, abs=1e-5), name
    d = dict(dists)
    assert d["penalties"][int(logits.argmax())] == 0  # banned
    assert (d["top-k"] > 0).sum() == 20
    kept = d["top-p"] > 0
    # top-p keeps the smallest head of the top-k distribution whose mass reaches 0.6
    sorted_k = d["top-k"].sort(descending=True).values
    n_needed = int((sorted_k.cumsum(0) < 0.6).sum()) + 1
    assert kept.sum() == n_needed
    assert d["top-k"][kept].sum() >= 0.6 > d["top-k"][kept].sum() - d["top-k"][kept].min()
    assert kept[token]
    # temperature sharpens: the largest probability grows when T < 1
    assert d["temperature"].max() > d["penalties"].max()
    # the repetition penalty lowers the logits of tokens seen before
    raw, pen = d["raw"], d["penalties"]
    assert all(pen[i] / pen[50] < raw[i] / raw[50] for i in (1, 2, 3) if logits[i] > 0)


def test_greedy_pipeline_is_one_hot_argmax():
    logits = torch.tensor([0.1, 2.0, 1.9, -1.0])
    token, dists = sampling_pipeline(logits, SamplingConfig(temperature=0))
    assert token == 1
    assert dists[-1][1].tolist() == [0.0, 1.0, 0.0, 0.0]


def test_greedy_steps_summarize_the_one_hot_stages_as_the_picked_token(char_model):
    model, tok = char_model
    for step in stream(model, tok, "ROMEO:\n", SamplingConfig(max_new_tokens=5, temperature=0)):
        raw, *after = step.stages
        assert raw.candidates[0].token_id == step.token_id and raw.kept > 1
        for stage in after:
            assert [(c.token_id, c.prob) for c in stage.candidates] == [(step.token_id, 1.0)]
            assert stage.kept == 1
        assert step.sampled_prob == 1.0


def test_top_p_one_token_when_dominant():
    logits = torch.tensor([10.0, 0.0, 0.0, 0.0])
    _, dists = sampling_pipeline(logits, SamplingConfig(top_p=0.5))
    assert (dists[-1][1] > 0).sum() == 1


def test_stream_attention_rows_equal_full_trace(char_model):
    model, tok = char_model
    steps = list(stream(model, tok, "ROMEO:\n", SamplingConfig(max_new_tokens=12, temperature=1.0, seed=0)))
    ids = tok.encode("ROMEO:\n") + [s.token_id for s in steps]
    with torch.no_grad():
        _, trace = model.run_with_trace(torch.tensor([ids]))
    P = len(tok.encode("ROMEO:\n"))
    worst = 0.0
    for i, step in enumerate(steps):
        q = P - 1 + i  # the position whose query produced step i's token
        assert step.attention.shape == (2, 3, q + 1)
        worst = max(worst, (step.attention - trace.attention[:, 0, :, q, : q + 1]).abs().max().item())
        assert step.seconds > 0
    assert worst <= 1e-5


def test_each_steps_lens_is_the_trace_lens_at_its_position(char_model):
    """One lens: a step's lens is what Trace.logit_lens reads at the position that produced the step's token."""
    model, tok = char_model
    prompt = tok.encode("ROMEO:\n")
    steps = list(stream(model, tok, prompt, SamplingConfig(max_new_tokens=12, temperature=1.0, seed=0)))
    with torch.no_grad():
        _, trace = model.run_with_trace(torch.tensor([prompt + [s.token_id for s in steps]]))
    for i, step in enumerate(steps):
        q = len(prompt) - 1 + i
        expected = trace.logit_lens(model, positions=q, k=N_LENS, tok=tok)
        assert step.lens.positions == expected.positions == [q]
        assert step.lens.probs.shape == (2 * model.config.n_layer, 1, 1, N_LENS)
        assert torch.equal(step.lens.ids, expected.ids)
        torch.testing.assert_close(step.lens.probs, expected.probs, atol=1e-6, rtol=0)
        assert step.lens.token_strs == expected.token_strs
    # The lens's last read is the model's own output: its top tokens are the step's top candidates.
    assert [c.token_id for c in steps[0].lens.candidates()[-1]] == [c.token_id for c in steps[0].top[:N_LENS]]


@pytest.mark.parametrize("shape", [(24, 50257), (50257,), (3, 5000), (2, 64 * 40 + 63), (4, 30)])
@pytest.mark.parametrize("k", [1, 5, 10])
def test_top_k_equals_torch_topk(shape, k):
    torch.manual_seed(k)
    x = torch.randn(shape)
    values, indices = top_k(x, k)
    expected = x.topk(k, dim=-1)
    assert torch.equal(values, expected.values) and torch.equal(indices, expected.indices)


def test_top_k_with_ties_and_masked_values_gives_topk_values():
    x = torch.full((3, 6000), -math.inf)
    x[0, [7, 4000, 5999]] = 2.0  # ties, in different slices and in the leftover tail
    x[1] = torch.randint(0, 3, (6000,)).float()  # thousands of ties
    x[2, 123] = 0.5
    values, indices = top_k(x, 5)
    assert torch.equal(values, x.topk(5, dim=-1).values)
    assert torch.equal(x.gather(1, indices), values)  # the indices point at those values
    assert all(len(set(row)) == 5 for row in indices.tolist())


def test_lens_row_of_a_large_vocabulary_equals_full_trace():
    """With a GPT-2-sized vocabulary the lens takes top_k's fast path: ids and probabilities still match the trace."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50257, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    prompt = [11, 2024, 50256]
    steps = list(stream(model, None, prompt, SamplingConfig(max_new_tokens=3, temperature=1.0, seed=0)))
    with torch.no_grad():
        _, trace = model.run_with_trace(torch.tensor([prompt + [s.token_id for s in steps]]))
        full = trace.logit_lens(model)  # every token of every read, sorted: torch.sort, not top_k
    for i, step in enumerate(steps):
        q = len(prompt) - 1 + i
        assert torch.equal(step.lens.ids[:, 0, 0], full.ids[:, 0, q, :N_LENS])
        torch.testing.assert_close(step.lens.probs[:, 0, 0], full.probs[:, 0, q, :N_LENS], atol=1e-6, rtol=0)


def test_generate_full_attention_equals_full_trace(char_model):
    model, tok = char_model
    out = generate(model, tok, "But soft", SamplingConfig(max_new_tokens=8, seed=1), attention=True)
    with torch.no_grad():
        _, trace = model.run_with_trace(torch.tensor([out.ids]))
    assert out.attention.shape == (2, 3, len(out.ids), len(out.ids))
    assert (out.attention - trace.attention[:, 0]).abs().max().item() <= 1e-5


def test_empty_prompt_starts_from_start_token(char_model):
    model, tok = char_model
    out = generate(model, tok, "", SamplingConfig(max_new_tokens=5, seed=0))
    assert out.prompt_ids == [tok.start_id]
    assert len(out.token_ids) == 5
    assert "empty prompt" in out.notes[0]
    assert generate(model, None, [], SamplingConfig(max_new_tokens=2, seed=0)).prompt_ids == [0]


def test_long_prompt_keeps_the_end_and_says_so(char_model):
    model, tok = char_model
    prompt = TEXT * 2
    out = generate(model, tok, prompt, SamplingConfig(max_new_tokens=3, seed=0))
    assert out.prompt_ids == tok.encode(prompt)[-24:]
    assert any("kept the last 24" in n for n in out.notes)


def test_window_slides_when_context_fills(char_model):
    model, tok = char_model
    out = generate(model, tok, "ROMEO:", SamplingConfig(max_new_tokens=60, temperature=0), attention=True)
    assert len(out.token_ids) == 60
    assert any("slid the window" in n for n in out.notes)
    # After a slide, the next token is what the model predicts from the kept window alone.
    slid = next(s for s in out.steps if s.notes)
    window = out.ids[slid.window_start : len(out.prompt_ids) + slid.index]
    with torch.no_grad():
        expected = model(torch.tensor([window]))[0, -1].argmax().item()
    assert slid.token_id == expected
    assert slid.attention.shape[-1] == len(window)
    assert out.attention.shape[-1] == len(out.ids)


def test_stop_string_ends_generation(char_model):
    model, tok = char_model
    free = generate(model, tok, "ROMEO:", SamplingConfig(max_new_tokens=40, seed=3))
    stop_char = free.text[5]
    out = generate(model, tok, "ROMEO:", SamplingConfig(max_new_tokens=40, seed=3, stop=[stop_char]))
    assert out.stop_reason == "stop"
    assert out.text == free.text[: free.text.index(stop_char) + 1]


def test_banned_words_and_tokens_never_appear():
    torch.manual_seed(0)
    tok = CharTokenizer.from_text("ab ")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=1, n_embd=8)).eval()
    out = generate(model, tok, "a", SamplingConfig(max_new_tokens=60, seed=0, banned_words=["ab"]))
    assert "ab" not in "a" + out.text
    out = generate(model, tok, "a", SamplingConfig(max_new_tokens=30, seed=0, banned_token_ids=tok.encode("b")))
    assert "b" not in out.text
    with pytest.raises(ValueError, match="every token is banned"):
        generate(model, tok, "a", SamplingConfig(max_new_tokens=3, banned_token_ids=[0, 1, 2]))


def test_ablation_changes_generation_and_matches_model(char_model):
    model, tok = char_model
    cfg = SamplingConfig(max_new_tokens=10, temperature=0)
    ablated = generate(model, tok, "ROMEO:", cfg, ablate=[(0, 1), (1, 2)])
    ids = ablated.prompt_ids + ablated.token_ids[:-1]
    with torch.no_grad():
        logits = model(torch.tensor([ids]), ablate=[(0, 1), (1, 2)])
    assert logits[0, len(ablated.prompt_ids) - 1 :].argmax(-1).tolist() == ablated.token_ids
    with pytest.raises(ValueError, match="cannot ablate"):
        generate(model, tok, "R", cfg, ablate=[(5, 0)])


@pytest.mark.parametrize(
    "field,value,allowed",
    [
        ("temperature", -0.1, ">= 0"),
        ("temperature", math.nan, ">= 0"),
        ("temperature", math.inf, ">= 0"),
        ("top_p", 0.0, "(0, 1]"),
        ("top_p", 1.5, "(0, 1]"),
        ("top_k", -1, ">= 0"),
        ("top_k", 2.5, ">= 0"),
        ("max_new_tokens", 0, "[1, 4096]"),
        ("max_new_tokens", 5000, "[1, 4096]"),
        ("seed", -1, "[0, 2**63)"),
        ("repetition_penalty", 0, "> 0"),
        ("stop", [""], "non-empty"),
        ("banned_token_ids", [-3], ">= 0"),
    ],
)
def test_invalid_fields_raise_one_clear_error(field, value, allowed):
    with pytest.raises(ValueError) as err:
        SamplingConfig(**{field: value})
    assert str(err.value).startswith(f"{field} must be") and allowed in str(err.value)


def test_max_new_tokens_cap_is_configurable():
    SamplingConfig(max_new_tokens=10_000, max_new_tokens_cap=20_000)
    with pytest.raises(ValueError, match=r"max_new_tokens must be an integer in \[1, 8\]"):
        SamplingConfig(max_new_tokens=9, max_new_tokens_cap=8)


def test_bad_prompts_are_clear(char_model):
    model, tok = char_model
    with pytest.raises(ValueError, match="needs a tokenizer"):
        generate(model, None, "text")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(model, None, [1, 10_000])
    with pytest.raises(ValueError, match="'Z'"):
        generate(model, tok, "Zebra")
