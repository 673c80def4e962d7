"""What the model computed on the way to its logits: attention patterns, the residual stream, the logit lens.

Names follow TransformerLens: ``resid_pre`` enters a block, ``resid_mid`` is after its attention, ``resid_post``
after its MLP; ``attention`` is ``attn.pattern`` as ``[layer, batch, head, query, key]``; ``ln_final`` is the
output of the final norm. :meth:`Trace.logit_lens` reads the residual stream through :mod:`workbench.lens`, the
same code that reads each generation step's lens.

:func:`run_with_trace` is also the method ``GPT.run_with_trace`` (bound in ``workbench/__init__.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import torch

from workbench.lens import logit_lens
from workbench.model import GPT, KVCache
from workbench.records import LogitLens

if TYPE_CHECKING:
    from workbench.tokenizers import Tokenizer


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

    def logit_lens(
        self, model: GPT, positions: int | list[int] | None = None, k: int | None = None, tok: Tokenizer | None = None
    ) -> LogitLens:
        """Read a next-token distribution from every layer, after its attention and after its MLP, at ``positions``
        (default: all; ``-1``: the last); keep each read's ``k`` most likely tokens (default: all of them, sorted).
        ``tok`` gives the lens its tokens' display strings. See :class:`~workbench.records.LogitLens`.

        Keeping every token of every position costs ``2 * L * B * T * vocab`` probabilities and as many ids: for a
        large vocabulary, pass the positions you will look at, or a ``k``.
        """
        n_pos = self.resid_mid.shape[2]
        if positions is None:
            positions = list(range(n_pos))
        elif isinstance(positions, int):
            positions = [positions]
        bad = [p for p in positions if not -n_pos <= p < n_pos]
        if bad:
            raise ValueError(f"positions {bad} are outside the {n_pos} traced positions")
        positions = [p % n_pos for p in positions]
        return logit_lens(model, self.resid_mid[:, :, positions], self.resid_post[:, :, positions], positions, k, tok)


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
