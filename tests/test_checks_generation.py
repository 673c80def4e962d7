"""Lesson 08 (generation): every check passes a correct implementation, says "not implemented yet" on a stub and
names each planted mistake with its own hint."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn

from workbench import checks
from workbench.checks.sampling import TOP_P_MISTAKES, top_p_variant
from workbench.model import MLP

from verdicts import correct_implementation_test, not_implemented, planted_mistake_test, stub_test, verdict


# ------------------------------------------------------- correct implementations, with switches for mistakes


def apply_temperature(logits, temperature):
    return torch.softmax(logits / temperature, dim=-1)


def top_k_filter(probs, k, *, edges=True, strict=False, smallest=False, exact_k=False, renormalise="sum"):
    """Correct by default; each switch plants one mistake."""
    if edges and (k == 0 or k >= probs.numel()):
        return probs.clone()
    if exact_k:  # exactly k indices: a tie with the k-th is cut
        keep = torch.zeros_like(probs, dtype=torch.bool)
        keep[probs.topk(k).indices] = True
    elif smallest:
        keep = probs <= probs.topk(k, largest=False).values[-1]
    else:
        kth = probs.topk(k).values[-1]
        keep = probs > kth if strict else probs >= kth
    kept = probs * keep
    if renormalise == "sum":
        return kept / kept.sum()
    if renormalise == "softmax":
        return torch.softmax(kept, dim=-1)
    return kept


def top_k_values_only(probs, k):
    values = probs.topk(k).values
    return values / values.sum()


def top_k_in_place(probs, k):
    if k == 0 or k >= probs.numel():
        return probs
    probs[probs < probs.topk(k).values[-1]] = 0.0
    return probs / probs.sum()


# Top-p, correct and with each planted mistake: the checks module's own variant and its table of mistakes, so that
# the mistakes are defined once (checks/sampling.py) and every one of them is tested here.
top_p_filter = top_p_variant


class LayerCache:
    def __init__(self):
        self.k = None
        self.v = None

    @property
    def length(self):
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k, v):
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


class OnlyNewCache(LayerCache):
    def append(self, k, v):
        super().append(k, v)
        return k, v


class NewFirstCache(LayerCache):
    def append(self, k, v):
        self.k = k if self.k is None else torch.cat([k, self.k], dim=2)
        self.v = v if self.v is None else torch.cat([v, self.v], dim=2)
        return self.k, self.v


class StaleCache(LayerCache):
    """Returns the new positions on the first call, then the cache as it was before each call."""

    def append(self, k, v):
        if self.k is None:
            return super().append(k, v)
        before = (self.k, self.v)
        super().append(k, v)
        return before


class HeadAxisCache(LayerCache):
    def append(self, k, v):
        self.k = k if self.k is None else torch.cat([self.k, k], dim=1)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=1)
        return self.k, self.v


class LastAxisCache(LayerCache):
    def append(self, k, v):
        self.k = k if self.k is None else torch.cat([self.k, k], dim=3)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=3)
        return self.k, self.v


class SwappedCache(LayerCache):
    def append(self, k, v):
        keys, values = super().append(k, v)
        return values, keys


class NoReturnCache(LayerCache):
    def append(self, k, v):
        super().append(k, v)


class HeadSizeLengthCache(LayerCache):
    @property
    def length(self):
        return 0 if self.k is None else self.k.shape[3]


class ClassListCache:
    """Keeps its keys in class attributes: every instance shares them."""

    ks: list = []
    vs: list = []

    @property
    def length(self):
        return sum(k.shape[2] for k in self.ks)

    def append(self, k, v):
        self.ks.append(k)
        self.vs.append(v)
        return torch.cat(self.ks, dim=2), torch.cat(self.vs, dim=2)


class CachedAttention(nn.Module):
    """Correct by default; each switch plants one mistake."""

    def __init__(self, config, use_past=True, offset_mask=True, causal=True, append=True, append_twice=False,
                 scaled=True):
        super().__init__()
        self.n_head, self.head_size = config.n_head, config.n_embd // config.n_head
        self.use_past, self.offset_mask, self.causal, self.scaled = use_past, offset_mask, causal, scaled
        self.append, self.append_twice = append, append_twice
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x, cache=None):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, self.head_size).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        if cache is not None and self.append:
            if self.append_twice:
                cache.append(k, v)
            k_all, v_all = cache.append(k, v)
            if self.use_past:
                k, v = k_all, v_all
        Tk = k.shape[2]
        mask = torch.ones(T, Tk, dtype=torch.bool)
        if self.causal:
            mask = mask.tril(diagonal=Tk - T if self.offset_mask else 0)
        scores = (q @ k.transpose(-2, -1)) / (math.sqrt(self.head_size) if self.scaled else 1.0)
        y = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class StubAttention(CachedAttention):
    forward = not_implemented


class CachedBlock(nn.Module):
    def __init__(self, config, attention=CachedAttention):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(config.n_embd), nn.LayerNorm(config.n_embd)
        self.attn, self.mlp = attention(config), MLP(config)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class CachedGPT(nn.Module):
    """Correct by default; each switch plants one mistake."""

    def __init__(self, config, offset_positions=True, pass_caches=True, shared_cache=False, attention=CachedAttention):
        super().__init__()
        self.offset_positions, self.pass_caches, self.shared_cache = offset_positions, pass_caches, shared_cache
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            h=nn.ModuleList(CachedBlock(config, attention) for _ in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def new_caches(self):
        return [LayerCache() for _ in self.transformer.h]

    def forward(self, idx, caches=None):
        past = caches[0].length if caches is not None and self.offset_positions else 0
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(past, past + idx.shape[1]))
        for i, block in enumerate(self.transformer.h):
            cache = None
            if caches is not None and self.pass_caches:
                cache = caches[0] if self.shared_cache else caches[i]
            x = block(x, cache)
        return self.lm_head(self.transformer.ln_f(x))


class NoNewCachesGPT(CachedGPT):
    new_caches = None


# Mistakes caught by the runner both cached checks share (checks/kv_cache.py), one per kind of hint it gives.
class AttentionReturningItsCache(CachedAttention):
    def forward(self, x, cache=None):
        y = super().forward(x, cache)
        return y if cache is None else (y, cache)


class LastLogitsOnlyGPT(CachedGPT):
    """Returns only the last position's logits when decoding with caches (all that sampling needs)."""

    def forward(self, idx, caches=None):
        logits = super().forward(idx, caches)
        return logits if caches is None else logits[:, -1:]


class CachesRequiredGPT(CachedGPT):
    """Reads the cached length without checking that there are caches, so model(idx) raises."""

    def forward(self, idx, caches=None):
        _ = caches[0].length
        return super().forward(idx, caches)


# --------------------------------------------------------------------------------------------- the checks

CORRECT_08 = [
    (checks.check_temperature, apply_temperature),
    (checks.check_top_k, top_k_filter),
    (checks.check_top_p, top_p_filter),
    (checks.check_layer_cache, LayerCache),
    (checks.check_cached_attention, CachedAttention),
    (checks.check_cached_gpt, CachedGPT),
]

STUBS_08 = [  # what the student notebook hands each check before any code is written
    (checks.check_temperature, not_implemented),
    (checks.check_top_k, not_implemented),
    (checks.check_top_p, not_implemented),
    (checks.check_layer_cache, type("StubCache", (LayerCache,), {"append": not_implemented})),
    (checks.check_cached_attention, StubAttention),
    (checks.check_cached_gpt, type("StubGPT", (CachedGPT,), {"forward": not_implemented})),
    # the model's forward written, its attention still a stub
    (checks.check_cached_gpt, lambda c: CachedGPT(c, attention=StubAttention)),
]


test_check_passes_a_correct_implementation = correct_implementation_test(CORRECT_08)


def test_cached_checks_state_the_bound(capsys):
    for check, student in ((checks.check_cached_attention, CachedAttention), (checks.check_cached_gpt, CachedGPT)):
        ok, out = verdict(capsys, check, student)
        assert ok and "within 1e-05 + 1e-05 x |reference|" in out, out


test_check_on_a_stub_says_not_implemented = stub_test(STUBS_08)


PLANTED_08 = [
    # (check, wrong implementation, words the hint must contain)
    (checks.check_temperature, lambda logits, t: torch.softmax(logits * t, dim=-1), "multiplied"),
    (checks.check_temperature, lambda logits, t: logits / t, "not probabilities"),
    (checks.check_temperature, lambda logits, t: torch.log_softmax(logits / t, dim=-1), "log-probabilities"),
    (checks.check_temperature, lambda logits, t: torch.softmax(logits, dim=-1) / t, "probabilities were divided"),
    (checks.check_temperature, lambda logits, t: torch.softmax(logits, dim=-1), "ignored"),
    (checks.check_temperature, lambda logits, t: torch.softmax(torch.softmax(logits, dim=-1) / t, dim=-1),
     "applied to probabilities"),
    (checks.check_temperature, lambda logits, t: torch.exp(logits / t) / torch.exp(logits / t).sum(), "overflows"),
    (checks.check_temperature, lambda logits, t: torch.softmax(logits.div_(t), dim=-1),
     "changed its input `logits` in place"),
    (checks.check_top_k, functools.partial(top_k_filter, renormalise="none"), "not renormalised"),
    (checks.check_top_k, functools.partial(top_k_filter, renormalise="softmax"), "softmax of probabilities"),
    (checks.check_top_k, functools.partial(top_k_filter, smallest=True), "least likely"),
    (checks.check_top_k, functools.partial(top_k_filter, strict=True), "one token too few"),
    (checks.check_top_k, functools.partial(top_k_filter, edges=False), "k = 0 means no top-k filter"),
    (checks.check_top_k, functools.partial(top_k_filter, exact_k=True), "ties"),
    (checks.check_top_k, top_k_values_only, "whole (vocab,) vector"),
    (checks.check_top_k, top_k_in_place, "changed its input `probs` in place"),
    *[(checks.check_top_p, functools.partial(top_p_variant, **switches), hint)  # the whole hint, each mistake
      for hint, switches in TOP_P_MISTAKES.items()],
    (checks.check_layer_cache, OnlyNewCache, "only the new positions"),
    (checks.check_layer_cache, NewFirstCache, "in front of the old ones"),
    (checks.check_layer_cache, StaleCache, "before this call"),
    (checks.check_layer_cache, HeadAxisCache, "head axis"),
    (checks.check_layer_cache, LastAxisCache, "last axis"),
    (checks.check_layer_cache, SwappedCache, "swapped"),
    (checks.check_layer_cache, NoReturnCache, "returned None"),
    (checks.check_layer_cache, ClassListCache, "not empty"),
    (checks.check_layer_cache, HeadSizeLengthCache, "cache.length is"),
    (checks.check_cached_attention, lambda c: CachedAttention(c, use_past=False), "only to the new positions"),
    (checks.check_cached_attention, lambda c: CachedAttention(c, offset_mask=False), "not shifted"),
    (checks.check_cached_attention, lambda c: CachedAttention(c, causal=False), "see the future"),
    (checks.check_cached_attention, lambda c: CachedAttention(c, scaled=False), "1/sqrt(head_size)"),
    (checks.check_cached_attention, lambda c: CachedAttention(c, append=False), "nothing was stored"),
    (checks.check_cached_attention, lambda c: CachedAttention(c, append_twice=True), "exactly once"),
    (checks.check_cached_attention, lambda c: nn.Linear(c.n_embd, c.n_embd), "no parameters named"),
    (checks.check_cached_gpt, lambda c: CachedGPT(c, offset_positions=False), "positions restart at 0"),
    (checks.check_cached_gpt, lambda c: CachedGPT(c, pass_caches=False), "caches were not passed"),
    (checks.check_cached_gpt, lambda c: CachedGPT(c, shared_cache=True), "share one cache"),
    (checks.check_cached_gpt, NoNewCachesGPT, "new_caches()"),
    (checks.check_cached_attention, AttentionReturningItsCache, "forward returned tuple"),
    (checks.check_cached_gpt, LastLogitsOnlyGPT, "return logits for every new position"),
    (checks.check_cached_gpt, CachesRequiredGPT, "forward(idx) with no cache raised TypeError"),
]


test_check_names_the_planted_mistake = planted_mistake_test(PLANTED_08)


def test_checks_leave_the_global_rng_alone():
    """The pipeline draws a token at its end; the checks give it a generator of its own."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    checks.check_top_p(top_p_filter)
    assert torch.equal(torch.rand(3), expected)
