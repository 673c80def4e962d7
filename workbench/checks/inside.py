"""Checks for lesson 09, looking inside: scores that rank attention heads, and head ablation.

* :func:`check_previous_token_score` -- ``previous_token_score(attention)``: each head's mean attention to the
  previous position;
* :func:`check_key_attention_score` -- ``key_attention_score(attention, is_key)``: each head's mean attention on a
  set of marked keys (line breaks, punctuation);
* :func:`check_induction_score` -- ``induction_score(attention, period)``: each head's mean attention from ``i`` to
  ``i - period + 1`` over the second copy of a repeated sequence;
* :func:`check_head_ablation_effects` -- ``head_ablation_effects(model, idx, targets)``: the loss change when each
  head alone is switched off with ``GPT.forward(..., ablate=[(layer, head)])``.

The three score functions take attention patterns shaped like ``Trace.attention``, ``(L, B, H, T, T)``, and return
``(L, H)``. Their references are written with ``Tensor.diagonal`` so that they share no code with the likely student
solutions (a loop or fancy indexing), and are public (:func:`previous_token_reference`, :func:`key_score_reference`,
:func:`induction_reference`) for tests of the lesson's facts; the ablation's planted mistakes are switches of
:func:`ablation_variant`.
"""

from __future__ import annotations

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
    _compare_tensors,
    _fresh_generator,
    _passed,
    randomize,
    run_check,
    say,
)
from workbench.model import GPT, GPTConfig

_SCORE_SHAPE_HINT = say(
    "Return one score per (layer, head), shape (L, H): average over the batch axis and the queries.",
    "每个（层, 头）返回一个分数，形状为 (L, H)：在批次轴和各个查询上取平均。",
)
_BATCH_NOT_AVERAGED = say(
    "the batch axis was not averaged: return (L, H), the mean over the batch (axis 1) and the queries",
    "没有在批次轴上取平均：请返回 (L, H)，即在批次（轴 1）和各个查询上的平均",
)
_FIRST_SEQUENCE_ONLY = say(
    "only the first sequence of the batch was scored: average over all of them (axis 1)",
    "只给批次里的第一个序列打了分：应在所有序列上（轴 1）取平均",
)
_SUMMED_OVER_QUERIES = say("the scores were summed over the queries, not averaged",
                           "分数是在各个查询上求和，而不是求平均")


def _random_patterns(g: torch.Generator, L: int, B: int, H: int, T: int) -> torch.Tensor:
    """Causal attention patterns ``(L, B, H, T, T)`` like ``Trace.attention``: every row a softmax over the keys it
    may see, some rows spread out and some peaked, so that every entry the scores read is different."""
    scores = torch.randn(L, B, H, T, T, generator=g) * (1.0 + 3.0 * torch.rand(L, B, H, T, 1, generator=g))
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)


def previous_token_reference(attention: torch.Tensor) -> torch.Tensor:
    """The previous-token score ``(L, H)`` of attention patterns ``(L, B, H, T, T)``: what
    :func:`check_previous_token_score` expects."""
    # diagonal(-1) holds attention[..., i, i - 1] for the queries i = 1 .. T-1: (L, B, H, T-1)
    return attention.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(1, 3))


def check_previous_token_score(previous_token_score: Callable[[torch.Tensor], torch.Tensor]) -> Verdict:
    """``previous_token_score(attention)``: ``(L, B, H, T, T)`` -> ``(L, H)``, each head's attention from position ``i``
    to position ``i - 1``, averaged over the batch and the queries ``i = 1 .. T-1`` (query 0 has no previous token)."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        shapes = ((2, 3, 4, 7), (1, 2, 3, 5), (3, 1, 2, 10))  # (L, B, H, T); L != H, so axis mix-ups change the shape
        for L, B, H, T in shapes:
            attention = _random_patterns(g, L, B, H, T)
            got = _call_keeping_inputs(previous_token_score, ["attention"], attention)
            want = previous_token_reference(attention)
            below = attention.diagonal(offset=-1, dim1=-2, dim2=-1)  # (L, B, H, T-1)
            mistakes: Mistakes = {
                say("this is the main diagonal, each token's attention to itself; the previous token is one step "
                    "below it: attention[..., i, i - 1], diagonal(offset=-1)",
                    "这是主对角线，即每个词元对它自己的注意力；前一个词元在它下面一格：attention[..., i, i - 1]，"
                    "diagonal(offset=-1)"): lambda: attention.diagonal(dim1=-2, dim2=-1).mean(dim=(1, 3)),
                say("every score is 0: you read above the diagonal, attention[..., i - 1, i] (rows are queries, "
                    "columns keys), where the causal mask leaves only zeros. The previous token is below it: "
                    "attention[..., i, i - 1]",
                    "每个分数都是 0：你读的是对角线上方的 attention[..., i - 1, i]（行是查询，列是键），因果掩码在那里"
                    "只留下了 0。前一个词元在对角线下方：attention[..., i, i - 1]"): lambda: torch.zeros(L, H),
                say("query 0 was counted: it has no previous token (attention[..., 0, -1] wraps around to a masked "
                    "key, 0); average over the queries 1 .. T-1 only",
                    "把查询 0 也算进去了：它没有前一个词元（attention[..., 0, -1] 绕回到一个被遮住的键，值为 0）；"
                    "只在查询 1 .. T-1 上取平均"): lambda: below.sum(-1).mean(1) / T,
                _SUMMED_OVER_QUERIES: lambda: below.sum(-1).mean(1),
                _BATCH_NOT_AVERAGED: lambda: below.mean(-1),
                say("the heads were averaged away instead of the batch: attention is (layer, batch, head, query, "
                    "key), so average axis 1, keep axis 2",
                    "被平均掉的是头而不是批次：attention 的各轴是 (层, 批次, 头, 查询, 键)，所以要对轴 1 取平均，"
                    "保留轴 2"): lambda: below.mean(dim=(2, 3)),
                _FIRST_SEQUENCE_ONLY: lambda: below[:, 0].mean(-1),
            }
            worst = max(worst, _compare_tensors(got, want, mistakes, shape_hint=_SCORE_SHAPE_HINT))
        return _passed(len(shapes), worst)

    return run_check("previous_token_score", body)


def key_score_reference(attention: torch.Tensor, is_key: torch.Tensor) -> torch.Tensor:
    """The attention ``(L, H)`` paid to the keys marked in ``is_key`` ``(B, T)``: what
    :func:`check_key_attention_score` expects."""
    marked = attention * is_key[None, :, None, None, :]  # (L, B, H, T, T): weights on unmarked keys zeroed
    return marked.sum(-1).mean(dim=(1, 3))  # each query's mass on the marked keys, averaged over batch and queries


def check_key_attention_score(key_attention_score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Verdict:
    """``key_attention_score(attention, is_key)``: ``(L, B, H, T, T)`` and a bool ``(B, T)`` marking key positions ->
    ``(L, H)``, the attention each query puts on the marked keys in total, averaged over the batch and all queries."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        shapes = ((2, 3, 4, 8), (1, 2, 3, 6), (3, 1, 2, 11))  # (L, B, H, T)
        for L, B, H, T in shapes:
            attention = _random_patterns(g, L, B, H, T)
            is_key = torch.rand(B, T, generator=g) < 0.35
            is_key[:, 1], is_key[:, 2] = True, False  # every row has marked and unmarked keys
            got = _call_keeping_inputs(key_attention_score, ["attention", "is_key"], attention, is_key)
            want = key_score_reference(attention, is_key)
            marked = attention * is_key[None, :, None, None, :]
            mistakes: Mistakes = {
                say("the mask marks queries here: is_key marks key positions, the last axis of attention; broadcast "
                    "it as is_key[None, :, None, None, :]",
                    "这里掩码标的是查询：is_key 标的是键的位置，也就是 attention 的最后一个轴；请把它广播成 "
                    "is_key[None, :, None, None, :]"): lambda: (
                    (attention * is_key[None, :, None, :, None]).sum(-1).mean(dim=(1, 3))
                ),
                say("the weights on the marked keys were averaged; add them up: a head's share of attention on the "
                    "marked keys is the sum of its weights on them",
                    "对被标记的键上的权重取了平均；应该相加：一个头分给被标记的键的注意力，是它在这些键上的权重之和"):
                    lambda: marked.mean(-1).mean(dim=(1, 3)),
                say("the mask is inverted: this is the attention on the keys that are not marked",
                    "掩码反了：这是没被标记的键上的注意力"): lambda: key_score_reference(attention, ~is_key),
                _BATCH_NOT_AVERAGED: lambda: marked.sum(-1).mean(-1),
                _FIRST_SEQUENCE_ONLY: lambda: marked[:, 0].sum(-1).mean(-1),
            }
            worst = max(worst, _compare_tensors(got, want, mistakes, shape_hint=_SCORE_SHAPE_HINT))
        return _passed(len(shapes), worst)

    return run_check("key_attention_score", body)


def induction_reference(attention: torch.Tensor, period: int) -> torch.Tensor:
    """The induction score ``(L, H)`` of attention patterns ``(L, B, H, T, T)`` over a sequence repeated with
    ``period``: what :func:`check_induction_score` expects."""
    # diagonal(1 - period) holds attention[..., i, i - period + 1] for i = period-1 .. T-1; drop i = period-1
    return attention.diagonal(offset=1 - period, dim1=-2, dim2=-1)[..., 1:].mean(dim=(1, 3))


def check_induction_score(induction_score: Callable[[torch.Tensor, int], torch.Tensor]) -> Verdict:
    """``induction_score(attention, period)``: ``(L, B, H, T, T)`` -> ``(L, H)``, each head's attention from position
    ``i`` to ``i - period + 1`` (the token after the earlier occurrence of the token at ``i``), averaged over the batch
    and the queries ``i = period .. T-1``: the second copy of a sequence repeated with that period."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        cases = ((2, 3, 4, 5, 10), (1, 2, 3, 8, 16), (3, 2, 2, 4, 11), (2, 1, 3, 6, 7))  # (L, B, H, period, T)
        for L, B, H, period, T in cases:
            attention = _random_patterns(g, L, B, H, T)
            got = _call_keeping_inputs(induction_score, ["attention", "period"], attention, period)
            want = induction_reference(attention, period)
            stripe = attention.diagonal(offset=1 - period, dim1=-2, dim2=-1)  # queries period-1 .. T-1
            mistakes: Mistakes = {
                say("this is attention to the earlier copy of the current token itself, key i - period (a "
                    "'duplicate-token' head); an induction head attends to the token that came after it, key "
                    "i - period + 1",
                    "这是对当前词元自己的上一次出现（键 i - period）的注意力（“重复词元”头）；归纳头关注的是紧跟在它"
                    "后面的那个词元，键 i - period + 1"): lambda: attention.diagonal(
                    offset=-period, dim1=-2, dim2=-1
                ).mean(dim=(1, 3)),
                say("the query at position period - 1 was included: it is the last token of the first copy, and key "
                    "0 has no token before it to match. Average over the queries i = period .. T-1",
                    "把位置 period - 1 的查询也算进去了：它是第一份副本的最后一个词元，而键 0 前面没有可匹配的词元。"
                    "请在查询 i = period .. T-1 上取平均"): lambda: stripe.mean(dim=(1, 3)),
                say("all T queries were averaged: queries before the second copy have nothing earlier to match "
                    "(negative key indices wrap around to masked keys). Average over the queries i = period .. T-1 "
                    "only",
                    "对全部 T 个查询取了平均：第二份副本之前的查询前面没有可匹配的内容（负的键下标会绕回到被遮住的键）。"
                    "只在查询 i = period .. T-1 上取平均"): lambda: stripe.sum(-1).mean(1) / T,
                say("T // 2 was used as the period: use the `period` argument (the sequence may be longer than two "
                    "copies)",
                    "把 T // 2 当成了周期：请用参数 `period`（序列可能比两份副本更长）"): lambda: (
                    induction_reference(attention, T // 2)
                ),
                _SUMMED_OVER_QUERIES: lambda: stripe[..., 1:].sum(-1).mean(1),
                _BATCH_NOT_AVERAGED: lambda: stripe[..., 1:].mean(-1),
            }
            worst = max(worst, _compare_tensors(got, want, mistakes, shape_hint=_SCORE_SHAPE_HINT))
        return _passed(len(cases), worst)

    return run_check("induction_score", body)


def ablation_variant(
    model: GPT,
    idx: torch.Tensor,
    targets: torch.Tensor,
    *,
    cumulative: bool = False,
    shift: bool = False,
    subtract: bool = True,
) -> torch.Tensor:
    """Loss change per head ``(L, H)`` when each head is switched off, with switches to plant one mistake at a time."""

    def loss(ablate: list[tuple[int, int]]) -> float:
        if not shift:
            return model(idx, targets, ablate=ablate)[1].item()
        logits = model(idx, ablate=ablate)[:, :-1]  # the targets shifted once more: each position scored a token late
        return F.cross_entropy(logits.flatten(0, 1), targets[:, 1:].flatten()).item()

    L, H = model.config.n_layer, model.config.n_head
    base = loss([]) if subtract else 0.0
    effects = torch.zeros(L, H)
    off: list[tuple[int, int]] = []
    for layer in range(L):
        for head in range(H):
            off = off + [(layer, head)] if cumulative else [(layer, head)]
            effects[layer, head] = loss(off) - base
    return effects


def _run_recording_modes(fn: Callable[[], Any], model: nn.Module) -> tuple[Any, bool]:
    """``fn()``, and whether any module of ``model`` ran in training mode during it (a forward pre-hook on each
    module sees its mode, whatever entry point the student's code used: ``model(...)`` or ``model.run_with_trace``)."""
    modes: list[bool] = []
    hooks = [m.register_forward_pre_hook(lambda module, args: modes.append(module.training)) for m in model.modules()]
    try:
        return fn(), any(modes)
    finally:
        for hook in hooks:
            hook.remove()


def check_head_ablation_effects(head_ablation_effects: Callable[[GPT, torch.Tensor, torch.Tensor], Any]) -> Verdict:
    """``head_ablation_effects(model, idx, targets)``: a ``(n_layer, n_head)`` tensor whose entry ``[l, h]`` is the mean
    loss with head ``h`` of layer ``l`` switched off (``model(idx, targets, ablate=[(l, h)])``) minus the loss with
    every head on. Run on small random GPTs (``n_layer != n_head``) that have dropout, handed over in eval mode as
    in the lesson; the model must come back unchanged, and in eval mode."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        cases = ((2, 3, 12, 2, 9), (3, 2, 8, 3, 6))  # (n_layer, n_head, n_embd, B, T)
        for L, H, C, B, T in cases:
            # Dropout as in training, so that losses measured in training mode are noisy here, as they would be on
            # the lesson's trained model (a model without dropout gives the same losses in both modes).
            config = GPTConfig(vocab_size=11, block_size=12, n_layer=L, n_head=H, n_embd=C, dropout=0.1,
                               attn_dropout=0.1)
            model = randomize(GPT(config), g)
            idx = torch.randint(config.vocab_size, (B, T), generator=g)
            targets = torch.randint(config.vocab_size, (B, T), generator=g)
            weights = {name: value.clone() for name, value in model.state_dict().items()}
            with torch.no_grad():
                got, ran_training = _run_recording_modes(
                    lambda: _call_keeping_inputs(head_ablation_effects, ["model", "idx", "targets"], model, idx,
                                                 targets),
                    model,
                )
                left_training = any(m.training for m in model.modules())
                model.eval()  # the reference below runs in eval mode, whatever the student's code left behind
                changed = [name for name, value in model.state_dict().items() if not torch.equal(value, weights[name])]
                if changed:
                    raise Hint(say(
                        f"your code changed the model's weights ({changed[0]} ...): switch heads off with "
                        "model(idx, targets, ablate=[(layer, head)]), which leaves the weights alone",
                        f"你的代码改动了模型的权重（{changed[0]} ...）：请用 model(idx, targets, ablate=[(layer, head)]) "
                        "关掉注意力头，它不会动权重",
                    ))
                if left_training:
                    raise Hint(say(
                        "your code left the model in training mode (model.train(): dropout on), so every loss was "
                        "measured with random units dropped: call model.eval() before measuring, and leave the model "
                        "in eval mode",
                        "你的代码把模型留在了训练模式（model.train()：dropout 开着），于是每个损失都是在随机丢弃一些单元"
                        "的情况下测的：测量之前调用 model.eval()，并让模型保持在评估模式",
                    ))
                if ran_training:
                    raise Hint(say(
                        "the losses were measured in training mode (model.train(): dropout on), so they are noisy: "
                        "measure them in eval mode, model.eval(), as the model was handed to you",
                        "损失是在训练模式下测的（model.train()：dropout 开着），所以带有随机噪声：请在评估模式 "
                        "model.eval() 下测量，模型交给你时就处在这个模式",
                    ))
                if isinstance(got, (list, tuple)):
                    raise Hint(say(
                        "return a tensor of shape (n_layer, n_head), e.g. torch.tensor(rows), not a list",
                        "请返回形状为 (n_layer, n_head) 的张量（例如 torch.tensor(rows)），而不是列表",
                    ))
                if isinstance(got, torch.Tensor):
                    got = got.detach()
                want = ablation_variant(model, idx, targets)
                mistakes: Mistakes = {
                    say("the sign is flipped: report the loss with the head off minus the loss with every head on, "
                        "so that a head the model needs gets a positive number",
                        "符号反了：应报告关掉该头时的损失减去所有头都开着时的损失，这样模型需要的头得到正数"): lambda: (
                        -want
                    ),
                    say("these are the losses with each head off; subtract the loss with every head on to get the "
                        "change",
                        "这是每个头关掉时的损失本身；要减去所有头都开着时的损失，才得到变化量"): lambda: (
                        ablation_variant(model, idx, targets, subtract=False)
                    ),
                    say("the heads switched off piled up: each run switched off every head before it as well. Pass "
                        "ablate=[(layer, head)] with only the current head",
                        "关掉的头越积越多：每次运行把之前的头也都关掉了。传 ablate=[(layer, head)] 时只放当前这一个头"):
                        lambda: ablation_variant(model, idx, targets, cumulative=True),
                    say("rows and columns are swapped: entry [layer, head] is the effect of switching off head "
                        "`head` of layer `layer`, so the result is (n_layer, n_head)",
                        "行和列对调了：元素 [layer, head] 是关掉第 `layer` 层的第 `head` 个头的效果，所以结果是 "
                        "(n_layer, n_head)"): lambda: want.T,
                    say("the targets were shifted once more: targets[:, t] is already the token after idx[:, t]; pass "
                        "them to the model as they are",
                        "目标又被移了一位：targets[:, t] 本来就是 idx[:, t] 之后的词元；原样传给模型即可"): lambda: (
                        ablation_variant(model, idx, targets, shift=True)
                    ),
                }
                shape_hint = say("One loss change per (layer, head): (n_layer, n_head).",
                                 "每个（层, 头）一个损失变化量：(n_layer, n_head)。")
                worst = max(worst, _compare_tensors(got, want, mistakes, atol=1e-5, rtol=1e-4, shape_hint=shape_hint))
        return _passed(len(cases), worst)

    return run_check("head_ablation_effects", body)


__all__ = [name for name in dir() if name.startswith("check_")]
