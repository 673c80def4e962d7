"""Tiny random Hugging Face models built offline from configs (Llama, Mistral, Qwen2, Qwen3), and the comparison of
ours with theirs, for the tests of the model families, of GPT-2's import and of the app on a Llama directory."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from workbench.tokenizers import BPETokenizer, HFTokenizer

FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
}
VOCAB, CONTEXT = 97, 64
TEXT = "ROMEO: But soft, what light through yonder window breaks? It is the east, and Juliet is the sun.\n" * 4


def random_hf(family: str, heads: int, kv_heads: int, vocab: int = VOCAB, seed: int = 0, **settings):
    """A random HF model of ``family``, with every norm weight and bias perturbed (HF starts them at 1 and 0, where a
    mix-up of two of them would not show)."""
    config_cls, model_cls = FAMILIES[family]
    torch.manual_seed(seed)
    config = config_cls(
        vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=heads,
        num_key_value_heads=kv_heads, max_position_embeddings=CONTEXT, rms_norm_eps=1e-6, bos_token_id=0,
        eos_token_id=0, attn_implementation="eager", **settings,
    )
    model = model_cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def save_tiny_llama(directory: Path) -> tuple[LlamaForCausalLM, BPETokenizer]:
    """An HF Llama directory as ``save_pretrained`` writes it, with a byte-level BPE ``tokenizer.json`` (trained here)
    and a ``tokenizer_config.json`` naming its special tokens, as real Llama-family repositories have."""
    bpe = BPETokenizer.train(TEXT, vocab_size=300)
    tok = HFTokenizer(bpe._tk, {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"})
    hf = random_hf("llama", 4, 2, vocab=tok.vocab_size, seed=7)
    hf.save_pretrained(directory)
    tok.save(directory)
    return hf, bpe


def max_differences(ours, hf, idx: torch.Tensor) -> tuple[float, float]:
    """Largest |difference| of the logits and of every layer's attention pattern between our model and ``hf``'s on
    ``idx`` (``hf`` loaded with eager attention, so that it returns its patterns)."""
    with torch.no_grad():
        ref = hf(idx, output_attentions=True)
        logits = ours(idx)
        _, trace = ours.run_with_trace(idx)
    logit_diff = (logits - ref.logits).abs().max().item()
    attn_diff = max((trace.attention[i] - a).abs().max().item() for i, a in enumerate(ref.attentions))
    return logit_diff, attn_diff
