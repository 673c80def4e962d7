"""Checks for lesson 08 (generation): the sampling filters and the KV cache.

References:

* the sampling filters: the stages of :func:`workbench.generate.sampling_pipeline` (``temperature``, ``top-k``,
  ``top-p``), each fed the previous stage's distribution, exactly as the pipeline chains them;
* the KV cache: :class:`workbench.model.Attention` and :class:`workbench.model.GPT` run on the whole sequence at
  once (full recomputation); decoding token by token with the student's cache must match it within
  1e-5 + 1e-5 x |reference|.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from workbench.checks.core import (
    ATOL,
    RTOL,
    Hint,
    Say,
    Verdict,
    _call_keeping_inputs,
    _close,
    _compare_tensors,
    _fresh_generator,
    _load_student,
    _randomize,
    _zh,
    run_check,
    say,
)
from workbench.generate import SamplingConfig, sampling_pipeline
from workbench.model import GPT, Attention, GPTConfig

# Cached decoding vs full recomputation: both in float32 but summed in different orders (explicit softmax vs SDPA,
# one key at a time vs all at once). Measured over 600 random GPTs: at most 0.5 of this bound.
CACHE_ATOL = 1e-5
CACHE_RTOL = 1e-5
_CACHE_BOUND = say(f"within {CACHE_ATOL:g} + {CACHE_RTOL:g} x |reference|",
                   f"误差不超过 {CACHE_ATOL:g} + {CACHE_RTOL:g} x |参考值|")


def _pipeline_stages(
    logits: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> dict[str, torch.Tensor]:
    """Every stage of the workbench's sampling pipeline for these settings: name -> (vocab,) probabilities."""
    cfg = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    # A generator of its own: the pipeline draws a token at the end, and the global RNG must stay untouched.
    _, dists = sampling_pipeline(logits, cfg, generator=torch.Generator().manual_seed(0))
    return dict(dists)


def _renormalised(probs: torch.Tensor) -> torch.Tensor:
    return probs / probs.sum()


_NOT_RENORMALISED = say(
    "the kept probabilities were not renormalised: divide them by their sum so that they add up to 1 again",
    "留下的概率没有重新归一化：把它们除以它们的和，使总和重新等于 1",
)
_SOFTMAX_OF_PROBS = say(
    "a softmax of probabilities is not a renormalisation (every zeroed token gets e^0 back): divide the kept "
    "probabilities by their sum",
    "对概率再做 softmax 不是重新归一化（每个被置零的词元又得到了 e^0）：应把留下的概率除以它们的和",
)
_VOCAB_SHAPE = say("One probability per vocabulary entry: (vocab,), with 0 for the tokens that were dropped.",
                   "词表中每个词元一个概率：(vocab,)，被去掉的词元为 0。")


def check_temperature(apply_temperature: Callable[[torch.Tensor, float], torch.Tensor]) -> Verdict:
    """``apply_temperature(logits, temperature)``: the probabilities ``softmax(logits / temperature)``, ``(vocab,)``.

    The reference is the ``temperature`` stage of :func:`workbench.generate.sampling_pipeline`.
    """

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        # (vocab, temperature, logit scale, logit offset); the offset case overflows a naive exp at T = 0.1.
        # T = 1 comes last: there, multiplying and dividing by T agree.
        cases = ((50, 0.7, 2.0, 0.0), (200, 1.6, 2.0, 0.0), (64, 0.1, 3.0, 50.0), (30, 1.0, 2.0, 0.0))
        for vocab, t, scale, offset in cases:
            logits = torch.randn(vocab, generator=g) * scale + offset
            got = _call_keeping_inputs(apply_temperature, ["logits", "temperature"], logits, t)
            want = _pipeline_stages(logits, temperature=t)["temperature"]
            mistakes = {
                say("the logits were multiplied by the temperature; divide them, softmax(logits / temperature): a "
                    "temperature below 1 sharpens the distribution, above 1 flattens it",
                    "logits 乘上了温度；应该除以它，softmax(logits / temperature)：温度低于 1 让分布更尖锐，高于 1 "
                    "让分布更平坦"): lambda: torch.softmax(logits * t, dim=-1),
                say("these are the scaled logits, not probabilities: finish with a softmax over the vocabulary",
                    "这是缩放后的 logits，不是概率：最后还要在词表上做一次 softmax"): lambda: logits / t,
                say("these are log-probabilities: return the probabilities, softmax(logits / temperature)",
                    "这是对数概率：请返回概率 softmax(logits / temperature)"): lambda: (
                    torch.log_softmax(logits / t, dim=-1)
                ),
                say("the probabilities were divided by the temperature (they no longer sum to 1): divide the logits, "
                    "then take the softmax",
                    "被除以温度的是概率（于是它们的和不再是 1）：应先把 logits 除以温度，再做 softmax"): lambda: (
                    torch.softmax(logits, dim=-1) / t
                ),
                say("the temperature was applied to probabilities, softmax(p / T); apply it to the logits: "
                    "softmax(logits / T)",
                    "温度用在了概率上，softmax(p / T)；应该用在 logits 上：softmax(logits / T)"): lambda: (
                    torch.softmax(torch.softmax(logits, dim=-1) / t, dim=-1)
                ),
                say("the temperature was ignored: this is the model's raw distribution, softmax(logits)",
                    "温度被忽略了：这是模型原本的分布 softmax(logits)"): lambda: torch.softmax(logits, dim=-1),
            }
            nan_hint = say(
                "NaN in the output: exp of a large scaled logit overflows (logits / 0.1 easily pass 88, where "
                "float32's exp is inf, and inf / inf is NaN); use torch.softmax, or subtract the largest scaled "
                "logit before exp",
                "输出里有 NaN：缩放后很大的 logit 取 exp 会溢出（logits / 0.1 很容易超过 88，float32 的 exp 在那里"
                "已是 inf，而 inf / inf 是 NaN）；请用 torch.softmax，或在求 exp 之前减去缩放后最大的 logit",
            )
            worst = max(worst, _compare_tensors(got, want, mistakes, nan_hint=nan_hint, shape_hint=_VOCAB_SHAPE))
        return say(
            f"matches the pipeline's temperature stage on {len(cases)} random inputs (max difference {worst:.1e})",
            f"在 {len(cases)} 组随机输入上与采样流程的温度阶段一致（最大差值 {worst:.1e}）",
        )

    return run_check("apply_temperature", body)


_TOP_K_EDGE = say(
    "k = 0 means no top-k filter (as in SamplingConfig and Hugging Face), and a k at least the vocabulary size keeps "
    "every token: return the probabilities unchanged in both cases",
    "k = 0 表示不做 top-k 过滤（与 SamplingConfig 和 Hugging Face 一致），而 k 不小于词表大小时保留所有词元：这两种"
    "情况都应原样返回概率",
)


def check_top_k(top_k_filter: Callable[[torch.Tensor, int], torch.Tensor]) -> Verdict:
    """``top_k_filter(probs, k)``: keep the k most likely tokens (and any tied with the k-th), zero the rest,
    renormalise; ``k = 0`` or ``k >= vocab`` keeps everything.

    The reference is the ``top-k`` stage of :func:`workbench.generate.sampling_pipeline`, given the ``temperature``
    stage as input. In the tie case the pipeline's rule (tokens equal to the k-th stay) is applied to the
    probabilities themselves, so that the tie is exact in the input the student gets.
    """

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        # (vocab, temperature, k, tie); edge cases (k = 0, k >= vocab) and the tie come after the plain ones
        cases = ((50, 1.0, 5, False), (200, 0.8, 40, False), (40, 1.3, 1, False), (30, 1.0, 0, False),
                 (20, 1.0, 25, False), (16, 1.0, 4, True))
        for vocab, t, k, tie in cases:
            logits = torch.randn(vocab, generator=g) * 2.0
            if tie:
                probs = torch.softmax(logits, dim=-1)
                order = probs.argsort(descending=True)
                probs[order[k]] = probs[order[k - 1]]  # the (k+1)-th ties with the k-th: both stay
                probs = probs / probs.sum()  # equal values stay equal
                kth = probs.topk(k).values[-1]
                want = _renormalised(probs.masked_fill(probs < kth, 0.0))
            else:
                stages = _pipeline_stages(logits, temperature=t, top_k=k)
                probs, want = stages["temperature"], stages["top-k"]
            edge = k == 0 or k >= vocab
            try:
                got = _call_keeping_inputs(top_k_filter, ["probs", "k"], probs, k)
            except (NotImplementedError, Hint):
                raise
            except Exception as err:
                if not edge:
                    raise
                raise Hint(say(
                    f"top_k_filter(probs, k={k}) on {vocab} tokens raised {type(err).__name__}: {_TOP_K_EDGE}",
                    f"在 {vocab} 个词元上 top_k_filter(probs, k={k}) 抛出了 {type(err).__name__}：{_zh(_TOP_K_EDGE)}",
                ))
            if edge:
                if not isinstance(got, torch.Tensor) or not _close(got, want, ATOL, RTOL):
                    raise Hint(say(
                        f"top_k_filter(probs, k={k}) on {vocab} tokens changed the distribution: {_TOP_K_EDGE}",
                        f"在 {vocab} 个词元上 top_k_filter(probs, k={k}) 改变了分布：{_zh(_TOP_K_EDGE)}",
                    ))
                continue
            exact_k = isinstance(got, torch.Tensor) and got.shape == want.shape and int((got > 0).sum()) == k
            if tie and exact_k and not _close(got, want, ATOL, RTOL):
                raise Hint(say(
                    "ties: every token whose probability equals the k-th largest stays (as in the workbench and "
                    "Hugging Face), so more than k may remain; keep probs >= the k-th largest value instead of "
                    "exactly k indices",
                    "并列的情况：概率等于第 k 大的值的词元都要留下（与 workbench 和 Hugging Face 一致），所以留下的"
                    "可能多于 k 个；请保留 probs >= 第 k 大的值，而不是恰好 k 个下标",
                ))
            kth = probs.topk(k).values[-1]
            mistakes = {
                _NOT_RENORMALISED: lambda: probs.masked_fill(probs < kth, 0.0),
                _SOFTMAX_OF_PROBS: lambda: torch.softmax(probs.masked_fill(probs < kth, 0.0), dim=-1),
                say("the k least likely tokens were kept: keep the k largest probabilities",
                    "留下的是最不可能的 k 个词元：应保留概率最大的 k 个"): lambda: _renormalised(
                    probs.masked_fill(probs > probs.topk(k, largest=False).values[-1], 0.0)
                ),
                say("one token too few: the k-th most likely token stays too (zero only the tokens strictly below the "
                    "k-th largest probability)",
                    "少留了一个词元：第 k 个最可能的词元也要留下（只把严格小于第 k 大概率的词元置零）"): lambda: (
                    _renormalised(probs.masked_fill(probs <= kth, 0.0))
                ),
                say("only the k kept probabilities came back: return the whole (vocab,) vector, with 0 for the "
                    "dropped tokens",
                    "只返回了留下的 k 个概率：请返回整个 (vocab,) 向量，被去掉的词元为 0"): lambda: _renormalised(
                    probs.topk(k).values
                ),
            }
            nan_hint = say(
                "NaN in the output: no token was kept, so the renormalisation divided 0 by 0; the k most likely "
                "tokens must stay, the k-th included",
                "输出里有 NaN：一个词元也没留下，重新归一化时就成了 0 除以 0；最可能的 k 个词元（包括第 k 个）必须留下",
            )
            worst = max(worst, _compare_tensors(got, want, mistakes, nan_hint=nan_hint, shape_hint=_VOCAB_SHAPE))
        return say(
            f"matches the pipeline's top-k stage on {len(cases)} inputs, k = 0 and ties included "
            f"(max difference {worst:.1e})",
            f"在 {len(cases)} 组输入上（包括 k = 0 和并列的情况）与采样流程的 top-k 阶段一致（最大差值 {worst:.1e}）",
        )

    return run_check("top_k_filter", body)


def _top_p_variant(
    probs: torch.Tensor,
    p: float,
    *,
    sort: bool = True,
    descending: bool = True,
    crossing: bool = True,
    map_back: bool = True,
    sorted_output: bool = False,
    renormalise: str = "sum",
) -> torch.Tensor:
    """Top-p written out, with switches to plant one mistake at a time."""
    if sort:
        sorted_probs, order = probs.sort(descending=descending)
    else:
        sorted_probs, order = probs, torch.arange(probs.numel())
    running = sorted_probs.cumsum(dim=0)
    keep_sorted = (running - sorted_probs) < p if crossing else running < p
    if sorted_output:
        kept = sorted_probs * keep_sorted
    else:
        if map_back:
            keep = torch.zeros_like(keep_sorted)
            keep[order] = keep_sorted
        else:
            keep = keep_sorted
        kept = probs * keep
    if renormalise == "sum":
        return kept / kept.sum()
    if renormalise == "softmax":
        return torch.softmax(kept, dim=-1)
    return kept


_TOP_P_MISTAKES: dict[Say, dict[str, Any]] = {  # hint -> the switches of _top_p_variant that plant it
    _NOT_RENORMALISED: dict(renormalise="none"),
    _SOFTMAX_OF_PROBS: dict(renormalise="softmax"),
    say("the token that takes the total past p was dropped: keep each token whose mass before it (in sorted order) "
        "is below p, so that the kept mass reaches p",
        "让累计概率越过 p 的那个词元被去掉了：（按排序后的顺序）它之前的累计概率低于 p 的词元都要保留，"
        "这样留下的概率总量才能达到 p"): dict(crossing=False),
    say("the running total was taken in vocabulary order: sort the probabilities from largest to smallest first",
        "累计和是按词表顺序算的：要先把概率从大到小排序"): dict(sort=False),
    say("the probabilities were sorted in ascending order: the nucleus is made of the most likely tokens, so sort "
        "descending",
        "概率是按升序排的：核由最可能的词元组成，所以要降序排序"): dict(descending=False),
    say("the keep/drop decisions are in sorted order but were applied to the tokens in vocabulary order: map them "
        "back through the sort's indices (keep[order] = keep_sorted)",
        "保留/去掉的判断是按排序后的顺序做的，却按词表顺序用在了词元上：要通过排序的下标映射回去"
        "（keep[order] = keep_sorted）"): dict(map_back=False),
    say("the result is in sorted order: put each probability back at its token's index (with the sort's indices)",
        "结果是按排序后的顺序排列的：要用排序的下标把每个概率放回它的词元所在的位置"): dict(sorted_output=True),
}


_TOP_P_FIXED = torch.tensor([0.12, 0.30, 0.04, 0.22, 0.17, 0.09, 0.06])  # unsorted, no ties


def check_top_p(top_p_filter: Callable[[torch.Tensor, float], torch.Tensor]) -> Verdict:
    """``top_p_filter(probs, p)``: keep the smallest set of most likely tokens whose total probability reaches p,
    zero the rest, renormalise.

    The reference is the ``top-p`` stage of :func:`workbench.generate.sampling_pipeline`, given the ``top-k`` stage
    (which equals the ``temperature`` stage when ``top_k = 0``) as input.
    """

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        # (vocab, temperature, top_k, p, dominant): after a top-k the input has zeros; "dominant" puts more than p
        # on one token, so exactly that token stays; p = 1 keeps everything.
        # The first case is fixed: on it every planted mistake gives its own output, so the hint is never another
        # mistake's (on random inputs two of them can coincide, ascending order and vocabulary order say).
        cases = ((0, 1.0, 0, 0.7, False), (50, 1.0, 0, 0.9, False), (200, 0.8, 0, 0.5, False),
                 (100, 1.0, 20, 0.7, False), (40, 1.0, 0, 0.6, True), (30, 1.2, 0, 1.0, False))
        for vocab, t, k, p, dominant in cases:
            logits = torch.randn(vocab, generator=g) * 2.0 if vocab else _TOP_P_FIXED.log()
            if dominant:
                logits[int(torch.randint(vocab, (1,), generator=g))] += 12.0
            stages = _pipeline_stages(logits, temperature=t, top_k=k, top_p=p)
            probs, want = stages["top-k"], stages["top-p"]
            got = _call_keeping_inputs(top_p_filter, ["probs", "p"], probs, p)
            mistakes = {
                hint: lambda planted=planted: _top_p_variant(probs, p, **planted)
                for hint, planted in _TOP_P_MISTAKES.items()
            }
            nan_hint = say(
                "NaN in the output: no token was kept, so the renormalisation divided 0 by 0. The token that takes "
                "the total past p must stay, and so the most likely token always stays, even when it alone has more "
                "than p",
                "输出里有 NaN：一个词元也没留下，重新归一化时就成了 0 除以 0。让累计概率越过 p 的那个词元必须留下，"
                "所以最可能的词元总会留下，哪怕它自己的概率就超过了 p",
            )
            worst = max(worst, _compare_tensors(got, want, mistakes, nan_hint=nan_hint, shape_hint=_VOCAB_SHAPE))
        return say(f"matches the pipeline's top-p stage on {len(cases)} inputs (max difference {worst:.1e})",
                   f"在 {len(cases)} 组输入上与采样流程的 top-p 阶段一致（最大差值 {worst:.1e}）")

    return run_check("top_p_filter", body)


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


def _cached_attention_variant(
    attn: Attention, x: torch.Tensor, chunks: Sequence[int] | None, **planted: bool
) -> torch.Tensor:
    """Outputs for the whole of ``x`` fed in ``chunks`` through one cache (``None``: one call, no cache)."""
    with torch.no_grad():
        if chunks is None:
            return _cached_attention_step(attn, x, None, **planted)
        cache = _LayerCacheReference()
        return torch.cat([_cached_attention_step(attn, piece, cache, **planted) for piece in _split(x, chunks)], dim=1)


_CACHED_ATTENTION_MISTAKES: dict[Say, dict[str, bool]] = {  # hint -> the switch of _cached_attention_step
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


def _run_cached_attention(student: nn.Module, x: torch.Tensor, chunks: Sequence[int] | None) -> Any:
    """The student's outputs for ``x`` fed in ``chunks`` through a fresh reference cache (``None``: no cache)."""
    B, T, C = x.shape
    if chunks is None:
        try:
            out = _call_keeping_inputs(student, ["x"], x)
        except (NotImplementedError, Hint):
            raise
        except Exception as err:
            raise Hint(say(
                f"forward(x) with no cache raised {type(err).__name__}: {err}. With cache=None it is plain causal "
                "attention over x (past = 0)",
                f"不带缓存调用 forward(x) 时抛出了 {type(err).__name__}: {err}。cache=None 时它就是在 x 上做普通的"
                "因果注意力（past = 0）",
            )) from None
        return out.detach() if isinstance(out, torch.Tensor) else out
    cache = _LayerCacheReference()
    outs, done = [], 0
    for piece in _split(x, chunks):
        n = piece.shape[1]
        out = _call_keeping_inputs(lambda p: student(p, cache), ["x"], piece)
        if not isinstance(out, torch.Tensor):
            raise Hint(say(f"forward returned {type(out).__name__}; return a tensor (B, T_new, C)",
                           f"forward 返回了 {type(out).__name__}；请返回形状为 (B, T_new, C) 的张量"))
        if tuple(out.shape) != (B, n, C):
            raise Hint(say(
                f"with {done} positions cached and {n} new, forward returned shape {tuple(out.shape)}; return one "
                f"output per new position, ({B}, {n}, {C})",
                f"缓存里有 {done} 个位置、新来 {n} 个时，forward 返回的形状是 {tuple(out.shape)}；每个新位置应有一个"
                f"输出，({B}, {n}, {C})",
            ))
        done += n
        if cache.length != done:
            if cache.length == 0:
                raise Hint(say(
                    "nothing was stored in the cache: call cache.append(k, v) with the new positions' keys and "
                    "values, and attend over the keys and values it returns",
                    "缓存里什么也没存：用新位置的键和值调用 cache.append(k, v)，再对它返回的键和值做注意力",
                ))
            raise Hint(say(
                f"the cache holds {cache.length} positions after {done} tokens: append each call's new keys and "
                "values exactly once",
                f"处理了 {done} 个词元后缓存里有 {cache.length} 个位置：每次调用的新键和新值只能 append 一次",
            ))
        outs.append(out.detach())
    return torch.cat(outs, dim=1)


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
            reference = _randomize(Attention(config), g)
            student = _load_student(student_cls, reference, config)
            x = torch.randn(B, T, C, generator=g)
            with torch.enable_grad():  # the plain nn.Linear kernel on both sides
                want = reference(x, capture={}).detach()
                # no cache; one token at a time; a prompt of 3, then 2 at once (past > 0 and T_new > 1), then single
                for chunks in (None, [1] * T, [3, 2] + [1] * (T - 5)):
                    got = _run_cached_attention(student, x, chunks)
                    mistakes = {
                        hint: lambda planted=planted: _cached_attention_variant(reference, x, chunks, **planted)
                        for hint, planted in _CACHED_ATTENTION_MISTAKES.items()
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


def _cached_gpt_variant(
    model: GPT,
    idx: torch.Tensor,
    chunks: Sequence[int],
    *,
    offset_positions: bool = True,
    use_cache: bool = True,
    shared_cache: bool = False,
) -> torch.Tensor:
    """Logits of a cached decode of ``idx`` in ``chunks`` from ``model``'s weights, with one mistake planted."""
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


_CACHED_GPT_MISTAKES: dict[Say, dict[str, bool]] = {  # hint -> the switches of _cached_gpt_variant
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


def _run_cached_gpt(student: nn.Module, idx: torch.Tensor, chunks: Sequence[int] | None, vocab: int) -> Any:
    """The student's logits for ``idx`` fed in ``chunks`` through ``student.new_caches()`` (``None``: no caches)."""
    B, T = idx.shape
    if chunks is None:
        try:
            out = _call_keeping_inputs(student, ["idx"], idx)
        except (NotImplementedError, Hint):
            raise
        except Exception as err:
            raise Hint(say(
                f"model(idx) with no caches raised {type(err).__name__}: {err}. With caches=None the model runs the "
                "whole text at positions 0 .. T-1, as in lesson 06",
                f"不带缓存调用 model(idx) 时抛出了 {type(err).__name__}: {err}。caches=None 时模型在位置 0 .. T-1 "
                "上处理整段文本，和第 06 课一样",
            )) from None
        return out.detach() if isinstance(out, torch.Tensor) else out
    caches = student.new_caches()
    outs, done = [], 0
    for piece in _split(idx, chunks):
        n = piece.shape[1]
        out = _call_keeping_inputs(lambda i: student(i, caches), ["idx"], piece)
        if not isinstance(out, torch.Tensor):
            raise Hint(say(
                f"forward returned {type(out).__name__}; return the logits, a tensor (B, T_new, vocab_size)",
                f"forward 返回了 {type(out).__name__}；请返回 logits，一个形状为 (B, T_new, vocab_size) 的张量",
            ))
        if tuple(out.shape) != (B, n, vocab):
            raise Hint(say(
                f"with {done} tokens cached and {n} new, your model returned shape {tuple(out.shape)}; return logits "
                f"for every new position, ({B}, {n}, {vocab})",
                f"缓存里有 {done} 个词元、新来 {n} 个时，你的模型返回的形状是 {tuple(out.shape)}；每个新位置都应有 "
                f"logits，({B}, {n}, {vocab})",
            ))
        outs.append(out.detach())
        done += n
    return torch.cat(outs, dim=1)


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
            reference = _randomize(GPT(config), g)
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
                    got = _run_cached_gpt(student, idx, chunks, config.vocab_size)
                    mistakes = {} if chunks is None else {
                        hint: lambda planted=planted: _cached_gpt_variant(reference, idx, chunks, **planted)
                        for hint, planted in _CACHED_GPT_MISTAKES.items()
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
