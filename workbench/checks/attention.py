"""Checks for lessons 03 (attention) and 04 (multi-head attention): softmax, the causal mask, scaled dot-product
attention, splitting and merging heads, the multi-head module.

Planted mistakes: :func:`attention_variant` and :func:`multihead_variant` are attention and the multi-head module
written out with switches (correct at their defaults), and :data:`MULTIHEAD_MISTAKES` maps each hint of the
multi-head check to the switches that plant its mistake.
"""

from __future__ import annotations

import math
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
    _load_student,
    _matching_mistake,
    _passed,
    randomize,
    run_check,
    say,
)
from workbench.model import Attention, GPTConfig

# --------------------------------------------------------------------------------------- 03 attention


def _softmax_input(g: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """Random scores with a large row (overflows a naive exp) and some -inf (masked) entries."""
    x = torch.randn(shape, generator=g) * 3
    x[..., 0, :] = x[..., 0, :] * 10 + 1000.0
    x[..., -1, 1:] = float("-inf")
    return x


def _exp_shifted(x: torch.Tensor) -> torch.Tensor:
    """exp(x) with each row's maximum subtracted first: the numerator of a stable softmax."""
    return torch.exp(x - x.amax(-1, keepdim=True))


def check_softmax(softmax: Callable[[torch.Tensor], torch.Tensor]) -> Verdict:
    """``softmax(x)`` over the last axis, stable for large scores, 0 for ``-inf`` scores."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        shapes = ((4, 4), (2, 3, 5), (2, 6, 6))  # (4, 4) first: a maximum taken without keepdim runs there only
        for shape in shapes:
            x = _softmax_input(g, shape)
            got = _call_keeping_inputs(softmax, ["x"], x)
            want = torch.softmax(x, dim=-1)
            e = _exp_shifted(x)
            mistakes = {
                say("softmax over the wrong axis: normalize over the last axis, so each row sums to 1",
                    "softmax 的轴错了：沿最后一个轴归一化，使每一行之和为 1"): lambda: torch.softmax(x, dim=-2),
                say("softmax over the first axis: normalize over the last axis (dim=-1)",
                    "softmax 沿第一个轴做了：应沿最后一个轴（dim=-1）归一化"): lambda: torch.softmax(x, dim=0),
                say("the rows do not sum to 1: divide exp(x) by its sum over the last axis",
                    "各行之和不是 1：要用 exp(x) 除以它沿最后一个轴的和"): lambda: e,
                say("the sum was taken without keepdim=True, so broadcasting divided by other rows' sums",
                    "求和时没有写 keepdim=True，广播之后除的是别的行的和"): lambda: e / e.sum(-1),
                say("exp(x) was divided by its mean, not its sum, so each row sums to its length instead of 1: "
                    "divide by e.sum(dim=-1, keepdim=True)",
                    "exp(x) 除的是均值而不是和，于是每一行之和等于行长而不是 1：请除以 e.sum(dim=-1, keepdim=True)"):
                    lambda: e / e.mean(-1, keepdim=True),
                say("exp(x) was divided by the mean of the whole tensor: divide each row by its own sum, "
                    "e.sum(dim=-1, keepdim=True)",
                    "exp(x) 除的是整个张量的均值：每一行要除以它自己的和 e.sum(dim=-1, keepdim=True)"): lambda: (
                    e / e.mean()
                ),
                say("exp(x) was divided by the sum of the whole tensor, so only all rows together sum to 1: divide "
                    "each row by its own sum, e.sum(dim=-1, keepdim=True)",
                    "exp(x) 除的是整个张量的和，于是只有所有行加在一起才等于 1：每一行要除以它自己的和 "
                    "e.sum(dim=-1, keepdim=True)"): lambda: e / e.sum(),
                say("the sum ran over the wrong axis (down the columns): sum over the last axis, the one the maximum "
                    "was taken over, e.sum(dim=-1, keepdim=True)",
                    "求和的轴错了（是沿列加的）：要沿最后一个轴求和，也就是取最大值的那个轴，"
                    "e.sum(dim=-1, keepdim=True)"): lambda: e / e.sum(-2, keepdim=True),
                say("each row's maximum was taken without keepdim=True, so broadcasting subtracted it along the wrong "
                    "axis (row j's maximum from column j): use x.amax(dim=-1, keepdim=True)",
                    "取每行最大值时没有写 keepdim=True，广播之后减错了轴（第 j 行的最大值被从第 j 列减去）："
                    "请用 x.amax(dim=-1, keepdim=True)"): lambda: (
                    torch.exp(x - x.amax(-1)) / torch.exp(x - x.amax(-1)).sum(-1, keepdim=True)
                ),
                say("the maximum of the whole tensor was subtracted (x.max()): rows far below it underflow to "
                    "exp(...) = 0, and 0/0 is NaN. Subtract each row's own maximum, x.amax(dim=-1, keepdim=True)",
                    "减去的是整个张量的最大值（x.max()）：比它小很多的行下溢成 exp(...) = 0，而 0/0 是 NaN。"
                    "请减去每一行自己的最大值 x.amax(dim=-1, keepdim=True)"): lambda: (
                    torch.exp(x - x.max()) / torch.exp(x - x.max()).sum(-1, keepdim=True)
                ),
            }
            nan_hint = say(
                "NaN in the output: exp(1000) overflows to inf in float32 and inf/inf is NaN. Subtract each row's "
                "maximum before exp (softmax does not change when a constant is subtracted from a row)",
                "输出里有 NaN：在 float32 中 exp(1000) 会溢出为 inf，而 inf/inf 是 NaN。求 exp 之前先减去每一行的"
                "最大值（一行减去同一个常数，softmax 不变）",
            )
            worst = max(worst, _compare_tensors(got, want, mistakes, nan_hint=nan_hint))
        return _passed(len(shapes), worst)

    return run_check("softmax", body)


def check_causal_mask(causal_mask: Callable[[int], torch.Tensor]) -> Verdict:
    """``causal_mask(T)``: a bool ``(T, T)`` tensor, True where query row i may look at key column j (j <= i)."""

    def body() -> Say:
        # T = 1 last: there the inverted mask and the mask without its diagonal are both [[False]], and only a
        # larger T tells them apart.
        sizes = (4, 9, 1)
        for T in sizes:
            got = causal_mask(T)
            want = Attention(GPTConfig(block_size=T, n_layer=1, n_head=1, n_embd=4)).causal_mask
            if not isinstance(got, torch.Tensor):
                raise Hint(say(f"return a torch.Tensor, got {type(got).__name__}",
                               f"请返回 torch.Tensor，你返回的是 {type(got).__name__}"))
            if got.shape != want.shape:
                raise Hint(say(
                    f"shape {tuple(got.shape)}, expected ({T}, {T}): one row per query, one column per key",
                    f"形状为 {tuple(got.shape)}，应为 ({T}, {T})：每个查询一行，每个键一列",
                ))
            if got.dtype != torch.bool:
                raise Hint(say(
                    f"dtype {got.dtype}: return a bool tensor (True = this query may look at this key)",
                    f"dtype 为 {got.dtype}：请返回 bool 张量（True 表示这个查询可以看这个键）",
                ))
            if not torch.equal(got, want):
                mistakes = {
                    say("the mask points the wrong way: rows are queries, columns are keys, and a query may look at "
                        "itself and the past (the lower triangle), not the future",
                        "掩码方向反了：行是查询，列是键；一个查询可以看它自己和过去（下三角），不能看未来"): lambda: want.T,
                    say("the mask is inverted: True marks what is hidden here (the future, torch.triu with "
                        "diagonal=1); in this course True means 'may attend', the lower triangle with its diagonal "
                        "(torch.tril)",
                        "掩码是反的：这里 True 标的是要遮住的部分（未来，即 diagonal=1 的 torch.triu）；本课程约定 "
                        "True 表示“可以关注”，也就是连同对角线的下三角（torch.tril）"): lambda: ~want,
                    say("the diagonal is missing: a token may attend to itself (key j == query i is allowed)",
                        "缺了对角线：词元可以关注它自己（允许键 j == 查询 i）"): lambda: torch.tril(want, diagonal=-1),
                }
                hint = _matching_mistake(got, mistakes, torch.equal)
                raise Hint(hint or say(f"for T={T} got\n{got.int()}\nexpected\n{want.int()}",
                                       f"T={T} 时得到\n{got.int()}\n应为\n{want.int()}"))
        shown = tuple(sorted(sizes))
        return say(f"correct for T in {shown}", f"T 取 {shown} 时全部正确")

    return run_check("causal_mask", body)


def attention_variant(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    *,
    scale: float | None = None,
    softmax_dim: int = -1,
    mask_after_softmax: bool = False,
    fill: float = float("-inf"),
) -> torch.Tensor:
    """Scaled dot-product attention written out, with switches to plant one mistake at a time."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., Tq, Tk)
    if not mask_after_softmax:
        scores = scores.masked_fill(~mask, fill)
    weights = torch.softmax(scores, dim=softmax_dim)
    if mask_after_softmax:
        weights = weights * mask
    return weights @ v


_MASKED_WITH_ZERO = say(
    "masked scores were set to 0 (masked_fill(~mask, 0), or scores * mask), and a score of 0 still gets weight "
    "(e^0 = 1): fill them with float('-inf'), so that softmax gives them 0",
    "被遮住的分数设成了 0（masked_fill(~mask, 0)，或 scores * mask），而分数 0 照样有权重（e^0 = 1）："
    "请把它们填成 float('-inf')，softmax 才会给它们 0",
)
_MASK_USED_INVERTED = say(
    "the mask was used the wrong way round: masked_fill(mask, ...) hides the keys a query may see (True = may "
    "attend), and the last query, which sees every key, is left with none (NaN). Fill where the mask is False: "
    "masked_fill(~mask, float('-inf'))",
    "掩码用反了：masked_fill(mask, ...) 遮住的是查询可以看的键（True 表示可以关注），于是能看到所有键的最后一个"
    "查询一个键也不剩（NaN）。应在掩码为 False 的地方填充：masked_fill(~mask, float('-inf'))",
)


def check_attention(attention: Callable[..., torch.Tensor]) -> Verdict:
    """``attention(q, k, v, mask)``: ``softmax(q kᵀ / sqrt(d_k))`` with ``mask`` (True = may attend), times ``v``.

    Shapes ``q, k: (..., T, d_k)``, ``v: (..., T, d_v)``, ``mask: (T, T)`` bool; the result is ``(..., T, d_v)``.
    The reference is ``torch.nn.functional.scaled_dot_product_attention``, the kernel ``workbench.model`` uses.
    """

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        # T != d_k in the first shape, so that scaling by sqrt(T) is told apart from sqrt(d_k)
        shapes = ((1, 4, 8, 8), (2, 3, 7, 16, 16), (5, 4, 4), (2, 6, 8, 12))  # (*batch, T, d_k, d_v)
        for *batch, T, d_k, d_v in shapes:
            q = torch.randn(*batch, T, d_k, generator=g)
            k = torch.randn(*batch, T, d_k, generator=g)
            v = torch.randn(*batch, T, d_v, generator=g)
            mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
            got = _call_keeping_inputs(attention, ["q", "k", "v", "mask"], q, k, v, mask)
            want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            mistakes = {
                say("the 1/sqrt(d_k) scale is missing: divide the scores q·kᵀ by sqrt(d_k) before the softmax",
                    "缺了 1/sqrt(d_k) 的缩放：softmax 之前要把分数 q·kᵀ 除以 sqrt(d_k)"): lambda: (
                    attention_variant(q, k, v, mask, scale=1.0)
                ),
                say("scores were divided by d_k; divide by sqrt(d_k) (the square root of the key size)",
                    "分数除以了 d_k；应除以 sqrt(d_k)（键的维度的平方根）"): lambda: (
                    attention_variant(q, k, v, mask, scale=1.0 / d_k)
                ),
                say("the scores were multiplied by sqrt(d_k); divide them by it: q·kᵀ / sqrt(d_k)",
                    "分数乘上了 sqrt(d_k)；应该除以它：q·kᵀ / sqrt(d_k)"): lambda: (
                    attention_variant(q, k, v, mask, scale=math.sqrt(d_k))
                ),
                say("the scores were divided by sqrt(T), the sequence length; divide by sqrt(d_k), the size of the "
                    "keys (q.shape[-1])",
                    "分数除以了 sqrt(T)，也就是序列长度；应除以 sqrt(d_k)，即键的维度（q.shape[-1]）"): lambda: (
                    attention_variant(q, k, v, mask, scale=1.0 / math.sqrt(T))
                ),
                say("the mask points the wrong way: each query is seeing the future. Rows are queries, columns keys; "
                    "keep j <= i",
                    "掩码方向反了：每个查询都看到了未来。行是查询，列是键；只保留 j <= i"): lambda: (
                    attention_variant(q, k, v, mask.T)
                ),
                say("the mask was not applied: every position sees the whole sequence, future included",
                    "没有用上掩码：每个位置都看到了整个序列，包括未来"): lambda: (
                    attention_variant(q, k, v, torch.ones_like(mask))
                ),
                _MASKED_WITH_ZERO: lambda: attention_variant(q, k, v, mask, fill=0.0),
                _MASK_USED_INVERTED: lambda: attention_variant(q, k, v, ~mask),
                say("softmax over the wrong axis: normalize over the keys (the last axis), so each query's weights "
                    "sum to 1",
                    "softmax 的轴错了：要沿键（最后一个轴）归一化，使每个查询的权重之和为 1"): lambda: (
                    attention_variant(q, k, v, mask, softmax_dim=-2)
                ),
                say("the mask was applied after the softmax, so the kept weights no longer sum to 1: fill masked "
                    "scores with -inf before the softmax",
                    "掩码是在 softmax 之后才用的，留下的权重之和不再是 1：应在 softmax 之前把被遮住的分数填成 -inf"):
                    lambda: attention_variant(q, k, v, mask, mask_after_softmax=True),
                say("the scores compare queries with values (q·vᵀ, as in the article's formula); they compare queries "
                    "with keys: q·kᵀ",
                    "注意力分数拿查询和值比较（q·vᵀ，如文章里的公式）；应该拿查询和键比较：q·kᵀ"): lambda: (
                    attention_variant(q, v, v, mask)
                ),
            }
            nan_hint = say(
                "NaN in the output: usually -inf × 0 (multiplying -inf-filled scores by a 0/1 mask) or a row whose "
                "keys are all masked. Fill masked scores with float('-inf') via masked_fill and let softmax give 0",
                "输出里有 NaN：通常是 -inf × 0（把填了 -inf 的分数再乘上 0/1 掩码），或者某一行的键全被遮住了。"
                "用 masked_fill 把被遮住的分数填成 float('-inf')，让 softmax 给它们 0",
            )
            shape_hint = say("The result has one row per query and the width of v: (..., T, d_v).",
                             "结果每个查询一行，宽度与 v 相同：(..., T, d_v)。")
            worst = max(worst, _compare_tensors(got, want, mistakes, shape_hint=shape_hint, nan_hint=nan_hint))
        return _passed(len(shapes), worst)

    return run_check("attention", body)


# --------------------------------------------------------------------------------------- 04 multi-head


def _heads_reference(x: torch.Tensor, n_head: int) -> torch.Tensor:
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, nh, T, hs)


def check_split_heads(split_heads: Callable[[torch.Tensor, int], torch.Tensor]) -> Verdict:
    """``split_heads(x, n_head)``: ``(B, T, C)`` -> ``(B, n_head, T, C // n_head)``."""

    def body() -> Say:
        g = _fresh_generator()
        shapes = ((2, 5, 12, 3), (1, 7, 16, 4), (3, 1, 8, 8))
        for B, T, C, nh in shapes:
            x = torch.randn(B, T, C, generator=g)
            got = _call_keeping_inputs(split_heads, ["x", "n_head"], x, nh)
            mistakes = {
                say("reshaping straight to (B, n_head, T, head_size) mixes positions into heads: view as "
                    "(B, T, n_head, head_size) first, then swap the T and head axes",
                    "直接 reshape 成 (B, n_head, T, head_size) 会把不同位置混进同一个头：先 view 成 "
                    "(B, T, n_head, head_size)，再交换 T 轴和头的轴"): lambda: x.reshape(B, nh, T, C // nh),
                say("the T and head axes are not swapped: after the view, transpose(1, 2) to get (B, n_head, T, "
                    "head_size)",
                    "没有交换 T 轴和头的轴：view 之后还要 transpose(1, 2)，得到 (B, n_head, T, head_size)"): lambda: (
                    x.view(B, T, nh, C // nh)
                ),
            }
            _compare_tensors(got, _heads_reference(x, nh), mistakes, atol=0.0, rtol=0.0)
        return _passed(len(shapes))

    return run_check("split_heads", body)


def check_merge_heads(merge_heads: Callable[[torch.Tensor], torch.Tensor]) -> Verdict:
    """``merge_heads(y)``: ``(B, n_head, T, head_size)`` -> ``(B, T, n_head * head_size)``, the inverse of split."""

    def body() -> Say:
        g = _fresh_generator()
        shapes = ((2, 3, 5, 4), (1, 4, 7, 4), (3, 8, 1, 2))
        for B, nh, T, hs in shapes:
            y = torch.randn(B, nh, T, hs, generator=g)
            got = _call_keeping_inputs(merge_heads, ["y"], y)
            want = y.transpose(1, 2).reshape(B, T, nh * hs)
            mistakes = {
                say("the heads were reshaped without moving T back in front: transpose(1, 2) first, then reshape to "
                    "(B, T, C)",
                    "reshape 之前没有把 T 轴换回前面：先 transpose(1, 2)，再 reshape 成 (B, T, C)"): lambda: (
                    y.reshape(B, T, nh * hs)
                ),
            }
            shape_hint = say("Expected (B, T, n_head*head_size).", "应为 (B, T, n_head*head_size)。")
            _compare_tensors(got, want, mistakes, atol=0.0, rtol=0.0, shape_hint=shape_hint)
        return _passed(len(shapes))

    return run_check("merge_heads", body)


def multihead_variant(
    attn: Attention,
    x: torch.Tensor,
    *,
    causal: bool = True,
    scale: str = "head",
    fill: float = float("-inf"),
    inverted_mask: bool = False,
    split_transposed: bool = True,
    merge_transposed: bool = True,
    project: bool = True,
) -> torch.Tensor:
    """Multi-head attention from ``attn``'s weights, with switches to plant one mistake at a time."""
    B, T, C = x.shape
    nh, hs = attn.n_head, attn.head_size
    q, k, v = attn.c_attn(x).split(C, dim=2)
    if split_transposed:
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
    else:
        q, k, v = (t.reshape(B, nh, T, hs) for t in (q, k, v))
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool)) if causal else torch.ones(T, T, dtype=torch.bool)
    if inverted_mask:
        mask = ~mask  # masked_fill(mask, -inf): True read as "hide"
    factor = {"head": None, "none": 1.0, "model": 1.0 / math.sqrt(C), "time": 1.0 / math.sqrt(T)}[scale]
    y = attention_variant(q, k, v, mask, scale=factor, fill=fill)
    y = y.transpose(1, 2).reshape(B, T, C) if merge_transposed else y.reshape(B, T, C)
    return attn.c_proj(y) if project else y


MULTIHEAD_MISTAKES: dict[Say, dict[str, Any]] = {  # hint -> the switches of multihead_variant that plant it
    say("the causal mask is missing: each position must only attend to itself and earlier positions",
        "缺了因果掩码：每个位置只能关注它自己和更早的位置"): dict(causal=False),
    say("the scores are not scaled by 1/sqrt(head_size)", "注意力分数没有乘以 1/sqrt(head_size)"): dict(scale="none"),
    say("the scores were scaled by 1/sqrt(n_embd); scale them by 1/sqrt(head_size), the width of one head's keys",
        "注意力分数乘的是 1/sqrt(n_embd)；应乘以 1/sqrt(head_size)，即一个头的键的宽度"): dict(scale="model"),
    say("the scores were scaled by 1/sqrt(T), the sequence length; scale them by 1/sqrt(head_size), the width of "
        "one head's keys",
        "注意力分数乘的是 1/sqrt(T)，T 是序列长度；应乘以 1/sqrt(head_size)，即一个头的键的宽度"): dict(scale="time"),
    _MASKED_WITH_ZERO: dict(fill=0.0),
    _MASK_USED_INVERTED: dict(inverted_mask=True),
    say("heads were split by reshaping straight to (B, n_head, T, head_size): view as (B, T, n_head, head_size), "
        "then transpose(1, 2)",
        "拆分头时直接 reshape 成了 (B, n_head, T, head_size)：应先 view 成 (B, T, n_head, head_size)，再 "
        "transpose(1, 2)"): dict(split_transposed=False),
    say("heads were merged without transposing back: (B, n_head, T, hs) -> transpose(1, 2) -> (B, T, C)",
        "合并头时没有先转置回来：(B, n_head, T, hs) -> transpose(1, 2) -> (B, T, C)"): dict(merge_transposed=False),
    say("the output projection c_proj is missing: the heads' outputs are mixed by c_proj at the end",
        "缺了输出投影 c_proj：各个头的输出最后要经过 c_proj 混合"): dict(project=False),
}


def check_multihead(student_cls: type[nn.Module]) -> Verdict:
    """A causal multi-head attention module, checked against :class:`workbench.model.Attention` with its weights."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        # head_size, sqrt(n_embd) and sqrt(T) all differ in the first case, so each wrong scale is told apart
        cases = ((12, 3, 2, 6), (16, 4, 1, 9), (32, 8, 2, 5), (8, 2, 3, 1))  # (n_embd, n_head, B, T)
        for C, nh, B, T in cases:
            config = GPTConfig(vocab_size=10, block_size=16, n_layer=1, n_head=nh, n_embd=C)
            reference = randomize(Attention(config), g)
            student = _load_student(student_cls, reference, config)
            x = torch.randn(B, T, C, generator=g)
            with torch.enable_grad():  # the plain nn.Linear kernel on both sides, so a faithful copy is bit-exact
                want = reference(x, capture={}).detach()
                got = _call_keeping_inputs(student, ["x"], x)
                got = got.detach() if isinstance(got, torch.Tensor) else got
                mistakes = {
                    hint: lambda planted=planted: multihead_variant(reference, x, **planted)
                    for hint, planted in MULTIHEAD_MISTAKES.items()
                }
                shape_hint = say("Expected (B, T, C).", "应为 (B, T, C)。")
                worst = max(worst, _compare_tensors(got, want, mistakes, atol=1e-6, shape_hint=shape_hint))
        return _passed(len(cases), worst)

    return run_check("MultiHeadAttention", body)


__all__ = [name for name in dir() if name.startswith("check_")]  # what `workbench.checks` re-exports
