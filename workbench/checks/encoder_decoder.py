"""Checks for lesson 10, encoder-decoder vs decoder-only: a cross-attention module and the decoder-only prompt format.

* :func:`check_cross_attention`: the reference is ``torch.nn.MultiheadAttention`` (``batch_first=True``) with random
  weights. Its ``in_proj_weight`` stacks the q, k and v projections, so its rows split into the student's ``q_proj``
  (the first C rows) and ``kv_proj`` (the other 2C: keys, then values); ``out_proj`` is ``c_proj``. The planted
  mistakes are computed from the same weights by :func:`cross_attention_variant`.
* :func:`check_prompt_example`: the sequence ``source, separator, target`` shifted by one, with ``-100`` as the
  targets of the prompt's positions, the value :class:`workbench.model.GPT`'s loss ignores (``ignore_index=-100``).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.checks.core import (
    _NOT_CONTIGUOUS,
    Hint,
    Mistakes,
    Say,
    Verdict,
    _call_keeping_inputs,
    _compare_tensors,
    _fresh_generator,
    _matching_mistake,
    randomize,
    run_check,
    say,
)
from workbench.model import GPTConfig

# ------------------------------------------------------------------------------ 10 encoder-decoder

CROSS_ATOL = 1e-5  # the student's explicit softmax vs torch's scaled_dot_product_attention inside MultiheadAttention
CROSS_RTOL = 1e-4


def _cross_attention_reference(n_embd: int, n_head: int, g: torch.Generator) -> nn.MultiheadAttention:
    """torch's multi-head attention (batch first) with random weights: the reference for ``CrossAttention``."""
    return randomize(nn.MultiheadAttention(n_embd, n_head, batch_first=True), g)


def _cross_attention_weights(reference: nn.MultiheadAttention) -> dict[str, torch.Tensor]:
    """``reference``'s weights under the student's names: q_proj (C -> C), kv_proj (C -> 2C, keys first), c_proj."""
    C = reference.embed_dim
    w, b = reference.in_proj_weight.detach(), reference.in_proj_bias.detach()
    return {
        "q_proj.weight": w[:C],
        "q_proj.bias": b[:C],
        "kv_proj.weight": w[C:],
        "kv_proj.bias": b[C:],
        "c_proj.weight": reference.out_proj.weight.detach(),
        "c_proj.bias": reference.out_proj.bias.detach(),
    }


def _load_cross_student(
    student_cls: type[nn.Module], reference: nn.MultiheadAttention, config: GPTConfig
) -> nn.Module:
    """Build the student's module and copy the reference's weights into q_proj, kv_proj and c_proj."""
    student = student_cls(config)
    weights = _cross_attention_weights(reference)
    own = student.state_dict()
    missing = [name for name in weights if name not in own]
    if missing:
        names = ", ".join(missing)
        raise Hint(say(
            f"your module has no parameters named {names}; keep the layers q_proj, kv_proj and c_proj given in "
            "__init__ so that the check can load weights into them",
            f"你的模块里没有名为 {names} 的参数；请保留 __init__ 里给出的 q_proj、kv_proj 和 c_proj 层，检查才能把"
            "权重载入它们",
        ))
    for name, value in weights.items():
        if own[name].shape != value.shape:
            raise Hint(say(
                f"`{name}` has shape {tuple(own[name].shape)}, expected {tuple(value.shape)}: q_proj maps C -> C, "
                "kv_proj C -> 2C (keys, then values) and c_proj C -> C",
                f"`{name}` 的形状为 {tuple(own[name].shape)}，应为 {tuple(value.shape)}：q_proj 把 C 映射到 C，"
                "kv_proj 把 C 映射到 2C（先键后值），c_proj 把 C 映射到 C",
            ))
    student.load_state_dict(weights, strict=False)
    return student.eval()


def cross_attention_variant(
    reference: nn.MultiheadAttention,
    x: torch.Tensor,
    memory: torch.Tensor,
    *,
    queries_from: str = "x",
    keys_values_from: str = "memory",
    scores_with: str = "keys",
    swap_keys_values: bool = False,
    causal: bool = False,
    scale: str = "head",
    softmax_dim: int = -1,
    split_heads: bool = True,
    split_transposed: bool = True,
    merge_transposed: bool = True,
    project: bool = True,
) -> torch.Tensor:
    """Cross-attention from ``reference``'s weights, with switches to plant one mistake at a time.

    With every switch at its default this is what ``reference(x, memory, memory)`` computes.
    """
    C = x.shape[-1]
    n_head = reference.num_heads
    head_size = C // n_head
    w, b = reference.in_proj_weight, reference.in_proj_bias
    q_in = x if queries_from == "x" else memory
    kv_in = memory if keys_values_from == "memory" else x
    q = F.linear(q_in, w[:C], b[:C])  # (B, Tq, C)
    k = F.linear(kv_in, w[C : 2 * C], b[C : 2 * C])  # (B, Tk, C)
    v = F.linear(kv_in, w[2 * C :], b[2 * C :])  # (B, Tk, C)
    if swap_keys_values:
        k, v = v, k
    n = n_head if split_heads else 1  # one head of width C when the heads are not split

    def heads(t: torch.Tensor) -> torch.Tensor:
        B, L, _ = t.shape
        if split_transposed:
            return t.view(B, L, n, C // n).transpose(1, 2)  # (B, n, L, C // n)
        return t.reshape(B, n, L, C // n)

    q, k, v = heads(q), heads(k), heads(v)
    factor = {"head": 1.0 / math.sqrt(head_size), "model": 1.0 / math.sqrt(C), "none": 1.0}[scale]
    scores = (q @ (k if scores_with == "keys" else v).transpose(-2, -1)) * factor  # (B, n, Tq, Tk)
    if causal:
        Tq, Tk = scores.shape[-2:]
        visible = torch.ones(Tq, Tk, dtype=torch.bool).tril()
        scores = scores.masked_fill(~visible, float("-inf"))
    y = torch.softmax(scores, dim=softmax_dim) @ v  # (B, n, Tq, C // n)
    B, _, Tq, _ = y.shape
    y = y.transpose(1, 2).reshape(B, Tq, C) if merge_transposed else y.reshape(B, Tq, C)
    return F.linear(y, reference.out_proj.weight, reference.out_proj.bias) if project else y


CROSS_ATTENTION_MISTAKES: dict[Say, dict[str, Any]] = {  # hint -> the switches of cross_attention_variant
    say("queries and keys/values come from the wrong sides: the queries come from x (the decoder's positions), the "
        "keys and values from memory (the encoder's output)",
        "查询和键/值取反了来源：查询来自 x（解码器的各个位置），键和值来自 memory（编码器的输出）"): dict(
        queries_from="memory", keys_values_from="x"
    ),
    say("the keys and values were computed from x: that is self-attention. In cross-attention they come from memory, "
        "the encoder's output",
        "键和值是从 x 算出来的：那是自注意力。交叉注意力里它们来自 memory，即编码器的输出"): dict(keys_values_from="x"),
    say("the queries were computed from memory: the queries come from x, the decoder's positions (one output row per "
        "position of x)",
        "查询是从 memory 算出来的：查询来自 x，即解码器的各个位置（x 的每个位置输出一行）"): dict(queries_from="memory"),
    say("the scores compare the queries with the values, softmax(Q·Vᵀ) as in the article's formula: compare them "
        "with the keys, Q·Kᵀ, and use the weights to average the values",
        "注意力分数拿查询和值比较，即文章公式里的 softmax(Q·Vᵀ)：应该和键比较 Q·Kᵀ，再用得到的权重对值加权平均"):
        dict(scores_with="values"),
    say("keys and values are swapped: kv_proj's output is [keys | values], keys first",
        "键和值对调了：kv_proj 的输出是 [键 | 值]，键在前"): dict(swap_keys_values=True),
    say("a causal mask was applied: cross-attention has no mask, since the whole source is known before decoding "
        "starts",
        "用了因果掩码：交叉注意力没有掩码，因为解码开始之前整个源序列就已知了"): dict(causal=True),
    say("the scores are not scaled by 1/sqrt(head_size)", "注意力分数没有乘以 1/sqrt(head_size)"): dict(scale="none"),
    say("the scores were scaled by 1/sqrt(n_embd); scale them by 1/sqrt(head_size), the width of one head's keys",
        "注意力分数乘的是 1/sqrt(n_embd)；应乘以 1/sqrt(head_size)，即一个头的键的宽度"): dict(scale="model"),
    say("softmax over the wrong axis: normalize over the source positions (the last axis), so that each decoder "
        "position's weights sum to 1",
        "softmax 的轴错了：要沿源序列的位置（最后一个轴）归一化，使解码器每个位置的权重之和为 1"): dict(softmax_dim=-2),
    say("the heads were not split: the whole width acted as one head. View q, k and v as (B, length, n_head, "
        "head_size) and transpose(1, 2)",
        "没有拆分注意力头：整个宽度被当成了一个头。请把 q、k、v view 成 (B, length, n_head, head_size)，再 "
        "transpose(1, 2)"): dict(split_heads=False, scale="model"),
    say("the heads were not split: the whole width acted as one head (scaled by 1/sqrt(head_size)). View q, k and v "
        "as (B, length, n_head, head_size) and transpose(1, 2)",
        "没有拆分注意力头：整个宽度被当成了一个头（按 1/sqrt(head_size) 缩放）。请把 q、k、v view 成 "
        "(B, length, n_head, head_size)，再 transpose(1, 2)"): dict(split_heads=False),
    say("heads were split by reshaping straight to (B, n_head, length, head_size): view as (B, length, n_head, "
        "head_size), then transpose(1, 2)",
        "拆分头时直接 reshape 成了 (B, n_head, length, head_size)：应先 view 成 (B, length, n_head, head_size)，"
        "再 transpose(1, 2)"): dict(split_transposed=False),
    say("heads were merged without transposing back: (B, n_head, T, hs) -> transpose(1, 2) -> (B, T, C)",
        "合并头时没有先转置回来：(B, n_head, T, hs) -> transpose(1, 2) -> (B, T, C)"): dict(merge_transposed=False),
    say("the output projection c_proj is missing: the heads' outputs are mixed by c_proj at the end",
        "缺了输出投影 c_proj：各个头的输出最后要经过 c_proj 混合"): dict(project=False),
}


def check_cross_attention(student_cls: type[nn.Module]) -> Verdict:
    """A multi-head cross-attention module ``CrossAttention(config)``, called as ``module(x, memory)``.

    ``x`` is ``(B, T, C)`` (the decoder's positions), ``memory`` is ``(B, S, C)`` (the encoder's output), and the result
    is ``(B, T, C)``. The reference is ``torch.nn.MultiheadAttention(C, n_head, batch_first=True)`` called as
    ``mha(x, memory, memory)``, with its weights copied into the student's ``q_proj``, ``kv_proj`` and ``c_proj``.
    T and S differ in most cases, so keys reshaped with the queries' length fail.
    """

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        cases = ((16, 4, 2, 3, 5), (24, 3, 1, 6, 4), (32, 8, 2, 1, 7), (12, 2, 3, 4, 4))  # (n_embd, n_head, B, T, S)
        for C, nh, B, T, S in cases:
            config = GPTConfig(vocab_size=10, block_size=16, n_layer=1, n_head=nh, n_embd=C)
            reference = _cross_attention_reference(C, nh, g)
            student = _load_cross_student(student_cls, reference, config)
            x = torch.randn(B, T, C, generator=g)
            memory = torch.randn(B, S, C, generator=g)
            # Gradients on, so that nn.MultiheadAttention never takes its fused inference path: the same
            # F.linear and attention arithmetic on both sides.
            with torch.enable_grad():
                want = reference(x, memory, memory, need_weights=False)[0].detach()
                try:
                    got = _call_keeping_inputs(student, ["x", "memory"], x, memory)
                except NotImplementedError:
                    raise
                except RuntimeError as err:  # NotImplementedError is a RuntimeError too: it is re-raised above
                    if _NOT_CONTIGUOUS in str(err):
                        raise  # a .view() after a transpose: run_check names it
                    raise Hint(say(
                        f"your code raised RuntimeError: {err} (if you reshaped the keys or values with x's length "
                        "T: they have one row per memory position, S = memory.shape[1])",
                        f"你的代码抛出了 RuntimeError: {err}（如果你用 x 的长度 T 去 reshape 键或值：它们是 memory 的"
                        "每个位置一行，S = memory.shape[1]）",
                    )) from None
                got = got.detach() if isinstance(got, torch.Tensor) else got
                mistakes = {
                    hint: lambda planted=planted: cross_attention_variant(reference, x, memory, **planted).detach()
                    for hint, planted in CROSS_ATTENTION_MISTAKES.items()
                }
                shape_hint = say("Expected (B, T, C): one output row per position of x, whatever the memory's length.",
                                 "应为 (B, T, C)：x 的每个位置输出一行，与 memory 的长度无关。")
                worst = max(
                    worst,
                    _compare_tensors(got, want, mistakes, atol=CROSS_ATOL, rtol=CROSS_RTOL, shape_hint=shape_hint),
                )
        return say(
            f"matches torch.nn.MultiheadAttention with the same weights on {len(cases)} random inputs "
            f"(max difference {worst:.1e})",
            f"在 {len(cases)} 组随机输入上与权重相同的 torch.nn.MultiheadAttention 一致（最大差值 {worst:.1e}）",
        )

    return run_check("CrossAttention", body)


def _prompt_sequence(src: torch.Tensor, tgt: torch.Tensor, sep_id: int) -> torch.Tensor:
    """The whole text of each example: source, separator, target, ``(B, S + 1 + U)``."""
    sep = torch.full((src.shape[0], 1), sep_id, dtype=src.dtype)
    return torch.cat([src, sep, tgt], dim=1)


def _masked(targets: torch.Tensor, n: int, fill: int = -100) -> torch.Tensor:
    out = targets.clone()
    out[:, :n] = fill
    return out


def _compare_ids(got: Any, want: torch.Tensor, mistakes: Mistakes, name: str, shape_hint: Say) -> None:
    """Raise a Hint unless ``got`` is exactly ``want`` (integer ids, the same shape)."""
    if not isinstance(got, torch.Tensor):
        raise Hint(say(f"`{name}` should be a torch.Tensor, got {type(got).__name__}",
                       f"`{name}` 应是 torch.Tensor，却得到了 {type(got).__name__}"))

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        return a.shape == b.shape and torch.equal(a.long(), b.long())

    if got.shape != want.shape:
        hint = _matching_mistake(got, mistakes, same)
        raise Hint(hint or say(
            f"`{name}` has shape {tuple(got.shape)}, expected {tuple(want.shape)}. {shape_hint}",
            f"`{name}` 的形状为 {tuple(got.shape)}，应为 {tuple(want.shape)}。{shape_hint.zh}",
        ))
    if got.dtype != torch.long:
        raise Hint(say(
            f"`{name}` has dtype {got.dtype}: token ids are integers (torch.long). torch.cat of long tensors and "
            "torch.full with an integer fill value both give long tensors",
            f"`{name}` 的 dtype 是 {got.dtype}：词元 id 是整数（torch.long）。long 张量的 torch.cat，以及用整数填充的 "
            "torch.full，得到的都是 long 张量",
        ))
    if not torch.equal(got, want):
        hint = _matching_mistake(got, mistakes, same)
        raise Hint(hint or say(
            f"`{name}` of the first example is {got[0].tolist()}, expected {want[0].tolist()}",
            f"第一个样本的 `{name}` 是 {got[0].tolist()}，应为 {want[0].tolist()}",
        ))


def check_prompt_example(
    prompt_example: Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]],
) -> Verdict:
    """``prompt_example(src, tgt, sep_id)`` -> ``(idx, targets)``: one decoder-only training batch.

    ``src`` is ``(B, S)``, ``tgt`` ``(B, U)``. ``idx`` is the source, the separator and the target without its last
    token; ``targets`` is the next token at each position, with ``-100`` at the first S positions (where the next
    token is still the prompt). Both are ``(B, S + U)`` long tensors.
    """

    def body() -> Say:
        g = _fresh_generator()
        cases = ((4, 3, 3), (2, 5, 2), (3, 2, 1))  # (B, S, U)
        vocab = 12
        for case, (B, S, U) in enumerate(cases):
            sep_id = vocab + case  # an id no word has
            src = torch.randint(vocab, (B, S), generator=g)
            tgt = torch.randint(vocab, (B, U), generator=g)
            got = _call_keeping_inputs(prompt_example, ["src", "tgt", "sep_id"], src, tgt, sep_id)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise Hint(say(f"return a pair (idx, targets), got {type(got).__name__}",
                               f"请返回一对 (idx, targets)，你返回的是 {type(got).__name__}"))
            idx, targets = got
            seq = _prompt_sequence(src, tgt, sep_id)
            idx_mistakes = {
                say("idx holds the whole sequence: the last target token is never an input (no token comes after "
                    "it), so idx is the sequence without its last token",
                    "idx 放了整个序列：目标的最后一个词元永远不会作为输入（它后面没有词元了），所以 idx 是去掉最后一个"
                    "词元的序列"): lambda: seq,
                say("the separator is missing from idx: idx is the source, sep_id, then the target without its last "
                    "token",
                    "idx 里缺了分隔符：idx 依次是源序列、sep_id、去掉最后一个词元的目标序列"): lambda: torch.cat(
                    [src, tgt[:, :-1]], dim=1
                ),
                say("idx holds only the prompt: in training the model also reads the target (all but its last "
                    "token), so that every target token is predicted in one pass",
                    "idx 只放了提示词：训练时模型还要读入目标序列（除最后一个词元外），这样一次前向就能预测每个目标"
                    "词元"): lambda: seq[:, : S + 1],
            }
            _compare_ids(idx, seq[:, :-1], idx_mistakes, "idx",
                         say("idx is source, separator, target without its last.",
                             "idx 是源序列、分隔符、去掉最后一个词元的目标序列。"))
            next_tokens = seq[:, 1:]
            targets_mistakes = {
                say("the prompt is not masked: the loss would also train the model to predict the source and the "
                    "separator. Set the first S targets to -100",
                    "没有遮住提示词：这样损失还会训练模型去预测源序列和分隔符。把前 S 个目标设为 -100"): lambda: (
                    next_tokens
                ),
                say("the separator is scored as a target: it is part of the prompt, not of the answer. The first S "
                    "targets (the rest of the source, then the separator) are -100",
                    "分隔符被当成了要预测的目标：它属于提示词，不属于答案。前 S 个目标（源序列的其余部分，然后是分隔符）"
                    "都是 -100"): lambda: _masked(next_tokens, S - 1),
                say("the first target token is masked: only the first S targets are -100; the token after the "
                    "separator is the first one the model must produce",
                    "目标的第一个词元被遮住了：只有前 S 个目标是 -100；分隔符之后的词元是模型必须生成的第一个"): lambda: (
                    _masked(next_tokens, S + 1)
                ),
                say("the prompt's targets are 0, a real token id; use -100, the index the loss ignores (GPT.forward "
                    "passes ignore_index=-100 to cross_entropy)",
                    "提示词位置的目标是 0，这是一个真实的词元 id；请用 -100，损失会忽略它（GPT.forward 把 "
                    "ignore_index=-100 传给 cross_entropy）"): lambda: _masked(next_tokens, S, fill=0),
                say("the targets are not shifted: targets[:, t] is the token after idx[:, t] (the next token), not "
                    "idx[:, t] itself",
                    "目标没有移位：targets[:, t] 是 idx[:, t] 之后的那个词元（下一个词元），而不是 idx[:, t] 本身"):
                    lambda: _masked(seq[:, :-1], S),
                say("targets holds only the target tokens: it needs one entry per position of idx, -100 for the S "
                    "prompt positions, then the U target tokens",
                    "targets 只放了目标词元：idx 的每个位置都要有一项，提示词的 S 个位置为 -100，然后是 U 个目标词元"):
                    lambda: tgt,
            }
            shape_hint = say("One target per position of idx.", "idx 的每个位置一个目标。")
            _compare_ids(targets, _masked(next_tokens, S), targets_mistakes, "targets", shape_hint)
        n = len(cases)
        return say(f"correct on {n} random batches", f"在 {n} 个随机批次上全部正确")

    return run_check("prompt_example", body)


__all__ = [name for name in dir() if name.startswith("check_")]
