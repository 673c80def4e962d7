"""Generation, one token at a time, with everything a view needs recorded on each step.

``stream(model, tok, prompt, cfg)`` yields a :class:`Step` per new token: the token, its probability, the model's
top candidates, the sampling pipeline as data (raw -> temperature -> top-k -> top-p -> picked), and, with
``capture=True``, the attention row of every layer and head for the position that produced the token and the logit
lens read at that position. A view can draw a step without touching the model.

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

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import torch

from workbench.model import GPT
from workbench.tokenizers import Tokenizer

MAX_NEW_TOKENS_LIMIT = 4096  # the most tokens one call may ask for: a guard against runaway requests
N_CANDIDATES = 10  # candidates kept per pipeline stage and in Step.top
N_LENS = 5  # tokens kept per layer in the logit-lens row
WINDOW_KEEP = 0.75  # fraction of the context kept when the window slides
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
