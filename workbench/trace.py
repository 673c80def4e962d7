"""What the model computed on the way to its logits: attention patterns, the residual stream, the logit lens.

Names follow TransformerLens: ``resid_pre`` enters a block, ``resid_mid`` is after its attention, ``resid_post``
after its MLP; ``attention`` is ``attn.pattern`` as ``[layer, batch, head, query, key]``; ``ln_final`` is the
output of the final LayerNorm.

:func:`run_with_trace` is also the method ``GPT.run_with_trace`` (bound in ``workbench/__init__.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from workbench.model import GPT, KVCache


@dataclass
class LogitLens:
    """Next-token distributions read from the residual stream of every layer.

    ``after_attn[l]`` reads ``resid_mid`` of layer ``l`` and ``after_mlp[l]`` reads ``resid_post``, both through the
    final LayerNorm and the unembedding, as if the model stopped there. Shapes ``(L, B, P, vocab)``: probabilities,
    with ``P`` the positions asked for. ``after_mlp[-1]`` is the model's own output distribution.
    """

    after_attn: torch.Tensor
    after_mlp: torch.Tensor
    positions: list[int]

    def top_k(self, k: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(attn_probs, attn_ids, mlp_probs, mlp_ids)``, each ``(L, B, P, k)``, most likely first."""
        attn = self.after_attn.topk(k, dim=-1)
        mlp = self.after_mlp.topk(k, dim=-1)
        return attn.values, attn.indices, mlp.values, mlp.indices


@dataclass
class Trace:
    """Activations of one forward pass. Per-layer tensors are stacked on a leading layer axis.

    Shapes (``Tq`` is the number of positions run, ``Tk`` the number of keys they saw; equal without a KV cache):
    ``attention (L, B, H, Tq, Tk)``, ``resid_pre``/``resid_mid``/``resid_post`` ``(L, B, Tq, C)``,
    ``ln_final (B, Tq, C)``.
    """

    attention: torch.Tensor
    resid_pre: torch.Tensor
    resid_mid: torch.Tensor
    resid_post: torch.Tensor
    ln_final: torch.Tensor

    @classmethod
    def from_capture(cls, capture: dict) -> Trace:
        """Stack the per-layer lists that ``GPT.forward(capture=...)`` filled."""
        return cls(
            attention=torch.stack(capture["attn.pattern"]),
            resid_pre=torch.stack(capture["resid_pre"]),
            resid_mid=torch.stack(capture["resid_mid"]),
            resid_post=torch.stack(capture["resid_post"]),
            ln_final=capture["ln_final"],
        )

    @property
    def n_layer(self) -> int:
        return self.attention.shape[0]

    def logit_lens(self, model: GPT, positions: int | list[int] | None = None) -> LogitLens:
        """Read a next-token distribution from every layer at ``positions`` (default: all; ``-1``: the last).

        Reading all positions of a large-vocabulary model costs ``L * 2 * T * vocab`` floats; pass the positions
        you will look at.
        """
        n_pos = self.resid_mid.shape[2]
        if positions is None:
            positions = list(range(n_pos))
        elif isinstance(positions, int):
            positions = [positions]
        positions = [p % n_pos for p in positions]

        def read(resid: torch.Tensor) -> torch.Tensor:
            h = model.transformer.ln_f(resid[:, :, positions])  # (L, B, P, C)
            return torch.softmax(model.lm_head(h).float(), dim=-1)  # (L, B, P, vocab)

        return LogitLens(after_attn=read(self.resid_mid), after_mlp=read(self.resid_post), positions=positions)


def run_with_trace(
    model: GPT,
    idx: torch.Tensor,
    *,
    kv_cache: KVCache | None = None,
    ablate: Iterable[tuple[int, int]] = (),
) -> tuple[torch.Tensor, Trace]:
    """Forward pass that also returns a :class:`Trace` of attention and the residual stream: ``(logits, trace)``.

    With a ``kv_cache`` only the new positions are traced: each layer's pattern holds the new query rows over all
    keys so far, ``(B, H, T_new, T_total)``.
    """
    capture: dict = {}
    logits = model(idx, kv_cache=kv_cache, capture=capture, ablate=ablate)
    return logits, Trace.from_capture(capture)
