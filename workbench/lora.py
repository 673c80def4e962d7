"""LoRA, low-rank adaptation (Hu et al., 2021): fine-tune a frozen linear layer through a low-rank update.

A :class:`LoRALinear` computes ``base(x) + (alpha / r) * x @ A.T @ B.T``: the frozen layer, plus the update
``delta W = (alpha / r) * B @ A`` of rank at most ``r``, kept as its two factors.  ``A`` is ``(r, in_features)`` and
``B`` is ``(out_features, r)``, laid out like ``nn.Linear`` weights.  ``B`` starts at zero, so the adapted model is
the base model exactly until the first step; ``A`` starts random, so that the first step moves ``B`` (with both at
zero, neither would get a gradient).  Dividing by ``r`` keeps the update's size comparable across ranks, so the
same learning rate works when ``r`` changes.

:func:`add_lora` freezes a whole model and wraps its chosen linear layers; only the adapters train.  :meth:`merge`
folds the update into one ``nn.Linear``: the fine-tuned model then costs nothing more to run than the base.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

# The layers lesson 15 adapts in each block of workbench.model.GPT: attention's and the MLP's projections.
DEFAULT_TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-``r`` update scaled by ``alpha / r``."""

    def __init__(self, base: nn.Linear, r: int, alpha: float) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, not {type(base).__name__}")
        if r < 1:
            raise ValueError(f"the rank r must be at least 1, not {r}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha, self.scale = r, alpha, alpha / r
        like = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.A = nn.Parameter(torch.empty(r, base.in_features, **like))
        self.B = nn.Parameter(torch.zeros(base.out_features, r, **like))
        # A as nn.Linear initialises its weight (Kaiming-uniform): inputs of any width give updates of one size.
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

    def delta_weight(self) -> torch.Tensor:
        """The update to the base weight, ``(alpha / r) * B @ A``: ``(out_features, in_features)``."""
        return self.scale * (self.B @ self.A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Two thin products, never the full delta W: (..., in) -> (..., r) -> (..., out).
        return self.base(x) + self.scale * F.linear(F.linear(x, self.A), self.B)

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A new ``nn.Linear`` with weight ``W + delta W`` and the base's bias: the same function as this layer.
        The base layer is left as it is."""
        merged = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                           device=self.base.weight.device, dtype=self.base.weight.dtype)
        merged.weight.copy_(self.base.weight + self.delta_weight())
        if self.base.bias is not None:
            merged.bias.copy_(self.base.bias)
        return merged


def add_lora(model: nn.Module, r: int, alpha: float, targets: Iterable[str] = DEFAULT_TARGETS) -> nn.Module:
    """Freeze every parameter of ``model`` and wrap each ``nn.Linear`` whose name ends with one of ``targets`` in a
    :class:`LoRALinear`, in place; return ``model``.  A ``ValueError`` when no layer matches."""
    targets = tuple(targets)
    for p in model.parameters():
        p.requires_grad_(False)
    chosen = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name.endswith(targets)]
    if not chosen:
        raise ValueError(f"no nn.Linear of the model has a name ending with one of {targets}")
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` of ``model`` by its merged ``nn.Linear``, in place; return ``model``."""
    wrapped = [name for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name in wrapped:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, getattr(parent, child).merge())
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts of ``model`` (a tied weight counted once)."""
    unique = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in unique if p.requires_grad), sum(p.numel() for p in unique)
