"""The records of a generation: plain data that views, the app, lessons and worker processes read.

A :class:`Step` is one generated token with what a view needs to show why it came out: the candidates
(:class:`Candidate`), the sampling pipeline's stages (:class:`Stage`), the attention row and the
:class:`LogitLens` read at the position that produced it. :class:`Generation` is a whole run. Nothing here runs a
model or samples, so that a view, or a server that only receives steps, imports these records and nothing else.

A step crosses from a worker process to the server as :meth:`Step.to_wire` (token ids, floats and arrays, no
objects per candidate) and comes back as :meth:`Step.from_wire`, which makes the display strings again from the ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:  # for annotations only: a record needs no tokenizer, only something that has token_strs
    from workbench.tokenizers import Tokenizer


def display_strs(tok: Tokenizer | None, ids: Sequence[int]) -> list[str]:
    """One display string per token id (see ``Tokenizer.token_strs``); ``"[id]"`` when there is no tokenizer."""
    return tok.token_strs(list(ids)) if tok is not None else [f"[{i}]" for i in ids]


@dataclass
class Candidate:
    """A token with its probability under some distribution."""

    token_id: int
    token_str: str
    prob: float


@dataclass
class Stage:
    """One stage of the sampling pipeline: its name and its most likely tokens (probabilities sum to 1 over all)."""

    name: str  # "raw", "penalties" (only when some apply), "temperature", "top-k", "top-p"
    candidates: list[Candidate]
    kept: int  # how many tokens still have non-zero probability


@dataclass(eq=False)  # equality is defined below: the fields are tensors
class LogitLens:
    """The logit lens: what the model would predict next if it stopped at each read of its residual stream.

    The stream is read ``R = 2 * n_layer`` times, in the order it flows: after layer 0's attention (``resid_mid``),
    after layer 0's MLP (``resid_post``), after layer 1's attention, and so on; each read goes through the final
    norm and the unembedding. The last read is the model's own output distribution. For each read, batch row and
    position the lens keeps the ``K`` most likely tokens, most likely first (``K`` is the whole vocabulary when
    every token was kept):

    * ``probs`` ``(R, B, P, K)``: their probabilities under that read;
    * ``ids`` ``(R, B, P, K)``: their token ids, so ``ids[..., 0]`` is each read's top guess;
    * ``positions``: the ``P`` positions read, in the sequence the model ran;
    * ``token_strs``: the display string of every id in ``ids``.

    ``Trace.logit_lens`` reads many positions; a generation :class:`Step` holds the lens of the one position that
    produced its token (``B = P = 1``, ``K`` small).
    """

    probs: torch.Tensor
    ids: torch.Tensor
    positions: list[int]
    token_strs: dict[int, str]

    @property
    def n_reads(self) -> int:
        """``R``, two per layer."""
        return self.probs.shape[0]

    @property
    def read_names(self) -> list[str]:
        """``["L0 attn", "L0 mlp", "L1 attn", ...]``: a label for each read, in order."""
        return [f"L{read // 2} {('attn', 'mlp')[read % 2]}" for read in range(self.n_reads)]

    def candidates(self, position_index: int = 0, batch: int = 0, k: int | None = None) -> list[list[Candidate]]:
        """``[read][rank]``: the ``k`` (default: all kept) most likely tokens of every read at
        ``positions[position_index]``, most likely first."""
        # One tolist per tensor, not one per read: the app runs this on every step.
        ids = self.ids[:, batch, position_index, :k].tolist()
        probs = self.probs[:, batch, position_index, :k].tolist()
        return [[Candidate(i, self.token_strs[i], p) for i, p in zip(row_ids, row_probs)]
                for row_ids, row_probs in zip(ids, probs)]

    @classmethod
    def concat(cls, lenses: Sequence[LogitLens]) -> LogitLens:
        """One lens over the positions of several (e.g. the steps of a generation), in the order given."""
        if not lenses:
            raise ValueError("concat needs at least one lens")
        shapes = {(*lens.probs.shape[:2], lens.probs.shape[3]) for lens in lenses}
        if len(shapes) > 1:
            raise ValueError(f"lenses of different (reads, batch, kept tokens) cannot be joined: {sorted(shapes)}")
        return cls(
            probs=torch.cat([lens.probs for lens in lenses], dim=2),
            ids=torch.cat([lens.ids for lens in lenses], dim=2),
            positions=[p for lens in lenses for p in lens.positions],
            token_strs={i: s for lens in lenses for i, s in lens.token_strs.items()},
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LogitLens):
            return NotImplemented
        return (self.positions == other.positions and self.token_strs == other.token_strs
                and torch.equal(self.ids, other.ids) and torch.equal(self.probs, other.probs))

    def to_wire(self) -> tuple:
        """The lens as two arrays and a list; :meth:`from_wire` makes the strings again."""
        return self.probs.numpy(), self.ids.numpy(), self.positions

    @classmethod
    def from_wire(cls, wire: tuple, tok: Tokenizer | None) -> LogitLens:
        """The lens that :meth:`to_wire` was given; ``tok`` makes the display strings."""
        probs, ids, positions = wire
        unique = sorted(set(ids.ravel().tolist()))
        return cls(torch.from_numpy(probs), torch.from_numpy(ids), positions,
                   dict(zip(unique, display_strs(tok, unique))))


@dataclass
class Step:
    """One generated token and everything needed to show why it came out.

    ``attention`` is ``(L, H, T)``: for every layer and head, how the position that produced this token attended
    over the ``T`` tokens of the current window, which starts at index ``window_start`` of prompt + output.
    """

    index: int  # 0 for the first new token
    token_id: int
    token_str: str  # display string (see Tokenizer.token_strs)
    prob: float  # the model's own probability of this token (the raw distribution)
    sampled_prob: float  # its probability in the final (filtered) distribution it was drawn from
    top: list[Candidate]  # the model's most likely next tokens (raw distribution)
    stages: list[Stage]
    attention: torch.Tensor | None
    lens: LogitLens | None  # read at the position that produced this token
    window_start: int
    seconds: float  # wall time of this step: model forward(s) + sampling + capture
    notes: tuple[str, ...] = ()
    # On the first step only (with capture): the prompt's own attention (L, H, P, P), so a view can draw the
    # whole history without running the prompt through the model again.
    prompt_attention: torch.Tensor | None = None

    def to_wire(self) -> tuple:
        """The step as token ids, floats and arrays, for a pipe between processes; :meth:`from_wire` undoes it.

        It is sent on every step of the app, so it holds no object per candidate (a step has about 150: pickled as
        objects they cost a worker 145 us a step, against 42 us as lists) and no strings, which the receiver makes
        again from the ids.
        """
        return (
            self.index, self.token_id, self.prob, self.sampled_prob, self.window_start, self.seconds, self.notes,
            _ids_probs(self.top),
            [(s.name, *_ids_probs(s.candidates), s.kept) for s in self.stages],
            None if self.lens is None else self.lens.to_wire(),
            None if self.attention is None else self.attention.numpy(),
            None if self.prompt_attention is None else self.prompt_attention.numpy(),
        )

    @classmethod
    def from_wire(cls, wire: tuple, tok: Tokenizer | None) -> Step:
        """The step that :meth:`to_wire` was given, equal field by field; ``tok`` makes the display strings."""
        (index, token_id, prob, sampled_prob, window_start, seconds, notes, top, stages, lens, attention,
         prompt_attention) = wire

        def candidates(ids: list[int], probs: list[float]) -> list[Candidate]:
            return [Candidate(i, s, p) for i, s, p in zip(ids, display_strs(tok, ids), probs)]

        return cls(
            index=index,
            token_id=token_id,
            token_str=display_strs(tok, [token_id])[0],
            prob=prob,
            sampled_prob=sampled_prob,
            top=candidates(*top),
            stages=[Stage(name, candidates(ids, probs), kept) for name, ids, probs, kept in stages],
            attention=None if attention is None else torch.from_numpy(attention),
            lens=None if lens is None else LogitLens.from_wire(lens, tok),
            window_start=window_start,
            seconds=seconds,
            notes=notes,
            prompt_attention=None if prompt_attention is None else torch.from_numpy(prompt_attention),
        )


def _ids_probs(candidates: list[Candidate]) -> tuple[list[int], list[float]]:
    return [c.token_id for c in candidates], [c.prob for c in candidates]


@dataclass
class Generation:
    """The whole result of :func:`workbench.generate.generate`."""

    prompt_ids: list[int]  # the prompt actually used (after truncation or the start token)
    token_ids: list[int]  # the new tokens
    text: str  # the new text, decoded (empty when there is no tokenizer)
    token_strs: list[str]
    steps: list[Step]
    stop_reason: str  # "max_new_tokens" or "stop"
    notes: list[str] = field(default_factory=list)
    attention: torch.Tensor | None = None  # (L, H, T, T) over prompt + output, when asked for
    prompt_strs: list[str] = field(default_factory=list)  # display strings of the prompt's tokens

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + self.token_ids
