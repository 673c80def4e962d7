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
    _call_keeping_inputs,
    _close,
    _compare_tensors,
    _fresh_generator,
    _load_student,
    _matching_mistake,
    _passed,
    _randomize,
    run_check,
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


def check_count_pairs(count_pairs: Callable[[list[int]], dict[tuple[int, int], int]]) -> bool:
    """``count_pairs(ids)``: how often each adjacent pair ``(ids[i], ids[i+1])`` occurs."""

    def body() -> str:
        g = _fresh_generator()
        cases = [_random_ids(g, n, v) for n, v in ((12, 4), (40, 6), (2, 3), (1, 3))] + [[7, 7, 7, 7]]
        for ids in cases:
            got = _call_keeping_inputs(count_pairs, ["ids"], ids)
            if not isinstance(got, dict):
                raise Hint(f"return a dict mapping (a, b) -> count, got {type(got).__name__}")
            want = _count_pairs_reference(ids)
            if dict(got) != want:
                mistakes = {
                    "a pair wraps around from the last id to the first: pairs are (ids[i], ids[i+1]) only": lambda: (
                        _count_pairs_reference(ids + ids[:1])
                    ),
                    "the last pair is missing: an off-by-one in the loop's range": lambda: _count_pairs_reference(
                        ids[:-1]
                    ),
                }
                hint = _matching_mistake(dict(got), mistakes, lambda a, b: a == b)
                raise Hint(hint or f"for ids={ids} you returned {dict(got)}, expected {want}")
        return _passed(len(cases))

    return run_check("count_pairs", body)


def check_merge(merge: Callable[[list[int], tuple[int, int], int], list[int]]) -> bool:
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

    def body() -> str:
        g = _fresh_generator()
        cases = [(_random_ids(g, n, 4), 100) for n in (10, 25)] + [([7, 7, 7], 9), ([1, 2, 3, 1, 2], 8)]
        for ids, new_id in cases:
            pair = (ids[0], ids[1])  # occurs at least once
            got = _call_keeping_inputs(merge, ["ids", "pair", "new_id"], ids, pair, new_id)
            if got is None:
                raise Hint("merge returned None: return the new list (and leave `ids` unchanged)")
            want = _merge_reference(ids, pair, new_id)
            if list(got) != want:
                mistakes = {
                    "only the first occurrence was replaced: keep going to the end of the list": lambda: first_only(
                        ids, pair, new_id
                    ),
                    "overlapping pairs were both merged: after a merge, skip past both ids "
                    "([7, 7, 7] with pair (7, 7) becomes [new, 7])": lambda: overlapping(ids, pair, new_id),
                    "the last id went missing: when the loop stops one short of the end, append the final id": (
                        lambda: want[:-1]
                    ),
                }
                hint = _matching_mistake(list(got), mistakes, lambda a, b: a == b)
                raise Hint(hint or f"merge({ids}, {pair}, {new_id}) returned {list(got)}, expected {want}")
        return _passed(len(cases))

    return run_check("merge", body)


# -------------------------------------------------------------------------------------- 02 embeddings


def check_embed(embed: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> bool:
    """``embed(idx, wte, wpe)``: token embeddings plus position embeddings, ``(B, T, C)``.

    The reference is what :class:`workbench.model.GPT` feeds its first block (``resid_pre`` of layer 0).
    """

    def body() -> str:
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
                "the position embeddings are missing: add wpe for positions 0..T-1": lambda: wte[idx],
                "positions were looked up by token id: index wpe with the positions 0..T-1, not with idx": lambda: (
                    wte[idx] + wpe[idx]
                ),
                "positions are off by one: the first token is at position 0": lambda: wte[idx] + wpe[1 : T + 1],
                "token and position embeddings are combined by adding them, not multiplying": lambda: (
                    wte[idx] * wpe[:T]
                ),
            }
            worst = max(worst, _compare_tensors(got, want, mistakes, shape_hint="One C-vector per (batch, position)."))
        return _passed(len(shapes), worst)

    return run_check("embed", body)


# --------------------------------------------------------------------------------------- 03 attention


def _softmax_input(g: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """Random scores with a large row (overflows a naive exp) and some -inf (masked) entries."""
    x = torch.randn(shape, generator=g) * 3
    x[..., 0, :] = x[..., 0, :] * 10 + 1000.0
    x[..., -1, 1:] = float("-inf")
    return x


def check_softmax(softmax: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """``softmax(x)`` over the last axis, stable for large scores, 0 for ``-inf`` scores."""

    def body() -> str:
        g = _fresh_generator()
        worst = 0.0
        shapes = ((4, 4), (2, 3, 5), (2, 6, 6))
        for shape in shapes:
            x = _softmax_input(g, shape)
            got = _call_keeping_inputs(softmax, ["x"], x)
            want = torch.softmax(x, dim=-1)
            mistakes = {
                "softmax over the wrong axis: normalize over the last axis, so each row sums to 1": lambda: (
                    torch.softmax(x, dim=-2)
                ),
                "softmax over the first axis: normalize over the last axis (dim=-1)": lambda: torch.softmax(x, dim=0),
                "the rows do not sum to 1: divide exp(x) by its sum over the last axis": lambda: torch.exp(
                    x - x.amax(-1, keepdim=True)
                ),
                "the sum was taken without keepdim=True, so broadcasting divided by other rows' sums": lambda: (
                    torch.exp(x - x.amax(-1, keepdim=True)) / torch.exp(x - x.amax(-1, keepdim=True)).sum(-1)
                ),
            }
            nan_hint = (
                "NaN in the output: exp(1000) overflows to inf in float32 and inf/inf is NaN. Subtract each row's "
                "maximum before exp (softmax does not change when a constant is subtracted from a row)"
            )
            worst = max(worst, _compare_tensors(got, want, mistakes, nan_hint=nan_hint))
        return _passed(len(shapes), worst)

    return run_check("softmax", body)


def check_causal_mask(causal_mask: Callable[[int], torch.Tensor]) -> bool:
    """``causal_mask(T)``: a bool ``(T, T)`` tensor, True where query row i may look at key column j (j <= i)."""

    def body() -> str:
        sizes = (1, 4, 9)
        for T in sizes:
            got = causal_mask(T)
            want = Attention(GPTConfig(block_size=T, n_layer=1, n_head=1, n_embd=4)).causal_mask
            if not isinstance(got, torch.Tensor):
                raise Hint(f"return a torch.Tensor, got {type(got).__name__}")
            if got.shape != want.shape:
                raise Hint(f"shape {tuple(got.shape)}, expected ({T}, {T}): one row per query, one column per key")
            if got.dtype != torch.bool:
                raise Hint(f"dtype {got.dtype}: return a bool tensor (True = this query may look at this key)")
            if not torch.equal(got, want):
                mistakes = {
                    "the mask points the wrong way: rows are queries, columns are keys, and a query may look at "
                    "itself and the past (the lower triangle), not the future": lambda: want.T,
                    "the diagonal is missing: a token may attend to itself (key j == query i is allowed)": lambda: (
                        torch.tril(want, diagonal=-1)
                    ),
                    "True marks what is hidden here; in this course True means 'may attend' (invert the mask)": (
                        lambda: ~want
                    ),
                }
                hint = _matching_mistake(got, mistakes, torch.equal)
                raise Hint(hint or f"for T={T} got\n{got.int()}\nexpected\n{want.int()}")
        return f"correct for T in {sizes}"

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
) -> torch.Tensor:
    """Scaled dot-product attention written out, with switches to plant one mistake at a time."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., Tq, Tk)
    if not mask_after_softmax:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=softmax_dim)
    if mask_after_softmax:
        weights = weights * mask
    return weights @ v


def check_attention(attention: Callable[..., torch.Tensor]) -> bool:
    """``attention(q, k, v, mask)``: ``softmax(q kᵀ / sqrt(d_k))`` with ``mask`` (True = may attend), times ``v``.

    Shapes ``q, k: (..., T, d_k)``, ``v: (..., T, d_v)``, ``mask: (T, T)`` bool; the result is ``(..., T, d_v)``.
    The reference is ``torch.nn.functional.scaled_dot_product_attention``, the kernel ``workbench.model`` uses.
    """

    def body() -> str:
        g = _fresh_generator()
        worst = 0.0
        shapes = ((1, 4, 8, 8), (2, 3, 7, 16, 16), (5, 4, 4), (2, 6, 8, 12))  # (*batch, T, d_k, d_v)
        for *batch, T, d_k, d_v in shapes:
            q = torch.randn(*batch, T, d_k, generator=g)
            k = torch.randn(*batch, T, d_k, generator=g)
            v = torch.randn(*batch, T, d_v, generator=g)
            mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
            got = _call_keeping_inputs(attention, ["q", "k", "v", "mask"], q, k, v, mask)
            want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            mistakes = {
                "the 1/sqrt(d_k) scale is missing: divide the scores q·kᵀ by sqrt(d_k) before the softmax": lambda: (
                    _attention_variant(q, k, v, mask, scale=1.0)
                ),
                "scores were divided by d_k; divide by sqrt(d_k) (the square root of the key size)": lambda: (
                    _attention_variant(q, k, v, mask, scale=1.0 / d_k)
                ),
                "the mask points the wrong way: each query is seeing the future. Rows are queries, columns keys; "
                "keep j <= i": lambda: _attention_variant(q, k, v, mask.T),
                "the mask was not applied: every position sees the whole sequence, future included": lambda: (
                    _attention_variant(q, k, v, torch.ones_like(mask))
                ),
                "softmax over the wrong axis: normalize over the keys (the last axis), so each query's weights "
                "sum to 1": lambda: _attention_variant(q, k, v, mask, softmax_dim=-2),
                "the mask was applied after the softmax, so the kept weights no longer sum to 1: fill masked "
                "scores with -inf before the softmax": lambda: (
                    _attention_variant(q, k, v, mask, mask_after_softmax=True)
                ),
                "the scores compare queries with values (q·vᵀ, as in the article's formula); they compare queries "
                "with keys: q·kᵀ": lambda: _attention_variant(q, v, v, mask),
            }
            nan_hint = (
                "NaN in the output: usually -inf × 0 (multiplying -inf-filled scores by a 0/1 mask) or a row whose "
                "keys are all masked. Fill masked scores with float('-inf') via masked_fill and let softmax give 0"
            )
            shape_hint = "The result has one row per query and the width of v: (..., T, d_v)."
            worst = max(worst, _compare_tensors(got, want, mistakes, shape_hint=shape_hint, nan_hint=nan_hint))
        return _passed(len(shapes), worst)

    return run_check("attention", body)


# --------------------------------------------------------------------------------------- 04 multi-head


def _heads_reference(x: torch.Tensor, n_head: int) -> torch.Tensor:
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, nh, T, hs)


def check_split_heads(split_heads: Callable[[torch.Tensor, int], torch.Tensor]) -> bool:
    """``split_heads(x, n_head)``: ``(B, T, C)`` -> ``(B, n_head, T, C // n_head)``."""

    def body() -> str:
        g = _fresh_generator()
        shapes = ((2, 5, 12, 3), (1, 7, 16, 4), (3, 1, 8, 8))
        for B, T, C, nh in shapes:
            x = torch.randn(B, T, C, generator=g)
            got = _call_keeping_inputs(split_heads, ["x", "n_head"], x, nh)
            mistakes = {
                "reshaping straight to (B, n_head, T, head_size) mixes positions into heads: view as "
                "(B, T, n_head, head_size) first, then swap the T and head axes": lambda: x.reshape(B, nh, T, C // nh),
                "the T and head axes are not swapped: after the view, transpose(1, 2) to get (B, n_head, T, "
                "head_size)": lambda: x.view(B, T, nh, C // nh),
            }
            _compare_tensors(got, _heads_reference(x, nh), mistakes, atol=0.0, rtol=0.0)
        return _passed(len(shapes))

    return run_check("split_heads", body)


def check_merge_heads(merge_heads: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """``merge_heads(y)``: ``(B, n_head, T, head_size)`` -> ``(B, T, n_head * head_size)``, the inverse of split."""

    def body() -> str:
        g = _fresh_generator()
        shapes = ((2, 3, 5, 4), (1, 4, 7, 4), (3, 8, 1, 2))
        for B, nh, T, hs in shapes:
            y = torch.randn(B, nh, T, hs, generator=g)
            got = _call_keeping_inputs(merge_heads, ["y"], y)
            want = y.transpose(1, 2).reshape(B, T, nh * hs)
            mistakes = {
                "the heads were reshaped without moving T back in front: transpose(1, 2) first, then reshape to "
                "(B, T, C)": lambda: y.reshape(B, T, nh * hs),
            }
            _compare_tensors(got, want, mistakes, atol=0.0, rtol=0.0, shape_hint="Expected (B, T, n_head*head_size).")
        return _passed(len(shapes))

    return run_check("merge_heads", body)


def _multihead_variant(
    attn: Attention,
    x: torch.Tensor,
    *,
    causal: bool = True,
    scale: bool = True,
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
    y = _attention_variant(q, k, v, mask, scale=None if scale else 1.0)
    y = y.transpose(1, 2).reshape(B, T, C) if merge_transposed else y.reshape(B, T, C)
    return attn.c_proj(y) if project else y


_MULTIHEAD_MISTAKES: dict[str, dict[str, bool]] = {  # hint -> the switch of _multihead_variant that plants it
    "the causal mask is missing: each position must only attend to itself and earlier positions": dict(causal=False),
    "the scores are not scaled by 1/sqrt(head_size)": dict(scale=False),
    "heads were split by reshaping straight to (B, n_head, T, head_size): view as (B, T, n_head, head_size), then "
    "transpose(1, 2)": dict(split_transposed=False),
    "heads were merged without transposing back: (B, n_head, T, hs) -> transpose(1, 2) -> (B, T, C)": dict(
        merge_transposed=False
    ),
    "the output projection c_proj is missing: the heads' outputs are mixed by c_proj at the end": dict(project=False),
}


def check_multihead(student_cls: type[nn.Module]) -> bool:
    """A causal multi-head attention module, checked against :class:`workbench.model.Attention` with its weights."""

    def body() -> str:
        g = _fresh_generator()
        worst = 0.0
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
                worst = max(worst, _compare_tensors(got, want, mistakes, atol=1e-6, shape_hint="Expected (B, T, C)."))
        return _passed(len(cases), worst)

    return run_check("MultiHeadAttention", body)


# ------------------------------------------------------------------------------ 05 MLP and LayerNorm


def _gelu_reference() -> nn.Module:
    return MLP(GPTConfig(vocab_size=4, block_size=4, n_layer=1, n_head=1, n_embd=4)).act  # GPT-2's tanh GELU


def check_gelu(gelu: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """``gelu(x)``: GPT-2's tanh approximation of GELU."""

    def body() -> str:
        g = _fresh_generator()
        worst = 0.0
        shapes = ((100,), (4, 25), (2, 3, 16))
        for shape in shapes:
            x = torch.randn(shape, generator=g) * 3
            got = _call_keeping_inputs(gelu, ["x"], x)
            mistakes = {
                "this is ReLU (the article's FFN); GPT-2 uses GELU, which is smooth and slightly negative below 0":
                    lambda: torch.relu(x),
                "this is the exact GELU x·Φ(x) with erf; GPT-2 uses the tanh approximation "
                "0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))": lambda: F.gelu(x),
                "this is the sigmoid approximation x·σ(1.702x); GPT-2 uses the tanh one": lambda: x * torch.sigmoid(
                    1.702 * x
                ),
            }
            worst = max(worst, _compare_tensors(got, _gelu_reference()(x), mistakes))
        return _passed(len(shapes), worst)

    return run_check("gelu", body)


def check_layer_norm(layer_norm: Callable[..., torch.Tensor]) -> bool:
    """``layer_norm(x, weight, bias, eps=1e-5)`` over the last axis, as ``torch.nn.LayerNorm`` in every Block."""

    def body() -> str:
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
                "the variance is the unbiased one (divides by C-1): LayerNorm divides by C "
                "(var(unbiased=False) or ((x - mean)**2).mean(-1))": lambda: (x - mean)
                / torch.sqrt(x.var(-1, keepdim=True, unbiased=True) + eps) * w + b,
                "eps is added outside the square root: divide by sqrt(var + eps)": lambda: (x - mean)
                / (torch.sqrt(var) + eps) * w + b,
                "the mean is not subtracted: center x first": lambda: x / torch.sqrt(var + eps) * w + b,
                "normalized over the wrong axis: LayerNorm works on each position's own vector, the last axis": (
                    lambda: F.layer_norm(x.transpose(-1, -2), (x.shape[-2],)).transpose(-1, -2) * w + b
                ),
                "weight and bias are not applied: multiply by weight, then add bias": lambda: (x - mean)
                / torch.sqrt(var + eps),
            }
            worst = max(worst, _compare_tensors(got, ln(x).detach(), mistakes, atol=1e-5, rtol=1e-4))
        return _passed(len(cases), worst)

    return run_check("layer_norm", body)


def check_mlp(student_cls: type[nn.Module]) -> bool:
    """GPT-2's MLP module, checked against :class:`workbench.model.MLP` with the same weights."""

    def body() -> str:
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
                    "ReLU instead of GELU (the article's FFN); GPT-2 uses the tanh GELU": lambda: reference.c_proj(
                        torch.relu(hidden)
                    ),
                    "exact (erf) GELU; GPT-2 uses the tanh approximation (nn.GELU(approximate='tanh'))": lambda: (
                        reference.c_proj(F.gelu(hidden))
                    ),
                    "the activation is missing: without it two Linear layers collapse into one": lambda: (
                        reference.c_proj(hidden)
                    ),
                }
                worst = max(worst, _compare_tensors(got, want, mistakes, shape_hint="Expected (B, T, C)."))
        return _passed(len(cases), worst)

    return run_check("MLP", body)


# ---------------------------------------------------------------------------------------- 06 assemble


def check_block(student_cls: type[nn.Module]) -> bool:
    """A pre-LN transformer block, checked against :class:`workbench.model.Block` with the same weights."""

    def body() -> str:
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

                mistakes = {
                    "this is post-LN (the original Transformer, and the article): GPT-2 is pre-LN, "
                    "x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))": post_ln,
                    "the residual carries ln_1(x) instead of x: add the sublayer's output to the un-normalized x":
                        residual_from_normalized,
                    "the residual connections are missing: each sublayer's output is added to x": no_residual,
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


def check_gpt(student_cls: type[nn.Module], hf_model: nn.Module | None = None) -> bool:
    """The student's GPT, given HF-format weights, must give the same logits as Hugging Face's GPT-2.

    ``hf_model`` is a ``transformers.GPT2LMHeadModel`` (the real "gpt2" when it is available); by default a small
    random one is built offline. Its weights reach the student's model through :func:`workbench.hf.from_hf` (which
    transposes HF's Conv1D matrices), so the student's parameter names must be GPT-2's.
    """

    def body() -> str:
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
                    "the final LayerNorm ln_f is missing: GPT-2 normalizes once more before the unembedding":
                        without_final_ln,
                    "the position embeddings are missing: x = wte(idx) + wpe(positions)": without_positions,
                }
                shape_hint = "Expected logits (B, T, vocab_size)."
                worst = max(worst, _compare_tensors(got, want, mistakes, atol=1e-4, rtol=1e-4, shape_hint=shape_hint))
        return f"same logits as Hugging Face's GPT2LMHeadModel on {len(lengths)} inputs (max difference {worst:.1e})"

    return run_check("GPT", body)


def check_count_params(count_params: Callable[[int, int, int, int], int]) -> bool:
    """``count_params(n_layer, n_embd, vocab_size, block_size)``: parameters of a GPT-2 (tied embeddings)."""

    def body() -> str:
        configs = ((1, 8, 10, 4), (2, 16, 50, 12), (3, 12, 7, 5))
        for L, C, V, P in configs:
            got = count_params(L, C, V, P)
            want = GPT(GPTConfig(vocab_size=V, block_size=P, n_layer=L, n_head=2, n_embd=C)).num_params()
            if not isinstance(got, int) or isinstance(got, bool):
                raise Hint(f"return an int, got {type(got).__name__}")
            if got == want:
                continue
            linear_biases = L * (3 * C + C + 4 * C + C)  # c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj
            mistakes = {
                "the output matrix was counted separately: GPT-2 ties lm_head to wte, so count it once": want + V * C,
                "the position embeddings (block_size x n_embd) are missing": want - P * C,
                "the LayerNorms are missing: 2 per block and one final, each with a weight and a bias of size C":
                    want - (2 * L + 1) * 2 * C,
                "the biases are missing: every Linear in GPT-2 has one": want - linear_biases,
            }
            hint = next((h for h, n in mistakes.items() if n == got), None)
            raise Hint(hint or f"count_params{(L, C, V, P)} = {got}, expected {want} (off by {got - want:+d})")
        return f"correct for {len(configs)} configurations"

    return run_check("count_params", body)


__all__ = [name for name in dir() if name.startswith("check_")]  # what `workbench.checks` re-exports
