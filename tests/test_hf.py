"""Equivalence with Hugging Face GPT2LMHeadModel on the same (random, built offline) weights."""

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from workbench import GPT
from workbench.hf import HFLoadError, from_hf

from tiny_llama import max_differences

# (vocab, context, width, layers, heads): includes 5 heads of 16 and 3 heads of 32, not powers of two.
HF_SHAPES = [
    (101, 64, 80, 3, 5),
    (257, 96, 64, 2, 4),
    (500, 48, 96, 4, 3),
    (64, 40, 48, 1, 6),
]


def random_hf(vocab, ctx, width, layers, heads, seed=0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab, n_positions=ctx, n_embd=width, n_layer=layers, n_head=heads,
        bos_token_id=0, eos_token_id=0, attn_implementation="eager",
    )
    model = GPT2LMHeadModel(config).eval()
    # HF's init leaves LayerNorms at 1/0 and biases at 0: randomise them too so a mix-up would show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def greedy(model: GPT, prompt: torch.Tensor, n: int) -> torch.Tensor:
    cache = model.new_kv_cache(prompt.shape[0])
    logits = model(prompt, kv_cache=cache, last_only=True)
    out = []
    for _ in range(n):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        out.append(nxt)
        logits = model(nxt, kv_cache=cache)
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("shape", HF_SHAPES, ids=lambda s: "v{}-t{}-c{}-l{}-h{}".format(*s))
def test_logits_and_attention_match_hf(shape):
    hf = random_hf(*shape)
    ours = GPT.from_hf(hf).eval()
    vocab, ctx = shape[0], shape[1]
    idx = torch.randint(0, vocab, (2, ctx))
    logit_diff, attn_diff = max_differences(ours, hf, idx)
    print(f"\nHF equivalence {shape}: logits max|diff| = {logit_diff:.2e}, attention max|diff| = {attn_diff:.2e}")
    assert logit_diff <= 1e-4
    assert attn_diff <= 1e-5


@pytest.mark.parametrize("shape", HF_SHAPES[:3], ids=lambda s: "v{}-h{}".format(s[0], s[4]))
def test_greedy_continuation_matches_hf_generate(shape):
    hf = random_hf(*shape, seed=1)
    ours = GPT.from_hf(hf).eval()
    prompt = torch.randint(0, shape[0], (1, 8))
    with torch.no_grad():
        ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=32, do_sample=False,
                          pad_token_id=0, eos_token_id=None)[:, 8:]
        got = greedy(ours, prompt, 32)
    assert ref.shape == (1, 32)
    assert torch.equal(got, ref), f"ours {got.tolist()} vs HF {ref.tolist()}"


def test_round_trip_is_bit_exact():
    torch.manual_seed(3)
    from workbench import GPTConfig

    ours = GPT(GPTConfig(vocab_size=77, block_size=32, n_layer=2, n_head=5, n_embd=40)).eval()
    back = GPT.from_hf(ours.to_hf())
    for (name, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name
    assert back.config == ours.config


def test_model_without_bias_exports_with_zero_bias():
    from workbench import GPTConfig

    torch.manual_seed(0)
    ours = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, bias=False)).eval()
    idx = torch.randint(0, 50, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours.to_hf()(idx).logits, ours(idx), atol=1e-5, rtol=0)


def test_load_from_save_pretrained_directory(tmp_path):
    hf = random_hf(*HF_SHAPES[0])
    hf.save_pretrained(tmp_path / "tiny-gpt2")
    ours = from_hf(tmp_path / "tiny-gpt2").eval()
    idx = torch.randint(0, HF_SHAPES[0][0], (1, 20))
    with torch.no_grad():
        assert (ours(idx) - hf(idx).logits).abs().max().item() <= 1e-4


def test_missing_path_is_one_clear_error(tmp_path):
    with pytest.raises(HFLoadError, match="no model directory"):
        from_hf(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HFLoadError, match="could not load a model config"):
        from_hf(tmp_path / "empty")


def test_other_architecture_is_refused(tmp_path):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(HFLoadError, match="'bert' model; supported are GPT-2, Llama"):
        from_hf(tmp_path / "bert")


def test_unsupported_gpt2_variant_is_refused():
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=10, n_positions=8, n_embd=8, n_layer=1, n_head=2,
                                    activation_function="relu", bos_token_id=0, eos_token_id=0))
    with pytest.raises(HFLoadError, match="activation_function='relu'"):
        from_hf(hf)


def test_hub_source_prefers_the_local_cache_and_never_waits_offline(tmp_path, monkeypatch):
    from workbench.hf import hub_source

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_source("gpt2", cache_dir=tmp_path) is None  # nothing cached, offline: no network attempt
    snapshot = tmp_path / "models--gpt2" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (tmp_path / "models--gpt2" / "refs").mkdir()
    (tmp_path / "models--gpt2" / "refs" / "main").write_text("abc123")
    (snapshot / "config.json").write_text("{}")
    assert hub_source("gpt2", cache_dir=tmp_path) is None  # config without weights is not enough
    (snapshot / "model.safetensors").write_bytes(b"")
    assert hub_source("gpt2", cache_dir=tmp_path) == snapshot


def test_a_hub_id_fails_at_once_when_the_hub_cannot_be_reached(tmp_path, monkeypatch):
    """Offline without HF_HUB_OFFLINE (a student's laptop on a train): one short connection attempt, then a clear
    error, never transformers' own minute of retries."""
    import transformers

    import workbench.hf as hf_module
    from workbench import load_model

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # nothing cached
    attempts = []

    def unreachable(address, timeout=None):
        attempts.append((address, timeout))
        raise OSError("network is unreachable")

    def retrying(*args, **kwargs):
        raise AssertionError("transformers was asked to download")

    monkeypatch.setattr(hf_module.socket, "create_connection", unreachable)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", retrying)
    with pytest.raises(HFLoadError, match="cannot be reached"):
        load_model("gpt2", device="cpu")
    assert attempts == [(("huggingface.co", 443), hf_module.HUB_TIMEOUT_S)]
