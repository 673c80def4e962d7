"""workbench.lora: LoRALinear is its base layer at init and W + (alpha/r) B A after; add_lora and merge_lora."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from workbench.lora import DEFAULT_TARGETS, LoRALinear, add_lora, count_parameters, merge_lora
from workbench.model import GPT, GPTConfig


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=8, dropout=0.0)).eval()


def test_lora_linear_is_the_base_at_init_and_the_merged_full_layer_after():
    torch.manual_seed(0)
    base = nn.Linear(6, 4)
    layer = LoRALinear(base, r=2, alpha=6.0)
    x = torch.randn(3, 6)
    assert torch.equal(layer(x), base(x))
    assert [p.requires_grad for p in base.parameters()] == [False, False]
    with torch.no_grad():
        layer.B.normal_()
    full = base.weight + 3.0 * layer.B @ layer.A  # alpha / r = 3
    torch.testing.assert_close(layer(x), x @ full.T + base.bias)
    merged = layer.merge()
    torch.testing.assert_close(merged(x), layer(x))
    assert torch.equal(layer.base.weight, base.weight) and merged.weight is not base.weight


def test_lora_linear_refuses_what_it_cannot_wrap():
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(2, 2, 1), r=1, alpha=1.0)
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(2, 2), r=0, alpha=1.0)


def test_add_lora_trains_only_the_adapters_and_starts_from_the_base_model():
    model = tiny_gpt()
    idx = torch.randint(50, (2, 10))
    before = model(idx)
    add_lora(model, r=2, alpha=4.0)
    wrapped = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == len(DEFAULT_TARGETS) * 2
    trainable, total = count_parameters(model)
    assert trainable == sum(2 * (m.base.in_features + m.base.out_features) for m in wrapped)
    assert total == trainable + sum(p.numel() for p in tiny_gpt().parameters())
    assert torch.equal(model(idx), before)


def test_merge_lora_gives_a_plain_model_with_the_same_logits():
    model = add_lora(tiny_gpt(), r=2, alpha=4.0)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            nn.init.normal_(m.B)
    idx = torch.randint(50, (2, 10))
    with torch.no_grad():
        adapted = model(idx)
        merge_lora(model)
        torch.testing.assert_close(model(idx), adapted, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert sorted(model.state_dict()) == sorted(tiny_gpt().state_dict())


def test_add_lora_says_when_no_layer_matches():
    with pytest.raises(ValueError, match="no nn.Linear"):
        add_lora(tiny_gpt(), r=2, alpha=4.0, targets=("nothing",))
