"""Checks for lesson 08's sampling filters: temperature, top-k, top-p.

The references are the stages of :func:`workbench.generate.sampling_pipeline` (``temperature``, ``top-k``, ``top-p``),
each fed the previous stage's distribution, exactly as the pipeline chains them.

Planted mistakes of top-p: :func:`top_p_variant` is top-p written out with switches, and :data:`TOP_P_MISTAKES` maps
each hint to the switches that plant its mistake (tests build wrong filters from it).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

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
    _zh,
    run_check,
    say,
)
from workbench.generate import SamplingConfig, sampling_pipeline


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


def top_p_variant(
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


TOP_P_MISTAKES: dict[Say, dict[str, Any]] = {  # hint -> the switches of top_p_variant that plant it
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
                hint: lambda planted=planted: top_p_variant(probs, p, **planted)
                for hint, planted in TOP_P_MISTAKES.items()
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


__all__ = [name for name in dir() if name.startswith("check_")]  # what `workbench.checks` re-exports
