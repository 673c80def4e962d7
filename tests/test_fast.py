"""workbench.fast: the opt-in CPU speed-ups give the plain model's numbers, follow weight updates, and leave the
textbook model plain."""

import inspect
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import workbench.fast as fast
import workbench.model as model_module
from workbench import GPT, GPTConfig, load_model
from workbench.fast import FastDropout, FastLinear, accelerate

CONFIG = GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32)


def fast_linear(in_features: int, out_features: int, **switches) -> FastLinear:
    layer = nn.Linear(in_features, out_features)
    accelerate(layer, **switches)
    return layer


def test_the_textbook_model_is_plain_torch_and_calls_no_private_op():
    source = Path(inspect.getfile(model_module)).read_text()
    for speed_trick in ("torch.ops", "._version", "workbench import native", "mkldnn"):
        assert speed_trick not in source
    model = GPT(CONFIG)
    assert {type(m) for m in model.modules() if isinstance(m, (nn.Linear, nn.Dropout))} == {nn.Linear, nn.Dropout}


def test_accelerate_keeps_weights_and_outputs_and_switches_per_model(monkeypatch):
    monkeypatch.setattr(fast, "PACKED_MIN_ELEMENTS", 0)  # pack even these small weights
    torch.manual_seed(0)
    plain = GPT(CONFIG).eval()
    quick = GPT(CONFIG).eval()
    quick.load_state_dict(plain.state_dict())
    accelerate(quick)
    assert all(isinstance(m, FastLinear) for m in quick.modules() if isinstance(m, nn.Linear))
    assert quick.state_dict().keys() == plain.state_dict().keys()
    assert quick.lm_head.rows_hint == fast.LM_HEAD_ROWS_HINT and quick.transformer.h[0].mlp.c_fc.rows_hint == 1
    idx = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        want = plain(idx)
        torch.testing.assert_close(quick(idx), want, atol=1e-5, rtol=1e-5)
        assert quick.lm_head._packed is not None or not torch.backends.mkldnn.is_available()
        accelerate(quick, packed=False)  # switched off on this model only: no class-wide state
        assert not quick.lm_head.packed and all(not isinstance(m, FastLinear) for m in plain.modules())
        torch.testing.assert_close(quick(idx), want, atol=1e-5, rtol=1e-5)


def test_packed_path_equals_nn_linear_and_follows_weight_updates(monkeypatch):
    if not torch.backends.mkldnn.is_available():
        pytest.fail("oneDNN is not available in this torch build: the fast CPU path would be untested")
    monkeypatch.setattr(fast, "PACKED_MIN_ELEMENTS", 0)
    layer = fast_linear(16, 24)
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        packed = layer(x)
        assert layer._packed is not None  # the packed path was taken
        torch.testing.assert_close(packed, F.linear(x, layer.weight, layer.bias), atol=1e-5, rtol=1e-5)
        layer.weight.mul_(2.0)  # an in-place update (what an optimizer does) must invalidate the packed copy
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), atol=1e-5, rtol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), atol=1e-5, rtol=1e-5)
    assert layer(x).requires_grad  # with gradients on, the ordinary nn.Linear runs, so autograd works


def test_one_row_times_a_small_weight_skips_the_packed_path():
    from workbench import native

    small, large = fast_linear(192, 576), fast_linear(768, 768)  # either side of PACKED_MIN_ELEMENTS
    with torch.inference_mode():
        for layer in (small, large):
            x = torch.randn(1, 1, layer.in_features)
            torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), atol=1e-4, rtol=1e-5)
        assert small._packed is None
        # One row times the large weight: the native GEMV where it builds (nothing packed), else oneDNN.
        assert (large._packed is None) == (native.gemv_library() is not None)
        accelerate(large, native=False)
        x = torch.randn(1, 1, 768)
        torch.testing.assert_close(large(x), F.linear(x, large.weight, large.bias), atol=1e-4, rtol=1e-5)
        assert large._packed is not None
        small(torch.randn(1, 3, 192))  # several rows (a prompt) are packed whatever the weight's size
        assert small._packed is not None


@pytest.mark.parametrize("accelerated", [False, True])
def test_a_model_built_in_inference_mode_runs(accelerated, monkeypatch):
    monkeypatch.setattr(fast, "PACKED_MIN_ELEMENTS", 0)
    with torch.inference_mode():
        model = GPT(CONFIG).eval()
        if accelerated:
            accelerate(model)
        logits = model(torch.randint(0, 97, (1, 5)))
    assert logits.shape == (1, 5, 97)


def test_load_model_accelerates():
    model, _ = load_model("shakespeare", device="cpu")
    assert isinstance(model.lm_head, FastLinear)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_fast_dropout_keeps_1_minus_p_and_scales_the_kept(p):
    x = torch.ones(1_000_001)  # odd: the last element takes half of a 32-bit draw
    torch.manual_seed(0)
    y = accelerate(nn.Dropout(p)).train()(x)
    kept = y != 0
    # 1e6 Bernoulli draws: the kept fraction's standard deviation is under 5e-4, so 0.003 is over 6 of them.
    assert abs(kept.double().mean().item() - (1 - p)) < 3e-3
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    # Both 16-bit halves of each draw are used, and neither is biased: even and odd positions keep alike.
    assert abs(kept[0::2].double().mean().item() - kept[1::2].double().mean().item()) < 6e-3


def test_fast_dropout_reproducible_from_the_seed_and_its_gradient_is_its_mask():
    x = torch.randn(4, 7, 9, requires_grad=True)
    drop = accelerate(nn.Dropout(0.3)).train()
    assert isinstance(drop, FastDropout)
    torch.manual_seed(5)
    y1 = drop(x)
    torch.manual_seed(5)
    y2 = drop(x)
    assert torch.equal(y1, y2)
    y1.sum().backward()
    torch.testing.assert_close(x.grad, (y2 != 0).float() / 0.7)
    assert drop(x.detach().bfloat16()).dtype == torch.bfloat16
    assert torch.equal(drop.eval()(x), x)
    assert type(accelerate(drop, dropout=False)) is nn.Dropout
