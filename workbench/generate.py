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
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import torch

from workbench.model import GPT
# Lessons, the checks and the app import SamplingConfig, sampling_pipeline and top_k from here too.
from workbench.sampling import MIN_TEMPERATURE, SamplingConfig, sampling_pipeline, top_k
from workbench.tokenizers import Tokenizer

N_CANDIDATES = 10  # candidates kept per pipeline stage and in Step.top
N_LENS = 5  # tokens kept per layer in the logit-lens row
WINDOW_KEEP = 0.75  # fraction of the context kept when the window slides


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


@dataclass
class LensRow:
    """Logit lens at one position: the top tokens read from each layer after attention and after the MLP."""

    after_attn: list[list[Candidate]]  # [layer][rank]
    after_mlp: list[list[Candidate]]


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
    lens: LensRow | None
    window_start: int
    seconds: float  # wall time of this step: model forward(s) + sampling + capture
    notes: tuple[str, ...] = ()
    # On the first step only (with capture): the prompt's own attention (L, H, P, P), so a view can draw the
    # whole history without running the prompt through the model again.
    prompt_attention: torch.Tensor | None = None


@dataclass
class Generation:
    """The whole result of :func:`generate`."""

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


def _display(tok: Tokenizer | None, ids: Sequence[int]) -> list[str]:
    return tok.token_strs(list(ids)) if tok is not None else [f"[{i}]" for i in ids]


def _candidates(tok: Tokenizer | None, probs: torch.Tensor, n: int) -> list[Candidate]:
    values, indices = top_k(probs, min(n, probs.numel()))
    ids = indices.tolist()
    return [Candidate(i, s, p) for i, s, p in zip(ids, _display(tok, ids), values.tolist())]


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
        notes.append(f"empty prompt: started from the start token {_display(tok, [start])[0]!r} (id {start})")
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

    def _forward(self, new_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None, LensRow | None]:
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
            # Logit lens of the last position: 2L residual reads unembedded in one matmul, which reads the large
            # unembedding matrix once. The last read (after the last MLP) is the model's own output, so its
            # logits are the next-token logits: no separate unembedding for them.
            reads = torch.stack([r[0, -1] for r in capture["resid_mid"] + capture["resid_post"]])  # (2L, C)
            lens_logits = self.model.lm_head(self.model.transformer.ln_f(reads)).float()  # (2L, vocab)
            logits = lens_logits[-1]
            lens_probs = torch.softmax(lens_logits, dim=-1)
        values, indices = top_k(lens_probs, min(N_LENS, lens_probs.shape[-1]))
        ids, probs = indices.tolist(), values.tolist()
        rows = [[Candidate(i, s, p) for i, s, p in zip(r, _display(self.tok, r), pr)] for r, pr in zip(ids, probs)]
        n_layer = self.model.config.n_layer
        return logits, attention, LensRow(after_attn=rows[:n_layer], after_mlp=rows[n_layer:])

    def _pick(self, logits: torch.Tensor) -> tuple[int, float, float, list[Candidate], list[Stage]]:
        """Run the sampling pipeline and keep each stage's top candidates for display."""
        token, dists = sampling_pipeline(
            logits, self.cfg, context=self.ids[self.window_start :], banned=self.banned, generator=self.generator
        )
        # Greedy decoding gives three stages one and the same one-hot tensor: summarize each distinct tensor once,
        # and that one without scanning the vocabulary: it holds the picked token alone, at probability 1.
        summaries: dict[int, tuple[list[Candidate], int]] = {}
        if self.cfg.temperature < MIN_TEMPERATURE:
            summaries[id(dists[-1][1])] = ([Candidate(token, _display(self.tok, [token])[0], 1.0)], 1)
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
        cfg = self.cfg
        self.stop_reason = "max_new_tokens"
        notes = list(self.notes)
        start = time.perf_counter()
        logits, attention, lens = self._forward(self.ids)
        for index in range(cfg.max_new_tokens):
            token, prob, sampled_prob, top, stages = self._pick(logits)
            self.ids.append(token)
            yield Step(
                index=index,
                token_id=token,
                token_str=_display(self.tok, [token])[0],
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
            notes = []
            if self._hit_stop():
                self.stop_reason = "stop"
                return
            if index == cfg.max_new_tokens - 1:
                return
            start = time.perf_counter()
            logits, attention, lens = self._advance(token, notes)

    def _advance(self, token: int, notes: list[str]) -> tuple[torch.Tensor, torch.Tensor | None, LensRow | None]:
        """Feed the token just picked; slide the window first when the cache is full."""
        if self.cache.length >= self.model.config.block_size:
            return self._slide(notes)
        return self._forward([token])

    def final_row(self) -> torch.Tensor:
        """Attention row (L, H, T) of the last token, which no step has computed yet (one more forward)."""
        with torch.inference_mode():
            return self._advance(self.ids[-1], [])[1]

    def _slide(self, notes: list[str]) -> tuple[torch.Tensor, torch.Tensor | None, LensRow | None]:
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
        prompt_strs=_display(tok, decoder.prompt_ids),
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
