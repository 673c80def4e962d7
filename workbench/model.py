"""GPT-2, exactly, in one file you can read top to bottom, and the few switches that make it Llama or Qwen.

By default: pre-LayerNorm blocks, tanh GELU, LayerNorm eps 1e-5, learned positions, tied input/output embeddings, and
the parameter names of Hugging Face's ``GPT2LMHeadModel`` (``transformer.h.0.attn.c_attn`` ...), so loading GPT-2's
weights is a copy (plus a transpose of HF's Conv1D matrices, see ``workbench.hf``).

Today's decoders (Llama, Mistral, Qwen2, Qwen3) are the same model with a few :class:`GPTConfig` switches:
rotary positions (``position="rope"``), RMSNorm (``norm="rmsnorm"``), a gated MLP (``mlp="swiglu"``), fewer key/value
heads than query heads (``n_kv_head``), biases on q/k/v only (``bias=False, qkv_bias=True``, Qwen2), separate
input and output embeddings (``tie_embeddings=False``) and RMSNorm on each head's queries and keys (``qk_norm``,
Qwen3). The parameter names stay GPT-2's; ``workbench.hf`` maps them to Llama's ``model.layers.N.self_attn.q_proj``.

Beyond nanoGPT-style training code this model has what a teaching workbench needs: a **KV cache** (:class:`KVCache`)
for incremental decoding; **capture** (pass a dict as ``capture=`` and every block records its residual stream and
attention pattern under TransformerLens names: ``resid_pre``, ``resid_mid``, ``resid_post``, ``attn.pattern``,
``ln_final``; ``model.run_with_trace(idx)`` wraps this into a :class:`workbench.trace.Trace`); **head ablation**
(``ablate=[(layer, head), ...]`` zeroes those heads' outputs before the output projection). Attention has two
paths, proven equal by tests: ``F.scaled_dot_product_attention`` when no pattern is wanted, an explicit softmax when
it is captured.

This module imports only torch; CPU speed-ups live in :mod:`workbench.fast`. ``run_with_trace``, ``GPT.from_hf`` and
``to_hf`` come from modules built on this one: the package's ``__init__`` binds them, so no import runs in a circle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

LAYER_NORM_EPS = 1e-5  # GPT-2's value; HF's GPT2Config.layer_norm_epsilon default


@dataclass
class GPTConfig:
    """Shape of the model. Defaults are GPT-2 small (124M parameters); the switches below the line make it a Llama-
    or Qwen-style decoder (``workbench.hf.config_from_hf`` sets them for a real one)."""

    vocab_size: int = 50257  # 50,000 BPE merges + 256 byte tokens + <|endoftext|>
    block_size: int = 1024  # context length: the number of learned position embeddings
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768  # model width d_model; each head has n_embd // n_head dimensions
    dropout: float = 0.0  # on embeddings and residual branches; 0.1 when GPT-2 was trained, 0 for inference
    # On the attention weights (GPT-2 trained with 0.1). Separate because it is expensive on the CPU: any value > 0
    # takes scaled_dot_product_attention off its fused kernel, and a training step gets about 1.5x slower.
    attn_dropout: float = 0.0
    bias: bool = True  # GPT-2 has biases in every Linear and LayerNorm; False is slightly faster to train
    # ---- the switches of today's decoders; the defaults are GPT-2
    # "learned": a trained vector per position added to the token embedding (GPT-2). "rope": no position vectors;
    # each layer rotates queries and keys by angles that grow with the position (Llama, Qwen), so attention scores
    # depend on how far apart two tokens are.
    position: str = "learned"
    rope_theta: float = 10000.0  # RoPE's base: the slowest pair turns ~1/theta radian a position (Llama 3: 5e5)
    norm: str = "layernorm"  # "rmsnorm" (Llama, Qwen): no mean subtracted, no bias; cheaper, trains as well
    norm_eps: float = LAYER_NORM_EPS  # GPT-2 1e-5; Llama and Qwen usually 1e-6 or 1e-5
    mlp: str = "gelu"  # "swiglu" (Llama, Qwen): down(silu(gate(x)) * up(x)), a learned gate on every hidden unit
    mlp_hidden: int | None = None  # hidden width of the MLP; None: 4 * n_embd (GPT-2)
    n_kv_head: int | None = None  # heads of keys/values; None: n_head. Fewer (GQA; 1 is MQA) shrinks the KV cache
    head_dim: int | None = None  # width of one head; None: n_embd // n_head (Qwen3 makes heads wider than that)
    qkv_bias: bool | None = None  # biases on the q/k/v projection; None: same as `bias` (Qwen2: True, bias False)
    tie_embeddings: bool = True  # lm_head shares wte's matrix (GPT-2, small Llamas); large models keep two
    qk_norm: bool = False  # RMSNorm over each head's queries and keys before RoPE (Qwen3): steadier attention logits

    def __post_init__(self) -> None:
        required = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")
        for name in required + ("mlp_hidden", "n_kv_head", "head_dim"):  # the last three may be None
            value = getattr(self, name)
            if (value is not None or name in required) and (not isinstance(value, int) or value < 1):
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.head_dim is None and self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                "each head gets n_embd // n_head dimensions (or set head_dim)"
            )
        if self.n_head % self.kv_heads:
            raise ValueError(
                f"GPTConfig.n_head ({self.n_head}) must be divisible by n_kv_head ({self.n_kv_head}): "
                "each key/value head serves the same number of query heads"
            )
        for name, allowed in (("position", ("learned", "rope")), ("norm", ("layernorm", "rmsnorm")),
                              ("mlp", ("gelu", "swiglu"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"GPTConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.position == "rope" and self.head_size % 2:
            raise ValueError(f"position='rope' needs an even head size (it turns pairs of dims), got {self.head_size}")
        for name in ("rope_theta", "norm_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GPTConfig.{name} must be positive, got {getattr(self, name)!r}")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"GPTConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")

    # The optional fields resolved: what the model is built with.
    @property
    def head_size(self) -> int:
        return self.head_dim if self.head_dim is not None else self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head if self.n_kv_head is not None else self.n_head

    @property
    def mlp_width(self) -> int:
        return self.mlp_hidden if self.mlp_hidden is not None else 4 * self.n_embd

    @property
    def qkv_has_bias(self) -> bool:
        return self.bias if self.qkv_bias is None else self.qkv_bias


class KVCache:
    """Keys and values of every layer for the positions seen so far, preallocated to the full context.

    Writing into preallocated buffers (instead of concatenating a growing tensor per step) keeps each decoding step's
    cost proportional to the new token, not to the length of the history. ``keys[layer]`` and ``values[layer]`` are
    ``(B, n_kv_head, length, head_size)`` views: only the key/value heads are stored, so with grouped-query
    attention the cache is ``n_head / n_kv_head`` times smaller than GPT-2's.
    """

    def __init__(self, config: GPTConfig, batch_size: int, device: torch.device | str, dtype: torch.dtype) -> None:
        shape = (config.n_layer, batch_size, config.kv_heads, config.block_size, config.head_size)
        # empty, not zeros: only positions already written are ever read, and zeroing 2 x L x block_size rows
        # costs more than a decoding step
        self._k = torch.empty(shape, device=device, dtype=dtype)
        self._v = torch.empty(shape, device=device, dtype=dtype)
        self.batch_size = batch_size
        self.length = 0  # positions already stored; the next token gets position `length`

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions' keys/values of one layer; return all keys/values so far for that layer."""
        end = self.length + k.shape[2]
        self._k[layer, :, :, self.length : end] = k
        self._v[layer, :, :, self.length : end] = v
        return self._k[layer, :, :, :end], self._v[layer, :, :, :end]

    def reset(self) -> None:
        """Forget everything (used when generation slides its window and rebuilds the cache)."""
        self.length = 0

    # What the model asks of a cache. Here every sequence has the same length; a cache whose sequences have
    # different lengths (workbench.batching.RowCache) answers per sequence.
    def positions(self, T: int) -> torch.Tensor:
        """Absolute positions of the next ``T`` tokens, ``(T,)``: the same for every sequence."""
        return torch.arange(self.length, self.length + T, device=self._k.device)

    def key_mask(self, T: int) -> torch.Tensor | None:
        """Which keys the next ``T`` queries may see, when causal order over one shared length does not say it:
        never here (None). Per sequence it is ``(B, 1, T, length + T)``, True where a key may be seen."""
        return None

    def advance(self, T: int) -> None:
        """Count ``T`` new positions as stored (the model calls it after every layer appended them)."""
        self.length += T

    @property
    def nbytes(self) -> int:
        """Memory the cache holds (all of it is allocated up front, for the whole context)."""
        return self._k.nbytes + self._v.nbytes

    @property
    def bytes_per_token(self) -> int:
        """Memory one position of one sequence takes: ``2 (k and v) x n_layer x n_kv_head x head_size x dtype``."""
        return self.nbytes // (self.batch_size * self._k.shape[3])  # shape[3]: block_size positions


class RMSNorm(nn.Module):
    """Root-mean-square norm (Llama, Qwen): divide each vector by its RMS, then scale by a learned weight; unlike
    LayerNorm, no mean is subtracted and there is no bias. Computed in float32 whatever the input's dtype (squares of
    bf16 values lose too many digits), cast back before the weight, exactly as Hugging Face does."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def make_norm(config: GPTConfig, dim: int) -> nn.Module:
    """The configured norm over ``dim`` features: GPT-2's LayerNorm or Llama's RMSNorm."""
    if config.norm == "rmsnorm":
        return RMSNorm(dim, eps=config.norm_eps)
    return nn.LayerNorm(dim, eps=config.norm_eps, bias=config.bias)


def rope_tables(head_size: int, positions: torch.Tensor, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of RoPE's rotation angles at ``positions``, in float32: dimension pair ``(i, i + hs/2)``
    turns by ``position * theta ** (-2i / hs)``, the first pairs fast (telling near positions apart), the last slowly
    (far ones). Each ``(T, hs)`` for positions ``(T,)``, or ``(B, T, hs)`` for per-sequence positions ``(B, T)``."""
    pairs = torch.arange(0, head_size, 2, dtype=torch.int64, device=positions.device).float()  # 0, 2, 4, ...
    inv_freq = 1.0 / (theta ** (pairs / head_size))  # (hs/2,) radians per position of each pair
    angles = positions.float()[..., None] * inv_freq  # (..., T, hs/2)
    angles = torch.cat((angles, angles), dim=-1)  # (..., T, hs): both halves of a pair turn by the same angle
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair ``(x[i], x[i + hs/2])`` of ``x (B, H, T, hs)`` by its angle (Hugging Face's "rotate half"):
    a query at position m and a key at n then score ``q R(m)·k R(n) = q R(n - m)·k``, so only the distance matters.
    ``cos``/``sin`` come from :func:`rope_tables`, ``(T, hs)`` or per sequence ``(B, T, hs)``."""
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, hs): the same angles for every head
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    first, second = x.chunk(2, dim=-1)
    rotated_half = torch.cat((-second, first), dim=-1)  # each pair (a, b) -> (-b, a): a quarter turn
    return x * cos + rotated_half * sin


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """``(B, n_kv, T, hs)`` -> ``(B, n_kv * n_rep, T, hs)``: query head ``h`` reads key/value head ``h // n_rep``."""
    if n_rep == 1:
        return x
    B, n_kv, T, hs = x.shape
    return x[:, :, None].expand(B, n_kv, n_rep, T, hs).reshape(B, n_kv * n_rep, T, hs)


class Attention(nn.Module):
    """Causal multi-head self-attention with one fused q/k/v projection (``c_attn``) and an output projection.

    With ``n_kv_head < n_head`` (grouped-query attention; Llama 3, Qwen) several query heads share one key/value
    head, so ``c_attn`` makes ``n_head`` query heads but only ``n_kv_head`` key and value heads.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_kv_head = config.kv_heads
        self.head_size = config.head_size
        self.block_size = config.block_size
        self.attn_dropout_p = config.attn_dropout
        q_width, kv_width = self.n_head * self.head_size, self.n_kv_head * self.head_size
        self.split_sizes = [q_width, kv_width, kv_width]
        self.c_attn = nn.Linear(config.n_embd, q_width + 2 * kv_width, bias=config.qkv_has_bias)
        self.c_proj = nn.Linear(q_width, config.n_embd, bias=config.bias)
        # Qwen3 normalises every head's queries and keys (weights shared by the heads) before RoPE, which keeps
        # attention logits from growing large in deep models.
        self.q_norm = RMSNorm(self.head_size, config.norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(self.head_size, config.norm_eps) if config.qk_norm else None
        self.attn_dropout = nn.Dropout(config.attn_dropout)
        self.resid_dropout = nn.Dropout(config.dropout)

    @property
    def causal_mask(self) -> torch.Tensor:
        """``(block_size, block_size)`` bool, True where a query may look at a key. Made on demand, never stored:
        one per layer would take gigabytes for the 32k-token contexts of today's models."""
        return torch.ones(self.block_size, self.block_size, dtype=torch.bool).tril()

    def forward(self, x: torch.Tensor, *, layer: int = 0, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                kv_cache: KVCache | None = None, capture: dict[str, torch.Tensor] | None = None,
                ablate_heads: Iterable[int] = ()) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.c_attn(x).split(self.split_sizes, dim=2)
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_kv_head, self.head_size).transpose(1, 2)  # (B, n_kv, T, hs)
        v = v.view(B, T, self.n_kv_head, self.head_size).transpose(1, 2)  # (B, n_kv, T, hs)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:  # rotate by position before caching: a cached key keeps its own position's angle
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)

        past, key_mask = 0, None
        if kv_cache is not None:
            past, key_mask = kv_cache.length, kv_cache.key_mask(T)
            k, v = kv_cache.append(layer, k, v)  # (B, n_kv, past + T, hs)
        # Grouped-query attention: copy each key/value head for the query heads it serves; from here on it is
        # plain multi-head attention.
        k, v = repeat_kv(k, self.n_head // self.n_kv_head), repeat_kv(v, self.n_head // self.n_kv_head)
        # Query i sits at absolute position past + i and may see keys 0 .. past + i.
        mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)  # (T, past + T)
        if key_mask is not None:  # sequences of different lengths in one batch: each sees only its own keys
            mask = key_mask  # (B, 1, T, past + T)

        if capture is None:
            dropout_p = self.attn_dropout_p if self.training else 0.0
            # A single new query sees every cached key, so no mask at all: SDPA then takes its fastest kernel.
            if T == 1 and key_mask is None:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
            elif past == 0 and key_mask is None:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        else:
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_size))  # (B, nh, T, past + T)
            # A single new query may see every key (nothing to mask), unless its sequence is shorter than others
            if T > 1 or key_mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            pattern = F.softmax(scores, dim=-1)
            capture["attn.pattern"] = pattern
            y = self.attn_dropout(pattern) @ v  # (B, nh, T, hs)

        heads = list(ablate_heads)
        if heads:
            keep = torch.ones(self.n_head, 1, 1, device=y.device, dtype=y.dtype)
            keep[heads] = 0.0
            y = y * keep  # zero the chosen heads' outputs before they are mixed by c_proj

        y = y.transpose(1, 2).contiguous().view(B, T, self.n_head * self.head_size)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: widen, apply a nonlinearity, project back. GPT-2: ``c_proj(gelu(c_fc(x)))``, tanh
    GELU, width 4 x n_embd. SwiGLU (Llama, Qwen): ``c_proj(silu(c_gate(x)) * c_fc(x))``, HF's ``down(silu(gate(x)) *
    up(x))``: a second projection decides, unit by unit, how much of ``c_fc``'s output passes."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        width = config.mlp_width
        self.c_fc = nn.Linear(config.n_embd, width, bias=config.bias)
        self.c_gate = nn.Linear(config.n_embd, width, bias=config.bias) if config.mlp == "swiglu" else None
        self.act = nn.GELU(approximate="tanh") if config.mlp == "gelu" else nn.SiLU()
        self.c_proj = nn.Linear(width, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.c_gate is None:
            hidden = self.act(self.c_fc(x))
        else:
            hidden = self.act(self.c_gate(x)) * self.c_fc(x)
        return self.dropout(self.c_proj(hidden))


class Block(nn.Module):
    """One pre-norm transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = make_norm(config, config.n_embd)
        self.attn = Attention(config)
        self.ln_2 = make_norm(config, config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, *, layer: int = 0, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                kv_cache: KVCache | None = None, capture: dict[str, torch.Tensor] | None = None,
                ablate_heads: Iterable[int] = ()) -> torch.Tensor:
        if capture is not None:
            capture["resid_pre"] = x
        x = x + self.attn(
            self.ln_1(x), layer=layer, rope=rope, kv_cache=kv_cache, capture=capture, ablate_heads=ablate_heads
        )
        if capture is not None:
            capture["resid_mid"] = x
        x = x + self.mlp(self.ln_2(x))
        if capture is not None:
            capture["resid_post"] = x
        return x


class GPT(nn.Module):
    """A GPT-style language model (GPT-2 by default). ``model(idx)`` gives logits ``(B, T, vocab)``; with
    ``targets`` also the loss. ``run_with_trace``, ``from_hf`` and ``to_hf`` are bound by ``workbench/__init__.py``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        modules: dict[str, nn.Module] = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if config.position == "learned":  # with RoPE, positions enter inside attention instead
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        modules["drop"] = nn.Dropout(config.dropout)
        modules["h"] = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        modules["ln_f"] = make_norm(config, config.n_embd)
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # Reading a token in and writing it out use one matrix (GPT-2 does; saves vocab x n_embd).
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2's scaled init: each residual projection adds to a sum over 2 * n_layer branches, so shrink it by
        # sqrt(2 * n_layer) to keep the residual stream's variance from growing with depth.
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (a tied output matrix counted once); optionally without the embeddings."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            tables = [module for name, module in self.transformer.items() if name in ("wte", "wpe")]
            tables += [] if self.config.tie_embeddings else [self.lm_head]  # an untied output matrix is one too
            n -= sum(p.numel() for table in tables for p in table.parameters())
        return n

    @property
    def device(self) -> torch.device:
        return self.transformer.wte.weight.device

    def new_kv_cache(self, batch_size: int = 1) -> KVCache:
        """An empty cache for incremental decoding of ``batch_size`` sequences, up to ``block_size`` positions."""
        weight = self.transformer.wte.weight
        return KVCache(self.config, batch_size, weight.device, weight.dtype)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        kv_cache: KVCache | None = None,
        capture: dict[str, list[torch.Tensor] | torch.Tensor] | None = None,
        ablate: Iterable[tuple[int, int]] = (),
        last_only: bool = False,
        unembed: bool = True,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Run the model.

        Args:
            idx: token ids ``(B, T)``.
            targets: next-token ids ``(B, T)``; when given, returns ``(logits, mean cross-entropy loss)``.
                Positions with target ``-100`` are ignored.
            kv_cache: continue from the positions stored in this cache (``idx`` holds only the new tokens) and
                store the new ones. ``T`` new tokens must fit: ``kv_cache.length + T <= block_size``.
            capture: a dict to fill with per-layer lists ``resid_pre``/``resid_mid``/``resid_post``/``attn.pattern``
                and the tensor ``ln_final``. Capturing switches attention to its explicit path.
            ablate: ``(layer, head)`` pairs whose attention output is zeroed before the output projection.
            last_only: compute logits for the last position only (what generation needs), shape ``(B, 1, vocab)``.
            unembed: False returns the final norm's output ``(B, T, C)`` instead of logits, for callers that
                unembed it together with other rows (the logit lens).
        """
        B, T = idx.shape
        past = kv_cache.length if kv_cache is not None else 0
        if past + T > self.config.block_size:
            raise ValueError(
                f"sequence of {past + T} tokens ({past} cached + {T} new) is longer than the context "
                f"(block_size={self.config.block_size})"
            )
        if kv_cache is not None and kv_cache.batch_size != B:
            raise ValueError(f"kv_cache holds {kv_cache.batch_size} sequences but idx has batch size {B}")
        ablate_by_layer = self._ablation_by_layer(ablate)

        # Absolute positions of the new tokens: (T,), or (B, T) from a cache whose sequences differ in length; the
        # only place positions are made, and both uses below take either.
        pos = kv_cache.positions(T) if kv_cache is not None else torch.arange(T, device=idx.device)
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if self.config.position == "learned":
            x = x + self.transformer.wpe(pos)  # GPT-2: a learned vector per position, added once, here
        else:
            rope = rope_tables(self.config.head_size, pos, self.config.rope_theta)  # used by every layer
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            record: dict[str, torch.Tensor] | None = {} if capture is not None else None
            x = block(x, layer=i, rope=rope, kv_cache=kv_cache, capture=record,
                      ablate_heads=ablate_by_layer.get(i, ()))
            if capture is not None:
                for name, value in record.items():
                    capture.setdefault(name, []).append(value)
        if kv_cache is not None:
            kv_cache.advance(T)
        x = self.transformer.ln_f(x)
        if capture is not None:
            capture["ln_final"] = x

        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
            return logits, loss
        x = x[:, -1:] if last_only else x
        return self.lm_head(x) if unembed else x

    def _ablation_by_layer(self, ablate: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
        by_layer: dict[int, list[int]] = {}
        for layer, head in ablate:
            if not (0 <= layer < self.config.n_layer and 0 <= head < self.config.n_head):
                raise ValueError(
                    f"cannot ablate head ({layer}, {head}): layers are 0..{self.config.n_layer - 1}, "
                    f"heads 0..{self.config.n_head - 1}"
                )
            by_layer.setdefault(layer, []).append(head)
        return by_layer


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` means CUDA when it is available, else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available here; use --device cpu or auto")
    return resolved
