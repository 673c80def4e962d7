"""Checks for lesson 10, encoder-decoder vs decoder-only: a cross-attention module and the decoder-only prompt format.

* :func:`check_cross_attention`: the reference is ``torch.nn.MultiheadAttention`` (``batch_first=True``) with random
  weights. Its ``in_proj_weight`` stacks the q, k and v projections, so its rows split into the student's ``q_proj``
  (the first C rows) and ``kv_proj`` (the other 2C: keys, then values); ``out_proj`` is ``c_proj``. The planted
  mistakes are computed from the same weights by :func:`_cross_attention_variant`.
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
    Hint,
    Mistakes,
    _call_keeping_inputs,
    _compare_tensors,
    _fresh_generator,
    _matching_mistake,
    _randomize,
    run_check,
)
from workbench.model import GPTConfig

# ------------------------------------------------------------------------------ 10 encoder-decoder

CROSS_ATOL = 1e-5  # the student's explicit softmax vs torch's scaled_dot_product_attention inside MultiheadAttention
CROSS_RTOL = 1e-4


def _cross_attention_reference(n_embd: int, n_head: int, g: torch.Generator) -> nn.MultiheadAttention:
    """torch's multi-head attention (batch first) with random weights: the reference for ``CrossAttention``."""
    return _randomize(nn.MultiheadAttention(n_embd, n_head, batch_first=True), g)


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
        raise Hint(
            f"your module has no parameters named {', '.join(missing)}; keep the layers q_proj, kv_proj and c_proj "
            "given in __init__ so that the check can load weights into them"
        )
    for name, value in weights.items():
        if own[name].shape != value.shape:
            raise Hint(
                f"`{name}` has shape {tuple(own[name].shape)}, expected {tuple(value.shape)}: q_proj maps C -> C, "
                "kv_proj C -> 2C (keys, then values) and c_proj C -> C"
            )
    student.load_state_dict(weights, strict=False)
    return student.eval()


def _cross_attention_variant(
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


_CROSS_ATTENTION_MISTAKES: dict[str, dict[str, Any]] = {  # hint -> the switches of _cross_attention_variant
    "queries and keys/values come from the wrong sides: the queries come from x (the decoder's positions), the keys "
    "and values from memory (the encoder's output)": dict(queries_from="memory", keys_values_from="x"),
    "the keys and values were computed from x: that is self-attention. In cross-attention they come from memory, the "
    "encoder's output": dict(keys_values_from="x"),
    "the queries were computed from memory: the queries come from x, the decoder's positions (one output row per "
    "position of x)": dict(queries_from="memory"),
    "the scores compare the queries with the values, softmax(Q·Vᵀ) as in the article's formula: compare them with "
    "the keys, Q·Kᵀ, and use the weights to average the values": dict(scores_with="values"),
    "keys and values are swapped: kv_proj's output is [keys | values], keys first": dict(swap_keys_values=True),
    "a causal mask was applied: cross-attention has no mask, since the whole source is known before decoding "
    "starts": dict(causal=True),
    "the scores are not scaled by 1/sqrt(head_size)": dict(scale="none"),
    "the scores were scaled by 1/sqrt(n_embd); scale them by 1/sqrt(head_size), the width of one head's keys": dict(
        scale="model"
    ),
    "softmax over the wrong axis: normalize over the source positions (the last axis), so that each decoder "
    "position's weights sum to 1": dict(softmax_dim=-2),
    "the heads were not split: the whole width acted as one head. View q, k and v as (B, length, n_head, head_size) "
    "and transpose(1, 2)": dict(split_heads=False, scale="model"),
    "the heads were not split: the whole width acted as one head (scaled by 1/sqrt(head_size)). View q, k and v as "
    "(B, length, n_head, head_size) and transpose(1, 2)": dict(split_heads=False),
    "heads were split by reshaping straight to (B, n_head, length, head_size): view as (B, length, n_head, "
    "head_size), then transpose(1, 2)": dict(split_transposed=False),
    "heads were merged without transposing back: (B, n_head, T, hs) -> transpose(1, 2) -> (B, T, C)": dict(
        merge_transposed=False
    ),
    "the output projection c_proj is missing: the heads' outputs are mixed by c_proj at the end": dict(project=False),
}


def check_cross_attention(student_cls: type[nn.Module]) -> bool:
    """A multi-head cross-attention module ``CrossAttention(config)``, called as ``module(x, memory)``.

    ``x`` is ``(B, T, C)`` (the decoder's positions), ``memory`` is ``(B, S, C)`` (the encoder's output), and the result
    is ``(B, T, C)``. The reference is ``torch.nn.MultiheadAttention(C, n_head, batch_first=True)`` called as
    ``mha(x, memory, memory)``, with its weights copied into the student's ``q_proj``, ``kv_proj`` and ``c_proj``.
    T and S differ in most cases, so keys reshaped with the queries' length fail.
    """

    def body() -> str:
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
                    raise Hint(
                        f"your code raised RuntimeError: {err} (if you reshaped the keys or values with x's length "
                        "T: they have one row per memory position, S = memory.shape[1])"
                    ) from None
                got = got.detach() if isinstance(got, torch.Tensor) else got
                mistakes = {
                    hint: lambda planted=planted: _cross_attention_variant(reference, x, memory, **planted).detach()
                    for hint, planted in _CROSS_ATTENTION_MISTAKES.items()
                }
                shape_hint = "Expected (B, T, C): one output row per position of x, whatever the memory's length."
                worst = max(
                    worst,
                    _compare_tensors(got, want, mistakes, atol=CROSS_ATOL, rtol=CROSS_RTOL, shape_hint=shape_hint),
                )
        return (
            f"matches torch.nn.MultiheadAttention with the same weights on {len(cases)} random inputs "
            f"(max difference {worst:.1e})"
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


def _compare_ids(got: Any, want: torch.Tensor, mistakes: Mistakes, name: str, shape_hint: str) -> None:
    """Raise a Hint unless ``got`` is exactly ``want`` (integer ids, the same shape)."""
    if not isinstance(got, torch.Tensor):
        raise Hint(f"`{name}` should be a torch.Tensor, got {type(got).__name__}")

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        return a.shape == b.shape and torch.equal(a.long(), b.long())

    if got.shape != want.shape:
        hint = _matching_mistake(got, mistakes, same)
        raise Hint(hint or f"`{name}` has shape {tuple(got.shape)}, expected {tuple(want.shape)}. {shape_hint}")
    if got.dtype != torch.long:
        raise Hint(
            f"`{name}` has dtype {got.dtype}: token ids are integers (torch.long). torch.cat of long tensors and "
            "torch.full with an integer fill value both give long tensors"
        )
    if not torch.equal(got, want):
        hint = _matching_mistake(got, mistakes, same)
        raise Hint(hint or f"`{name}` of the first example is {got[0].tolist()}, expected {want[0].tolist()}")


def check_prompt_example(
    prompt_example: Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]],
) -> bool:
    """``prompt_example(src, tgt, sep_id)`` -> ``(idx, targets)``: one decoder-only training batch.

    ``src`` is ``(B, S)``, ``tgt`` ``(B, U)``. ``idx`` is the source, the separator and the target without its last
    token; ``targets`` is the next token at each position, with ``-100`` at the first S positions (where the next
    token is still the prompt). Both are ``(B, S + U)`` long tensors.
    """

    def body() -> str:
        g = _fresh_generator()
        cases = ((4, 3, 3), (2, 5, 2), (3, 2, 1))  # (B, S, U)
        vocab = 12
        for case, (B, S, U) in enumerate(cases):
            sep_id = vocab + case  # an id no word has
            src = torch.randint(vocab, (B, S), generator=g)
            tgt = torch.randint(vocab, (B, U), generator=g)
            got = _call_keeping_inputs(prompt_example, ["src", "tgt", "sep_id"], src, tgt, sep_id)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise Hint(f"return a pair (idx, targets), got {type(got).__name__}")
            idx, targets = got
            seq = _prompt_sequence(src, tgt, sep_id)
            idx_mistakes = {
                "idx holds the whole sequence: the last target token is never an input (no token comes after it), "
                "so idx is the sequence without its last token": lambda: seq,
                "the separator is missing from idx: idx is the source, sep_id, then the target without its last "
                "token": lambda: torch.cat([src, tgt[:, :-1]], dim=1),
                "idx holds only the prompt: in training the model also reads the target (all but its last token), "
                "so that every target token is predicted in one pass": lambda: seq[:, : S + 1],
            }
            _compare_ids(idx, seq[:, :-1], idx_mistakes, "idx", "idx is source, separator, target without its last.")
            next_tokens = seq[:, 1:]
            targets_mistakes = {
                "the prompt is not masked: the loss would also train the model to predict the source and the "
                "separator. Set the first S targets to -100": lambda: next_tokens,
                "the separator is scored as a target: it is part of the prompt, not of the answer. The first S "
                "targets (the rest of the source, then the separator) are -100": lambda: _masked(next_tokens, S - 1),
                "the first target token is masked: only the first S targets are -100; the token after the separator "
                "is the first one the model must produce": lambda: _masked(next_tokens, S + 1),
                "the prompt's targets are 0, a real token id; use -100, the index the loss ignores (GPT.forward "
                "passes ignore_index=-100 to cross_entropy)": lambda: _masked(next_tokens, S, fill=0),
                "the targets are not shifted: targets[:, t] is the token after idx[:, t] (the next token), not "
                "idx[:, t] itself": lambda: _masked(seq[:, :-1], S),
                "targets holds only the target tokens: it needs one entry per position of idx, -100 for the S prompt "
                "positions, then the U target tokens": lambda: tgt,
            }
            shape_hint = "One target per position of idx."
            _compare_ids(targets, _masked(next_tokens, S), targets_mistakes, "targets", shape_hint)
        return f"correct on {len(cases)} random batches"

    return run_check("prompt_example", body)


__all__ = [name for name in dir() if name.startswith("check_")]
