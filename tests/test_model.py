"""The model: config checks, GPT-2 structure, the two attention paths, KV cache, capture, ablation, loss, and the
switches of today's decoders (RoPE, RMSNorm, SwiGLU, kv heads, q/k norm)."""

import math

import pytest
import torch
import torch.nn.functional as F

from workbench import GPT, GPTConfig
from workbench.model import RMSNorm, apply_rope, repeat_kv, resolve_device, rope_tables

SHAPES = [
    GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32),
    GPTConfig(vocab_size=61, block_size=40, n_layer=3, n_head=5, n_embd=80),  # 5 heads of 16
    GPTConfig(vocab_size=50, block_size=24, n_layer=1, n_head=3, n_embd=24, bias=False),
]
MODERN = dict(position="rope", norm="rmsnorm", mlp="swiglu", bias=False, norm_eps=1e-6)
# Llama-style: 6 query heads share 2 kv heads, untied; Qwen3-style: q/k norm, heads wider than n_embd / n_head,
# q/k/v biases (Qwen2's), one kv head.
MODERN_SHAPES = [
    GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=6, n_embd=48, n_kv_head=2, tie_embeddings=False,
              **MODERN),
    GPTConfig(vocab_size=61, block_size=24, n_layer=2, n_head=4, n_embd=32, n_kv_head=1, head_dim=16, qk_norm=True,
              qkv_bias=True, mlp_hidden=40, **MODERN),
]


def make(config: GPTConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(config).eval()


@pytest.mark.parametrize("field,value", [("n_layer", 0), ("vocab_size", -3), ("n_head", 2.5), ("dropout", 1.0), ("attn_dropout", -0.1)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        GPTConfig(**{field: value})


def test_config_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)


@pytest.mark.parametrize("settings, message", [
    (dict(position="alibi"), "position must be one of"),
    (dict(norm="batchnorm"), "norm must be one of"),
    (dict(mlp="relu"), "mlp must be one of"),
    (dict(n_kv_head=5), r"n_head \(12\) must be divisible by n_kv_head \(5\)"),
    (dict(n_kv_head=0), "n_kv_head must be a positive integer"),
    (dict(position="rope", n_embd=36, n_head=12), "even head size"),
    (dict(norm_eps=0.0), "norm_eps must be positive"),
    (dict(rope_theta=-1.0), "rope_theta must be positive"),
    (dict(mlp_hidden=2.5), "mlp_hidden must be a positive integer"),
], ids=lambda v: str(v)[:30])
def test_config_rejects_bad_switches(settings, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**settings)


def test_config_resolves_its_optional_fields():
    gpt2 = GPTConfig()
    assert (gpt2.kv_heads, gpt2.head_size, gpt2.mlp_width, gpt2.qkv_has_bias) == (12, 64, 3072, True)
    qwen = GPTConfig(n_kv_head=2, head_dim=128, mlp_hidden=3000, bias=False, qkv_bias=True)
    assert (qwen.kv_heads, qwen.head_size, qwen.mlp_width, qwen.qkv_has_bias) == (2, 128, 3000, True)


def test_gpt2_small_has_124m_parameters_and_hf_names():
    with torch.device("meta"):  # no memory: only shapes and names
        model = GPT(GPTConfig())
    assert model.num_params() == 124_439_808
    names = set(model.state_dict())
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.11.attn.c_attn.weight",
            "transformer.h.0.mlp.c_proj.bias", "transformer.ln_f.weight", "lm_head.weight"} <= names
    assert not any("causal_mask" in n for n in names)  # derived, so never stored


def test_embeddings_are_tied_and_residual_init_is_scaled():
    model = make(GPTConfig(vocab_size=300, block_size=16, n_layer=8, n_head=4, n_embd=256))
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    proj_std = model.transformer.h[0].attn.c_proj.weight.std().item()
    fc_std = model.transformer.h[0].mlp.c_fc.weight.std().item()
    assert proj_std == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert fc_std == pytest.approx(0.02, rel=0.05)


@pytest.mark.parametrize("config", SHAPES + MODERN_SHAPES)
def test_sdpa_path_equals_explicit_path(config):
    model = make(config)
    idx = torch.randint(0, config.vocab_size, (3, config.block_size))
    with torch.no_grad():
        fast = model(idx)
        traced, trace = model.run_with_trace(idx)
    assert fast.shape == (3, config.block_size, config.vocab_size)
    diff = (traced - fast).abs().max().item()
    print(f"\nSDPA vs explicit {config.n_layer}x{config.n_head}x{config.head_size}: logits max|diff| = {diff:.2e}")
    assert diff <= 1e-5
    assert trace.attention.shape == (config.n_layer, 3, config.n_head, config.block_size, config.block_size)


@pytest.mark.parametrize("config", SHAPES + MODERN_SHAPES)
def test_kv_cache_decoding_equals_recomputation(config):
    model = make(config)
    idx = torch.randint(0, config.vocab_size, (2, config.block_size))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_kv_cache(batch_size=2)
        prefix = 5
        steps = [model(idx[:, :prefix], kv_cache=cache)]  # prefill, then one token at a time
        steps += [model(idx[:, t : t + 1], kv_cache=cache) for t in range(prefix, config.block_size)]
    assert cache.length == config.block_size
    diff = (torch.cat(steps, dim=1) - full).abs().max().item()
    print(f"\nKV cache vs recomputation {config.n_layer}x{config.n_head}x{config.head_size}: max|diff| = {diff:.2e}")
    assert diff <= 1e-5


def test_kv_cache_chunks_use_the_offset_causal_mask():
    config = SHAPES[0]
    model = make(config)
    idx = torch.randint(0, config.vocab_size, (1, 20))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_kv_cache()
        chunks = [model(idx[:, a:b], kv_cache=cache) for a, b in [(0, 7), (7, 15), (15, 20)]]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=0)


def test_kv_cache_overflow_and_batch_mismatch_are_clear():
    config = SHAPES[0]
    model = make(config)
    cache = model.new_kv_cache()
    model(torch.zeros(1, config.block_size, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="longer than the context"):
        model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="batch size"):
        model(torch.zeros(2, 1, dtype=torch.long), kv_cache=model.new_kv_cache(batch_size=1))
    with pytest.raises(ValueError, match="longer than the context"):
        model(torch.zeros(1, config.block_size + 1, dtype=torch.long))


def test_capture_with_kv_cache_gives_new_rows_and_residuals():
    config = SHAPES[1]
    model = make(config)
    idx = torch.randint(0, config.vocab_size, (2, 12))
    with torch.no_grad():
        _, full = model.run_with_trace(idx)
        cache = model.new_kv_cache(batch_size=2)
        model(idx[:, :11], kv_cache=cache)
        _, step = model.run_with_trace(idx[:, 11:], kv_cache=cache)
    assert step.attention.shape == (config.n_layer, 2, config.n_head, 1, 12)
    torch.testing.assert_close(step.attention[:, :, :, 0], full.attention[:, :, :, 11], atol=1e-6, rtol=0)
    for name in ("resid_pre", "resid_mid", "resid_post"):
        torch.testing.assert_close(getattr(step, name)[:, :, 0], getattr(full, name)[:, :, 11], atol=1e-5, rtol=0)
    torch.testing.assert_close(step.ln_final[:, 0], full.ln_final[:, 11], atol=1e-5, rtol=0)


def test_attention_pattern_is_causal_and_normalised():
    model = make(SHAPES[0])
    _, trace = model.run_with_trace(torch.randint(0, 97, (1, 10)))
    pattern = trace.attention
    torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern.sum(-1)))
    assert pattern.triu(diagonal=1).abs().max().item() == 0.0


def test_trace_residual_stream_is_consistent():
    config = SHAPES[0]
    model = make(config)
    idx = torch.randint(0, config.vocab_size, (2, 9))
    with torch.no_grad():
        logits, trace = model.run_with_trace(idx)
        embed = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(9))
    torch.testing.assert_close(trace.resid_pre[0], embed)
    torch.testing.assert_close(trace.resid_pre[1:], trace.resid_post[:-1])
    torch.testing.assert_close(trace.ln_final, model.transformer.ln_f(trace.resid_post[-1]))
    torch.testing.assert_close(model.lm_head(trace.ln_final), logits)


@pytest.mark.parametrize("fast", [True, False])
def test_head_ablation_matches_manual_computation(fast):
    config = SHAPES[1]
    model = make(config)
    layer, head = 1, 3
    idx = torch.randint(0, config.vocab_size, (2, 10))
    with torch.no_grad():
        ablated = model(idx, ablate=[(layer, head)]) if fast else model.run_with_trace(idx, ablate=[(layer, head)])[0]
        # By hand: run the layers, and in `layer` recompute attention with head `head`'s output set to zero.
        x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(10))
        for i, block in enumerate(model.transformer.h):
            if i != layer:
                x = block(x)
                continue
            attn = block.attn
            h = block.ln_1(x)
            q, k, v = attn.c_attn(h).split(config.n_embd, dim=2)
            hs = config.head_size
            outs = []
            for n in range(config.n_head):
                qn, kn, vn = (t[..., n * hs : (n + 1) * hs] for t in (q, k, v))
                scores = qn @ kn.transpose(-1, -2) / math.sqrt(hs)
                scores = scores.masked_fill(torch.ones(10, 10).triu(1).bool(), float("-inf"))
                out = torch.softmax(scores, -1) @ vn
                outs.append(torch.zeros_like(out) if n == head else out)
            x = x + attn.c_proj(torch.cat(outs, dim=-1))
            x = x + block.mlp(block.ln_2(x))
        manual = model.lm_head(model.transformer.ln_f(x))
        baseline = model(idx)
    torch.testing.assert_close(ablated, manual, atol=1e-5, rtol=0)
    assert (ablated - baseline).abs().max().item() > 1e-4  # the ablation did something


def test_ablation_rejects_unknown_heads():
    model = make(SHAPES[0])
    with pytest.raises(ValueError, match="cannot ablate head"):
        model(torch.zeros(1, 3, dtype=torch.long), ablate=[(0, 4)])


def test_loss_is_next_token_cross_entropy_and_ignores_minus_100():
    config = SHAPES[0]
    model = make(config)
    idx = torch.randint(0, config.vocab_size, (2, 8))
    targets = torch.randint(0, config.vocab_size, (2, 8))
    targets[0, :3] = -100
    logits, loss = model(idx, targets)
    keep = targets != -100
    expected = -torch.log_softmax(logits, -1)[keep].gather(-1, targets[keep][:, None]).mean()
    torch.testing.assert_close(loss, expected)
    # A fresh model predicts roughly uniformly: loss near log(vocab).
    assert abs(F.cross_entropy(logits.view(-1, config.vocab_size), targets.view(-1), ignore_index=-100).item()
               - math.log(config.vocab_size)) < 0.5


def test_last_only_gives_the_last_row():
    model = make(SHAPES[0])
    idx = torch.randint(0, 97, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(model(idx, last_only=True), model(idx)[:, -1:])


@pytest.mark.parametrize("dropouts", [dict(dropout=0.3), dict(attn_dropout=0.3)])
def test_dropout_only_in_training(dropouts):
    config = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16, **dropouts)
    model = make(config)
    idx = torch.randint(0, 40, (2, 16))
    with torch.no_grad():
        assert torch.equal(model(idx), model(idx))
        model.train()
        assert not torch.equal(model(idx), model(idx))


def test_gradients_flow_to_every_parameter():
    model = make(SHAPES[0]).train()
    idx = torch.randint(0, 97, (2, 8))
    _, loss = model(idx, idx)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


# ------------------------------------------------------------------------------- switches of today's decoders


def test_modern_switches_build_the_named_modules():
    model = make(MODERN_SHAPES[1])
    block = model.transformer.h[0]
    assert "transformer.wpe.weight" not in model.state_dict()  # RoPE: no position table
    assert all(isinstance(m, RMSNorm) for m in (block.ln_1, block.ln_2, model.transformer.ln_f, block.attn.q_norm))
    assert block.attn.c_attn.weight.shape == ((4 + 2 * 1) * 16, 32)  # 4 query heads, 1 key and 1 value head of 16
    assert block.attn.c_attn.bias is not None and block.attn.c_proj.bias is None  # Qwen2's biases: q/k/v only
    assert block.attn.c_proj.weight.shape == (32, 4 * 16)
    assert block.mlp.c_gate.weight.shape == block.mlp.c_fc.weight.shape == (40, 32)
    untied = make(MODERN_SHAPES[0])
    assert untied.lm_head.weight.data_ptr() != untied.transformer.wte.weight.data_ptr()
    assert untied.num_params(non_embedding=True) == untied.num_params() - 2 * 97 * 48


def test_rmsnorm_divides_by_the_rms_in_float32():
    norm = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
    x = torch.randn(3, 5, 8) * 4
    want = x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() * norm.weight
    torch.testing.assert_close(norm(x), want)
    half = norm.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), want, atol=0.05, rtol=0.02)


def test_rope_rotates_pairs_by_angles_that_only_the_distance_matters_to():
    hs = 8
    cos, sin = rope_tables(hs, torch.arange(6), theta=10000.0)
    assert cos.shape == sin.shape == (6, hs)
    torch.testing.assert_close(cos[:, 0], torch.cos(torch.arange(6.0)))  # pair 0 turns by 1 radian a position
    torch.testing.assert_close(cos[:, : hs // 2], cos[:, hs // 2 :])  # dims i and i + hs/2 share an angle
    q, k = torch.randn(1, 1, 1, hs), torch.randn(1, 1, 1, hs)

    def score(m: int, n: int) -> torch.Tensor:
        (cm, sm), (cn, sn) = rope_tables(hs, torch.tensor([m]), 10000.0), rope_tables(hs, torch.tensor([n]), 10000.0)
        return (apply_rope(q, cm, sm) * apply_rope(k, cn, sn)).sum()

    torch.testing.assert_close(score(3, 1), score(12, 10))  # same distance, same score
    assert not torch.allclose(score(3, 1), score(3, 2))
    x = torch.randn(2, 3, 6, hs)
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))  # a rotation keeps lengths


def test_rope_takes_per_sequence_positions():
    hs = 16
    positions = torch.tensor([[0, 1, 2, 3], [5, 6, 7, 8]])  # (B, T): the second sequence is further along
    cos, sin = rope_tables(hs, positions, 500000.0)
    assert cos.shape == (2, 4, hs)
    x = torch.randn(2, 3, 4, hs)
    both = apply_rope(x, cos, sin)
    for b in range(2):
        cos_b, sin_b = rope_tables(hs, positions[b], 500000.0)
        torch.testing.assert_close(both[b : b + 1], apply_rope(x[b : b + 1], cos_b, sin_b))


def test_repeat_kv_gives_query_head_h_the_kv_head_h_over_n_rep():
    kv = torch.randn(2, 3, 5, 4)  # 3 kv heads
    out = repeat_kv(kv, 4)
    assert out.shape == (2, 12, 5, 4)
    for h in range(12):
        assert torch.equal(out[:, h], kv[:, h // 4])
    assert repeat_kv(kv, 1) is kv
