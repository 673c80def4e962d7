"""Generation, one token at a time, with everything a view needs recorded on each step.

``stream(model, tok, prompt, cfg)`` yields a :class:`Step` per new token: the token, its probability, the model's
top candidates, the sampling pipeline as data (raw -> temperature -> top-k -> top-p -> picked; the pipeline itself
is :mod:`workbench.sampling`), and, with ``capture=True``, the attention row of every layer and head for the
position that produced the token and the logit lens read at that position. A view can draw a step without touching
the model.

Decoding is incremental with a KV cache: a step runs the model on one token. Capture adds only the new query's
attention rows (O(L*H*T)) and one unembedding of the 2*L residual reads for the lens.

Context handling:

* an empty prompt starts from the tokenizer's ``start_id`` (``<|endoftext|>`` for BPE/GPT-2, a newline for
  characters), or token id 0 when there is no tokenizer;
* a prompt longer than the context keeps its last ``block_size`` tokens (the first step's ``notes`` say so);
* when the context fills up during generation, the window slides: the last ``3/4 * block_size`` tokens are kept,
  the cache is rebuilt from them, and generation goes on (that step's ``notes`` say so). Sliding by a quarter
  instead of by one token keeps most steps incremental.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Iterable, Iterator, Sequence

import torch

from workbench.lens import lens_from_logits, read_logits
from workbench.model import GPT
from workbench.records import Candidate, Generation, LogitLens, Stage, Step, display_strs
# Lessons, the checks and the app import SamplingConfig, sampling_pipeline and top_k from here too.
from workbench.sampling import MIN_TEMPERATURE, SamplingConfig, sampling_pipeline, top_k
from workbench.tokenizers import Tokenizer

N_CANDIDATES = 10  # candidates kept per pipeline stage and in Step.top
N_LENS = 5  # tokens kept per read in each step's logit lens
WINDOW_KEEP = 0.75  # fraction of the context kept when the window slides


def _candidates(tok: Tokenizer | None, probs: torch.Tensor, n: int) -> list[Candidate]:
    values, indices = top_k(probs, min(n, probs.numel()))
    ids = indices.tolist()
    return [Candidate(i, s, p) for i, s, p in zip(ids, display_strs(tok, ids), values.tolist())]


def prompt_ids(model: GPT, tok: Tokenizer | None, prompt: str | Sequence[int]) -> tuple[list[int], list[str]]:
    """Token ids for ``prompt`` (text needs a tokenizer; a list of ids does not) that fit the context, plus notes."""
    notes = []
    if isinstance(prompt, str):
        if tok is None:
            raise ValueError("a text prompt needs a tokenizer; pass token ids to generate without one")
        lone = next((i for i, ch in enumerate(prompt) if 0xD800 <= ord(ch) <= 0xDFFF), None)
        if lone is not None:  # e.g. "abc\ud800def" from a JSON client: not a character, so no tokenizer can take it
            raise ValueError(f"the prompt has an unpaired surrogate U+{ord(prompt[lone]):04X} at position {lone}, "
                             "which is not a character")
        ids = tok.encode(prompt)
    else:
        ids = [int(i) for i in prompt]
        bad = [i for i in ids if not 0 <= i < model.config.vocab_size]
        if bad:
            raise ValueError(f"prompt token ids {bad[:5]} are outside the vocabulary [0, {model.config.vocab_size})")
    if not ids:
        start = tok.start_id if tok is not None else 0
        ids = [start]
        notes.append(f"empty prompt: started from the start token {display_strs(tok, [start])[0]!r} (id {start})")
    block = model.config.block_size
    if len(ids) > block:
        notes.append(f"prompt has {len(ids)} tokens, more than the context of {block}: kept the last {block}")
        ids = ids[-block:]
    return ids, notes


class _Decoder:
    """The decoding loop behind :func:`stream` and :func:`generate`; keeps the prefill pattern for ``generate``."""

    def __init__(
        self,
        model: GPT,
        tok: Tokenizer | None,
        prompt: str | Sequence[int],
        cfg: SamplingConfig,
        capture: bool,
        ablate: Iterable[tuple[int, int]],
        bf16: bool,
    ) -> None:
        cfg.validate()  # fields may have been changed after construction
        self.model, self.tok, self.cfg, self.capture = model, tok, cfg, capture
        self.ablate = list(ablate)
        model._ablation_by_layer(self.ablate)  # validate before any work
        self.prompt_ids, self.notes = prompt_ids(model, tok, prompt)
        self.ids = list(self.prompt_ids)
        self.window_start = 0
        self.prefill_attention: torch.Tensor | None = None  # (L, H, P, P)
        self.cache = model.new_kv_cache(batch_size=1)
        self.device = model.device
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if bf16 and self.device.type == "cuda" else nullcontext()
        )
        self.generator = None
        if cfg.seed is not None:
            self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.banned = self._banned_sequences()
        self.stop_reason = "max_new_tokens"
        self.finished = False  # set by the step that ends the run

    def _banned_sequences(self) -> list[list[int]]:
        seqs = [[t] for t in self.cfg.banned_token_ids if t < self.model.config.vocab_size]
        for word in self.cfg.banned_words:
            if self.tok is None:
                raise ValueError("banned_words needs a tokenizer; use banned_token_ids without one")
            for variant in {word, " " + word}:
                try:
                    seqs.append(self.tok.encode(variant))
                except ValueError:
                    pass  # a character tokenizer cannot spell it at all, so it can never be generated
        return seqs

    def _forward(self, new_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None, LogitLens | None]:
        """Run the new tokens through the cached model: next-token logits, the last query's attention and lens."""
        idx = torch.tensor([new_ids], device=self.device)
        with self.autocast:
            if not self.capture:
                return self.model(idx, kv_cache=self.cache, ablate=self.ablate, last_only=True)[0, -1], None, None
            capture: dict = {}
            self.model(idx, kv_cache=self.cache, ablate=self.ablate, capture=capture, unembed=False)
            # Only the last position is kept, so slice before stacking (a Trace would stack every position).
            patterns = capture["attn.pattern"]  # L x (1, H, T_new, T)
            if self.prefill_attention is None:
                self.prefill_attention = torch.stack([p[0] for p in patterns]).float()  # (L, H, P, P)
            attention = torch.stack([p[0, :, -1] for p in patterns]).float()  # (L, H, T)
            # The lens of the last position. Its last read (after the last MLP) is the model's own output, so its
            # logits are the next-token logits: no separate unembedding for them.
            mid = torch.stack([r[0, -1] for r in capture["resid_mid"]])  # (L, C)
            post = torch.stack([r[0, -1] for r in capture["resid_post"]])  # (L, C)
            reads = read_logits(self.model, mid, post)  # (2L, vocab)
        position = len(self.ids) - 1  # in prompt + output: the position whose query ran last
        lens = lens_from_logits(reads[:, None, None], [position], N_LENS, self.tok)  # (2L, 1, 1, N_LENS)
        return reads[-1], attention, lens

    def _pick(self, logits: torch.Tensor) -> tuple[int, float, float, list[Candidate], list[Stage]]:
        """Run the sampling pipeline and keep each stage's top candidates for display."""
        token, dists = sampling_pipeline(
            logits, self.cfg, context=self.ids[self.window_start :], banned=self.banned, generator=self.generator
        )
        # Greedy decoding gives three stages one and the same one-hot tensor: summarize each distinct tensor once,
        # and that one without scanning the vocabulary: it holds the picked token alone, at probability 1.
        summaries: dict[int, tuple[list[Candidate], int]] = {}
        if self.cfg.temperature < MIN_TEMPERATURE:
            summaries[id(dists[-1][1])] = ([Candidate(token, display_strs(self.tok, [token])[0], 1.0)], 1)
        for _, probs in dists:
            if id(probs) not in summaries:
                summaries[id(probs)] = (_candidates(self.tok, probs, N_CANDIDATES), int(torch.count_nonzero(probs)))
        stages = [Stage(name, *summaries[id(probs)]) for name, probs in dists]
        raw, final = dists[0][1], dists[-1][1]
        return token, float(raw[token]), float(final[token]), stages[0].candidates, stages

    # A decorator, not a `with` block inside: torch re-enters inference mode around every resumption of the
    # generator, so steps stay gradient-free when a server resumes the generator on another thread.
    @torch.inference_mode()
    def steps(self) -> Iterator[Step]:
        """Yield one :class:`Step` per new token until ``max_new_tokens`` or a stop string."""
        notes = list(self.notes)
        start = time.perf_counter()
        logits, attention, lens = self._forward(self.ids)
        while True:
            step = self.take(logits, attention, lens, notes, start)
            yield step
            if self.finished:
                return
            notes = []
            start = time.perf_counter()
            logits, attention, lens = self._advance(step.token_id, notes)

    def take(self, logits: torch.Tensor, attention: torch.Tensor | None, lens: LogitLens | None, notes: list[str],
             start: float, picked: tuple | None = None) -> Step:
        """Pick the next token from the model's output at the last position and record it as a :class:`Step`
        (``start``: when the step's work began); sets ``finished`` and ``stop_reason`` when it ends the run.
        :mod:`workbench.batching` calls it with one row of a batched forward, and with the token it ``picked``
        for this row together with other rows (what :meth:`_pick` returns)."""
        index = len(self.ids) - len(self.prompt_ids)
        token, prob, sampled_prob, top, stages = picked if picked is not None else self._pick(logits)
        self.ids.append(token)
        step = Step(
            index=index,
            token_id=token,
            token_str=display_strs(self.tok, [token])[0],
            prob=prob,
            sampled_prob=sampled_prob,
            top=top,
            stages=stages,
            attention=attention,
            lens=lens,
            window_start=self.window_start,
            seconds=time.perf_counter() - start,
            notes=tuple(notes),
            prompt_attention=self.prefill_attention if index == 0 else None,
        )
        if self._hit_stop():
            self.stop_reason, self.finished = "stop", True
        elif index == self.cfg.max_new_tokens - 1:
            self.finished = True
        return step

    def _advance(self, token: int, notes: list[str]) -> tuple[torch.Tensor, torch.Tensor | None, LogitLens | None]:
        """Feed the token just picked; slide the window first when the cache is full."""
        if self.cache.length >= self.model.config.block_size:
            return self._slide(notes)
        return self._forward([token])

    def final_row(self) -> torch.Tensor:
        """Attention row (L, H, T) of the last token, which no step has computed yet (one more forward)."""
        with torch.inference_mode():
            return self._advance(self.ids[-1], [])[1]

    def _slide(self, notes: list[str]) -> tuple[torch.Tensor, torch.Tensor | None, LogitLens | None]:
        block = self.model.config.block_size
        keep = max(1, int(block * WINDOW_KEEP))
        self.window_start = len(self.ids) - keep
        notes.append(f"context full ({block} tokens): slid the window, kept the last {keep} and rebuilt the cache")
        self.cache.reset()
        return self._forward(self.ids[self.window_start :])

    def _hit_stop(self) -> bool:
        if not self.cfg.stop or self.tok is None:
            return False
        # Decode only a tail long enough to contain any stop string (each token is at least one byte).
        tail = self.tok.decode(self.ids[len(self.prompt_ids) :][-max(len(s) for s in self.cfg.stop) - 8 :])
        return any(s in tail for s in self.cfg.stop)


def stream(
    model: GPT,
    tok: Tokenizer | None,
    prompt: str | Sequence[int],
    cfg: SamplingConfig | None = None,
    *,
    capture: bool = True,
    ablate: Iterable[tuple[int, int]] = (),
    bf16: bool = False,
) -> Iterator[Step]:
    """Generate from ``prompt`` (text, or token ids with ``tok=None``), yielding a :class:`Step` per new token.

    ``capture`` records attention rows and the logit lens on each step. ``ablate`` switches off ``(layer, head)``
    pairs for the whole generation. ``bf16`` uses bfloat16 autocast when the model is on CUDA.
    Invalid settings raise ``ValueError`` before any work starts.
    """
    decoder = _Decoder(model, tok, prompt, cfg or SamplingConfig(), capture, ablate, bf16)
    return decoder.steps()


def generate(
    model: GPT,
    tok: Tokenizer | None,
    prompt: str | Sequence[int],
    cfg: SamplingConfig | None = None,
    *,
    capture: bool = True,
    attention: bool = False,
    ablate: Iterable[tuple[int, int]] = (),
    bf16: bool = False,
) -> Generation:
    """Generate and return everything at once; see :func:`stream` for the arguments.

    With ``attention=True`` the result carries the full pattern ``(L, H, T, T)`` over prompt + output, assembled
    from the prefill pattern and each step's row (plus one extra forward for the final token's row). Rows of
    positions that were outside the window when they were computed are zero over the keys they could not see.
    """
    decoder = _Decoder(model, tok, prompt, cfg or SamplingConfig(), capture or attention, ablate, bf16)
    steps = list(decoder.steps())
    new_ids = [s.token_id for s in steps]
    result = Generation(
        prompt_ids=decoder.prompt_ids,
        token_ids=new_ids,
        text=tok.decode(new_ids) if tok is not None else "",
        token_strs=[s.token_str for s in steps],
        steps=steps,
        stop_reason=decoder.stop_reason,
        notes=[n for s in steps for n in s.notes],
        prompt_strs=display_strs(tok, decoder.prompt_ids),
    )
    if attention:
        result.attention = _assemble_attention(decoder, steps)
    return result


def _assemble_attention(decoder: _Decoder, steps: list[Step]) -> torch.Tensor:
    """Full (L, H, T, T) pattern: the prefill block, then one row per later position placed at its window offset."""
    prefill = decoder.prefill_attention
    P = prefill.shape[-1]
    T = P + len(steps)
    L, H = prefill.shape[:2]
    full = torch.zeros(L, H, T, T)
    full[:, :, :P, :P] = prefill.cpu()
    # Step i's row is position P-1+i (already in the prefill for i = 0); the final token's row came last.
    last_row = decoder.final_row()
    rows = [(s.window_start, s.attention) for s in steps[1:]] + [(decoder.window_start, last_row)]
    for offset, (start, row) in enumerate(rows):
        q = P + offset
        full[:, :, q, start : start + row.shape[-1]] = row.cpu()
    return full
