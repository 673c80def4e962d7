"""Checks for lesson 14 (what changed since GPT-2): rotary positions, RMSNorm, the SwiGLU MLP and grouped-query
attention.

References come from :mod:`workbench.model` (``rope_tables``, ``apply_rope``, ``RMSNorm``, the ``mlp="swiglu"``
:class:`~workbench.model.MLP`, ``repeat_kv``), and torch's ``scaled_dot_product_attention`` where the workbench's
attention uses it too.

Each check's planted mistakes are the keyword switches of one ``_*_variant`` function, listed once in a
``_*_MISTAKES`` table (hint -> switches): the check compares the student's output with every variant, and the tests
run every variant through the check, so a mistake is defined in one place only.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.checks.core import (
    Hint,
    Say,
    Verdict,
    _call_keeping_inputs,
    _compare_tensors,
    _fresh_generator,
    _passed,
    run_check,
    say,
)
from workbench.model import MLP, GPTConfig, RMSNorm, apply_rope, repeat_kv, rope_tables


def _planted(variant: Callable[..., Any], table: dict[Say, dict[str, Any]], *inputs: Any) -> dict[Say, Callable]:
    """The known mistakes on one case's inputs: hint -> ``variant(*inputs)`` with that hint's switches, to run."""
    return {hint: functools.partial(variant, *inputs, **switches) for hint, switches in table.items()}


# ----------------------------------------------------------------------------------------------- RoPE


def _rope_tables_variant(
    head_size: int, positions: torch.Tensor, theta: float, *, layout: str = "halves", exponent: str = "2i/d",
    first_position: int = 0, use_positions: bool = True, use_theta: bool = True, sin_sign: float = 1.0,
    swap: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE's cos and sin tables ``(T, head_size)``, with switches to plant one mistake at a time."""
    pos = positions if use_positions else torch.arange(len(positions))
    pos = pos.to(torch.float32) + first_position
    base = theta if use_theta else 10000.0
    if exponent == "2i/d":  # one frequency per pair: theta^(-2i/d), i = 0 .. d/2 - 1
        inv_freq = base ** -(torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
    elif exponent == "i/d, half":  # the exponent halved: theta^(-i/d), i = 0 .. d/2 - 1
        inv_freq = base ** -(torch.arange(head_size // 2, dtype=torch.float32) / head_size)
    else:  # "i/d, every dim": one frequency per dimension, theta^(-i/d), i = 0 .. d - 1, not shared by a pair
        inv_freq = base ** -(torch.arange(head_size, dtype=torch.float32) / head_size)
    angles = pos[:, None] * inv_freq[None, :]
    if exponent != "i/d, every dim":
        # pair i is (i, i + d/2) in the halves layout; (2i, 2i + 1) in the interleaved one
        angles = torch.cat([angles, angles], dim=-1) if layout == "halves" else angles.repeat_interleave(2, dim=-1)
    cos, sin = angles.cos(), sin_sign * angles.sin()
    return (sin, cos) if swap else (cos, sin)


_SIN_NEGATED = say(
    "the rotation turns the wrong way (by -angle): with cos and sin of +angle, rotate_half(x) is cat(-x2, x1), so "
    "that x1 becomes x1·cos - x2·sin and x2 becomes x2·cos + x1·sin",
    "旋转方向反了（转了 -angle）：cos 和 sin 都取 +angle，rotate_half(x) 是 cat(-x2, x1)，这样 x1 变成 "
    "x1·cos - x2·sin，x2 变成 x2·cos + x1·sin")
_COS_SIN_SWAPPED = say("cos and sin are swapped: at position 0 nothing turns, so cos must be 1 there and sin 0",
                       "cos 和 sin 弄反了：在位置 0 什么都不转，所以那里 cos 应为 1、sin 应为 0")

_ROPE_TABLE_MISTAKES: dict[Say, dict[str, Any]] = {  # hint -> the switches of _rope_tables_variant that plant it
    _COS_SIN_SWAPPED: dict(swap=True),
    say("the tables are laid out for interleaved pairs (2i, 2i+1), as in the RoFormer paper: the workbench and "
        "Hugging Face pair dimension i with i + d/2, so frequency i goes in columns i and i + d/2 "
        "(torch.cat([angles, angles], dim=-1))",
        "表是按相邻成对 (2i, 2i+1) 排的，和 RoFormer 论文一样：workbench 和 Hugging Face 让第 i 维与第 i + d/2 维"
        "成对，所以频率 i 放在第 i 列和第 i + d/2 列（torch.cat([angles, angles], dim=-1)）"): dict(
        layout="interleaved"),
    say("the frequencies fall too slowly: pair i turns at theta^(-2i/d), and your exponent is i/d (use "
        "torch.arange(0, d, 2) / d)",
        "频率下降得太慢：第 i 对的频率是 theta^(-2i/d)，你的指数是 i/d（应该用 torch.arange(0, d, 2) / d）"): dict(
        exponent="i/d, half"),
    say("one frequency per dimension, theta^(-i/d) for i = 0 .. d-1: RoPE has d/2 frequencies theta^(-2i/d), one "
        "per pair, and both members of a pair turn by the same angle",
        "每一维一个频率，i = 0 .. d-1 时为 theta^(-i/d)：RoPE 只有 d/2 个频率 theta^(-2i/d)，每对一个，同一对的两维"
        "转相同的角度"): dict(exponent="i/d, every dim"),
    say("the positions are off by one: the first token is at position 0, where nothing turns (cos 1, sin 0)",
        "位置差了一：第一个词元在位置 0，那里什么都不转（cos 为 1，sin 为 0）"): dict(first_position=1),
    say("the positions passed in were not used: after a KV cache the new tokens sit at past, past + 1, ..., so "
        "the angles are positions × frequency, not arange(T) × frequency",
        "没有用传入的 positions：用了 KV 缓存之后，新词元位于 past、past + 1……，所以角度是 positions × 频率，而不是 "
        "arange(T) × 频率"): dict(use_positions=False),
    say("theta was not used (10000 hard-coded): Llama 3 uses 500000, Qwen3 1000000; take the argument",
        "没有用 theta（写死了 10000）：Llama 3 用 500000，Qwen3 用 1000000；请使用传入的参数"): dict(use_theta=False),
    _SIN_NEGATED: dict(sin_sign=-1.0),
}


def _as_pair(result: Any) -> torch.Tensor:
    """``(cos, sin)`` stacked into one ``(2, T, hs)`` tensor, to compare both at once; a Hint if it is no pair."""
    if not (isinstance(result, (tuple, list)) and len(result) == 2
            and all(isinstance(t, torch.Tensor) for t in result)):
        raise Hint(say(f"return the pair (cos, sin) of two tensors, not {type(result).__name__}",
                       f"请返回由两个张量组成的 (cos, sin)，而不是 {type(result).__name__}"))
    cos, sin = result
    if cos.shape != sin.shape:
        raise Hint(say(f"cos {tuple(cos.shape)} and sin {tuple(sin.shape)} differ in shape: both are (T, head_size)",
                       f"cos {tuple(cos.shape)} 与 sin {tuple(sin.shape)} 的形状不同：两者都应为 (T, head_size)"))
    return torch.stack([cos, sin])  # (2, T, hs)


def check_rope_tables(rope_tables_fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> Verdict:
    """``rope_tables(head_size, positions, theta) -> (cos, sin)``, each ``(T, head_size)`` in Hugging Face's
    halves layout, against :func:`workbench.model.rope_tables`."""

    def body() -> Say:
        worst = 0.0
        # (head_size, first position, T, theta): positions from 0 first, then after a cache, then another theta
        cases = ((8, 0, 6, 10000.0), (16, 5, 7, 10000.0), (32, 0, 20, 500000.0))
        for head_size, start, T, theta in cases:
            positions = torch.arange(start, start + T)
            got = _as_pair(_call_keeping_inputs(rope_tables_fn, ["head_size", "positions", "theta"], head_size,
                                                positions, theta))
            want = torch.stack(rope_tables(head_size, positions, theta))
            mistakes = _planted(lambda *a, **k: torch.stack(_rope_tables_variant(*a, **k)), _ROPE_TABLE_MISTAKES,
                                head_size, positions, theta)
            shape_hint = say("cos and sin are (T, head_size) each: one row per position, one column per dimension.",
                             "cos 和 sin 的形状都是 (T, head_size)：每个位置一行，每个维度一列。")
            worst = max(worst, _compare_tensors(got, want, mistakes, shape_hint=shape_hint))
        return _passed(len(cases), worst)

    return run_check("rope_tables", body)


def _apply_rope_variant(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, pairs: str = "halves", sign: float = 1.0,
    swap: bool = False, rotate: bool = True,
) -> torch.Tensor:
    """``x`` rotated by RoPE's tables, with switches to plant one mistake at a time."""
    if pairs == "halves":  # pair i is (i, i + d/2): rotate_half
        x1, x2 = x.chunk(2, dim=-1)
        partner = torch.cat([-x2, x1], dim=-1)
    else:  # "adjacent": pair i is (2i, 2i + 1)
        partner = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)
    partner = sign * partner if rotate else x
    c, s = (sin, cos) if swap else (cos, sin)
    return x * c + partner * s


_APPLY_ROPE_MISTAKES: dict[Say, dict[str, Any]] = {  # hint -> the switches of _apply_rope_variant that plant it
    say("adjacent dimensions (2i, 2i+1) were rotated together: here (as in Hugging Face) dimension i pairs with "
        "i + d/2, so the partner of x is rotate_half(x) = cat(-x2, x1), with x1 and x2 the two halves of the last "
        "axis",
        "相邻的两维 (2i, 2i+1) 被放在一起旋转了：这里（和 Hugging Face 一样）第 i 维与第 i + d/2 维成对，所以 x 的"
        "搭档是 rotate_half(x) = cat(-x2, x1)，x1 和 x2 是最后一个轴的前后两半"): dict(pairs="adjacent"),
    _SIN_NEGATED: dict(sign=-1.0),
    _COS_SIN_SWAPPED: dict(swap=True),
    say("x·cos + x·sin is not a rotation: the sin term multiplies the pair's other member, rotate_half(x) = "
        "cat(-x2, x1)",
        "x·cos + x·sin 不是旋转：sin 那一项乘的是同一对里的另一维，即 rotate_half(x) = cat(-x2, x1)"): dict(
        rotate=False),
}


def check_apply_rope(apply_rope_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> Verdict:
    """``apply_rope(x, cos, sin)`` for ``x (B, H, T, hs)``: each pair ``(i, i + hs/2)`` turned by its angle,
    against :func:`workbench.model.apply_rope` on the tables of :func:`workbench.model.rope_tables`."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        cases = ((2, 3, 5, 8, 0), (1, 2, 7, 16, 4), (3, 1, 4, 4, 0))  # (B, H, T, head_size, first position)
        for B, H, T, head_size, start in cases:
            x = torch.randn(B, H, T, head_size, generator=g)
            cos, sin = rope_tables(head_size, torch.arange(start, start + T), 10000.0)
            got = _call_keeping_inputs(apply_rope_fn, ["x", "cos", "sin"], x, cos, sin)
            mistakes = _planted(_apply_rope_variant, _APPLY_ROPE_MISTAKES, x, cos, sin)
            shape_hint = say("The output has x's shape (B, H, T, head_size): RoPE turns vectors, it does not move "
                             "them.", "输出与 x 同形 (B, H, T, head_size)：RoPE 只旋转向量，不挪动它们。")
            worst = max(worst, _compare_tensors(got, apply_rope(x, cos, sin), mistakes, shape_hint=shape_hint))
        return _passed(len(cases), worst)

    return run_check("apply_rope", body)


# -------------------------------------------------------------------------------------------- RMSNorm


def _rms_norm_variant(
    x: torch.Tensor, weight: torch.Tensor, eps: float, *, center: bool = False, spread: str = "rms",
    eps_inside: bool = True, use_eps: bool = True, scale: bool = True, dim: int = -1,
) -> torch.Tensor:
    """RMSNorm written out, with switches to plant one mistake at a time."""
    if center:  # LayerNorm without its bias
        x = x - x.mean(dim, keepdim=True)
    if spread == "rms":
        square_mean = x.pow(2).mean(dim, keepdim=True)
    else:  # "std": the variance around the mean, while x itself stays uncentred
        square_mean = x.var(dim, keepdim=True, unbiased=False)
    e = eps if use_eps else 0.0
    denominator = torch.sqrt(square_mean + e) if eps_inside else torch.sqrt(square_mean) + e
    out = x / denominator
    return out * weight if scale else out


_RMS_NORM_MISTAKES: dict[Say, dict[str, Any]] = {  # hint -> the switches of _rms_norm_variant that plant it
    say("the mean was subtracted: that is LayerNorm. RMSNorm only rescales, x / sqrt(mean(x²) + eps) · weight, "
        "with no centring and no bias",
        "减去了均值：那是层归一化（LayerNorm）。RMSNorm 只缩放，x / sqrt(mean(x²) + eps) · weight，不中心化，也没有"
        " bias"): dict(center=True),
    say("x was divided by its standard deviation (the spread around the mean): RMSNorm divides by the root mean "
        "square, sqrt(mean(x²) + eps), which counts the mean in",
        "x 被除以了它的标准差（围绕均值的离散程度）：RMSNorm 除以的是均方根 sqrt(mean(x²) + eps)，均值也算在里面"):
        dict(spread="std"),
    say("eps is added outside the square root: divide by sqrt(mean(x²) + eps)",
        "eps 加在了平方根外面：应除以 sqrt(mean(x²) + eps)"): dict(eps_inside=False),
    say("eps is missing: a vector of (near) zeros would divide by (near) zero; divide by sqrt(mean(x²) + eps)",
        "漏了 eps：全为（接近）零的向量会除以（接近）零；应除以 sqrt(mean(x²) + eps)"): dict(use_eps=False),
    say("the weight is not applied: multiply the normalised x by weight (one learned gain per channel)",
        "没有乘 weight：要把归一化后的 x 乘以 weight（每个通道一个可学习的增益）"): dict(scale=False),
    say("normalised over the wrong axis: RMSNorm works on each position's own vector, the last axis (dim=-1)",
        "归一化的轴错了：RMSNorm 作用在每个位置自己的向量上，也就是最后一个轴（dim=-1）"): dict(dim=-2),
}


def check_rms_norm(rms_norm: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> Verdict:
    """``rms_norm(x, weight, eps)`` over the last axis, against :class:`workbench.model.RMSNorm`."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        # (shape, scale of x, eps): a mean far from 0 first (RMSNorm and LayerNorm differ), then a scale where
        # mean(x²) is about eps (where eps's place shows)
        cases = (((2, 5, 8), 1.0, 1e-5), ((3, 16), 1.0, 1e-6), ((2, 4, 6), 1e-3, 1e-6))
        for shape, x_scale, eps in cases:
            x = (torch.randn(*shape, generator=g) + 0.7) * x_scale
            reference = RMSNorm(shape[-1], eps)
            with torch.no_grad():
                reference.weight.copy_(1 + 0.3 * torch.randn(shape[-1], generator=g))
            weight = reference.weight.detach()
            got = _call_keeping_inputs(rms_norm, ["x", "weight", "eps"], x, weight.clone(), eps)
            mistakes = _planted(_rms_norm_variant, _RMS_NORM_MISTAKES, x, weight, eps)
            worst = max(worst, _compare_tensors(got, reference(x).detach(), mistakes, atol=1e-5, rtol=1e-4))
        return _passed(len(cases), worst)

    return run_check("rms_norm", body)


# --------------------------------------------------------------------------------------------- SwiGLU


def _swiglu_variant(
    x: torch.Tensor, gate: nn.Module, up: nn.Module, down: nn.Module, *, act: str = "silu",
    gated: str = "gate", product: bool = True,
) -> torch.Tensor:
    """The SwiGLU MLP ``down(silu(gate(x)) * up(x))``, with switches to plant one mistake at a time."""
    activation = {"silu": F.silu, "sigmoid": torch.sigmoid, "gelu": F.gelu,
                  "gelu_tanh": lambda h: F.gelu(h, approximate="tanh")}[act]
    activated, other = (gate(x), up(x)) if gated == "gate" else (up(x), gate(x))
    hidden = activation(activated) * other if product else activation(activated)
    return down(hidden)


_SWIGLU_MISTAKES: dict[Say, dict[str, Any]] = {  # hint -> the switches of _swiglu_variant that plant it
    say("SiLU is on the wrong branch: it goes on gate(x), and up(x) is multiplied in as it is: "
        "down(silu(gate(x)) * up(x))",
        "SiLU 用错了分支：它应作用在 gate(x) 上，up(x) 原样乘进来：down(silu(gate(x)) * up(x))"): dict(gated="up"),
    say("GELU instead of SiLU: SwiGLU's gate is silu(h) = h·sigmoid(h) (F.silu)",
        "用了 GELU 而不是 SiLU：SwiGLU 的门是 silu(h) = h·sigmoid(h)（F.silu）"): dict(act="gelu"),
    say("GELU (tanh, GPT-2's) instead of SiLU: SwiGLU's gate is silu(h) = h·sigmoid(h) (F.silu)",
        "用了 GELU（GPT-2 的 tanh 近似）而不是 SiLU：SwiGLU 的门是 silu(h) = h·sigmoid(h)（F.silu）"): dict(
        act="gelu_tanh"),
    say("a sigmoid gate is GLU (Dauphin et al. 2017); SwiGLU gates with silu(h) = h·sigmoid(h) (F.silu)",
        "sigmoid 做门是 GLU（Dauphin 等人，2017）；SwiGLU 用 silu(h) = h·sigmoid(h)（F.silu）做门"): dict(
        act="sigmoid"),
    say("the gate is missing: this is an ordinary MLP, down(silu(up(x))); SwiGLU multiplies up(x) by a second, "
        "gated projection, down(silu(gate(x)) * up(x))",
        "缺了门：这是普通的 MLP，down(silu(up(x)))；SwiGLU 要把 up(x) 乘以另一路带门的投影，"
        "down(silu(gate(x)) * up(x))"): dict(gated="up", product=False),
    say("up(x) is missing: the gate silu(gate(x)) must multiply the up projection, down(silu(gate(x)) * up(x))",
        "缺了 up(x)：门 silu(gate(x)) 要去乘 up 投影，down(silu(gate(x)) * up(x))"): dict(product=False),
}


def check_swiglu(swiglu: Callable[[torch.Tensor, nn.Module, nn.Module, nn.Module], torch.Tensor]) -> Verdict:
    """``swiglu(x, gate, up, down)``: ``down(silu(gate(x)) * up(x))``, against the workbench's ``mlp="swiglu"``
    :class:`~workbench.model.MLP` run with the same three projections."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        cases = ((8, 12, 2, 5), (16, 40, 1, 3), (4, 8, 3, 2))  # (n_embd, hidden, B, T)
        for C, hidden, B, T in cases:
            config = GPTConfig(vocab_size=4, block_size=8, n_layer=1, n_head=1, n_embd=C, mlp="swiglu",
                               mlp_hidden=hidden, bias=False)
            reference = MLP(config).eval()
            with torch.no_grad():
                for p in reference.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            gate, up, down = reference.c_gate, reference.c_fc, reference.c_proj  # the workbench's names
            x = torch.randn(B, T, C, generator=g)
            with torch.no_grad():
                want = reference(x)
                got = _call_keeping_inputs(swiglu, ["x", "gate", "up", "down"], x, gate, up, down)
                mistakes = _planted(_swiglu_variant, _SWIGLU_MISTAKES, x, gate, up, down)
                shape_hint = say("Expected (B, T, C): down brings the hidden width back to the model's width.",
                                 "应为 (B, T, C)：down 把隐藏宽度投影回模型宽度。")
                worst = max(worst, _compare_tensors(got, want, mistakes, shape_hint=shape_hint))
        return _passed(len(cases), worst)

    return run_check("swiglu", body)


# ---------------------------------------------------------------------------------- grouped-query attention


def _repeat_kv_variant(x: torch.Tensor, n_rep: int, *, order: str = "interleave", times: str = "n_rep",
                       dim: int = 1) -> torch.Tensor:
    """``repeat_kv`` written out, with switches to plant one mistake at a time."""
    count = {"n_rep": n_rep, "n_kv": x.shape[1], "none": 1}[times]
    if order == "interleave":  # 0, 0, 1, 1: query heads 2h and 2h + 1 share kv head h
        return x.repeat_interleave(count, dim=dim)
    reps = [1] * x.dim()
    reps[dim] = count
    return x.repeat(*reps)  # "tile": 0, 1, 0, 1


_TILED = say(
    "the kv heads are repeated in the wrong order, tiled 0, 1, 0, 1 (x.repeat): query head h uses kv head "
    "h // n_rep, so each kv head's copies sit next to each other, 0, 0, 1, 1 (repeat_interleave)",
    "kv 头的重复顺序错了，成了平铺的 0, 1, 0, 1（x.repeat）：第 h 个查询头用的是第 h // n_rep 个 kv 头，所以每个"
    " kv 头的副本要挨在一起，0, 0, 1, 1（repeat_interleave）")
_REPEAT_KV_MISTAKES: dict[Say, dict[str, Any]] = {  # hint -> the switches of _repeat_kv_variant that plant it
    _TILED: dict(order="tile"),
    say("nothing was repeated: each of the n_kv heads must appear n_rep times, (B, n_kv, T, hs) -> "
        "(B, n_kv * n_rep, T, hs)",
        "什么也没有重复：n_kv 个头每个都要出现 n_rep 次，(B, n_kv, T, hs) -> (B, n_kv * n_rep, T, hs)"): dict(
        times="none"),
    say("each kv head was repeated n_kv times: repeat it n_rep = n_head // n_kv_head times",
        "每个 kv 头被重复了 n_kv 次：应重复 n_rep = n_head // n_kv_head 次"): dict(times="n_kv"),
    say("repeated along the positions (dim 2): the heads are dim 1 of (B, n_kv, T, hs)",
        "沿位置轴（dim 2）重复了：在 (B, n_kv, T, hs) 里，头是 dim 1"): dict(dim=2),
}


def check_repeat_kv(repeat_kv_fn: Callable[[torch.Tensor, int], torch.Tensor]) -> Verdict:
    """``repeat_kv(x, n_rep)``: ``(B, n_kv, T, hs) -> (B, n_kv * n_rep, T, hs)``, query head ``h`` reading kv head
    ``h // n_rep``; against :func:`workbench.model.repeat_kv`."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        cases = ((2, 2, 3, 5, 4), (1, 4, 2, 3, 8), (1, 1, 4, 3, 4), (2, 3, 1, 4, 4))  # (B, n_kv, n_rep, T, hs)
        for B, n_kv, n_rep, T, hs in cases:
            x = torch.randn(B, n_kv, T, hs, generator=g)
            got = _call_keeping_inputs(repeat_kv_fn, ["x", "n_rep"], x, n_rep)
            mistakes = _planted(_repeat_kv_variant, _REPEAT_KV_MISTAKES, x, n_rep)
            shape_hint = say("Expected (B, n_kv * n_rep, T, hs).", "应为 (B, n_kv * n_rep, T, hs)。")
            worst = max(worst, _compare_tensors(got, repeat_kv(x, n_rep), mistakes, shape_hint=shape_hint))
        return _passed(len(cases), worst)

    return run_check("repeat_kv", body)


def _gqa_variant(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, order: str = "interleave",
                 repeat: bool = True, causal: bool = True, scaled: bool = True) -> torch.Tensor:
    """Causal attention with fewer kv heads than query heads, with switches to plant one mistake at a time."""
    n_rep = q.shape[1] // k.shape[1]
    if repeat:
        k, v = (_repeat_kv_variant(t, n_rep, order=order) for t in (k, v))  # (B, n_head, T, hs)
    T, hs = q.shape[2], q.shape[3]
    scores = q @ k.transpose(-2, -1) / (math.sqrt(hs) if scaled else 1.0)  # (B, n_head, T, T)
    if causal:
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


_NOT_REPEATED = say(
    "q has more heads than k and v, so q @ k^T cannot pair them: repeat each kv head n_rep = n_head // n_kv_head "
    "times first (repeat_kv(k, n_rep), repeat_kv(v, n_rep))",
    "q 的头比 k 和 v 多，q @ k^T 无法一一配对：先把每个 kv 头重复 n_rep = n_head // n_kv_head 次"
    "（repeat_kv(k, n_rep)、repeat_kv(v, n_rep)）")
_GQA_MISTAKES: dict[Say, dict[str, Any]] = {  # hint -> the switches of _gqa_variant that plant it
    _TILED: dict(order="tile"),
    _NOT_REPEATED: dict(repeat=False),  # raises in q @ k^T: the check recognises the error
    say("no causal mask: a query may only see keys at its own position and before",
        "没有因果掩码：一个查询只能看见它自己及之前位置的键"): dict(causal=False),
    say("the scores are not scaled: divide q @ k^T by sqrt(head_size)",
        "分数没有缩放：q @ k^T 要除以 sqrt(head_size)"): dict(scaled=False),
}
# torch's message when q (B, n_head, ...) meets k or v (B, n_kv_head, ...): the heads, dim 1, differ
_HEADS_DO_NOT_MATCH = re.compile(r"must match the size of tensor b \(\d+\) at non-singleton dimension 1$")


def check_gqa_attention(attention: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> Verdict:
    """``grouped_query_attention(q, k, v)``: causal attention for ``q (B, n_head, T, hs)`` and ``k, v
    (B, n_kv_head, T, hs)``; against torch's ``scaled_dot_product_attention`` on the kv heads repeated by
    :func:`workbench.model.repeat_kv`."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        cases = ((2, 6, 2, 5, 8), (1, 8, 4, 7, 4), (1, 4, 1, 6, 8), (2, 2, 2, 3, 4))  # (B, n_head, n_kv, T, hs)
        for B, n_head, n_kv, T, hs in cases:
            q = torch.randn(B, n_head, T, hs, generator=g)
            k, v = (torch.randn(B, n_kv, T, hs, generator=g) for _ in range(2))
            n_rep = n_head // n_kv
            want = F.scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), is_causal=True)
            try:
                got = _call_keeping_inputs(attention, ["q", "k", "v"], q, k, v)
            except RuntimeError as err:
                if _HEADS_DO_NOT_MATCH.search(str(err)):
                    raise Hint(_NOT_REPEATED) from err
                raise
            mistakes = _planted(_gqa_variant, _GQA_MISTAKES, q, k, v)
            shape_hint = say("Expected q's shape (B, n_head, T, hs): one output per query head.",
                             "应与 q 同形 (B, n_head, T, hs)：每个查询头一个输出。")
            worst = max(worst, _compare_tensors(got, want, mistakes, shape_hint=shape_hint))
        return _passed(len(cases), worst)

    return run_check("grouped_query_attention", body)


# ------------------------------------------------------------------------------------ a Llama-style config


def _llama_config_variant(config: GPTConfig, *, skip: str = "", **overrides: Any) -> GPTConfig:
    """``config`` with Llama's switches on (one of them left at GPT-2's value by ``skip``; ``overrides`` change
    anything else), to plant one mistake at a time."""
    switches = dict(position="rope", norm="rmsnorm", mlp="swiglu", mlp_hidden=8 * config.n_embd // 3,
                    n_kv_head=config.n_head // 2, bias=False)
    switches.pop(skip, None)
    return dataclasses.replace(config, **{**switches, **overrides})


_SHAPE_FIELDS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")
# (hint, what a Llama-style version of `base` has, the switches of _llama_config_variant that miss it)
_LLAMA_SWITCHES: tuple[tuple[Say, Callable[[GPTConfig, GPTConfig], bool], dict[str, Any]], ...] = (
    (say("the model's shape changed: keep vocab_size, block_size, n_layer, n_head and n_embd, so that the two "
         "models differ only in the switches",
         "模型的形状变了：保持 vocab_size、block_size、n_layer、n_head 和 n_embd 不变，让两个模型只在开关上不同"),
     lambda base, c: all(getattr(c, f) == getattr(base, f) for f in _SHAPE_FIELDS), dict(n_layer=1)),
    (say("positions are still learned vectors: set position=\"rope\"",
         "位置仍是学出来的向量：请设 position=\"rope\""), lambda base, c: c.position == "rope", dict(skip="position")),
    (say("the norm is still LayerNorm: set norm=\"rmsnorm\"", "归一化仍是 LayerNorm：请设 norm=\"rmsnorm\""),
     lambda base, c: c.norm == "rmsnorm", dict(skip="norm")),
    (say("the MLP is still GPT-2's GELU MLP: set mlp=\"swiglu\"", "MLP 仍是 GPT-2 的 GELU MLP：请设 mlp=\"swiglu\""),
     lambda base, c: c.mlp == "swiglu", dict(skip="mlp")),
    (say("every query head still has its own keys and values: set n_kv_head to a divisor of n_head below it "
         "(grouped-query attention)",
         "每个查询头仍有自己的键和值：请把 n_kv_head 设为 n_head 的一个比它小的因数（分组查询注意力）"),
     lambda base, c: c.kv_heads < base.n_head, dict(skip="n_kv_head")),
    (say("the biases are still there: set bias=False (Llama has none, in Linear layers or norms)",
         "偏置还在：请设 bias=False（Llama 的线性层和归一化层都没有偏置）"),
     lambda base, c: not c.bias and not c.qkv_has_bias, dict(skip="bias")),
    (say("with three matrices instead of two, SwiGLU at a hidden width of 4 x n_embd is 1.5 times GPT-2's MLP: "
         "set mlp_hidden to about 8 x n_embd / 3, so that both models have about as many weights",
         "SwiGLU 有三个矩阵而不是两个，隐藏宽度为 4 x n_embd 时它是 GPT-2 MLP 的 1.5 倍：请把 mlp_hidden 设为约 "
         "8 x n_embd / 3，让两个模型的权重数差不多"),
     # three matrices of width h hold as many weights as GPT-2's two of width 4C when 3h = 8C (here within 10%)
     lambda base, c: abs(3 * c.mlp_width - 8 * base.n_embd) <= 0.1 * 8 * base.n_embd, dict(skip="mlp_hidden")),
)
_LLAMA_CONFIG_MISTAKES: dict[Say, dict[str, Any]] = {hint: switches for hint, _, switches in _LLAMA_SWITCHES}


def check_llama_config(llama_style: Callable[[GPTConfig], GPTConfig]) -> Verdict:
    """``llama_style(config)``: the same shape with Llama's switches on (RoPE, RMSNorm, SwiGLU at about GPT-2's
    MLP size, fewer kv heads, no biases), as a new :class:`~workbench.model.GPTConfig`."""

    def body() -> Say:
        bases = (GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128),
                 GPTConfig(vocab_size=100, block_size=32, n_layer=2, n_head=8, n_embd=64))
        for base in bases:
            before = dataclasses.replace(base)  # a copy, to see whether the student changed base
            config = llama_style(base)
            if base != before:
                raise Hint(say("your function changed the config it was given: return a new one "
                               "(dataclasses.replace(config, ...))",
                               "你的函数改动了传入的 config：请返回一个新的（dataclasses.replace(config, ...)）"))
            if not isinstance(config, GPTConfig):
                raise Hint(say(f"return a GPTConfig, not {type(config).__name__}",
                               f"请返回 GPTConfig，而不是 {type(config).__name__}"))
            for hint, has_it, _ in _LLAMA_SWITCHES:
                if not has_it(base, config):
                    raise Hint(hint)
        return say(f"Llama's switches on, the shape kept, on {len(bases)} configs",
                   f"在 {len(bases)} 个配置上打开了 Llama 的开关，形状保持不变")

    return run_check("llama_style", body)


__all__ = [name for name in dir() if name.startswith("check_")]  # what `workbench.checks` re-exports
