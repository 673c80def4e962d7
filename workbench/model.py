"""GPT-2, exactly, in one file you can read top to bottom.

Pre-LayerNorm blocks, tanh-approximated GELU, LayerNorm eps 1e-5, learned positions, tied input/output embeddings,
and parameter names that match Hugging Face's ``GPT2LMHeadModel`` key for key (``transformer.h.0.attn.c_attn`` ...),
so loading real GPT-2 weights is a copy (plus a transpose of HF's Conv1D matrices, see ``workbench.hf``).

Beyond nanoGPT-style training code this model has what a teaching workbench needs:

* a **KV cache** (:class:`KVCache`) for incremental decoding;
* **capture**: pass a dict as ``capture=`` and every block records its residual stream and attention pattern
  (TransformerLens names: ``resid_pre``, ``resid_mid``, ``resid_post``, ``attn.pattern``, ``ln_final``);
  ``model.run_with_trace(idx)`` wraps this into a :class:`workbench.trace.Trace`;
* **head ablation**: ``ablate=[(layer, head), ...]`` zeroes those heads' outputs before the output projection.

Attention has two paths: ``F.scaled_dot_product_attention`` when no pattern is wanted (fast, fused), and an explicit
softmax when the pattern is captured. Tests prove the two equal.

This module imports only torch. Speed-ups for the CPU (packed weights, our own GEMV kernel, a cheaper dropout mask)
live in :mod:`workbench.fast`, which a caller opts into with ``accelerate(model)``. Three methods of :class:`GPT`
need modules that build on this one: ``run_with_trace`` (:func:`workbench.trace.run_with_trace`), ``GPT.from_hf``
and ``to_hf`` (:func:`workbench.hf.from_hf`, :func:`workbench.hf.to_hf`). The package's ``__init__``, which Python
runs before any of its modules, binds them to the class, so that no import runs in a circle.
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
    """Shape of a GPT-2 model. Defaults are GPT-2 small (124M parameters)."""

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

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                "each head gets n_embd // n_head dimensions"
            )
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"GPTConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head


class KVCache:
    """Keys and values of every layer for the positions seen so far, preallocated to the full context.

    Writing into preallocated buffers (instead of concatenating a growing tensor per step) keeps each decoding step's
    cost proportional to the new token, not to the length of the history.

    Shapes: ``keys[layer]`` and ``values[layer]`` are ``(B, n_head, length, head_size)`` views.
    """

    def __init__(self, config: GPTConfig, batch_size: int, device: torch.device | str, dtype: torch.dtype) -> None:
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, config.head_size)
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


class Attention(nn.Module):
    """Causal multi-head self-attention with one fused q/k/v projection (``c_attn``) and an output projection."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_size = config.head_size
        self.attn_dropout_p = config.attn_dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.attn_dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        # True where a query may look at a key. Non-persistent: it is derived, so it stays out of checkpoints.
        causal = torch.tril(torch.ones(config.block_size, config.block_size, dtype=torch.bool))
        self.register_buffer("causal_mask", causal, persistent=False)

    def forward(
        self,
        x: torch.Tensor,
        *,
        layer: int = 0,
        kv_cache: KVCache | None = None,
        capture: dict[str, torch.Tensor] | None = None,
        ablate_heads: Iterable[int] = (),
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)

        past = 0
        if kv_cache is not None:
            past = kv_cache.length
            k, v = kv_cache.append(layer, k, v)  # (B, nh, past + T, hs)
        # Query i sits at absolute position past + i and may see keys 0 .. past + i.
        mask = self.causal_mask[past : past + T, : past + T]  # (T, past + T)

        if capture is None:
            # A single new query sees every cached key, so no mask at all: SDPA then takes its fastest kernel.
            if T == 1:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_dropout_p if self.training else 0.0)
            elif past == 0:
                y = F.scaled_dot_product_attention(
                    q, k, v, is_causal=True, dropout_p=self.attn_dropout_p if self.training else 0.0
                )
            else:
                y = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask, dropout_p=self.attn_dropout_p if self.training else 0.0
                )
        else:
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_size))  # (B, nh, T, past + T)
            if T > 1:  # a single new query may see every key: nothing to mask
                scores = scores.masked_fill(~mask, float("-inf"))
            pattern = F.softmax(scores, dim=-1)
            capture["attn.pattern"] = pattern
            y = self.attn_dropout(pattern) @ v  # (B, nh, T, hs)

        heads = list(ablate_heads)
        if heads:
            keep = torch.ones(self.n_head, 1, 1, device=y.device, dtype=y.dtype)
            keep[heads] = 0.0
            y = y * keep  # zero the chosen heads' outputs before they are mixed by c_proj

        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: widen 4x, tanh GELU (GPT-2's ``gelu_new``), project back."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.act = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    """One pre-LN transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=LAYER_NORM_EPS, bias=config.bias)
        self.attn = Attention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=LAYER_NORM_EPS, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        *,
        layer: int = 0,
        kv_cache: KVCache | None = None,
        capture: dict[str, torch.Tensor] | None = None,
        ablate_heads: Iterable[int] = (),
    ) -> torch.Tensor:
        if capture is not None:
            capture["resid_pre"] = x
        x = x + self.attn(self.ln_1(x), layer=layer, kv_cache=kv_cache, capture=capture, ablate_heads=ablate_heads)
        if capture is not None:
            capture["resid_mid"] = x
        x = x + self.mlp(self.ln_2(x))
        if capture is not None:
            capture["resid_post"] = x
        return x


class GPT(nn.Module):
    """A GPT-2 language model. ``model(idx)`` gives logits ``(B, T, vocab)``; with ``targets`` also the loss.

    ``run_with_trace``, ``from_hf`` and ``to_hf`` are bound to this class by ``workbench/__init__.py`` (see the
    module docstring)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, eps=LAYER_NORM_EPS, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Tied embeddings: reading a token in and writing it out use one matrix (GPT-2 does; saves vocab x n_embd).
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
        """Parameter count (the tied output matrix counted once); optionally without the embeddings."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel() + self.transformer.wte.weight.numel()
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
            unembed: False returns the final LayerNorm's output ``(B, T, C)`` instead of logits, for callers that
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

        pos = torch.arange(past, past + T, device=idx.device)  # absolute positions of the new tokens
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            record: dict[str, torch.Tensor] | None = {} if capture is not None else None
            x = block(x, layer=i, kv_cache=kv_cache, capture=record, ablate_heads=ablate_by_layer.get(i, ()))
            if capture is not None:
                for name, value in record.items():
                    capture.setdefault(name, []).append(value)
        if kv_cache is not None:
            kv_cache.length = past + T
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
