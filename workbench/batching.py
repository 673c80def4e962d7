"""Batched decoding: many sequences, one forward pass per step (continuous batching).

A small model's decoding step is mostly per-call overhead: one step for 16 sequences costs little more than one
for a single sequence. :class:`BatchedDecoder` keeps every active sequence in one batch and steps them together:
each step runs the model once over one new token per sequence, then samples and captures per sequence. Sequences
join (:meth:`BatchedDecoder.add`) and leave (when done, or :meth:`BatchedDecoder.remove`) between steps.

**Each sequence is a solo decoder.** A sequence is the very ``_Decoder`` that :func:`workbench.generate.stream`
runs, so prompt handling, seeds (a ``torch.Generator`` per sequence, seeded as a solo run seeds it), sampling,
stop strings, banned words and the :class:`~workbench.records.Step` records are the solo run's own code. The
batch only replaces its forward pass for the steps in between:

* **prefill alone**: a joining sequence's prompt runs through the model by itself, into its own one-row cache
  (its first step is therefore the solo run's, bit for bit), and that cache is copied into a row of the batch's
  cache. Batched prefill would pad prompts of different lengths to the longest; alone, a prompt costs what it
  costs in a solo run, and a step of the batch waits only for the prompts that joined just before it;
* **a full context slides alone**: a sequence whose window is full rebuilds it the solo way, out of the batch
  for that step, and comes back in with its new cache;
* **one forward pass per step** for all other sequences with the same ablated heads (sequences ablating
  different heads form groups, one pass each; usually there is one group).

**The cache: rows of different lengths.** :class:`RowCache` holds one row per sequence, each filled from slot 0
up to its own length (no padding on the left, no shifting when a sequence joins or leaves). A step writes each
row's new key and value at that row's own length, gives each new token its own position (learned positions and
RoPE alike, as :class:`~workbench.model.KVCache` supplies positions to the model), and masks each row's keys past
its length: the batch's attention runs over the longest row, and a shorter row's extra slots get weight exactly 0.
A sequence that leaves hands its row to the last row (one row copied), so the active rows stay ``0 .. B-1`` and
the forward pass reads the cache without gathering it.

Numbers: rows computed together go through the same matrix kernels as a single row only up to rounding, so
captured attention rows, lens and logits equal the solo run's to float tolerance (tests: 1e-5), not bit for bit.
Greedy decoding is token-identical unless two top logits tie to that tolerance; seeded sampling draws with the
same generator state from probabilities equal to float tolerance, so it picks a different token only when its
uniform draw lands within that tolerance of a boundary between two tokens (``benchmarks/batching.py`` counts it).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Sequence

import torch

from workbench.batch_sampling import Picked, batchable, pick_rows
from workbench.generate import N_CANDIDATES, N_LENS, _Decoder
from workbench.lens import lens_from_logits, read_logits
from workbench.model import GPT, GPTConfig, KVCache
from workbench.records import LogitLens, Step
from workbench.sampling import SamplingConfig
from workbench.tokenizers import Tokenizer

FIRST_ROWS = 4  # rows a group's cache starts with; it doubles when full, so memory follows the batch's size


class RowCache(KVCache):
    """A KV cache whose rows are sequences of different lengths (see the module docstring).

    ``lengths[b]`` is row ``b``'s stored positions; ``length`` (what the model checks against the context) is the
    longest row's, and ``batch_size`` the number of rows in use. Steps append one token per row; a row is filled
    from a one-sequence :class:`KVCache` with :meth:`add_row`.
    """

    def __init__(self, config: GPTConfig, capacity: int, device: torch.device | str, dtype: torch.dtype) -> None:
        super().__init__(config, capacity, device, dtype)
        # Zeros, not the base class's empty memory: a shorter row's attention reads the slots past its length (with
        # weight 0 after the mask), and 0 x NaN from uninitialized memory is NaN. Slots a departed row left behind
        # hold its finite keys and values.
        self._k.zero_()
        self._v.zero_()
        self.config, self.device = config, torch.device(device)
        self.lengths: list[int] = []
        self._sync()

    def _sync(self) -> None:
        self.batch_size = len(self.lengths)
        self.length = max(self.lengths, default=0)
        # Every row as long as the longest (one sequence alone, say): then each new token is written at one slot for
        # all rows, and no key needs masking, as in the plain cache (its fastest attention kernel takes no mask).
        self.aligned = min(self.lengths, default=0) == self.length
        self._index: tuple[torch.Tensor, torch.Tensor] | None = None  # (rows, lengths) as tensors, made on demand

    def _tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._index is None:
            self._index = (torch.arange(self.batch_size, device=self.device),
                           torch.tensor(self.lengths, device=self.device))
        return self._index

    def add_row(self, solo: KVCache) -> int:
        """Copy a one-sequence cache into a new last row (growing the buffers when full); return the row."""
        if self.batch_size == self.capacity:
            self._grow()
        row, n = self.batch_size, solo.length
        self._k[:, row, :, :n] = solo._k[:, 0, :, :n]
        self._v[:, row, :, :n] = solo._v[:, 0, :, :n]
        self.lengths.append(n)
        self._sync()
        return row

    def remove_row(self, row: int) -> None:
        """Free ``row``: the last row moves into it (callers renumber that sequence)."""
        last = self.batch_size - 1
        if row != last:
            n = self.lengths[last]
            self._k[:, row, :, :n] = self._k[:, last, :, :n]
            self._v[:, row, :, :n] = self._v[:, last, :, :n]
            self.lengths[row] = n
        self.lengths.pop()
        self._sync()

    @property
    def capacity(self) -> int:
        """Rows the cache has room for."""
        return self._k.shape[1]

    def _grow(self) -> None:
        bigger = RowCache(self.config, 2 * self.capacity, self.device, self._k.dtype)
        used = self.batch_size
        bigger._k[:, :used], bigger._v[:, :used] = self._k[:, :used], self._v[:, :used]
        self._k, self._v = bigger._k, bigger._v

    # The three methods below are what the model asks of a cache.
    def positions(self, T: int) -> torch.Tensor:
        """Each row's next position, ``(B, 1)``."""
        self._one_token(T)
        return self._tensors()[1][:, None]

    def key_mask(self, T: int) -> torch.Tensor | None:
        """``(B, 1, 1, length + 1)``: row ``b``'s new query sees its ``lengths[b]`` stored keys and its own (None when
        the rows are aligned: every query sees every key)."""
        self._one_token(T)
        if self.aligned:
            return None
        slots = torch.arange(self.length + 1, device=self.device)
        return (slots <= self._tensors()[1][:, None])[:, None, None]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write each row's new key/value at that row's length; return every row's keys/values over the longest."""
        self._one_token(k.shape[2])
        B, end = self.batch_size, self.length + 1
        if self.aligned:
            self._k[layer, :B, :, self.length : end] = k
            self._v[layer, :B, :, self.length : end] = v
        else:
            rows, at = self._tensors()
            self._k[layer, rows, :, at] = k[:, :, 0]  # (B, n_kv, hs) at (row b, slot lengths[b])
            self._v[layer, rows, :, at] = v[:, :, 0]
        return self._k[layer, :B, :, :end], self._v[layer, :B, :, :end]

    def advance(self, T: int) -> None:
        self.lengths = [n + T for n in self.lengths]
        self._sync()

    @staticmethod
    def _one_token(T: int) -> None:
        if T != 1:
            raise ValueError(f"a RowCache takes one new token per row, got {T}; a prompt is prefilled alone and "
                             "copied in with add_row")


@dataclass
class Emitted:
    """What one sequence made in a step: its :class:`Step`, or the error that ended it; ``last`` when it ended."""

    key: Hashable
    step: Step | None = None
    error: BaseException | None = None
    last: bool = False


@dataclass
class _Sequence:
    key: Hashable
    decoder: _Decoder
    notes: list[str] = field(default_factory=list)  # notes for its next step (a slide of the window)


class _Group:
    """Sequences that ablate the same heads, so that one forward pass serves them all: row ``b`` of ``cache``
    is ``sequences[b]``."""

    def __init__(self, model: GPT, ablate: tuple[tuple[int, int], ...], cache: RowCache | None = None) -> None:
        weight = model.transformer.wte.weight
        self.ablate = list(ablate)
        self.cache = cache if cache is not None else RowCache(model.config, FIRST_ROWS, weight.device, weight.dtype)
        self.sequences: list[_Sequence] = []

    def add(self, seq: _Sequence) -> None:
        self.cache.add_row(seq.decoder.cache)
        self.sequences.append(seq)

    def remove(self, seq: _Sequence) -> None:
        row = self.sequences.index(seq)
        self.cache.remove_row(row)
        last = self.sequences.pop()
        if last is not seq:
            self.sequences[row] = last


class BatchedDecoder:
    """Decodes many sequences of ``model`` at once; see the module docstring.

    ``capture`` records attention rows and the logit lens in every step (as :func:`workbench.generate.stream`
    does); ``bf16`` uses bfloat16 autocast on CUDA. Invalid settings of a sequence raise ``ValueError`` from
    :meth:`add`, before it joins.
    """

    def __init__(self, model: GPT, tok: Tokenizer | None, *, capture: bool = True, bf16: bool = False) -> None:
        self.model, self.tok, self.capture, self.bf16 = model, tok, capture, bf16
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if bf16 and model.device.type == "cuda"
                         else nullcontext())
        self._groups: dict[tuple[tuple[int, int], ...], _Group] = {}
        self._where: dict[Hashable, tuple[_Group, _Sequence]] = {}
        # The cache of the last group that emptied, for the next group: a lone sequence (a class of one, a demo)
        # joins an empty batch every time, and a new cache costs its first token a few milliseconds of zeroing.
        self._spare: RowCache | None = None

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._where

    @torch.inference_mode()
    def add(self, key: Hashable, prompt: str | Sequence[int], cfg: SamplingConfig,
            ablate: Iterable[tuple[int, int]] = ()) -> Emitted:
        """Start a sequence: prefill its prompt alone and return its first step (``last`` when that already ends
        it, and then it does not join)."""
        if key in self._where:
            raise ValueError(f"a sequence with key {key!r} is already decoding")
        start = time.perf_counter()
        decoder = _Decoder(self.model, self.tok, prompt, cfg, self.capture, ablate, self.bf16)
        step = decoder.take(*decoder._forward(decoder.ids), list(decoder.notes), start)
        if decoder.finished:
            return Emitted(key, step, last=True)
        ablated = tuple(sorted(set(decoder.ablate)))
        if ablated not in self._groups:
            self._groups[ablated] = _Group(self.model, ablated, self._spare)
            self._spare = None
        group = self._groups[ablated]
        seq = _Sequence(key, decoder)
        group.add(seq)
        self._where[key] = (group, seq)
        return Emitted(key, step)

    @torch.inference_mode()  # the cache's tensors were made in inference mode, and a row moves
    def remove(self, key: Hashable) -> None:
        """End a sequence before it is done (a stop, a vanished client); unknown keys are ignored."""
        if key in self._where:
            self._drop(key)

    def _drop(self, key: Hashable) -> None:
        group, seq = self._where.pop(key)
        group.remove(seq)
        if not group.sequences:
            del self._groups[tuple(group.ablate)]
            if group.cache.capacity <= FIRST_ROWS:  # a cache a big batch grew is given back, not kept
                self._spare = group.cache

    @torch.inference_mode()
    def step(self) -> list[Emitted]:
        """Advance every sequence by one token; sequences that end (done, or an error) leave the batch."""
        out: list[Emitted] = []
        for group in list(self._groups.values()):
            out += self._step_group(group)
        for emitted in out:
            if emitted.last:
                self._drop(emitted.key)
        return out

    def _step_group(self, group: _Group) -> list[Emitted]:
        start = time.perf_counter()
        block = self.model.config.block_size
        # A full window slides alone (the solo way): its row leaves for this step and comes back rebuilt.
        full = [seq for seq, n in zip(group.sequences, group.cache.lengths) if n >= block]
        for seq in full:
            group.remove(seq)
        out = []
        if group.sequences:
            try:
                outputs = self._forward(group)
                picked = self._pick(group.sequences, outputs)
            except Exception as err:  # noqa: BLE001 - the pass served these sequences, and ends them
                outputs, picked = [err] * len(group.sequences), {}
            for seq, output in zip(group.sequences, outputs):
                out.append(Emitted(seq.key, error=output, last=True) if isinstance(output, Exception)
                           else self._take(seq, output, start, picked.get(seq.key)))
        for seq in full:
            start = time.perf_counter()
            try:
                output = seq.decoder._slide(seq.notes)
            except Exception as err:  # noqa: BLE001 - ends this sequence only
                out.append(Emitted(seq.key, error=err, last=True))
                group.add(seq)  # so that leaving the batch finds it in its group
                continue
            group.add(seq)
            out.append(self._take(seq, output, start))
        return out

    def _pick(self, seqs: list[_Sequence], outputs: list[tuple]) -> dict[Hashable, Picked]:
        """The next tokens of the sequences whose settings :func:`pick_rows` takes, picked together."""
        rows = [b for b, seq in enumerate(seqs) if batchable(seq.decoder.cfg, seq.decoder.banned)]
        if not rows:
            return {}
        decoders = [seqs[b].decoder for b in rows]
        logits = torch.stack([outputs[b][0] for b in rows])
        picked = pick_rows(logits, [d.cfg for d in decoders], [d.generator for d in decoders], self.tok,
                           N_CANDIDATES)
        return {seqs[b].key: p for b, p in zip(rows, picked)}

    def _take(self, seq: _Sequence, output: tuple, start: float, picked: Picked | None = None) -> Emitted:
        """The sequence's record of this step (its own sampling unless ``picked``); an error ends this sequence
        only."""
        try:
            step = seq.decoder.take(*output, seq.notes, start, picked)
        except Exception as err:  # noqa: BLE001 - e.g. every token banned: this sequence ends with it
            return Emitted(seq.key, error=err, last=True)
        seq.notes = []
        return Emitted(seq.key, step, last=seq.decoder.finished)

    def _forward(self, group: _Group) -> list[tuple[torch.Tensor, torch.Tensor | None, LogitLens | None]]:
        """One forward pass over the group's last tokens: per sequence, next-token logits, the attention row over
        its own keys and its lens, as :func:`workbench.generate.stream` computes them alone."""
        seqs, lengths = group.sequences, list(group.cache.lengths)
        idx = torch.tensor([[seq.decoder.ids[-1]] for seq in seqs], device=self.model.device)  # (B, 1)
        with self.autocast:
            if not self.capture:
                logits = self.model(idx, kv_cache=group.cache, ablate=group.ablate, last_only=True)[:, -1]
                return [(row, None, None) for row in logits]
            capture: dict = {}
            self.model(idx, kv_cache=group.cache, ablate=group.ablate, capture=capture, unembed=False)
            attention = torch.stack([p[:, :, -1] for p in capture["attn.pattern"]], dim=1).float()  # (B, L, H, S)
            mid = torch.stack([r[:, -1] for r in capture["resid_mid"]])  # (L, B, C)
            post = torch.stack([r[:, -1] for r in capture["resid_post"]])  # (L, B, C)
            reads = read_logits(self.model, mid, post)  # (2L, B, vocab)
        positions = [len(seq.decoder.ids) - 1 for seq in seqs]  # of the query that ran, in prompt + output
        lens = lens_from_logits(reads[:, :, None], positions, N_LENS, self.tok)  # (2L, B, 1, N_LENS)
        return [(reads[-1, b], attention[b, :, :, : n + 1].clone(), _lens_row(lens, b))
                for b, n in enumerate(lengths)]


def _lens_row(lens: LogitLens, b: int) -> LogitLens:
    """Batch row ``b`` of a lens computed for a batch, as the lens of that sequence alone."""
    if lens.ids.shape[1] == 1:  # a batch of one is that sequence's lens already
        return lens
    ids = lens.ids[:, b : b + 1].clone()
    strs = {i: lens.token_strs[i] for i in set(ids.flatten().tolist())}
    return LogitLens(lens.probs[:, b : b + 1].clone(), ids, [lens.positions[b]], strs)
