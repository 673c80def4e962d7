"""Llama, Mistral, Qwen2 and Qwen3 as switches of the one GPT: equal to Hugging Face's models on the same random
weights (built offline from configs), and everything else in the workbench working on a tiny random Llama."""

from __future__ import annotations

import copy
import json
import socket

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
)

from workbench import GPT, GPTConfig, SamplingConfig, generate, load_model, save_checkpoint, stream
from workbench.checkpoint import load_checkpoint
from workbench.fast import accelerate
from workbench.hf import HFLoadError, config_from_hf, hf_family
from workbench.model import KVCache, RMSNorm
from workbench.tokenizers import BPETokenizer, HFTokenizer

from tiny_llama import CONTEXT, FAMILIES, TEXT, VOCAB, max_differences, random_hf, save_tiny_llama

# (id, family, query heads, kv heads, more HF settings). Width 64 throughout, so 8 heads are 8 wide.
SHAPES = [
    ("llama-mha-untied", "llama", 4, 4, dict(tie_word_embeddings=False)),
    ("llama-gqa2-tied", "llama", 4, 2, dict(tie_word_embeddings=True, rope_theta=500000.0)),
    ("llama-mqa", "llama", 8, 1, dict()),
    ("llama-biases", "llama", 4, 2, dict(attention_bias=True, mlp_bias=True)),
    ("mistral-gqa2", "mistral", 4, 2, dict(sliding_window=None)),
    ("qwen2-gqa2-tied", "qwen2", 4, 2, dict(tie_word_embeddings=True)),
    ("qwen2-mqa-untied", "qwen2", 2, 1, dict(tie_word_embeddings=False)),
    ("qwen3-gqa2-wide-heads", "qwen3", 4, 2, dict(head_dim=32)),  # heads wider than 64 / 4, as in Qwen3-0.6B
    ("qwen3-mha-tied", "qwen3", 4, 4, dict(tie_word_embeddings=True)),
]
def shape_id(shape: tuple) -> str:
    return shape[0]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------- equal to HF


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_logits_and_attention_match_hf(shape):
    name, family, heads, kv_heads, settings = shape
    hf = random_hf(family, heads, kv_heads, **settings)
    ours = GPT.from_hf(hf).eval()
    assert ours.config.kv_heads == kv_heads and ours.config.tie_embeddings == hf.config.tie_word_embeddings
    idx = torch.randint(0, VOCAB, (2, CONTEXT))
    logit_diff, attn_diff = max_differences(ours, hf, idx)
    print(f"\n{name}: logits max|diff| = {logit_diff:.2e}, attention max|diff| = {attn_diff:.2e}")
    assert logit_diff <= 1e-4
    assert attn_diff <= 1e-5


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_greedy_generation_matches_hf_generate(shape):
    _, family, heads, kv_heads, settings = shape
    hf = random_hf(family, heads, kv_heads, seed=1, **settings)
    ours = GPT.from_hf(hf).eval()
    prompt = torch.randint(0, VOCAB, (1, 8))
    with torch.no_grad():
        ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=32, do_sample=False,
                          pad_token_id=0, eos_token_id=None)[0, 8:].tolist()
    got = generate(ours, None, prompt[0].tolist(), SamplingConfig(max_new_tokens=32, temperature=0), capture=False)
    assert len(ref) == 32
    assert got.token_ids == ref


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_hf_to_ours_to_hf_is_bit_exact(shape):
    _, family, heads, kv_heads, settings = shape
    hf = random_hf(family, heads, kv_heads, **settings)
    back = GPT.from_hf(hf).to_hf()
    # Mistral without a window computes what a Llama does, and comes back as one.
    assert back.config.model_type == ("llama" if family == "mistral" else family)
    theirs, again = hf.state_dict(), back.state_dict()
    assert sorted(again) == sorted(theirs)
    for name, tensor in theirs.items():
        assert torch.equal(again[name], tensor), name
    idx = torch.randint(0, VOCAB, (1, 20))
    with torch.no_grad():
        assert torch.equal(back(idx).logits, hf(idx).logits)


LLAMA_STYLE = dict(vocab_size=VOCAB, block_size=CONTEXT, n_layer=2, n_head=4, n_embd=32, position="rope",
                   norm="rmsnorm", mlp="swiglu", bias=False, norm_eps=1e-6)


@pytest.mark.parametrize("switches, family", [
    (dict(n_kv_head=2, mlp_hidden=48, tie_embeddings=False, rope_theta=500000.0), "llama"),
    (dict(n_kv_head=1, qkv_bias=True), "qwen2"),
    (dict(n_kv_head=2, head_dim=16, qk_norm=True, tie_embeddings=False), "qwen3"),
], ids=["llama", "qwen2", "qwen3"])
def test_ours_to_hf_to_ours_is_bit_exact(switches, family):
    torch.manual_seed(3)
    ours = GPT(GPTConfig(**LLAMA_STYLE, **switches)).eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "norm" in name or "ln_" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    assert hf_family(ours.config) == family
    hf = ours.to_hf()
    back = GPT.from_hf(hf)
    assert back.config == ours.config
    for (name, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    idx = torch.randint(0, VOCAB, (2, 24))
    with torch.no_grad():
        assert (hf(idx).logits - ours(idx)).abs().max().item() <= 1e-4


def test_unsupported_variants_are_refused_by_name():
    with pytest.raises(HFLoadError, match="RoPE scaling 'llama3'"):
        config_from_hf(LlamaConfig(rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                    "original_max_position_embeddings": 8192}))
    with pytest.raises(HFLoadError, match="sliding_window=4096"):
        config_from_hf(MistralConfig(sliding_window=4096, max_position_embeddings=32768))
    with pytest.raises(HFLoadError, match="hidden_act='gelu'"):
        config_from_hf(LlamaConfig(hidden_act="gelu"))
    with pytest.raises(ValueError, match="no Hugging Face class holds position='rope', norm='layernorm'"):
        GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8, position="rope")).to_hf()


# ---------------------------------------------------------------------- the workbench on a tiny Llama


@pytest.fixture(scope="module")
def llama() -> GPT:
    """A tiny random Llama with grouped-query attention: 4 query heads share 2 key/value heads."""
    return GPT.from_hf(random_hf("llama", 4, 2, seed=5)).eval()


def test_kv_cache_decoding_equals_a_full_forward(llama):
    idx = torch.randint(0, VOCAB, (2, 30))
    cache = llama.new_kv_cache(batch_size=2)
    with torch.no_grad():
        full = llama(idx)
        parts = [llama(idx[:, :10], kv_cache=cache), llama(idx[:, 10:17], kv_cache=cache)]
        parts += [llama(idx[:, t : t + 1], kv_cache=cache) for t in range(17, 30)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)


def test_the_cache_holds_only_the_kv_heads():
    gpt2_small = GPTConfig()
    gqa = GPTConfig(position="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=4)  # same width, 12 query heads
    mqa = GPTConfig(position="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=1)
    per_token = {name: KVCache(c, 1, "cpu", torch.float32).bytes_per_token
                 for name, c in (("gpt2", gpt2_small), ("gqa", gqa), ("mqa", mqa))}
    print(f"\nKV cache bytes per token: {per_token}")
    assert per_token["gpt2"] == 2 * 12 * 12 * 64 * 4  # k and v, 12 layers, 12 heads of 64 floats
    assert per_token["gpt2"] == per_token["gqa"] * 12 // 4 == per_token["mqa"] * 12
    cache = KVCache(gqa, 3, "cpu", torch.float32)
    assert cache.nbytes == cache.bytes_per_token * 3 * gqa.block_size


def test_trace_has_a_pattern_per_query_head(llama):
    idx = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        logits, trace = llama.run_with_trace(idx)
        fast = llama(idx)
    assert trace.attention.shape == (2, 2, 4, 12, 12)  # (L, B, n_head, T, T): query heads, not kv heads
    torch.testing.assert_close(logits, fast, atol=1e-5, rtol=0)  # the explicit path equals SDPA
    torch.testing.assert_close(trace.attention.sum(-1), torch.ones(2, 2, 4, 12))
    assert torch.all(trace.attention.triu(diagonal=1) == 0)
    # Query heads 0 and 1 read the same keys (kv head 0) with different queries: their patterns differ.
    assert not torch.allclose(trace.attention[:, :, 0], trace.attention[:, :, 1])


def test_stream_captures_each_query_heads_row_and_the_lens(llama):
    prompt = torch.randint(0, VOCAB, (9,)).tolist()
    steps = list(stream(llama, None, prompt, SamplingConfig(max_new_tokens=5, temperature=0)))
    ids = prompt + [s.token_id for s in steps]
    with torch.no_grad():
        logits, trace = llama.run_with_trace(torch.tensor([ids]))
    for i, step in enumerate(steps):
        q = len(prompt) - 1 + i  # the position that produced this step's token
        assert step.attention.shape == (2, 4, q + 1)  # (L, n_head, keys)
        torch.testing.assert_close(step.attention, trace.attention[:, 0, :, q, : q + 1], atol=1e-5, rtol=0)
        assert step.token_id == logits[0, q].argmax().item()
        assert step.lens.ids[-1, 0, 0, 0].item() == step.token_id  # the last read is the model's own output


def test_the_logit_lens_reads_through_the_final_rmsnorm(llama):
    idx = torch.randint(0, VOCAB, (1, 10))
    with torch.no_grad():
        logits, trace = llama.run_with_trace(idx)
        lens = trace.logit_lens(llama, positions=-1)
        assert isinstance(llama.transformer.ln_f, RMSNorm)
        first = torch.softmax(llama.lm_head(llama.transformer.ln_f(trace.resid_mid[0, :, -1])), dim=-1)
    assert lens.n_reads == 4
    top_prob, top_id = first.max(dim=-1)
    assert lens.ids[0, 0, 0, 0].item() == top_id.item()
    torch.testing.assert_close(lens.probs[0, 0, 0, 0], top_prob[0], atol=1e-6, rtol=0)
    assert lens.ids[-1, 0, 0, 0].item() == logits[0, -1].argmax().item()


def test_head_ablation_zeroes_one_query_head(llama):
    """Ablating query head 3 of layer 1 equals zeroing the columns of the output projection that read it (kv head 1,
    which query head 2 shares, keeps working)."""
    idx = torch.randint(0, VOCAB, (1, 12))
    manual = copy.deepcopy(llama)
    hs = llama.config.head_size
    with torch.no_grad():
        manual.transformer.h[1].attn.c_proj.weight[:, 3 * hs : 4 * hs] = 0
        ablated = llama(idx, ablate=[(1, 3)])
        torch.testing.assert_close(ablated, manual(idx), atol=1e-6, rtol=0)
        assert not torch.allclose(ablated, llama(idx))


def test_accelerated_model_gives_the_same_outputs(llama):
    fast = accelerate(copy.deepcopy(llama))
    idx = torch.randint(0, VOCAB, (1, 16))
    cfg = SamplingConfig(max_new_tokens=12, temperature=0)
    with torch.no_grad():
        torch.testing.assert_close(fast(idx), llama(idx), atol=1e-5, rtol=0)
    assert generate(fast, None, idx[0].tolist(), cfg).token_ids == generate(llama, None, idx[0].tolist(), cfg).token_ids


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_checkpoint_round_trip(tmp_path, tied):
    hf = random_hf("qwen2", 4, 2, seed=2, tie_word_embeddings=tied)
    model = GPT.from_hf(hf).eval()
    save_checkpoint(model, None, tmp_path / "ckpt")
    loaded, tok = load_checkpoint(tmp_path / "ckpt", device="cpu")
    assert tok is None and loaded.config == model.config
    assert (loaded.lm_head.weight is loaded.transformer.wte.weight) == tied
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-llama")
    hf, bpe = save_tiny_llama(directory)
    return directory, hf, bpe


def test_load_model_on_an_hf_llama_directory(llama_dir):
    directory, hf, bpe = llama_dir
    model, tok = load_model(directory, device="cpu")
    assert isinstance(tok, HFTokenizer) and tok.vocab_size == model.config.vocab_size
    assert tok.encode(TEXT[:60]) == bpe.encode(TEXT[:60]) and tok.start_id == bpe.start_id
    idx = torch.tensor([tok.encode("ROMEO: But soft")])
    with torch.no_grad():
        assert (model(idx) - hf(idx).logits).abs().max().item() <= 1e-4


def test_cli_generates_from_and_exports_an_hf_llama_directory(llama_dir, tmp_path, capsys):
    from workbench.__main__ import main

    directory, hf, _ = llama_dir
    model, tok = load_model(directory, device="cpu")
    expected = generate(model, tok, "ROMEO:", SamplingConfig(max_new_tokens=8, temperature=0), capture=False).text
    assert main(["generate", "--model", str(directory), "--prompt", "ROMEO:", "--max-new-tokens", "8",
                 "--temperature", "0", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:" + expected)

    assert main(["export", "--model", str(directory), "--to-hf", str(tmp_path / "out")]) == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    assert type(exported) is LlamaForCausalLM
    for name, tensor in hf.state_dict().items():
        assert torch.equal(exported.state_dict()[name], tensor), name
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert hf_tok(TEXT[:60], add_special_tokens=False)["input_ids"] == tok.encode(TEXT[:60])
    assert json.loads((tmp_path / "out" / "config.json").read_text())["eos_token_id"] == tok.eos_id


def test_the_app_streams_every_view_from_an_hf_llama_directory(llama_dir):
    from gradio_client import Client

    from workbench.app import build_app, serve
    from workbench.app.session import Run, read_prompt, step_data

    directory, _, _ = llama_dir
    model, tok = load_model(directory, device="cpu")
    cfg = SamplingConfig(max_new_tokens=6, temperature=0)
    ids, notes = read_prompt(model, tok, "ROMEO: But")
    run = Run(cfg, ids, tok.token_strs(ids), (model.config.n_layer, model.config.n_head), model.config.block_size,
              notes)
    for step in stream(model, tok, ids, cfg):
        run.add(step_data(step))
    frame = run.frame(0, 0)
    assert len(frame["steps"]) == 6
    first = frame["steps"][0]
    assert first["a"] and first["top"] and first["stages"] and len(first["lens"]) == 2 * model.config.n_layer

    demo = build_app(model, tok, model_name="tiny-llama", workers=False)
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _, url, _ = serve(demo, port=port, prevent_thread_lock=True, quiet=True)
    try:
        text = Client(url, verbose=False, ssl_verify=False).predict("ROMEO:", 6, 0.0, 0, 1.0, 0,
                                                                    api_name="/generate")[0]
    finally:
        demo.close()
    assert text == generate(model, tok, "ROMEO:", SamplingConfig(max_new_tokens=6, temperature=0)).text


def test_worker_processes_generate_from_an_hf_llama_directory(llama_dir):
    """The app's default on the CPU: generation in a worker process, which gets the model and its tokenizer by
    pickling (RoPE tables, kv heads and the ``tokenizer.json`` adapter included)."""
    from workbench.workers import GenerationPool

    directory, _, _ = llama_dir
    model, tok = load_model(directory, device="cpu")
    cfg = SamplingConfig(max_new_tokens=8, temperature=0.9, top_k=10, seed=3)
    pool = GenerationPool(model, tok, size=1)
    try:
        there = list(pool.stream("ROMEO:", cfg))
    finally:
        pool.close()
    here = list(stream(model, tok, "ROMEO:", cfg))
    assert [s.token_id for s in there] == [s.token_id for s in here]
    assert [s.token_str for s in there] == [s.token_str for s in here]
    torch.testing.assert_close(there[-1].attention, here[-1].attention)


@pytest.mark.parametrize("specials, start", [
    ({"bos_token": "<s>", "eos_token": "</s>"}, "<s>"),  # Llama 3 style: generation starts from BOS
    ({"bos_token": None, "eos_token": {"content": "</s>"}}, "</s>"),  # Qwen style: no BOS; older files' dict form
    ({}, "<|endoftext|>"),  # nothing named: GPT-2's convention
], ids=["bos", "eos", "endoftext"])
def test_an_hf_tokenizer_starts_from_its_bos_then_eos_then_endoftext(tmp_path, specials, start):
    from workbench.tokenizers import load_tokenizer

    bpe = BPETokenizer.train(TEXT, vocab_size=300, special_tokens=("<|endoftext|>", "<s>", "</s>"))
    HFTokenizer(bpe._tk, specials).save(tmp_path)
    tok = load_tokenizer(tmp_path)  # found by its tokenizer_config.json
    assert isinstance(tok, HFTokenizer)
    assert tok.start_id == bpe._tk.token_to_id(start)
    assert tok.decode(tok.encode(TEXT)) == TEXT
