"""Lesson 10 (encoder-decoder vs decoder-only) checks: a correct implementation passes, a stub is "not implemented
yet", and each planted mistake gets its own hint."""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import nbformat
import torch
import torch.nn as nn

from workbench.checks import check_cross_attention, check_prompt_example
from workbench.checks.encoder_decoder import cross_attention_variant

from verdicts import correct_implementation_test, planted_mistake_test, stub_of, stub_test, verdict

ROOT = Path(__file__).resolve().parent.parent  # in tests/: the repository root
LESSON = ROOT / "lessons" / "10_encoder_decoder.ipynb"


# ------------------------------------------------------- correct implementations, with switches for mistakes


class CrossAttn(nn.Module):
    """Correct by default; each switch plants one mistake."""

    def __init__(self, config, *, swapped_sides=False, self_attention=False, scores_with_values=False, swap_kv=False,
                 causal=False, scale="head", softmax_dim=-1, split=True, merge_transposed=True, project=True,
                 kv_length_from_x=False):
        super().__init__()
        C = config.n_embd
        self.n_head, self.head_size = config.n_head, C // config.n_head
        self.q_proj = nn.Linear(C, C)
        self.kv_proj = nn.Linear(C, 2 * C)
        self.c_proj = nn.Linear(C, C)
        self.swapped_sides, self.self_attention = swapped_sides, self_attention
        self.scores_with_values = scores_with_values
        self.swap_kv, self.causal, self.scale, self.softmax_dim = swap_kv, causal, scale, softmax_dim
        self.split, self.merge_transposed, self.project = split, merge_transposed, project
        self.kv_length_from_x = kv_length_from_x

    def forward(self, x, memory):
        if self.swapped_sides:
            x, memory = memory, x
        kv_in = x if self.self_attention else memory
        B, T, C = x.shape
        S = T if self.kv_length_from_x else kv_in.shape[1]
        nh = self.n_head if self.split else 1
        hs = C // nh
        q = self.q_proj(x).view(B, T, nh, hs).transpose(1, 2)
        k, v = self.kv_proj(kv_in).split(C, dim=2)
        if self.swap_kv:
            k, v = v, k
        k = k.view(B, S, nh, hs).transpose(1, 2)  # raises when S is x's length and the memory's differs
        v = v.view(B, S, nh, hs).transpose(1, 2)
        factor = {"head": 1 / math.sqrt(self.head_size), "model": 1 / math.sqrt(C), "none": 1.0}[self.scale]
        scores = (q @ (v if self.scores_with_values else k).transpose(-2, -1)) * factor
        if self.causal:
            visible = torch.ones(scores.shape[-2:], dtype=torch.bool).tril()
            scores = scores.masked_fill(~visible, float("-inf"))
        y = torch.softmax(scores, dim=self.softmax_dim) @ v
        y = y.transpose(1, 2).reshape(B, T, C) if self.merge_transposed else y.reshape(B, T, C)
        return self.c_proj(y) if self.project else y


class MemoryInPlace(CrossAttn):
    def forward(self, x, memory):
        memory.mul_(2.0)
        return super().forward(x, memory)


class NarrowKV(CrossAttn):
    """kv_proj maps C -> C: room for the keys only."""

    def __init__(self, config):
        super().__init__(config)
        self.kv_proj = nn.Linear(config.n_embd, config.n_embd)


def prompt_example(src, tgt, sep_id, *, n_masked=None, fill=-100, shift=True, separator=True, whole=False):
    """Correct by default; each switch plants one mistake."""
    B, S = src.shape
    parts = [src] + ([torch.full((B, 1), sep_id, dtype=src.dtype)] if separator else []) + [tgt]
    seq = torch.cat(parts, dim=1)
    idx = seq if whole else seq[:, :-1]
    targets = (seq[:, 1:] if shift else seq[:, :-1]).clone()
    targets[:, : (S if n_masked is None else n_masked)] = fill
    return idx, targets


def prompt_scoring_the_separator(src, tgt, sep_id):
    return prompt_example(src, tgt, sep_id, n_masked=src.shape[1] - 1)


def prompt_masking_the_first_target(src, tgt, sep_id):
    return prompt_example(src, tgt, sep_id, n_masked=src.shape[1] + 1)


def prompt_changing_tgt(src, tgt, sep_id):
    tgt[:, 0] = sep_id
    return prompt_example(src, tgt, sep_id)


# --------------------------------------------------------------------------- the checks

CORRECT = [
    (check_cross_attention, CrossAttn),
    (check_prompt_example, prompt_example),
]


test_check_passes_a_correct_implementation = correct_implementation_test(CORRECT)
test_check_on_a_stub_says_not_implemented = stub_test([(check, stub_of(student)) for check, student in CORRECT])


PLANTED = [
    # (check, wrong implementation, words the hint must contain)
    (check_cross_attention, lambda c: CrossAttn(c, swapped_sides=True), "wrong sides"),
    (check_cross_attention, lambda c: CrossAttn(c, self_attention=True), "that is self-attention"),
    (check_cross_attention, lambda c: CrossAttn(c, scores_with_values=True), "softmax(Q·Vᵀ)"),
    (check_cross_attention, lambda c: CrossAttn(c, swap_kv=True), "keys first"),
    (check_cross_attention, lambda c: CrossAttn(c, causal=True), "has no mask"),
    (check_cross_attention, lambda c: CrossAttn(c, scale="none"), "not scaled"),
    (check_cross_attention, lambda c: CrossAttn(c, scale="model"), "1/sqrt(n_embd)"),
    (check_cross_attention, lambda c: CrossAttn(c, softmax_dim=-2), "wrong axis"),
    (check_cross_attention, lambda c: CrossAttn(c, split=False, scale="model"), "heads were not split"),
    (check_cross_attention, lambda c: CrossAttn(c, split=False), "one head (scaled by 1/sqrt(head_size))"),
    (check_cross_attention, lambda c: CrossAttn(c, merge_transposed=False), "without transposing back"),
    (check_cross_attention, lambda c: CrossAttn(c, project=False), "c_proj is missing"),
    (check_cross_attention, lambda c: CrossAttn(c, kv_length_from_x=True), "S = memory.shape[1]"),
    (check_cross_attention, MemoryInPlace, "changed its input `memory` in place"),
    (check_cross_attention, NarrowKV, "`kv_proj.weight` has shape"),
    (check_cross_attention, lambda c: nn.Linear(c.n_embd, c.n_embd), "no parameters named"),
    (check_prompt_example, functools.partial(prompt_example, whole=True), "whole sequence"),
    (check_prompt_example, functools.partial(prompt_example, separator=False), "separator is missing"),
    (check_prompt_example, functools.partial(prompt_example, n_masked=0), "prompt is not masked"),
    (check_prompt_example, prompt_scoring_the_separator, "separator is scored"),
    (check_prompt_example, prompt_masking_the_first_target, "first target token is masked"),
    (check_prompt_example, functools.partial(prompt_example, fill=0), "use -100"),
    (check_prompt_example, functools.partial(prompt_example, shift=False), "not shifted"),
    (check_prompt_example, lambda s, t, sep: (prompt_example(s, t, sep)[0], t.clone()), "only the target tokens"),
    (check_prompt_example, lambda s, t, sep: (prompt_example(s, t, sep)[0], prompt_example(s, t, sep)[1].float()),
     "dtype"),
    (check_prompt_example, lambda s, t, sep: prompt_example(s, t, sep)[1], "return a pair"),
    (check_prompt_example, prompt_changing_tgt, "changed its input `tgt` in place"),
    (check_prompt_example, lambda s, t, sep: (prompt_example(s, t, sep)[0], prompt_example(s, t, sep)[1] + 1),
     "expected"),  # wrong in a way no known mistake explains: the generic message shows both
]


test_check_names_the_planted_mistake = planted_mistake_test(PLANTED)


# --------------------------------------------------------------------------- extra tests


def test_cross_attention_variant_without_mistakes_is_torchs_multihead_attention():
    """The planted mistakes are computed from the same base as the reference: with no switch set, they agree."""
    g = torch.Generator().manual_seed(0)
    mha = nn.MultiheadAttention(24, 3, batch_first=True).eval()
    x, memory = torch.randn(2, 5, 24, generator=g), torch.randn(2, 7, 24, generator=g)
    with torch.no_grad():
        want = mha(x, memory, memory, need_weights=False)[0]
        got = cross_attention_variant(mha, x, memory)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_cross_attention_check_says_what_it_compares_with(capsys):
    ok, out = verdict(capsys, check_cross_attention, CrossAttn)
    assert ok and "torch.nn.MultiheadAttention" in out, out


def test_lesson_10_trains_less_under_workbench_quick():
    source = "".join(c.source for c in nbformat.read(LESSON, as_version=4).cells if c.cell_type == "code")
    assert 'os.environ.get("WORKBENCH_QUICK") == "1"' in source
    assert re.search(r"STEPS = \d+ if QUICK else \d+", source), "the step count should depend on QUICK"
