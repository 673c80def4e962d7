"""Lesson 09 (looking inside): every check passes a correct implementation, says "not implemented yet" for a stub,
and names each planted mistake with its own hint; plus the facts the lesson relies on (ideal heads score 1, an
attention-only GPT built from workbench pieces works).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.checks.core import randomize
from workbench.checks.inside import (
    check_head_ablation_effects,
    check_induction_score,
    check_key_attention_score,
    check_previous_token_score,
    induction_reference,
    previous_token_reference,
)
from workbench.model import GPT, GPTConfig

from verdicts import correct_implementation_test, not_implemented, planted_mistake_test, stub_test

LESSON = Path(__file__).resolve().parent.parent / "lessons" / "09_looking_inside.ipynb"


# ------------------------------------------------------------------------- correct implementations


def previous_token_score(attention, *, offset=-1, from_query=1, reduce="mean", batch=True, heads_axis=False,
                         first_only=False):
    """Correct by default (a loop over the queries); each switch plants one mistake."""
    T = attention.shape[-1]
    rows = [attention[..., t, t + offset] for t in range(from_query, T)]  # each (L, B, H)
    per_query = torch.stack(rows, dim=-1)  # (L, B, H, n_queries)
    if first_only:
        per_query = per_query[:, :1]
    per_query = per_query.sum(-1) if reduce == "sum" else per_query.mean(-1)  # (L, B, H)
    if heads_axis:
        return per_query.mean(2)  # averages the heads away, keeps the batch
    return per_query.mean(1) if batch else per_query


def previous_token_score_by_diagonal(attention):
    return attention.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(1, 3))


def key_attention_score(attention, is_key, *, axis="keys", reduce="sum", batch=True, first_only=False):
    """Correct by default; each switch plants one mistake."""
    mask = is_key[:, None, None, :] if axis == "keys" else is_key[:, None, :, None]  # (B, 1, 1, Tk) or (B, 1, Tq, 1)
    marked = attention * mask
    per_query = marked.sum(-1) if reduce == "sum" else marked.mean(-1)  # (L, B, H, Tq)
    if first_only:
        per_query = per_query[:, :1]
    per_query = per_query.mean(-1)  # (L, B, H)
    return per_query.mean(1) if batch else per_query


def induction_score(attention, period, *, key_shift=1, first_query=None, reduce="mean", batch=True):
    """Correct by default (fancy indexing); each switch plants one mistake."""
    T = attention.shape[-1]
    queries = torch.arange(period if first_query is None else first_query, T)
    stripe = attention[..., queries, queries - period + key_shift]  # (L, B, H, n_queries)
    stripe = stripe.sum(-1) if reduce == "sum" else stripe.mean(-1)
    return stripe.mean(1) if batch else stripe


def induction_score_wrapping(attention, period):
    """Indexes every query: for the first copy, negative key indices wrap around to masked (zero) keys."""
    queries = torch.arange(attention.shape[-1])
    return attention[..., queries, queries - period + 1].mean(dim=(1, 3))


def head_ablation_effects(model, idx, targets, *, sign=1.0, subtract=True, cumulative=False, transpose=False,
                          shift=False):
    """Correct by default; each switch plants one mistake."""

    def loss(ablate):
        if shift:
            logits = model(idx, ablate=ablate)
            return F.cross_entropy(logits[:, :-1].flatten(0, 1), targets[:, 1:].flatten()).item()
        return model(idx, targets, ablate=ablate)[1].item()

    L, H = model.config.n_layer, model.config.n_head
    base = loss([]) if subtract else 0.0
    effects, off = torch.zeros(L, H), []
    for layer in range(L):
        for head in range(H):
            off = off + [(layer, head)] if cumulative else [(layer, head)]
            effects[layer, head] = sign * (loss(off) - base)
    return effects.T if transpose else effects


def head_ablation_effects_traced(model, idx, targets):
    """Through the explicit-softmax path of run_with_trace and F.cross_entropy: correct, up to float rounding."""
    def loss(ablate):
        logits, _ = model.run_with_trace(idx, ablate=ablate)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    base = loss([])
    return torch.tensor([[(loss([(layer, head)]) - base).item() for head in range(model.config.n_head)]
                         for layer in range(model.config.n_layer)])


# ---------------------------------------------------------------------------- planted mistakes


def previous_token_score_in_place(attention):
    return previous_token_score(attention.clamp_(max=0.999))  # row 0 of a causal pattern is exactly 1.0


def key_attention_score_in_place(attention, is_key):
    is_key[:, 0] = ~is_key[:, 0]
    return key_attention_score(attention, is_key)


def ablation_by_zeroing_weights(model, idx, targets):
    """Zeroes each head's columns of c_proj and never puts them back (the checks run under no_grad)."""
    base = model(idx, targets)[1].item()
    hs = model.config.n_embd // model.config.n_head
    effects = torch.zeros(model.config.n_layer, model.config.n_head)
    for layer, block in enumerate(model.transformer.h):
        for head in range(model.config.n_head):
            block.attn.c_proj.weight[:, head * hs : (head + 1) * hs] = 0.0
            effects[layer, head] = model(idx, targets)[1].item() - base
    return effects


def ablation_in_training_mode(model, idx, targets):
    model.train()  # dropout on, and left on: every loss is measured with random units dropped
    return head_ablation_effects(model, idx, targets)


def ablation_measured_in_training_mode(model, idx, targets):
    model.train()
    effects = head_ablation_effects(model, idx, targets)
    model.eval()  # put back, but the losses were noisy
    return effects


def doubled_score(attention):
    return 2 * previous_token_score(attention)  # wrong in a way no known mistake explains


CORRECT = [
    (check_previous_token_score, previous_token_score),
    (check_previous_token_score, previous_token_score_by_diagonal),
    (check_key_attention_score, key_attention_score),
    (check_induction_score, induction_score),
    (check_head_ablation_effects, head_ablation_effects),
    (check_head_ablation_effects, head_ablation_effects_traced),
]

PLANTED = [
    # (check, wrong implementation, words the hint must contain)
    (check_previous_token_score, lambda a: previous_token_score(a, offset=0, from_query=0), "main diagonal"),
    (check_previous_token_score, lambda a: previous_token_score(a.transpose(-1, -2)), "every score is 0"),
    (check_previous_token_score, lambda a: previous_token_score(a, from_query=0), "query 0 was counted"),
    (check_previous_token_score, lambda a: previous_token_score(a, reduce="sum"), "summed over the queries"),
    (check_previous_token_score, lambda a: previous_token_score(a, batch=False), "batch axis was not averaged"),
    (check_previous_token_score, lambda a: previous_token_score(a, heads_axis=True), "heads were averaged away"),
    (check_previous_token_score, lambda a: previous_token_score(a, first_only=True), "only the first sequence"),
    (check_previous_token_score, previous_token_score_in_place, "changed its input `attention` in place"),
    (check_previous_token_score, doubled_score, "no known mistake matches"),
    (check_previous_token_score, lambda a: a.no_such_method(), "AttributeError"),
    (check_key_attention_score, lambda a, m: key_attention_score(a, m, axis="queries"), "marks queries"),
    (check_key_attention_score, lambda a, m: key_attention_score(a, m, reduce="mean"), "were averaged"),
    (check_key_attention_score, lambda a, m: key_attention_score(a, ~m), "inverted"),
    (check_key_attention_score, lambda a, m: key_attention_score(a, m, batch=False), "batch axis was not averaged"),
    (check_key_attention_score, lambda a, m: key_attention_score(a, m, first_only=True), "only the first sequence"),
    (check_key_attention_score, key_attention_score_in_place, "changed its input `is_key` in place"),
    (check_induction_score, lambda a, p: induction_score(a, p, key_shift=0), "earlier copy of the current token"),
    (check_induction_score, lambda a, p: induction_score(a, p, first_query=p - 1), "period - 1 was included"),
    (check_induction_score, induction_score_wrapping, "all T queries were averaged"),
    (check_induction_score, lambda a, p: induction_score(a, a.shape[-1] // 2), "T // 2"),
    (check_induction_score, lambda a, p: induction_score(a, p, reduce="sum"), "summed over the queries"),
    (check_induction_score, lambda a, p: induction_score(a, p, batch=False), "batch axis was not averaged"),
    (check_head_ablation_effects, lambda m, i, t: head_ablation_effects(m, i, t, sign=-1.0), "sign is flipped"),
    (check_head_ablation_effects, lambda m, i, t: head_ablation_effects(m, i, t, subtract=False),
     "losses with each head off"),
    (check_head_ablation_effects, lambda m, i, t: head_ablation_effects(m, i, t, cumulative=True), "piled up"),
    (check_head_ablation_effects, lambda m, i, t: head_ablation_effects(m, i, t, transpose=True),
     "rows and columns are swapped"),
    (check_head_ablation_effects, lambda m, i, t: head_ablation_effects(m, i, t, shift=True), "shifted once more"),
    (check_head_ablation_effects, ablation_by_zeroing_weights, "changed the model's weights"),
    (check_head_ablation_effects, ablation_in_training_mode, "left the model in training mode"),
    (check_head_ablation_effects, ablation_measured_in_training_mode, "measured in training mode"),
    (check_head_ablation_effects, lambda m, i, t: head_ablation_effects(m, i, t).tolist(), "not a list"),
]

CHECKS = [check_previous_token_score, check_key_attention_score, check_induction_score,
             check_head_ablation_effects]


test_check_passes_a_correct_implementation = correct_implementation_test(CORRECT)
test_check_on_a_stub_says_not_implemented = stub_test([(check, not_implemented) for check in CHECKS])


test_check_names_the_planted_mistake = planted_mistake_test(PLANTED)


# ------------------------------------------------------------------------------- extra tests for 09


def test_ideal_heads_score_one():
    """The references agree with the lesson's definitions: a perfect head of each kind scores exactly 1."""
    T, period = 12, 6
    queries = torch.arange(T)
    previous = torch.zeros(1, 2, 1, T, T)
    previous[..., queries, (queries - 1).clamp(min=0)] = 1.0  # query 0 can only look at itself
    induction = torch.zeros(1, 2, 1, T, T)
    keys = torch.where(queries >= period, queries - period + 1, 0)  # the first copy rests on key 0
    induction[..., queries, keys] = 1.0
    assert previous_token_reference(previous).item() == 1.0
    assert induction_reference(induction, period).item() == 1.0
    assert induction_reference(previous, period).item() == 0.0
    assert previous_token_reference(induction).item() < 0.5


class NoMLP(nn.Module):  # as in the lesson
    def forward(self, x):
        return torch.zeros_like(x)


def attention_only_gpt(config):  # as in the lesson
    model = GPT(config)
    for block in model.transformer.h:
        block.ln_2 = nn.Identity()
        block.mlp = NoMLP()
    return model


def test_attention_only_gpt_built_as_in_the_lesson():
    """Swapping each block's MLP for zeros leaves a working attention-only workbench GPT: trace, ablation, training."""
    g = torch.Generator().manual_seed(0)
    config = GPTConfig(vocab_size=16, block_size=8, n_layer=2, n_head=2, n_embd=8)
    model = randomize(attention_only_gpt(config), g)
    assert not any("mlp" in name or "ln_2" in name for name, _ in model.named_parameters())
    idx = torch.randint(16, (2, 8), generator=g)
    with torch.no_grad():
        logits, trace = model.run_with_trace(idx)
        x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(8))
        for block in model.transformer.h:
            x = x + block.attn(block.ln_1(x))
        by_hand = model.lm_head(model.transformer.ln_f(x))
        ablated = model(idx, ablate=[(1, 0)])
    torch.testing.assert_close(logits, by_hand, atol=1e-5, rtol=0)
    torch.testing.assert_close(trace.resid_post, trace.resid_mid)
    assert (ablated - logits).abs().max().item() > 1e-4
    model.train()
    _, loss = model(idx, idx)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_looking_inside_lesson_trains_less_under_workbench_quick():
    """The lesson reads WORKBENCH_QUICK (the tests set it) and runs the four exercise checks."""
    cells = nbformat.read(LESSON, as_version=4).cells
    source = "\n".join(c.source for c in cells if c.cell_type == "code")
    assert 'os.environ.get("WORKBENCH_QUICK") == "1"' in source
    assert re.search(r"STEPS = \d+ if QUICK else \d+", source)
    checked = [c.source for c in cells if "check" in c.metadata.get("tags", [])
               and not c.source.startswith("checks.check_quiz(")]  # the quiz's cells are tested with the quizzes
    assert checked == [f"checks.{c.__name__}({name})" for c, name in (
        (check_previous_token_score, "previous_token_score"), (check_key_attention_score, "key_attention_score"),
        (check_head_ablation_effects, "head_ablation_effects"), (check_induction_score, "induction_score"))]
