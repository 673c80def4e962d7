"""Picking the next token: :class:`SamplingConfig`, the sampling pipeline that turns one position's logits into a
token while keeping every stage's distribution for the views, and a top-k that is fast on long CPU rows.

The pipeline's stages, in order: ``raw`` (the model's softmax), ``penalties`` (repetition penalty and banned
tokens, only when some apply), ``temperature``, ``top-k``, ``top-p``. :mod:`workbench.generate` runs it once per
step and records the stages in each :class:`~workbench.generate.Step`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

MAX_NEW_TOKENS_LIMIT = 4096  # the most tokens one call may ask for: a guard against runaway requests

# Below this temperature sampling is greedy, its limit: float32 logits divided by a smaller number overflow to
# inf (or, under 1.2e-38, by a number that float32 holds as 0), and the softmax of that is NaN.
MIN_TEMPERATURE = 1e-30


@dataclass
class SamplingConfig:
    """How to pick each next token. Names and meanings follow Hugging Face ``generate``.

    ``temperature=0`` means greedy (always the most likely token), and so does any temperature below
    ``MIN_TEMPERATURE`` (1e-30), greedy being the limit as the temperature goes to 0. ``top_k=0`` and ``top_p=1``
    switch those filters off. ``seed`` makes sampling reproducible on a given device. Generation stops after
    ``max_new_tokens``, or after the token that completes one of the ``stop`` strings (kept in the output, as in
    HF). ``repetition_penalty`` > 1 discourages tokens already in the context (HF's rule: positive logits divided,
    negative multiplied). ``banned_words`` are never produced as words (with or without a leading space);
    ``banned_token_ids`` are never produced at all.
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: Sequence[str] = ()
    repetition_penalty: float = 1.0
    banned_words: Sequence[str] = ()
    banned_token_ids: Sequence[int] = ()
    max_new_tokens_cap: int = MAX_NEW_TOKENS_LIMIT

    def __post_init__(self) -> None:
        self.stop = tuple(self.stop)
        self.banned_words = tuple(self.banned_words)
        self.banned_token_ids = tuple(self.banned_token_ids)
        self.validate()

    def validate(self) -> None:
        """Raise one ``ValueError`` naming the first field that is out of range, and its allowed range."""

        def bad(name: str, allowed: str) -> ValueError:
            return ValueError(f"{name} must be {allowed}, got {getattr(self, name)!r}")

        if not _is_int(self.max_new_tokens_cap) or self.max_new_tokens_cap < 1:
            raise bad("max_new_tokens_cap", "an integer >= 1")
        if not _is_int(self.max_new_tokens) or not 1 <= self.max_new_tokens <= self.max_new_tokens_cap:
            raise bad("max_new_tokens", f"an integer in [1, {self.max_new_tokens_cap}]")
        if not _is_number(self.temperature) or not 0.0 <= self.temperature < math.inf:
            raise bad("temperature", "a finite number >= 0 (0 means greedy)")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise bad("top_k", "an integer >= 0 (0 means no top-k filter)")
        if not _is_number(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise bad("top_p", "a number in (0, 1] (1 means no top-p filter)")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed < 2**63):
            raise bad("seed", "None or an integer in [0, 2**63)")
        if not _is_number(self.repetition_penalty) or not 0.0 < self.repetition_penalty < math.inf:
            raise bad("repetition_penalty", "a finite number > 0 (1 means no penalty)")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise bad("stop", "a list of non-empty strings")
        if not all(isinstance(w, str) and w.strip() for w in self.banned_words):
            raise bad("banned_words", "a list of non-empty strings")
        if not all(_is_int(t) and t >= 0 for t in self.banned_token_ids):
            raise bad("banned_token_ids", "a list of token ids >= 0")


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


_SLICES = 64  # top_k's number of interleaved slices per row


def top_k(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(x, k, dim=-1)`` (values, indices; largest first) for a 1-D or 2-D ``x``, faster on CPU rows as
    long as a vocabulary.

    torch.topk walks each row serially, and on 2 cores the 2 x n_layer rows of a GPT-2 logit lens take about 1 ms,
    as long as unembedding one row. Instead, cut each row of length V into W = V // 64 columns of an (64, W) view
    (column j holds positions j, j + W, j + 2W, ...) and take each column's maximum: 63 elementwise maxima of
    contiguous vectors, which vectorize. The k largest values all lie in the k columns with the largest maxima (a
    value in any other column is beaten by those k maxima), so a topk over 64 * k gathered values (plus the
    V - 64 * W leftover positions) gives the same values. Among equal values the indices may differ from
    torch.topk's, which promises no order there either.
    """
    width = x.shape[-1] // _SLICES
    if x.device.type != "cpu" or width < 4 * k or x.dim() > 2:
        return x.topk(k, dim=-1)
    rows = x.reshape(-1, x.shape[-1])  # (R, V)
    n_rows, n_vocab = rows.shape
    body = _SLICES * width
    column_max = rows[:, :body].view(n_rows, _SLICES, width).amax(1)  # (R, W)
    columns = column_max.topk(k, dim=-1).indices  # (R, k)
    offsets = torch.arange(0, body, width)  # (64,) the positions of column 0
    positions = (columns.unsqueeze(-1) + offsets).view(n_rows, -1)  # (R, 64 k)
    positions = torch.cat([positions, torch.arange(body, n_vocab).expand(n_rows, -1)], dim=1)
    best = rows.gather(1, positions).topk(k, dim=-1)
    values, indices = best.values, positions.gather(1, best.indices)
    return (values[0], indices[0]) if x.dim() == 1 else (values, indices)


def sampling_pipeline(
    logits: torch.Tensor,
    cfg: SamplingConfig,
    *,
    context: Sequence[int] = (),
    banned: Sequence[Sequence[int]] = (),
    generator: torch.Generator | None = None,
) -> tuple[int, list[tuple[str, torch.Tensor]]]:
    """Pick the next token from one position's ``logits`` (vocab,), keeping every stage's full distribution.

    Stages, in order: ``raw`` (the model's softmax), ``penalties`` (only when a repetition penalty or a ban applies;
    ``context`` holds the ids the penalty sees, ``banned`` token sequences whose last token is banned when the
    context ends with the rest), ``temperature``, ``top-k``, ``top-p``. Each is a probability vector summing to 1;
    the token is drawn from the last one (or is its argmax when ``temperature < MIN_TEMPERATURE``).
    """
    logits = logits.float()
    dists = [("raw", torch.softmax(logits, dim=-1))]

    adjusted = logits
    if cfg.repetition_penalty != 1.0 or banned:
        adjusted = logits.clone()
        if cfg.repetition_penalty != 1.0 and context:
            seen = torch.tensor(sorted(set(context)), device=logits.device)
            vals = adjusted[seen]
            adjusted[seen] = torch.where(vals > 0, vals / cfg.repetition_penalty, vals * cfg.repetition_penalty)
        for seq in banned:
            if len(seq) == 1 or list(context[-(len(seq) - 1) :]) == list(seq[:-1]):
                adjusted[seq[-1]] = -math.inf
        if torch.isinf(adjusted).all():
            raise ValueError("every token is banned: nothing can be generated")
        dists.append(("penalties", torch.softmax(adjusted, dim=-1)))

    if cfg.temperature < MIN_TEMPERATURE:  # greedy: the limit of temperature -> 0 puts all mass on the argmax
        token = int(adjusted.argmax())
        onehot = torch.zeros_like(logits)
        onehot[token] = 1.0
        dists += [(name, onehot) for name in ("temperature", "top-k", "top-p")]
        return token, dists

    scaled = adjusted / cfg.temperature
    dists.append(("temperature", torch.softmax(scaled, dim=-1)))
    if 0 < cfg.top_k < scaled.numel():
        kth = scaled.topk(cfg.top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, -math.inf)  # ties with the k-th all stay, as in HF
    after_k = torch.softmax(scaled, dim=-1)
    dists.append(("top-k", after_k))
    if cfg.top_p < 1.0:
        sorted_probs, order = after_k.sort(descending=True)
        mass_before = sorted_probs.cumsum(0) - sorted_probs
        drop = mass_before >= cfg.top_p  # the tokens before already reach top_p; never drops the first
        scaled = scaled.clone()
        scaled[order[drop]] = -math.inf
    final = torch.softmax(scaled, dim=-1)
    dists.append(("top-p", final))
    return int(torch.multinomial(final, 1, generator=generator)), dists
