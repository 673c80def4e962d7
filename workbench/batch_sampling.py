"""The sampling pipeline for many sequences at once, each with its own settings and generator.

:func:`workbench.sampling.sampling_pipeline` picks one sequence's token from one row of logits. In a batch of 16
sequences, running it 16 times costs more than the model's forward pass for all 16 (hundreds of small torch calls
per row). :func:`pick_rows` runs the same stages on all rows together: each stage is one call over a ``(B, vocab)``
tensor, with per-row temperatures, top-k and top-p; each stage's top candidates come from one
:func:`~workbench.sampling.top_k` over every row and stage. Only the draw stays per row: ``torch.multinomial``
with the sequence's own generator, as the solo pipeline draws, so a seed gives the solo run's tokens.

Row for row the stages are the solo pipeline's operations on the same numbers (a softmax, a top-k threshold, a
sorted cumulative sum), so they give the solo pipeline's probabilities; the tests compare them. Sequences with a
repetition penalty or banned tokens, rare in a class, take the solo pipeline (:func:`batchable` tells which).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from workbench.records import Candidate, Stage, display_strs
from workbench.sampling import MIN_TEMPERATURE, SamplingConfig, top_k
from workbench.tokenizers import Tokenizer

Picked = tuple[int, float, float, list[Candidate], list[Stage]]  # token, prob, sampled prob, top, stages


def batchable(cfg: SamplingConfig, banned: Sequence[Sequence[int]]) -> bool:
    """Whether :func:`pick_rows` takes a sequence with these settings (no penalties stage)."""
    return cfg.repetition_penalty == 1.0 and not banned


def pick_rows(logits: torch.Tensor, cfgs: Sequence[SamplingConfig], generators: Sequence[torch.Generator | None],
              tok: Tokenizer | None, n_candidates: int) -> list[Picked]:
    """Pick one token per row of ``logits`` ``(B, vocab)`` under that row's settings (each :func:`batchable`),
    with every stage's ``n_candidates`` most likely tokens, as ``workbench.generate`` records a step."""
    logits = logits.float()
    B, vocab = logits.shape
    raw = torch.softmax(logits, dim=-1)
    greedy = [b for b, cfg in enumerate(cfgs) if cfg.temperature < MIN_TEMPERATURE]
    sampled = [b for b, cfg in enumerate(cfgs) if cfg.temperature >= MIN_TEMPERATURE]
    tokens = [0] * B
    finals: dict[int, float] = {}  # greedy rows: the picked token's final probability is 1
    stages: list[torch.Tensor] = [raw]  # each (B or S, vocab); their rows are summarized together below
    if greedy:
        for b, token in zip(greedy, logits[greedy].argmax(dim=-1).tolist()):
            tokens[b], finals[b] = token, 1.0
    if sampled:
        # What each stage needs is decided from the settings in Python, not read back from tensors: every torch call
        # costs a few microseconds whatever its size, and this runs on every step of every sequence.
        rows = [cfgs[b] for b in sampled]
        temperature = torch.tensor([cfg.temperature for cfg in rows], device=logits.device)
        scaled = (logits if len(sampled) == B else logits[sampled]) / temperature[:, None]  # (S, vocab)
        rows_at = torch.arange(len(rows), device=logits.device)
        stages.append(torch.softmax(scaled, dim=-1))
        ks = [cfg.top_k if 0 < cfg.top_k < vocab else 0 for cfg in rows]
        if any(ks):
            kth = scaled.topk(max(ks), dim=-1).values[rows_at, [max(k, 1) - 1 for k in ks]]
            if not all(ks):
                kth[[k == 0 for k in ks]] = -math.inf  # rows without top-k keep everything
            scaled = scaled.masked_fill(scaled < kth[:, None], -math.inf)  # ties with the k-th all stay, as in HF
        after_k = torch.softmax(scaled, dim=-1)
        stages.append(after_k)
        with_top_p = [cfg.top_p < 1.0 for cfg in rows]
        if any(with_top_p):
            top_p = torch.tensor([cfg.top_p for cfg in rows], device=logits.device)
            # Only the tokens top-k kept can be kept: sorting those (the most any row kept) is enough, and far
            # cheaper than sorting the vocabulary when every row has a top-k.
            width = int(torch.count_nonzero(after_k, dim=-1).max())
            sorted_probs, order = after_k.topk(width, dim=-1)  # sorted, largest first
            mass_before = sorted_probs.cumsum(-1) - sorted_probs
            drop = mass_before >= top_p[:, None]  # never drops a row's first token
            if not all(with_top_p):
                drop &= top_p[:, None] < 1.0  # rows without top-p keep everything
            scaled = scaled.scatter(-1, order, scaled.gather(-1, order).masked_fill(drop, -math.inf))
        final = torch.softmax(scaled, dim=-1)
        stages.append(final)
        for s, b in enumerate(sampled):
            tokens[b] = int(torch.multinomial(final[s], 1, generator=generators[b]))
        sampled_probs = final[rows_at, [tokens[b] for b in sampled]].tolist()
        finals.update(zip(sampled, sampled_probs))

    # Every stage's top candidates in one pass: raw (B rows), then temperature, top-k, top-p (S rows each).
    everything = torch.cat(stages)
    values, indices = top_k(everything, min(n_candidates, vocab))
    kept = torch.count_nonzero(everything, dim=-1).tolist()
    values, indices = values.tolist(), indices.tolist()
    strs = dict(zip(*_unique_strs(tok, indices + [tokens])))

    def candidates(r: int) -> list[Candidate]:
        return [Candidate(i, strs[i], p) for i, p in zip(indices[r], values[r])]

    probs = raw[torch.arange(B, device=logits.device), tokens].tolist()
    out: list[Picked] = []
    S = len(sampled)
    sampled_row = {b: s for s, b in enumerate(sampled)}
    for b in range(B):
        top = candidates(b)
        if b in sampled_row:
            s = B + sampled_row[b]
            later = [Stage(name, candidates(r), kept[r]) for name, r in
                     (("temperature", s), ("top-k", s + S), ("top-p", s + 2 * S))]
        else:  # greedy: one and the same one-hot distribution, holding the picked token alone
            onehot = [Candidate(tokens[b], strs[tokens[b]], 1.0)]
            later = [Stage(name, onehot, 1) for name in ("temperature", "top-k", "top-p")]
        out.append((tokens[b], probs[b], finals[b], top, [Stage("raw", top, kept[b]), *later]))
    return out


def _unique_strs(tok: Tokenizer | None, id_lists: list[list[int]]) -> tuple[list[int], list[str]]:
    unique = sorted({i for ids in id_lists for i in ids})
    return unique, display_strs(tok, unique)
