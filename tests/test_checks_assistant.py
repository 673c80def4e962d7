"""Lesson 15 (from a base model to an assistant) checks: a correct implementation passes, a stub is "not implemented
yet", and each planted mistake gets its own hint."""

from __future__ import annotations

import functools

import torch
import torch.nn as nn

from workbench.checks import check_lora_linear, check_sft_targets
from workbench.checks.assistant import _LORA_MISTAKES, _SFT_MISTAKES, _LoRAVariant, _sft_variant

from verdicts import correct_implementation_test, planted_mistake_test, stub_of, stub_test

# ------------------------------------------------------------------------- correct implementations


def sft_targets(prompt_ids, answer_ids, end):
    """Written differently from the reference: targets built position by position."""
    sequence = list(prompt_ids) + list(answer_ids) + [end]
    targets = [tok if t >= len(prompt_ids) - 1 else -100 for t, tok in enumerate(sequence[1:])]
    return torch.tensor(sequence[:-1]), torch.tensor(targets)


class LoRALinear(nn.Module):
    """Written differently from the reference: the update is formed as one matrix in forward."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.scale = alpha / r
        self.A = nn.Parameter(torch.randn(r, base.in_features) / base.in_features**0.5)
        self.B = nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x):
        return nn.functional.linear(x, self.base.weight + self.scale * self.B @ self.A, self.base.bias)

    def merge(self):
        merged = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        merged.weight.data = self.base.weight + self.scale * self.B @ self.A
        if self.base.bias is not None:
            merged.bias.data = self.base.bias.clone()
        return merged


CORRECT = [
    (check_sft_targets, sft_targets),
    (check_sft_targets, _sft_variant),
    (check_lora_linear, LoRALinear),
    (check_lora_linear, _LoRAVariant),
]

# ---------------------------------------------------------------------------- planted mistakes


class DetachedLoRA(LoRALinear):
    def forward(self, x):
        return nn.functional.linear(x, self.base.weight + self.scale * self.B.detach() @ self.A, self.base.bias)


class ZeroA(LoRALinear):
    def __init__(self, base, r, alpha):
        super().__init__(base, r, alpha)
        nn.init.zeros_(self.A)


PLANTED = [
    # (check, wrong implementation, words the hint must contain): the checks module's own tables of mistakes
    *[(check_sft_targets, functools.partial(_sft_variant, **switches), hint)
      for hint, switches in _SFT_MISTAKES.items()],
    (check_sft_targets, lambda p, a, e: sft_targets(p, a, e)[1], "return two tensors"),
    (check_sft_targets, lambda p, a, e: (sft_targets(p, a, e)[0], sft_targets(p, a, e)[1].clamp(min=0)),
     "no known mistake matches"),
    (check_sft_targets, lambda p, a, e: sft_targets(p + a.pop() * [0] * 0, a, e), "changed its input `answer_ids`"),
    *[(check_lora_linear, functools.partial(_LoRAVariant, **switches), hint)
      for hint, switches in _LORA_MISTAKES.items()],
    (check_lora_linear, DetachedLoRA, "gradient of B"),
    (check_lora_linear, ZeroA, "A is zero at init"),
]


test_check_passes_a_correct_implementation = correct_implementation_test(CORRECT)
# The student notebook's stubs: sft_targets left to write; LoRALinear with forward left to write.
test_check_on_a_stub_says_not_implemented = stub_test([(check, stub_of(student)) for check, student in CORRECT])
test_check_names_the_planted_mistake = planted_mistake_test(PLANTED)


def test_every_planted_lora_mistake_really_differs_from_lora():
    """Each switch changes the layer somewhere a check looks: its parameters, its output or merge()."""
    torch.manual_seed(0)
    for switches in _LORA_MISTAKES.values():
        base = nn.Linear(6, 5)
        right, wrong = _LoRAVariant(base, 2, 8.0), _LoRAVariant(nn.Linear(6, 5), 2, 8.0, **switches)
        differs = (wrong.A.shape != right.A.shape or any(p.requires_grad for p in wrong.base.parameters())
                   or wrong.B.abs().sum() > 0 or wrong.scale != right.scale or switches.get("merge_in_place"))
        assert differs, switches
