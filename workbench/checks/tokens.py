"""Checks for lessons 01 (tokens) and 02 (embeddings): BPE's pair counting and merging, token plus position
embeddings."""

from __future__ import annotations

from collections import Counter
from typing import Callable

import torch

from workbench.checks.core import (
    Hint,
    Say,
    Verdict,
    _call_keeping_inputs,
    _compare_tensors,
    _fresh_generator,
    _matching_mistake,
    _passed,
    run_check,
    say,
)
from workbench.model import GPT, GPTConfig

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


__all__ = [name for name in dir() if name.startswith("check_")]  # what `workbench.checks` re-exports
