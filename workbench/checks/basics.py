"""Checks for Lessons I (01-06): tokens, embeddings, attention, multi-head attention, MLP and LayerNorm, GPT."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.checks.core import (
    Hint,
    Mistakes,
    Say,
    Verdict,
    _call_keeping_inputs,
    _close,
    _compare_tensors,
    _fresh_generator,
    _load_student,
    _matching_mistake,
    _passed,
    _randomize,
    run_check,
    say,
)
from workbench.model import GPT, MLP, Attention, Block, GPTConfig

# ------------------------------------------------------------------------------------------ 01 tokens


def _count_pairs_reference(ids: list[int]) -> dict[tuple[int, int], int]:
    return dict(Counter(zip(ids, ids[1:])))


def _merge_reference(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _random_ids(g: torch.Generator, length: int, vocab: int) -> list[int]:
    return torch.randint(vocab, (length,), generator=g).tolist()


def check_count_pairs(count_pairs: Callable[[list[int]], dict[tuple[int, int], int]]) -> Verdict:
    """``count_pairs(ids)``: how often each adjacent pair ``(ids[i], ids[i+1])`` occurs."""

    def body() -> Say:
        g = _fresh_generator()
        # [7, 7, 7, 7] first: there the known mistakes give three different counts of (7, 7) (4, 2 and 1), where
        # on random ids two of them can agree
        cases = [[7, 7, 7, 7]] + [_random_ids(g, n, v) for n, v in ((12, 4), (40, 6), (2, 3), (1, 3))]
        for ids in cases:
            got = _call_keeping_inputs(count_pairs, ["ids"], ids)
            if not isinstance(got, dict):
                raise Hint(say(f"return a dict mapping (a, b) -> count, got {type(got).__name__}",
                               f"请返回一个把 (a, b) 映射到次数的 dict，你返回的是 {type(got).__name__}"))
            want = _count_pairs_reference(ids)
            if dict(got) != want:
                mistakes = {
                    say("a pair wraps around from the last id to the first: pairs are (ids[i], ids[i+1]) only",
                        "多出一个从最后一个 id 绕回第一个 id 的词对：词对只有 (ids[i], ids[i+1])"): lambda: (
                        _count_pairs_reference(ids + ids[:1])
                    ),
                    say("the last pair is missing: an off-by-one in the loop's range",
                        "漏了最后一个词对：循环的范围差了一位"): lambda: _count_pairs_reference(ids[:-1]),
                    say("each pair was counted once: add 1 every time it occurs (with [7, 7, 7, 7], (7, 7) occurs 3 "
                        "times)",
                        "每个词对只记了一次：它每出现一次都要加 1（[7, 7, 7, 7] 里 (7, 7) 出现了 3 次）"): lambda: (
                        dict.fromkeys(want, 1)
                    ),
                }
                hint = _matching_mistake(dict(got), mistakes, lambda a, b: a == b)
                raise Hint(hint or say(f"for ids={ids} you returned {dict(got)}, expected {want}",
                                       f"ids={ids} 时你返回了 {dict(got)}，应为 {want}"))
        return _passed(len(cases))

    return run_check("count_pairs", body)


def check_merge(merge: Callable[[list[int], tuple[int, int], int], list[int]]) -> Verdict:
    """``merge(ids, pair, new_id)``: replace every non-overlapping occurrence of ``pair``, left to right."""

    def first_only(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
        for i in range(len(ids) - 1):
            if (ids[i], ids[i + 1]) == pair:
                return ids[:i] + [new_id] + ids[i + 2 :]
        return list(ids)

    def overlapping(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
        out = []
        for i in range(len(ids)):
            if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                out.append(new_id)
            elif i == 0 or (ids[i - 1], ids[i]) != pair:
                out.append(ids[i])
        return out

    def body() -> Say:
        g = _fresh_generator()
        cases = [(_random_ids(g, n, 4), 100) for n in (10, 25)] + [([7, 7, 7], 9), ([1, 2, 3, 1, 2], 8)]
        for ids, new_id in cases:
            pair = (ids[0], ids[1])  # occurs at least once
            got = _call_keeping_inputs(merge, ["ids", "pair", "new_id"], ids, pair, new_id)
            if got is None:
                raise Hint(say("merge returned None: return the new list (and leave `ids` unchanged)",
                               "merge 返回了 None：请返回新的列表（并且不要改动 `ids`）"))
            want = _merge_reference(ids, pair, new_id)
            if list(got) != want:
                mistakes = {
                    say("only the first occurrence was replaced: keep going to the end of the list",
                        "只替换了第一次出现的位置：要一直处理到列表末尾"): lambda: first_only(ids, pair, new_id),
                    say("overlapping pairs were both merged: after a merge, skip past both ids "
                        "([7, 7, 7] with pair (7, 7) becomes [new, 7])",
                        "重叠的词对都被合并了：合并之后要跳过这两个 id（[7, 7, 7] 按词对 (7, 7) 合并应得 [new, 7]）"): (
                        lambda: overlapping(ids, pair, new_id)
                    ),
                    say("the last id went missing: when the loop stops one short of the end, append the final id",
                        "最后一个 id 丢了：循环在末尾前一位停下时，要把最后一个 id 补上"): lambda: want[:-1],
                }
                hint = _matching_mistake(list(got), mistakes, lambda a, b: a == b)
                raise Hint(hint or say(f"merge({ids}, {pair}, {new_id}) returned {list(got)}, expected {want}",
                                       f"merge({ids}, {pair}, {new_id}) 返回了 {list(got)}，应为 {want}"))
        return _passed(len(cases))

    return run_check("merge", body)


# -------------------------------------------------------------------------------------- 02 embeddings


def check_embed(embed: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> Verdict:
    """``embed(idx, wte, wpe)``: token embeddings plus position embeddings, ``(B, T, C)``.

    The reference is what :class:`workbench.model.GPT` feeds its first block (``resid_pre`` of layer 0).
    """

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        shapes = ((2, 5, 12, 16, 8), (1, 16, 16, 16, 12), (3, 1, 20, 24, 4))  # vocab <= block: wpe[idx] runs
        for B, T, vocab, block, C in shapes:
            model = GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=1, n_head=2, n_embd=C)).eval()
            wte, wpe = model.transformer.wte.weight.detach(), model.transformer.wpe.weight.detach()
            with torch.no_grad():
                wte.copy_(torch.randn(wte.shape, generator=g))
                wpe.copy_(torch.randn(wpe.shape, generator=g))
                idx = torch.randint(vocab, (B, T), generator=g)
                want = model.run_with_trace(idx)[1].resid_pre[0]
            got = _call_keeping_inputs(embed, ["idx", "wte", "wpe"], idx, wte.clone(), wpe.clone())
            mistakes = {
                say("the position embeddings are missing: add wpe for positions 0..T-1",
                    "缺少位置嵌入：加上位置 0..T-1 的 wpe"): lambda: wte[idx],
                say("positions were looked up by token id: index wpe with the positions 0..T-1, not with idx",
                    "位置嵌入是按词元 id 查的：应该用位置 0..T-1 去索引 wpe，而不是用 idx"): lambda: (
                    wte[idx] + wpe[idx]
                ),
                say("positions are off by one: the first token is at position 0",
                    "位置差了一位：第一个词元在位置 0"): lambda: wte[idx] + wpe[1 : T + 1],
                say("token and position embeddings are combined by adding them, not multiplying",
                    "词元嵌入和位置嵌入要相加，而不是相乘"): lambda: wte[idx] * wpe[:T],
            }
            shape_hint = say("One C-vector per (batch, position).", "每个（批次, 位置）对应一个长度为 C 的向量。")
            worst = max(worst, _compare_tensors(got, want, mistakes, shape_hint=shape_hint))
        return _passed(len(shapes), worst)

    return run_check("embed", body)


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


def _attention_variant(
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
                    _attention_variant(q, k, v, mask, scale=1.0)
                ),
                say("scores were divided by d_k; divide by sqrt(d_k) (the square root of the key size)",
                    "分数除以了 d_k；应除以 sqrt(d_k)（键的维度的平方根）"): lambda: (
                    _attention_variant(q, k, v, mask, scale=1.0 / d_k)
                ),
                say("the scores were multiplied by sqrt(d_k); divide them by it: q·kᵀ / sqrt(d_k)",
                    "分数乘上了 sqrt(d_k)；应该除以它：q·kᵀ / sqrt(d_k)"): lambda: (
                    _attention_variant(q, k, v, mask, scale=math.sqrt(d_k))
                ),
                say("the scores were divided by sqrt(T), the sequence length; divide by sqrt(d_k), the size of the "
                    "keys (q.shape[-1])",
                    "分数除以了 sqrt(T)，也就是序列长度；应除以 sqrt(d_k)，即键的维度（q.shape[-1]）"): lambda: (
                    _attention_variant(q, k, v, mask, scale=1.0 / math.sqrt(T))
                ),
                say("the mask points the wrong way: each query is seeing the future. Rows are queries, columns keys; "
                    "keep j <= i",
                    "掩码方向反了：每个查询都看到了未来。行是查询，列是键；只保留 j <= i"): lambda: (
                    _attention_variant(q, k, v, mask.T)
                ),
                say("the mask was not applied: every position sees the whole sequence, future included",
                    "没有用上掩码：每个位置都看到了整个序列，包括未来"): lambda: (
                    _attention_variant(q, k, v, torch.ones_like(mask))
                ),
                _MASKED_WITH_ZERO: lambda: _attention_variant(q, k, v, mask, fill=0.0),
                _MASK_USED_INVERTED: lambda: _attention_variant(q, k, v, ~mask),
                say("softmax over the wrong axis: normalize over the keys (the last axis), so each query's weights "
                    "sum to 1",
                    "softmax 的轴错了：要沿键（最后一个轴）归一化，使每个查询的权重之和为 1"): lambda: (
                    _attention_variant(q, k, v, mask, softmax_dim=-2)
                ),
                say("the mask was applied after the softmax, so the kept weights no longer sum to 1: fill masked "
                    "scores with -inf before the softmax",
                    "掩码是在 softmax 之后才用的，留下的权重之和不再是 1：应在 softmax 之前把被遮住的分数填成 -inf"):
                    lambda: _attention_variant(q, k, v, mask, mask_after_softmax=True),
                say("the scores compare queries with values (q·vᵀ, as in the article's formula); they compare queries "
                    "with keys: q·kᵀ",
                    "注意力分数拿查询和值比较（q·vᵀ，如文章里的公式）；应该拿查询和键比较：q·kᵀ"): lambda: (
                    _attention_variant(q, v, v, mask)
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


def _multihead_variant(
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
    y = _attention_variant(q, k, v, mask, scale=factor, fill=fill)
    y = y.transpose(1, 2).reshape(B, T, C) if merge_transposed else y.reshape(B, T, C)
    return attn.c_proj(y) if project else y


_MULTIHEAD_MISTAKES: dict[Say, dict[str, Any]] = {  # hint -> the switches of _multihead_variant that plant it
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
            reference = _randomize(Attention(config), g)
            student = _load_student(student_cls, reference, config)
            x = torch.randn(B, T, C, generator=g)
            with torch.enable_grad():  # the plain nn.Linear kernel on both sides, so a faithful copy is bit-exact
                want = reference(x, capture={}).detach()
                got = _call_keeping_inputs(student, ["x"], x)
                got = got.detach() if isinstance(got, torch.Tensor) else got
                mistakes = {
                    hint: lambda planted=planted: _multihead_variant(reference, x, **planted)
                    for hint, planted in _MULTIHEAD_MISTAKES.items()
                }
                shape_hint = say("Expected (B, T, C).", "应为 (B, T, C)。")
                worst = max(worst, _compare_tensors(got, want, mistakes, atol=1e-6, shape_hint=shape_hint))
        return _passed(len(cases), worst)

    return run_check("MultiHeadAttention", body)


# ------------------------------------------------------------------------------ 05 MLP and LayerNorm


def _gelu_reference() -> nn.Module:
    return MLP(GPTConfig(vocab_size=4, block_size=4, n_layer=1, n_head=1, n_embd=4)).act  # GPT-2's tanh GELU


def check_gelu(gelu: Callable[[torch.Tensor], torch.Tensor]) -> Verdict:
    """``gelu(x)``: GPT-2's tanh approximation of GELU."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        shapes = ((100,), (4, 25), (2, 3, 16))
        for shape in shapes:
            x = torch.randn(shape, generator=g) * 3
            got = _call_keeping_inputs(gelu, ["x"], x)
            want = _gelu_reference()(x)
            mistakes = {
                say("this is ReLU (the article's FFN); GPT-2 uses GELU, which is smooth and slightly negative below 0",
                    "这是 ReLU（文章里 FFN 用的）；GPT-2 用的是 GELU，它处处光滑，在 0 以下略微为负"): lambda: (
                    torch.relu(x)
                ),
                say("this is the exact GELU x·Φ(x) with erf; GPT-2 uses the tanh approximation "
                    "0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))",
                    "这是用 erf 算的精确 GELU x·Φ(x)；GPT-2 用的是 tanh 近似 "
                    "0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))"): lambda: F.gelu(x),
                say("this is the sigmoid approximation x·σ(1.702x); GPT-2 uses the tanh one",
                    "这是 sigmoid 近似 x·σ(1.702x)；GPT-2 用的是 tanh 近似"): lambda: x * torch.sigmoid(1.702 * x),
                say("the factor 0.5 in front is missing: 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))",
                    "漏了前面的系数 0.5：0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))"): lambda: 2 * want,
            }
            worst = max(worst, _compare_tensors(got, want, mistakes))
        return _passed(len(shapes), worst)

    return run_check("gelu", body)


def check_layer_norm(layer_norm: Callable[..., torch.Tensor]) -> Verdict:
    """``layer_norm(x, weight, bias, eps=1e-5)`` over the last axis, as ``torch.nn.LayerNorm`` in every Block."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        cases = ((2, 5, 8, 1.0), (3, 16, 0.01), (4, 4, 6, 2.0))  # (*shape, scale of x)
        eps = 1e-5
        for *shape, scale in cases:
            x = torch.randn(*shape, generator=g) * scale + 0.5 * scale
            C = shape[-1]
            ln = Block(GPTConfig(vocab_size=4, block_size=4, n_layer=1, n_head=1, n_embd=C)).ln_1
            with torch.no_grad():
                ln.weight.copy_(1 + 0.3 * torch.randn(C, generator=g))
                ln.bias.copy_(0.3 * torch.randn(C, generator=g))
            w, b = ln.weight.detach(), ln.bias.detach()
            got = _call_keeping_inputs(layer_norm, ["x", "weight", "bias"], x, w.clone(), b.clone())
            mean = x.mean(-1, keepdim=True)
            var = x.var(-1, keepdim=True, unbiased=False)
            mistakes = {
                say("the variance is the unbiased one (divides by C-1): LayerNorm divides by C "
                    "(var(unbiased=False) or ((x - mean)**2).mean(-1))",
                    "用的是无偏方差（除以 C-1）：层归一化除以 C（var(unbiased=False) 或 ((x - mean)**2).mean(-1)）"):
                    lambda: (x - mean) / torch.sqrt(x.var(-1, keepdim=True, unbiased=True) + eps) * w + b,
                say("eps is added outside the square root: divide by sqrt(var + eps)",
                    "eps 加在了平方根外面：应除以 sqrt(var + eps)"): lambda: (x - mean) / (torch.sqrt(var) + eps) * w
                + b,
                say("the mean is not subtracted: center x first", "没有减去均值：先把 x 中心化"): lambda: (
                    x / torch.sqrt(var + eps) * w + b
                ),
                say("normalized over the wrong axis: LayerNorm works on each position's own vector, the last axis",
                    "归一化的轴错了：层归一化作用在每个位置自己的向量上，也就是最后一个轴"): lambda: (
                    F.layer_norm(x.transpose(-1, -2), (x.shape[-2],)).transpose(-1, -2) * w + b
                ),
                say("weight and bias are not applied: multiply by weight, then add bias",
                    "没有用上 weight 和 bias：先乘以 weight，再加上 bias"): lambda: (x - mean) / torch.sqrt(var + eps),
            }
            worst = max(worst, _compare_tensors(got, ln(x).detach(), mistakes, atol=1e-5, rtol=1e-4))
        return _passed(len(cases), worst)

    return run_check("layer_norm", body)


def check_mlp(student_cls: type[nn.Module]) -> Verdict:
    """GPT-2's MLP module, checked against :class:`workbench.model.MLP` with the same weights."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        cases = ((8, 2, 5), (16, 1, 3), (24, 3, 1))  # (n_embd, B, T)
        for C, B, T in cases:
            config = GPTConfig(vocab_size=4, block_size=8, n_layer=1, n_head=1, n_embd=C)
            reference = _randomize(MLP(config), g)
            student = _load_student(student_cls, reference, config)
            x = torch.randn(B, T, C, generator=g)
            with torch.enable_grad():
                want = reference(x).detach()
                got = _call_keeping_inputs(student, ["x"], x)
                got = got.detach() if isinstance(got, torch.Tensor) else got
                hidden = reference.c_fc(x)
                mistakes = {
                    say("ReLU instead of GELU (the article's FFN); GPT-2 uses the tanh GELU",
                        "用了 ReLU 而不是 GELU（文章里 FFN 的做法）；GPT-2 用的是 tanh 近似的 GELU"): lambda: (
                        reference.c_proj(torch.relu(hidden))
                    ),
                    say("exact (erf) GELU; GPT-2 uses the tanh approximation (nn.GELU(approximate='tanh'))",
                        "用的是精确（erf）GELU；GPT-2 用的是 tanh 近似（nn.GELU(approximate='tanh')）"): lambda: (
                        reference.c_proj(F.gelu(hidden))
                    ),
                    say("the activation is missing: without it two Linear layers collapse into one",
                        "缺了激活函数：没有它，两个 Linear 层就合并成了一个"): lambda: reference.c_proj(hidden),
                }
                shape_hint = say("Expected (B, T, C).", "应为 (B, T, C)。")
                worst = max(worst, _compare_tensors(got, want, mistakes, shape_hint=shape_hint))
        return _passed(len(cases), worst)

    return run_check("MLP", body)


# ---------------------------------------------------------------------------------------- 06 assemble


def check_block(student_cls: type[nn.Module]) -> Verdict:
    """A pre-LN transformer block, checked against :class:`workbench.model.Block` with the same weights."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        cases = ((16, 4, 2, 6), (24, 3, 1, 10))  # (n_embd, n_head, B, T)
        for C, nh, B, T in cases:
            config = GPTConfig(vocab_size=4, block_size=16, n_layer=1, n_head=nh, n_embd=C)
            reference = _randomize(Block(config), g)
            student = _load_student(student_cls, reference, config)
            x = torch.randn(B, T, C, generator=g)
            with torch.no_grad():
                want = reference(x)
                got = _call_keeping_inputs(student, ["x"], x)
                r = reference

                def post_ln() -> torch.Tensor:
                    h = r.ln_1(x + r.attn(x))
                    return r.ln_2(h + r.mlp(h))

                def residual_from_normalized() -> torch.Tensor:
                    h = r.ln_1(x)
                    h = h + r.attn(h)
                    h2 = r.ln_2(h)
                    return h2 + r.mlp(h2)

                def no_residual() -> torch.Tensor:
                    return r.mlp(r.ln_2(r.attn(r.ln_1(x))))

                def ln_1_twice() -> torch.Tensor:
                    h = x + r.attn(r.ln_1(x))
                    return h + r.mlp(r.ln_1(h))

                mistakes = {
                    say("this is post-LN (the original Transformer, and the article): GPT-2 is pre-LN, "
                        "x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))",
                        "这是 post-LN（原始 Transformer 和文章里的写法）：GPT-2 是 pre-LN，"
                        "x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))"): post_ln,
                    say("the residual carries ln_1(x) instead of x: add the sublayer's output to the un-normalized x",
                        "残差流里传的是 ln_1(x) 而不是 x：子层的输出要加到未归一化的 x 上"): residual_from_normalized,
                    say("the residual connections are missing: each sublayer's output is added to x",
                        "缺了残差连接：每个子层的输出都要加回 x"): no_residual,
                    say("ln_1 was used before the MLP too: each sublayer has its own LayerNorm, "
                        "x = x + mlp(ln_2(x))",
                        "MLP 之前也用了 ln_1：每个子层有自己的层归一化，x = x + mlp(ln_2(x))"): ln_1_twice,
                }
                worst = max(worst, _compare_tensors(got, want, mistakes, atol=1e-5, rtol=1e-4))
        return _passed(len(cases), worst)

    return run_check("Block", body)


def _random_hf_gpt2(g: torch.Generator) -> nn.Module:
    """A small ``transformers.GPT2LMHeadModel`` with random weights, built offline."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0,
        attn_implementation="eager",
    )
    return _randomize(GPT2LMHeadModel(config), g, std=0.1)


def check_gpt(student_cls: type[nn.Module], hf_model: nn.Module | None = None) -> Verdict:
    """The student's GPT, given HF-format weights, must give the same logits as Hugging Face's GPT-2.

    ``hf_model`` is a ``transformers.GPT2LMHeadModel`` (the real "gpt2" when it is available); by default a small
    random one is built offline. Its weights reach the student's model through :func:`workbench.hf.from_hf` (which
    transposes HF's Conv1D matrices), so the student's parameter names must be GPT-2's.
    """

    def body() -> Say:
        g = _fresh_generator()
        hf = (hf_model if hf_model is not None else _random_hf_gpt2(g)).eval()
        reference = GPT.from_hf(hf).eval()
        student = _load_student(student_cls, reference, reference.config)
        worst = 0.0
        lengths = (1, 7, min(20, reference.config.block_size))
        for T in lengths:
            idx = torch.randint(reference.config.vocab_size, (2, T), generator=g)
            with torch.no_grad():
                want = hf(idx).logits
                got = _call_keeping_inputs(student, ["idx"], idx)
                t = reference.transformer

                def without_final_ln() -> torch.Tensor:
                    x = t.wte(idx) + t.wpe(torch.arange(T))
                    for block in t.h:
                        x = block(x)
                    return reference.lm_head(x)

                def without_positions() -> torch.Tensor:
                    x = t.wte(idx)
                    for block in t.h:
                        x = block(x)
                    return reference.lm_head(t.ln_f(x))

                mistakes = {
                    say("the final LayerNorm ln_f is missing: GPT-2 normalizes once more before the unembedding",
                        "缺了最后的层归一化 ln_f：GPT-2 在反嵌入之前还要再归一化一次"): without_final_ln,
                    say("the position embeddings are missing: x = wte(idx) + wpe(positions)",
                        "缺少位置嵌入：x = wte(idx) + wpe(positions)"): without_positions,
                }
                shape_hint = say("Expected logits (B, T, vocab_size).", "logits 应为 (B, T, vocab_size)。")
                worst = max(worst, _compare_tensors(got, want, mistakes, atol=1e-4, rtol=1e-4, shape_hint=shape_hint))
        return say(
            f"same logits as Hugging Face's GPT2LMHeadModel on {len(lengths)} inputs (max difference {worst:.1e})",
            f"在 {len(lengths)} 组输入上与 Hugging Face 的 GPT2LMHeadModel 给出相同的 logits（最大差值 {worst:.1e}）",
        )

    return run_check("GPT", body)


def check_count_params(count_params: Callable[[int, int, int, int], int]) -> Verdict:
    """``count_params(n_layer, n_embd, vocab_size, block_size)``: parameters of a GPT-2 (tied embeddings)."""

    def body() -> Say:
        configs = ((1, 8, 10, 4), (2, 16, 50, 12), (3, 12, 7, 5))
        for L, C, V, P in configs:
            got = count_params(L, C, V, P)
            want = GPT(GPTConfig(vocab_size=V, block_size=P, n_layer=L, n_head=2, n_embd=C)).num_params()
            if not isinstance(got, int) or isinstance(got, bool):
                raise Hint(say(f"return an int, got {type(got).__name__}",
                               f"请返回 int，你返回的是 {type(got).__name__}"))
            if got == want:
                continue
            linear_biases = L * (3 * C + C + 4 * C + C)  # c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj
            mistakes = {
                say("the output matrix was counted separately: GPT-2 ties lm_head to wte, so count it once",
                    "输出矩阵被单独算了一遍：GPT-2 的 lm_head 与 wte 共享权重，只算一次"): want + V * C,
                say("the position embeddings (block_size x n_embd) are missing",
                    "漏了位置嵌入（block_size x n_embd）"): want - P * C,
                say("the LayerNorms are missing: 2 per block and one final, each with a weight and a bias of size C",
                    "漏了层归一化：每个块 2 个，最后还有 1 个，各有大小为 C 的 weight 和 bias"): want - (2 * L + 1) * 2 * C,
                say("the final LayerNorm ln_f is missing: one more weight and bias of size C after the last block",
                    "漏了最后的层归一化 ln_f：最后一个块之后还有一组大小为 C 的 weight 和 bias"): want - 2 * C,
                say("the biases are missing: every Linear in GPT-2 has one",
                    "漏了偏置：GPT-2 的每个 Linear 都有偏置"): want - linear_biases,
            }
            hint = next((h for h, n in mistakes.items() if n == got), None)
            raise Hint(hint or say(
                f"count_params{(L, C, V, P)} = {got}, expected {want} (off by {got - want:+d})",
                f"count_params{(L, C, V, P)} = {got}，应为 {want}（相差 {got - want:+d}）",
            ))
        n = len(configs)
        return say(f"correct for {n} configurations", f"{n} 种配置全部正确")

    return run_check("count_params", body)


__all__ = [name for name in dir() if name.startswith("check_")]  # what `workbench.checks` re-exports
