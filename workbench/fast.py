"""Speed-ups for the CPU, opted into: ``accelerate(model)`` gives a :class:`~workbench.model.GPT` faster linear
layers for inference and a faster dropout for training, and changes no number a test of the model checks.

:mod:`workbench.model` is the textbook model, plain ``nn.Linear`` and ``nn.Dropout``; :func:`accelerate` turns its
layers, in place, into the subclasses below, which take a faster path where one exists and otherwise do what their
parent does. ``load_model``, the app and training call it; a notebook that builds a ``GPT`` itself gets the plain
model unless it asks.

- :class:`FastLinear`: decoding one token multiplies a single row by every weight matrix, so its speed is set by
  how fast the weights stream from memory. The default CPU kernel for that (GEMV) reaches about half the machine's
  read bandwidth; oneDNN with a weight repacked into its blocked layout reaches nearly all of it
  (benchmarks/generate.py). When gradients are off and the input is fp32 on the CPU, the layer multiplies with a
  packed copy, made on first use and made again whenever the weight changes (tracked by its version counter). One
  row times a large weight goes to :mod:`workbench.native`'s GEMV when a C compiler can build it. For one row and a
  small weight neither is worth it (oneDNN's set-up per call costs more than reading the weight), so those use the
  default kernel. Several rows (a prompt) stay packed: the default kernel's result for several rows changes in the
  last bits with the thread count, oneDNN's does not, and a worker process on one thread must reproduce the
  numbers of a server on two. The packed copy costs the memory of the weight once more.
- :class:`FastDropout`: the CPU's ``bernoulli_`` draws one Mersenne-Twister number per element and converts it to a
  float, about a tenth of a small model's training step. Here each 32-bit draw makes two 15-bit uniform integers,
  and an element is kept when its integer is at least ``round(p * 32768)``: p is rounded to a multiple of 1/32768
  (0.1 drops 3277/32768 = 0.100006). Randomness comes from torch's generator, so seeding and a resumed run's
  restored RNG state reproduce the masks. Other devices use ``nn.Dropout``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from workbench import native

PACKED_MIN_ELEMENTS = 1 << 18  # one row times a weight smaller than this (1 MiB of fp32) uses the default kernel
LM_HEAD_ROWS_HINT = 4  # oneDNN packs for this many rows: fastest for one row and for the logit lens' 2 x n_layer


class FastLinear(nn.Linear):
    """``nn.Linear`` with a packed-weight path for CPU inference (see the module docstring). Made by
    :func:`accelerate`, which sets ``packed``, ``native`` and ``rows_hint`` on each layer."""

    packed: bool
    native: bool
    rows_hint: int
    _packed: tuple[tuple[int, int | None], torch.Tensor] | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.packed
            and not torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and (self.weight.numel() >= PACKED_MIN_ELEMENTS or x.numel() != self.in_features)
        ):
            if x.numel() == self.in_features and self.native and (lib := native.gemv_library()) is not None:
                return native.gemv(lib, self.weight, x, self.bias)
            # An inference tensor has no version counter; it cannot change outside inference mode either.
            version = None if self.weight.is_inference() else self.weight._version
            key = (self.weight.data_ptr(), version)
            if self._packed is None or self._packed[0] != key:
                self._packed = (key, torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), self.rows_hint))
            return torch.ops.mkldnn._linear_pointwise(x, self._packed[1], self.bias, "none", [], "")
        return super().forward(x)

    def __getstate__(self) -> dict:
        # The packed copy is a cache (and an oneDNN tensor, which cannot be pickled): a copy of the model sent to
        # another process packs its own on first use.
        return {**super().__getstate__(), "_packed": None}


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper mask on the CPU (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(x)
        if self.p >= 1.0:
            return x * 0.0
        n = x.numel()
        draws = torch.empty((n + 1) // 2, dtype=torch.int32).random_()  # uniform on [0, 2**31): 31 random bits
        bits = draws.view(torch.int16)[:n].view(x.shape) & 0x7FFF  # both halves' low 15 bits are uniform
        return torch.where(bits >= round(self.p * 32768), x * (1.0 / (1.0 - self.p)), 0.0)


def accelerate(model: nn.Module, *, packed: bool | None = None, native: bool = True,
               dropout: bool = True) -> nn.Module:
    """Give ``model``'s linear layers the fast CPU inference path and its dropouts the fast mask, in place; return
    ``model``. Weights, outputs' shapes and the state dict are unchanged.

    ``packed`` (default: when oneDNN is available) turns the packed-weight path on or off, ``native`` our GEMV
    kernel for one row, ``dropout`` the fast mask. Calling it again changes the switches: a benchmark compares
    paths by calling it with different ones.
    """
    if packed is None:
        packed = torch.backends.mkldnn.is_available()
    lm_head = getattr(model, "lm_head", None)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            if not isinstance(module, FastLinear):
                module.__class__ = FastLinear
                module._packed = None
            module.packed, module.native = packed, native
            module.rows_hint = LM_HEAD_ROWS_HINT if module is lm_head else 1
        elif isinstance(module, nn.Dropout) and dropout and not isinstance(module, FastDropout):
            module.__class__ = FastDropout
        elif isinstance(module, FastDropout) and not dropout:
            module.__class__ = nn.Dropout
    return model
