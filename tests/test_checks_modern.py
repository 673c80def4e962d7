"""Lesson 14 (what changed since GPT-2): every check passes a correct implementation, says "not implemented yet" for
a stub, and names each planted mistake with its own hint; plus the fact the lesson shows (a RoPE score depends only
on the distance between the two positions).

The planted mistakes are the checks' own (``checks/modern.py``: each ``_*_MISTAKES`` table with its ``_*_variant``),
so every mistake a check knows is tested here, and none is retyped.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch
import torch.nn.functional as F

from workbench import checks
from workbench.checks import modern
from workbench.model import apply_rope, rope_tables

from verdicts import correct_implementation_test, planted_mistake_test, stub_of, stub_test, verdict

# ------------------------------------------------------------------------- correct implementations
# Written out here, as a student would, not taken from the library: the checks compare them with the library.


def student_rope_tables(head_size, positions, theta):
    inv_freq = theta ** -(torch.arange(0, head_size, 2, dtype=torch.float64) / head_size)
    angles = positions.double()[:, None] * inv_freq  # (T, hs/2)
    angles = torch.cat([angles, angles], dim=-1)  # pair i is (i, i + hs/2)
    return angles.cos().float(), angles.sin().float()


def student_apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    partner = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + partner * sin


def student_rms_norm(x, weight, eps):
    return weight * x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps)


def student_swiglu(x, gate, up, down):
    h = gate(x)
    return down(h * torch.sigmoid(h) * up(x))


def student_repeat_kv(x, n_rep):
    B, n_kv, T, hs = x.shape
    return x[:, :, None].expand(B, n_kv, n_rep, T, hs).reshape(B, n_kv * n_rep, T, hs)


def student_gqa_attention(q, k, v):
    n_rep = q.shape[1] // k.shape[1]
    k, v = student_repeat_kv(k, n_rep), student_repeat_kv(v, n_rep)
    T = q.shape[2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def student_llama_style(config):
    return dataclasses.replace(config, position="rope", norm="rmsnorm", mlp="swiglu", mlp_hidden=config.n_embd * 8 // 3,
                               n_kv_head=1, bias=False)


def sdpa_with_gqa(q, k, v):
    """torch's own grouped-query attention: also right."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


CORRECT = [
    (checks.check_rope_tables, student_rope_tables),
    (checks.check_apply_rope, student_apply_rope),
    (checks.check_rms_norm, student_rms_norm),
    (checks.check_swiglu, student_swiglu),
    (checks.check_repeat_kv, student_repeat_kv),
    (checks.check_gqa_attention, student_gqa_attention),
    (checks.check_gqa_attention, sdpa_with_gqa),
    (checks.check_llama_config, student_llama_style),
]


test_check_passes_a_correct_implementation = correct_implementation_test(CORRECT)
test_check_on_a_stub_says_not_implemented = stub_test([(check, stub_of(student)) for check, student in
                                                       dict(CORRECT).items()])


# ------------------------------------------------------------------------------- planted mistakes

VARIANTS = [  # (check, the variant function with switches, its table of hint -> switches)
    (checks.check_rope_tables, modern._rope_tables_variant, modern._ROPE_TABLE_MISTAKES),
    (checks.check_apply_rope, modern._apply_rope_variant, modern._APPLY_ROPE_MISTAKES),
    (checks.check_rms_norm, modern._rms_norm_variant, modern._RMS_NORM_MISTAKES),
    (checks.check_swiglu, modern._swiglu_variant, modern._SWIGLU_MISTAKES),
    (checks.check_repeat_kv, modern._repeat_kv_variant, modern._REPEAT_KV_MISTAKES),
    (checks.check_gqa_attention, modern._gqa_variant, modern._GQA_MISTAKES),
    (checks.check_llama_config, modern._llama_config_variant, modern._LLAMA_CONFIG_MISTAKES),
]


def _in_place_rms_norm(x, weight, eps):
    return x.div_(torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)).mul(weight)


def _llama_style_in_place(config):
    config.position, config.norm, config.mlp, config.bias = "rope", "rmsnorm", "swiglu", False
    config.mlp_hidden, config.n_kv_head = config.n_embd * 8 // 3, 1
    return config


PLANTED = [
    # (check, wrong implementation, the hint it must get): every mistake of every table, with its whole hint
    *[(check, functools.partial(variant, **switches), hint)
      for check, variant, table in VARIANTS for hint, switches in table.items()],
    (checks.check_rms_norm, _in_place_rms_norm, "changed its input `x` in place"),
    (checks.check_rope_tables, lambda head_size, positions, theta: student_rope_tables(head_size, positions, theta)[0],
     "return the pair (cos, sin)"),
    (checks.check_llama_config, _llama_style_in_place, "changed the config it was given"),
]

test_check_names_the_planted_mistake = planted_mistake_test(PLANTED)


def test_every_variant_is_right_with_no_switch(capsys):
    """The planted mistakes are a correct function with one switch each: without switches, it passes."""
    for check, variant, _ in VARIANTS:
        ok, out = verdict(capsys, check, variant)
        assert ok and out.startswith("✓"), out


# ------------------------------------------------------------------------------- what the lesson shows


def test_a_rope_score_depends_only_on_the_distance():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 64, generator=g), torch.randn(1, 1, 1, 64, generator=g)

    def score(m: int, n: int) -> float:
        cos, sin = rope_tables(64, torch.tensor([m, n]), 10000.0)
        return (apply_rope(q, cos[:1], sin[:1]) * apply_rope(k, cos[1:], sin[1:])).sum().item()

    for m, n in ((3, 1), (7, 7), (2, 9)):
        for shift in (1, 10, 100):
            assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-4)
    assert score(3, 1) != pytest.approx(score(4, 1), abs=1e-3)  # and the distance does matter
