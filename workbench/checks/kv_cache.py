"""Checks for lesson 08's KV cache: the layer cache, attention with a cache, a GPT decoding with one cache per layer.

The references are :class:`workbench.model.Attention` and :class:`workbench.model.GPT` run on the whole sequence at
once (full recomputation); decoding token by token with the student's cache must match it within
1e-5 + 1e-5 x |reference|.

Planted mistakes: :func:`cached_attention_variant` and :func:`cached_gpt_variant` decode with the reference's weights
and switches, and :data:`CACHED_ATTENTION_MISTAKES` and :data:`CACHED_GPT_MISTAKES` map each hint to the switches
that plant its mistake.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from workbench.checks.core import (
    Hint,
    Say,
    Verdict,
    _call_keeping_inputs,
    _compare_tensors,
    _fresh_generator,
    _load_student,
    randomize,
    run_check,
    say,
)
from workbench.model import GPT, Attention, GPTConfig

# Cached decoding vs full recomputation: both in float32 but summed in different orders (explicit softmax vs SDPA,
# one key at a time vs all at once). Measured over 600 random GPTs: at most 0.5 of this bound.
CACHE_ATOL = 1e-5
CACHE_RTOL = 1e-5
_CACHE_BOUND = say(f"within {CACHE_ATOL:g} + {CACHE_RTOL:g} x |reference|",
                   f"误差不超过 {CACHE_ATOL:g} + {CACHE_RTOL:g} x |参考值|")
# What a call without a cache must compute, said when that call raises.
_PLAIN_ATTENTION = say("With cache=None it is plain causal attention over x (past = 0)",
                       "cache=None 时它就是在 x 上做普通的因果注意力（past = 0）")
_WHOLE_TEXT = say("With caches=None the model runs the whole text at positions 0 .. T-1, as in lesson 06",
                  "caches=None 时模型在位置 0 .. T-1 上处理整段文本，和第 06 课一样")


class _LayerCacheReference:
    """The lesson's ``LayerCache``, correct: keys and values ``(B, n_head, T, head_size)`` grown along dim 2."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


def check_layer_cache(cache_cls: Callable[[], Any]) -> Verdict:
    """``cache_cls()`` makes an empty cache; ``cache.append(k, v)`` stores new positions ``(B, n_head, T_new, hs)``
    and returns all keys and values so far, ``(B, n_head, past + T_new, hs)``; ``cache.length`` counts positions."""

    def body() -> Say:
        g = _fresh_generator()
        # ((B, n_head, head_size), new positions per append). The first two share a shape, so that state shared
        # between caches shows; the first's two equal chunks let a concatenation along the wrong axis run.
        cases = (((2, 3, 4), (2, 2, 1, 3)), ((2, 3, 4), (1, 1, 1)), ((1, 2, 8), (5, 1, 2)))
        appends = 0
        for (B, nh, hs), chunks in cases:
            cache = cache_cls()
            past = {"k": torch.zeros(B, nh, 0, hs), "v": torch.zeros(B, nh, 0, hs)}
            total = 0
            for n in chunks:
                new = {"k": torch.randn(B, nh, n, hs, generator=g), "v": torch.randn(B, nh, n, hs, generator=g)}
                got = _call_keeping_inputs(cache.append, ["k", "v"], new["k"], new["v"])
                appends += 1
                if got is None:
                    raise Hint(say("append returned None: return the keys and the values stored so far, (k_all, v_all)",
                                   "append 返回了 None：请返回目前存下的全部键和值 (k_all, v_all)"))
                if not isinstance(got, (tuple, list)) or len(got) != 2:
                    raise Hint(say(
                        f"append must return two tensors, (all keys so far, all values so far); got {got!r:.80}",
                        f"append 必须返回两个张量（目前所有的键，目前所有的值）；你返回的是 {got!r:.80}",
                    ))
                want = {name: torch.cat([past[name], new[name]], dim=2) for name in ("k", "v")}
                for name, tensor in zip(("k", "v"), got):
                    what = say("keys", "键") if name == "k" else say("values", "值")
                    other = "v" if name == "k" else "k"
                    if tensor is None:
                        raise Hint(say(f"append returned None for the {what}: return all {what} so far, past and new",
                                       f"append 在{what.zh}的位置返回了 None：请返回目前所有的{what.zh}，过去的和新的"))
                    if (total == 0 and isinstance(tensor, torch.Tensor) and tensor.dim() == 4
                            and tuple(tensor.shape[:2]) == (B, nh) and tensor.shape[2] > n):
                        raise Hint(say(
                            "a new cache is not empty: it already holds positions stored through another cache. Keep "
                            "the keys on the instance (self.k, set in __init__), not in a class attribute shared by "
                            "every cache",
                            "新建的缓存不是空的：里面已经有通过另一个缓存存进去的位置。请把键存在实例上（在 __init__ "
                            "里设置的 self.k），而不是存在所有缓存共用的类属性里",
                        ))
                    mistakes = {
                        say("append returned only the new positions: return everything stored so far, past and new "
                            "(torch.cat([old, new], dim=2))",
                            "append 只返回了新的位置：请返回目前存下的全部内容，过去的和新的"
                            "（torch.cat([old, new], dim=2)）"): lambda: new[name],
                        say("the new positions went in front of the old ones: append them at the end, "
                            "torch.cat([old, new], dim=2)",
                            "新的位置被放到了旧的前面：应接在末尾，torch.cat([old, new], dim=2)"): lambda: torch.cat(
                            [new[name], past[name]], dim=2
                        ),
                        say("append returned the cache as it was before this call: store the new positions first, "
                            "then return the whole cache",
                            "append 返回的是这次调用之前的缓存：先存入新的位置，再返回整个缓存"): lambda: past[name],
                        say("concatenated along the head axis (dim 1): positions are dim 2 of (B, n_head, T, "
                            "head_size)",
                            "沿头的轴（dim 1）拼接了：位置是 (B, n_head, T, head_size) 的 dim 2"): lambda: torch.cat(
                            [past[name], new[name]], dim=1
                        ),
                        say("concatenated along the last axis (head_size): positions are dim 2 of (B, n_head, T, "
                            "head_size)",
                            "沿最后一个轴（head_size）拼接了：位置是 (B, n_head, T, head_size) 的 dim 2"): lambda: (
                            torch.cat([past[name], new[name]], dim=3)
                        ),
                        say("keys and values are swapped: append(k, v) returns (keys, values), in that order",
                            "键和值对调了：append(k, v) 按顺序返回 (键, 值)"): lambda: want[other],
                    }
                    _compare_tensors(tensor, want[name], mistakes, atol=0.0, rtol=0.0,
                                     shape_hint=say("Expected (B, n_head, past + new, head_size).",
                                                    "应为 (B, n_head, past + new, head_size)。"))
                total += n
                if cache.length != total:
                    raise Hint(say(
                        f"cache.length is {cache.length} after {total} positions were stored: it counts the "
                        "positions stored, the size of dim 2 of the keys",
                        f"存了 {total} 个位置之后 cache.length 是 {cache.length}：它数的是存下的位置数，也就是键的 "
                        "dim 2 的大小",
                    ))
                past = want
        return say(
            f"stores and returns every position, in order, over {appends} appends to {len(cases)} caches",
            f"在 {len(cases)} 个缓存的 {appends} 次 append 中按顺序存下并返回了每个位置",
        )

    return run_check("LayerCache", body)


def _split(x: torch.Tensor, chunks: Sequence[int]) -> list[torch.Tensor]:
    """``x`` cut along dim 1 into consecutive pieces of the given lengths."""
    pieces, start = [], 0
    for n in chunks:
        pieces.append(x[:, start : start + n])
        start += n
    return pieces


def _run_with_cache(
    student: nn.Module,
    inputs: torch.Tensor,
    chunks: Sequence[int] | None,
    cache: Any,
    *,
    input_name: str,
    width: int,
    without_cache: Say,
    outputs: Say,
    check_cache: Callable[[int], None] | None = None,
) -> Any:
    """The student's outputs for ``inputs`` fed along dim 1 in ``chunks``, each call given ``cache``, concatenated
    (``chunks=None``: one call without a cache, its output as returned).

    The one runner of the cached attention and the cached GPT: ``cache`` is one layer's cache or a list of them,
    ``width`` the size of each output's last axis. In hints, ``without_cache`` says what a call without a cache
    computes and ``outputs`` what each call returns. ``check_cache(done)`` runs after each call, with the number of
    positions fed so far. Raises a Hint when the call without a cache fails or a call returns the wrong shape.
    """
    if chunks is None:
        try:
            out = _call_keeping_inputs(student, [input_name], inputs)
        except (NotImplementedError, Hint):
            raise
        except Exception as err:
            raise Hint(say(
                f"forward({input_name}) with no cache raised {type(err).__name__}: {err}. {without_cache}",
                f"不带缓存调用 forward({input_name}) 时抛出了 {type(err).__name__}: {err}。{without_cache.zh}",
            )) from None
        return out.detach() if isinstance(out, torch.Tensor) else out
    B = inputs.shape[0]
    outs, done = [], 0
    for piece in _split(inputs, chunks):
        n = piece.shape[1]
        out = _call_keeping_inputs(lambda p: student(p, cache), [input_name], piece)
        if not isinstance(out, torch.Tensor):
            raise Hint(say(f"forward returned {type(out).__name__}; return {outputs}, a tensor (B, T_new, {width})",
                           f"forward 返回了 {type(out).__name__}；请返回{outputs.zh}，一个形状为 (B, T_new, {width}) "
                           "的张量"))
        if tuple(out.shape) != (B, n, width):
            raise Hint(say(
                f"with {done} positions cached and {n} new, forward returned shape {tuple(out.shape)}; return "
                f"{outputs}, ({B}, {n}, {width})",
                f"缓存里有 {done} 个位置、新来 {n} 个时，forward 返回的形状是 {tuple(out.shape)}；请返回{outputs.zh}，"
                f"({B}, {n}, {width})",
            ))
        done += n
        if check_cache is not None:
            check_cache(done)
        outs.append(out.detach())
    return torch.cat(outs, dim=1)


def _cached_attention_step(
    attn: Attention,
    x: torch.Tensor,
    cache: Any,
    *,
    use_past: bool = True,
    offset_mask: bool = True,
    causal: bool = True,
    scale: bool = True,
) -> torch.Tensor:
    """One call of attention with a cache, from ``attn``'s weights; switches plant one mistake at a time."""
    B, T, C = x.shape
    nh, hs = attn.n_head, attn.head_size
    q, k, v = attn.c_attn(x).split(C, dim=2)
    q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
    if cache is not None:
        k_all, v_all = cache.append(k, v)  # (B, nh, past + T, hs)
        if use_past:
            k, v = k_all, v_all
    Tk = k.shape[2]
    mask = torch.ones(T, Tk, dtype=torch.bool)
    if causal:
        mask = mask.tril(diagonal=Tk - T if offset_mask else 0)  # query i sits at position (Tk - T) + i
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs) if scale else 1.0)  # (B, nh, T, Tk)
    y = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v  # (B, nh, T, hs)
    return attn.c_proj(y.transpose(1, 2).reshape(B, T, C))


def cached_attention_variant(
    attn: Attention, x: torch.Tensor, chunks: Sequence[int] | None, **planted: bool
) -> torch.Tensor:
    """Outputs of attention with ``attn``'s weights for the whole of ``x`` fed in ``chunks`` through one cache
    (``None``: one call, no cache); each switch in ``planted`` plants one mistake, and none gives the correct output.
    """
    with torch.no_grad():
        if chunks is None:
            return _cached_attention_step(attn, x, None, **planted)
        cache = _LayerCacheReference()
        return torch.cat([_cached_attention_step(attn, piece, cache, **planted) for piece in _split(x, chunks)], dim=1)


CACHED_ATTENTION_MISTAKES: dict[Say, dict[str, bool]] = {  # hint -> the switch of cached_attention_variant
    say("each new token attended only to the new positions: attend over everything the cache returns, past and new "
        "(k, v = cache.append(k, v))",
        "每个新词元只关注了新的位置：应关注缓存返回的全部内容，过去的和新的（k, v = cache.append(k, v)）"): dict(
        use_past=False
    ),
    say("the causal mask is not shifted by the cached length: new query i sits at position past + i and may see keys "
        "0 .. past + i, i.e. torch.ones(T_new, past + T_new).tril(diagonal=past)",
        "因果掩码没有按缓存的长度平移：新的查询 i 位于位置 past + i，可以看键 0 .. past + i，也就是 "
        "torch.ones(T_new, past + T_new).tril(diagonal=past)"): dict(offset_mask=False),
    say("positions see the future: when several tokens come in one call (a prompt, or cache=None), query i may only "
        "see keys up to past + i",
        "位置看到了未来：一次调用传入多个词元时（提示词，或 cache=None），查询 i 只能看到 past + i 及以前的键"): dict(
        causal=False
    ),
    say("the scores are not scaled by 1/sqrt(head_size)", "注意力分数没有乘以 1/sqrt(head_size)"): dict(scale=False),
}


def _check_cache_length(cache: _LayerCacheReference, done: int) -> None:
    """Raise a Hint unless the student's attention stored exactly the ``done`` positions it was fed in ``cache``."""
    if cache.length == done:
        return
    if cache.length == 0:
        raise Hint(say(
            "nothing was stored in the cache: call cache.append(k, v) with the new positions' keys and values, and "
            "attend over the keys and values it returns",
            "缓存里什么也没存：用新位置的键和值调用 cache.append(k, v)，再对它返回的键和值做注意力",
        ))
    raise Hint(say(
        f"the cache holds {cache.length} positions after {done} tokens: append each call's new keys and values "
        "exactly once",
        f"处理了 {done} 个词元后缓存里有 {cache.length} 个位置：每次调用的新键和新值只能 append 一次",
    ))


def check_cached_attention(student_cls: type[nn.Module]) -> Verdict:
    """Attention with a cache: ``student(x_new, cache)`` token by token (and a prompt, then tokens) must equal
    :class:`workbench.model.Attention` on the whole sequence within 1e-5 + 1e-5 x |reference|; ``student(x)`` is
    plain causal attention.

    The cache handed to the student's module is a correct ``LayerCache`` (``append``, ``length``), so this check
    does not depend on the student's own cache.
    """

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        cases = ((12, 3, 2, 7), (16, 4, 1, 10), (8, 2, 2, 6))  # (n_embd, n_head, B, T)
        runs = 0
        for C, nh, B, T in cases:
            config = GPTConfig(vocab_size=10, block_size=16, n_layer=1, n_head=nh, n_embd=C)
            reference = randomize(Attention(config), g)
            student = _load_student(student_cls, reference, config)
            x = torch.randn(B, T, C, generator=g)
            with torch.enable_grad():  # the plain nn.Linear kernel on both sides
                want = reference(x, capture={}).detach()
                # no cache; one token at a time; a prompt of 3, then 2 at once (past > 0 and T_new > 1), then single
                for chunks in (None, [1] * T, [3, 2] + [1] * (T - 5)):
                    cache = _LayerCacheReference()
                    got = _run_with_cache(
                        student, x, chunks, cache, input_name="x", width=C, without_cache=_PLAIN_ATTENTION,
                        outputs=say("one output per new position", "每个新位置一个输出"),
                        check_cache=functools.partial(_check_cache_length, cache),
                    )
                    mistakes = {
                        hint: lambda planted=planted: cached_attention_variant(reference, x, chunks, **planted)
                        for hint, planted in CACHED_ATTENTION_MISTAKES.items()
                    }
                    worst = max(worst, _compare_tensors(got, want, mistakes, atol=CACHE_ATOL, rtol=CACHE_RTOL,
                                                        shape_hint=say("Expected (B, T, C).", "应为 (B, T, C)。")))
                    runs += 1
        return say(
            f"decoding with the cache equals full recomputation on {runs} runs, token by token and in chunks "
            f"(max difference {worst:.1e}, {_CACHE_BOUND})",
            f"在 {runs} 次运行中（逐个词元和分块），用缓存解码与完整重算结果相同（最大差值 {worst:.1e}，"
            f"{_CACHE_BOUND.zh}）",
        )

    return run_check("CachedAttention", body)


def cached_gpt_variant(
    model: GPT,
    idx: torch.Tensor,
    chunks: Sequence[int],
    *,
    offset_positions: bool = True,
    use_cache: bool = True,
    shared_cache: bool = False,
) -> torch.Tensor:
    """Logits of a cached decode of ``idx`` in ``chunks`` from ``model``'s weights; each switch plants one mistake,
    and the defaults decode correctly."""
    t = model.transformer
    if shared_cache:
        caches = [_LayerCacheReference()] * len(t.h)  # one cache object for every layer
    else:
        caches = [_LayerCacheReference() for _ in t.h]
    outs, done = [], 0
    with torch.no_grad():
        for piece in _split(idx, chunks):
            n = piece.shape[1]
            if not offset_positions:
                past = 0
            elif use_cache:
                past = caches[0].length
            else:
                past = done
            x = t.wte(piece) + t.wpe(torch.arange(past, past + n))
            for block, cache in zip(t.h, caches):
                x = x + _cached_attention_step(block.attn, block.ln_1(x), cache if use_cache else None)
                x = x + block.mlp(block.ln_2(x))
            outs.append(model.lm_head(t.ln_f(x)))
            done += n
    return torch.cat(outs, dim=1)


CACHED_GPT_MISTAKES: dict[Say, dict[str, bool]] = {  # hint -> the switches of cached_gpt_variant
    say("positions restart at 0 on every call: the new tokens sit at positions past .. past + T_new - 1, with past = "
        "caches[0].length, so look up wpe(torch.arange(past, past + T_new))",
        "每次调用位置都从 0 重新开始：新词元位于位置 past .. past + T_new - 1，其中 past = caches[0].length，"
        "所以要查 wpe(torch.arange(past, past + T_new))"): dict(offset_positions=False),
    say("the caches were not passed to the blocks: block i must read and extend caches[i], or each new token sees "
        "only itself",
        "缓存没有传给各个块：块 i 必须读取并扩展 caches[i]，否则每个新词元只能看到它自己"): dict(use_cache=False),
    say("the caches were not passed to the blocks (and so positions restart at 0): give block i its own cache, "
        "caches[i]",
        "缓存没有传给各个块（所以位置也从 0 重新开始）：把块 i 自己的缓存 caches[i] 传给它"): dict(
        use_cache=False, offset_positions=False
    ),
    say("all layers share one cache: each layer has its own keys and values, so block i gets caches[i]",
        "所有层共用了一个缓存：每一层有自己的键和值，所以块 i 用 caches[i]"): dict(shared_cache=True),
}


def check_cached_gpt(student_cls: type[nn.Module]) -> Verdict:
    """A GPT with one cache per layer: ``model(idx_new, caches)`` token by token (and a prompt, then tokens) must
    give the logits of :class:`workbench.model.GPT` on the whole text within 1e-5 + 1e-5 x |reference|.

    The student's class has GPT-2's parameter names and ``new_caches()`` (one empty ``LayerCache`` per layer); the
    weights of a random workbench GPT are copied into it. It uses the student's own attention and cache.
    """

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        runs = 0
        cases = ((16, 2, 2, 2, 10), (24, 4, 3, 1, 12))  # (n_embd, n_head, n_layer, B, T)
        for C, nh, L, B, T in cases:
            config = GPTConfig(vocab_size=40, block_size=24, n_layer=L, n_head=nh, n_embd=C)
            reference = randomize(GPT(config), g)
            student = _load_student(student_cls, reference, config)
            if not callable(getattr(student, "new_caches", None)):
                raise Hint(say(
                    "your model has no new_caches() method: it returns one empty LayerCache per layer (given)",
                    "你的模型没有 new_caches() 方法：它为每一层返回一个空的 LayerCache（已给出）",
                ))
            idx = torch.randint(config.vocab_size, (B, T), generator=g)
            with torch.enable_grad():  # the plain nn.Linear kernel on both sides
                want = reference(idx).detach()
                for chunks in (None, [1] * T, [4, 1, 2] + [1] * (T - 7)):
                    got = _run_with_cache(
                        student, idx, chunks, student.new_caches(), input_name="idx", width=config.vocab_size,
                        without_cache=_WHOLE_TEXT, outputs=say("logits for every new position", "每个新位置的 logits"),
                    )
                    mistakes = {} if chunks is None else {
                        hint: lambda planted=planted: cached_gpt_variant(reference, idx, chunks, **planted)
                        for hint, planted in CACHED_GPT_MISTAKES.items()
                    }
                    shape_hint = say("Expected logits (B, T, vocab_size).", "logits 应为 (B, T, vocab_size)。")
                    worst = max(worst, _compare_tensors(got, want, mistakes, atol=CACHE_ATOL, rtol=CACHE_RTOL,
                                                        shape_hint=shape_hint))
                    runs += 1
        return say(
            f"token-by-token decoding with your caches gives the logits of full recomputation on {runs} runs "
            f"(max difference {worst:.1e}, {_CACHE_BOUND})",
            f"在 {runs} 次运行中，用你的缓存逐个词元解码得到的 logits 与完整重算相同（最大差值 {worst:.1e}，"
            f"{_CACHE_BOUND.zh}）",
        )

    return run_check("CachedGPT", body)


__all__ = [name for name in dir() if name.startswith("check_")]  # what `workbench.checks` re-exports
