"""Convert between our :class:`~workbench.model.GPT` and Hugging Face's causal language models.

Five HF classes are one :class:`GPT` with different :class:`~workbench.model.GPTConfig` switches:

=====================  =======================================================================================
``GPT2LMHeadModel``    the defaults (learned positions, LayerNorm, GELU MLP, biases everywhere)
``LlamaForCausalLM``   ``position="rope", norm="rmsnorm", mlp="swiglu"``, ``n_kv_head``, usually no biases
``MistralForCausalLM`` a Llama without sliding-window attention (a window shorter than the context is refused);
                       exported back as a Llama, which computes the same
``Qwen2ForCausalLM``   a Llama with biases on q/k/v only: ``bias=False, qkv_bias=True``
``Qwen3ForCausalLM``   a Llama with RMSNorm on each head's queries and keys: ``qk_norm=True``
=====================  =======================================================================================

RoPE scaling (Llama 3.1's ``"llama3"``, YaRN, ...) and sliding windows are refused with an :class:`HFLoadError`:
plain RoPE (``rope_type`` ``"default"``) is what ``HuggingFaceTB/SmolLM2-135M``, ``Qwen/Qwen2.5-0.5B`` and
``Qwen/Qwen3-0.6B`` use.

GPT-2's names already match ours, so conversion is a key-for-key copy with two wrinkles: HF implements GPT-2's
projections as ``Conv1D`` whose weight is ``[in, out]`` (``nn.Linear`` stores ``[out, in]``), so the four projection
weights are transposed; and older checkpoints carry causal-mask buffers (``attn.bias``, ``attn.masked_bias``),
ignored here. The Llama family's names map as follows (``N`` a layer; our fused ``c_attn`` is HF's q, k and v
projections stacked, in that order, along the output dimension):

==================================  ==========================================================
ours                                Hugging Face
==================================  ==========================================================
``transformer.wte``                 ``model.embed_tokens``
``transformer.h.N.ln_1``            ``model.layers.N.input_layernorm``
``transformer.h.N.attn.c_attn``     ``model.layers.N.self_attn.q_proj`` + ``k_proj`` + ``v_proj``
``transformer.h.N.attn.q_norm``     ``model.layers.N.self_attn.q_norm`` (Qwen3; ``k_norm`` too)
``transformer.h.N.attn.c_proj``     ``model.layers.N.self_attn.o_proj``
``transformer.h.N.ln_2``            ``model.layers.N.post_attention_layernorm``
``transformer.h.N.mlp.c_gate``      ``model.layers.N.mlp.gate_proj``
``transformer.h.N.mlp.c_fc``        ``model.layers.N.mlp.up_proj``
``transformer.h.N.mlp.c_proj``      ``model.layers.N.mlp.down_proj``
``transformer.ln_f``                ``model.norm``
``lm_head``                         ``lm_head`` (the same matrix as the embedding when tied)
==================================  ==========================================================

A bias one side has and the other lacks is a zero bias (a Llama with ``mlp_bias`` but no ``attention_bias`` loads
with zeros in its attention biases): the computation is the same.

:func:`from_hf` and :func:`to_hf` are also ``GPT.from_hf`` and ``model.to_hf()`` (bound in ``workbench/__init__.py``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from workbench.model import GPT, GPTConfig

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
HF_MASK_SUFFIXES = ("attn.bias", "attn.masked_bias")
LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3")
SUPPORTED = "GPT-2, Llama, Mistral, Qwen2 and Qwen3 (GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM, " \
            "Qwen2ForCausalLM, Qwen3ForCausalLM)"

# Our name inside block N -> HF's names inside model.layers.N; several names are stacked along dim 0 (the outputs).
LLAMA_BLOCK_NAMES: dict[str, tuple[str, ...]] = {
    "ln_1.weight": ("input_layernorm.weight",),
    "attn.c_attn.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "attn.c_attn.bias": ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
    "attn.q_norm.weight": ("self_attn.q_norm.weight",),
    "attn.k_norm.weight": ("self_attn.k_norm.weight",),
    "attn.c_proj.weight": ("self_attn.o_proj.weight",),
    "attn.c_proj.bias": ("self_attn.o_proj.bias",),
    "ln_2.weight": ("post_attention_layernorm.weight",),
    "mlp.c_gate.weight": ("mlp.gate_proj.weight",),
    "mlp.c_gate.bias": ("mlp.gate_proj.bias",),
    "mlp.c_fc.weight": ("mlp.up_proj.weight",),
    "mlp.c_fc.bias": ("mlp.up_proj.bias",),
    "mlp.c_proj.weight": ("mlp.down_proj.weight",),
    "mlp.c_proj.bias": ("mlp.down_proj.bias",),
}
LLAMA_TOP_NAMES = {
    "transformer.wte.weight": "model.embed_tokens.weight",
    "transformer.ln_f.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}


class HFLoadError(ValueError):
    """A model could not be loaded (missing path, unreachable hub id, an architecture or variant we lack)."""


def _is_conv1d(name: str) -> bool:
    return name.startswith("transformer.h.") and name.endswith(CONV1D_SUFFIXES)


def _none_if(value: Any, default: Any) -> Any:
    """``None`` when ``value`` is what our config resolves ``None`` to, so configs compare equal after a round trip."""
    return None if value == default else value


# ------------------------------------------------------------------------------------------------- configs


def config_from_hf(hf_config: PretrainedConfig) -> GPTConfig:
    """Our config for an HF config of a supported family; refuse variants our model does not implement."""
    model_type = getattr(hf_config, "model_type", None)
    if model_type == "gpt2":
        return _gpt2_config(hf_config)
    if model_type in LLAMA_FAMILY:
        return _llama_family_config(hf_config)
    raise HFLoadError(f"this is a {model_type or 'unknown'!r} model; supported are {SUPPORTED}")


def _gpt2_config(c: PretrainedConfig) -> GPTConfig:
    unsupported = []
    if c.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        unsupported.append(f"activation_function={c.activation_function!r} (need tanh GELU, 'gelu_new')")
    if getattr(c, "scale_attn_by_inverse_layer_idx", False):
        unsupported.append("scale_attn_by_inverse_layer_idx=True")
    if not getattr(c, "scale_attn_weights", True):
        unsupported.append("scale_attn_weights=False")
    if unsupported:
        raise HFLoadError("unsupported GPT-2 variant: " + "; ".join(unsupported))
    return GPTConfig(
        vocab_size=c.vocab_size,
        block_size=c.n_positions,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_embd=c.n_embd,
        dropout=0.0,  # we load for inference and analysis; set model.config / modules yourself to fine-tune
        bias=True,
        norm_eps=c.layer_norm_epsilon,
        mlp_hidden=_none_if(c.n_inner, 4 * c.n_embd),
        tie_embeddings=getattr(c, "tie_word_embeddings", True),
    )


def _llama_family_config(c: PretrainedConfig) -> GPTConfig:
    family = c.model_type
    unsupported = []
    if c.hidden_act != "silu":
        unsupported.append(f"hidden_act={c.hidden_act!r} (SwiGLU needs 'silu')")
    # transformers 5 keeps RoPE's settings in rope_parameters; older configs have rope_theta and rope_scaling.
    rope = getattr(c, "rope_parameters", None) or getattr(c, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        unsupported.append(f"RoPE scaling {rope_type!r} (e.g. Llama 3.1's 'llama3'): only plain RoPE is implemented")
    window = getattr(c, "sliding_window", None)
    if window is not None and window < c.max_position_embeddings:
        unsupported.append(f"sliding_window={window} (shorter than the context of {c.max_position_embeddings})")
    if any(kind != "full_attention" for kind in getattr(c, "layer_types", None) or ()):
        unsupported.append("layers with sliding-window attention (layer_types)")
    if unsupported:
        raise HFLoadError(f"unsupported {family} variant: " + "; ".join(unsupported))

    if family == "qwen2":  # biases on q, k and v, none elsewhere (hard-wired in HF's Qwen2Attention)
        bias, qkv_bias = False, True
    else:  # Llama's attention_bias covers q, k, v and o; a bias HF lacks is a zero bias here (module docstring)
        bias, qkv_bias = getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False), None
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return GPTConfig(
        vocab_size=c.vocab_size,
        block_size=c.max_position_embeddings,
        n_layer=c.num_hidden_layers,
        n_head=c.num_attention_heads,
        n_embd=c.hidden_size,
        dropout=0.0,
        bias=bias,
        position="rope",
        rope_theta=float(rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))),
        norm="rmsnorm",
        norm_eps=c.rms_norm_eps,
        mlp="swiglu",
        mlp_hidden=_none_if(c.intermediate_size, 4 * c.hidden_size),
        n_kv_head=_none_if(getattr(c, "num_key_value_heads", None) or c.num_attention_heads, c.num_attention_heads),
        head_dim=_none_if(head_dim, c.hidden_size // c.num_attention_heads),
        qkv_bias=qkv_bias,
        tie_embeddings=getattr(c, "tie_word_embeddings", False),
        qk_norm=family == "qwen3",
    )


def hf_family(config: GPTConfig) -> str:
    """The HF ``model_type`` that holds a model of this config: ``"gpt2"``, ``"llama"``, ``"qwen2"`` or ``"qwen3"``."""
    c = config
    gpt2 = (c.position, c.norm, c.mlp) == ("learned", "layernorm", "gelu")
    llama = (c.position, c.norm, c.mlp) == ("rope", "rmsnorm", "swiglu")
    if gpt2 and c.kv_heads == c.n_head and c.head_size * c.n_head == c.n_embd and not c.qk_norm:
        return "gpt2"
    if not llama:
        raise ValueError(
            f"no Hugging Face class holds position={c.position!r}, norm={c.norm!r}, mlp={c.mlp!r} together: GPT-2 is "
            "('learned', 'layernorm', 'gelu') with n_kv_head == n_head and no qk_norm; Llama, Mistral and Qwen are "
            "('rope', 'rmsnorm', 'swiglu')"
        )
    if c.qk_norm:
        if c.bias:
            raise ValueError("a model with qk_norm exports as Qwen3, whose MLP has no biases: needs bias=False")
        return "qwen3"
    return "qwen2" if c.qkv_has_bias and not c.bias else "llama"


def _hf_config(config: GPTConfig, eos_token_id: int | None) -> PretrainedConfig:
    from transformers import GPT2Config, LlamaConfig, Qwen2Config, Qwen3Config

    c = config
    family = hf_family(c)
    if family == "gpt2":
        return GPT2Config(
            vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
            n_inner=c.mlp_hidden, activation_function="gelu_new", resid_pdrop=c.dropout, embd_pdrop=c.dropout,
            attn_pdrop=c.attn_dropout, layer_norm_epsilon=c.norm_eps, tie_word_embeddings=c.tie_embeddings,
            bos_token_id=eos_token_id, eos_token_id=eos_token_id,
            attn_implementation="eager",  # so that output_attentions works; SDPA is HF's default otherwise
        )
    shared = dict(
        vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=c.mlp_width, num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head, num_key_value_heads=c.kv_heads, head_dim=c.head_size,
        max_position_embeddings=c.block_size, rms_norm_eps=c.norm_eps, hidden_act="silu",
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta}, attention_dropout=c.attn_dropout,
        tie_word_embeddings=c.tie_embeddings, bos_token_id=eos_token_id, eos_token_id=eos_token_id,
        attn_implementation="eager",
    )
    if family == "qwen3":
        return Qwen3Config(**shared, attention_bias=c.qkv_has_bias)
    if family == "qwen2":
        return Qwen2Config(**shared)
    return LlamaConfig(**shared, attention_bias=c.bias or c.qkv_has_bias, mlp_bias=c.bias)


# ---------------------------------------------------------------------------------------------- hub and disk


HUB_TIMEOUT_S = 2.0  # how long to wait for huggingface.co to answer before calling the hub unreachable


def hub_source(
    model_id: str = "gpt2", timeout: float = HUB_TIMEOUT_S, cache_dir: str | Path | None = None
) -> str | Path | None:
    """Where ``model_id`` can be loaded from without a long wait, for code that falls back when it cannot.

    Returns the snapshot directory in the local Hugging Face cache when config and weights are there (loading it
    never touches the network); else ``model_id`` itself when huggingface.co answers within ``timeout`` seconds;
    else ``None``, also at once under ``HF_HUB_OFFLINE=1``. Without this check, ``from_pretrained`` on a machine
    with no internet retries for about a minute before it fails.
    """
    from huggingface_hub import try_to_load_from_cache

    names = ("config.json", "model.safetensors")
    files = [try_to_load_from_cache(model_id, name, cache_dir=cache_dir) for name in names]
    if all(isinstance(path, str) for path in files):
        return Path(files[0]).parent
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return None
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
    except OSError:
        return None
    return model_id


def load_hf_model(source: str | Path) -> PreTrainedModel:
    """Load an HF model of a supported family from a local directory or a hub id (``"gpt2"``,
    ``"HuggingFaceTB/SmolLM2-135M"``, ``"Qwen/Qwen2.5-0.5B"``, ``"Qwen/Qwen3-0.6B"``: these need internet or the HF
    cache). Weights load as float32, the dtype of the CPU's fast paths, whatever the checkpoint stores."""
    from transformers import AutoConfig, AutoModelForCausalLM

    text = str(source)
    path = Path(text).expanduser()
    looks_like_path = path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1
    if looks_like_path and not path.is_dir():
        raise HFLoadError(f"no model directory at {text!r}")
    source = str(path) if looks_like_path else hub_source(text)
    if source is None:  # say so at once: transformers would retry for most of a minute before failing
        raise HFLoadError(
            f"{text!r} is not in the local Hugging Face cache and huggingface.co cannot be reached (no answer within "
            f"{HUB_TIMEOUT_S:g} s, or HF_HUB_OFFLINE is set): connect to the internet once to download it, or give "
            "a local model directory"
        )
    try:
        hf_config = AutoConfig.from_pretrained(str(source))
    except (OSError, ValueError) as err:
        where = "directory" if looks_like_path else "hub id (needs internet or a local HF cache)"
        raise HFLoadError(f"could not load a model config from {where} {text!r}: {err}") from err
    config_from_hf(hf_config)  # refuse other architectures before loading any weights
    return AutoModelForCausalLM.from_pretrained(str(source), attn_implementation="eager", dtype=torch.float32)


# ------------------------------------------------------------------------------------------------- weights


def _hf_names(name: str, scheme: str) -> tuple[str, ...]:
    """HF's name(s) for our parameter ``name`` under a naming ``scheme``: ``"gpt2"``, or ``"llama"`` (all of the
    Llama family)."""
    if scheme == "gpt2":
        return (name,)
    if name.startswith("transformer.h."):
        layer, rest = name.removeprefix("transformer.h.").split(".", 1)
        return tuple(f"model.layers.{layer}.{theirs}" for theirs in LLAMA_BLOCK_NAMES[rest])
    return (LLAMA_TOP_NAMES[name],)


def _ours_from_theirs(name: str, scheme: str, theirs: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Our parameter ``name`` built from HF's tensors, or None when HF has none of them (a missing bias)."""
    parts = [theirs.get(n) for n in _hf_names(name, scheme)]
    if all(p is None for p in parts):
        return None
    if any(p is None for p in parts):
        raise HFLoadError(f"the HF model has only some of {_hf_names(name, scheme)} for our {name}")
    value = torch.cat(parts) if len(parts) > 1 else parts[0]
    return value.t() if scheme == "gpt2" and _is_conv1d(name) else value


def from_hf(source: PreTrainedModel | str | Path) -> GPT:
    """Our GPT with the weights of an HF model of a supported family (a model object, a local directory, or a hub
    id); see the module docstring for the families and how names map."""
    hf_model = source if not isinstance(source, (str, Path)) else load_hf_model(source)
    config = config_from_hf(hf_model.config)
    scheme = "gpt2" if hf_model.config.model_type == "gpt2" else "llama"
    model = GPT(config)
    theirs = hf_model.state_dict()
    used: set[str] = set()
    with torch.no_grad():
        for name, target in model.state_dict().items():
            if name == "lm_head.weight" and config.tie_embeddings:
                continue  # the same tensor as the embedding, copied under its own name
            value = _ours_from_theirs(name, scheme, theirs)
            if value is None and name.endswith(".bias"):
                target.zero_()  # a bias HF does not have is a zero bias
                continue
            if value is None:
                raise HFLoadError(f"the HF model has no {_hf_names(name, scheme)} for our {name}")
            if value.shape != target.shape:
                raise HFLoadError(f"shape mismatch for {name}: HF {tuple(value.shape)}, ours {tuple(target.shape)}")
            target.copy_(value)
            used.update(_hf_names(name, scheme))
    ignorable = HF_MASK_SUFFIXES if scheme == "gpt2" else ("rotary_emb.inv_freq",)
    unused = [n for n in theirs if n not in used and not n.endswith(ignorable) and n != "lm_head.weight"]
    if unused:
        raise HFLoadError(f"unexpected parameters in the HF model: {unused[:5]}")
    return model.to(dtype=next(hf_model.parameters()).dtype)


def to_hf(model: GPT, eos_token_id: int | None = None) -> PreTrainedModel:
    """An HF model with our weights (in our dtype, on our device): ``GPT2LMHeadModel``, ``LlamaForCausalLM``,
    ``Qwen2ForCausalLM`` or ``Qwen3ForCausalLM``, as :func:`hf_family` picks. Round-trips bit-exactly.

    ``eos_token_id`` defaults to GPT-2's ``<|endoftext|>`` (50256) for a GPT-2 whose vocabulary has it, else none.
    """
    from transformers import AutoModelForCausalLM

    c = model.config
    family = hf_family(c)
    if eos_token_id is None and family == "gpt2" and c.vocab_size > 50256:
        eos_token_id = 50256
    hf_config = _hf_config(c, eos_token_id)
    hf_model = AutoModelForCausalLM.from_config(hf_config).to(dtype=model.transformer.wte.weight.dtype)
    scheme = "gpt2" if family == "gpt2" else "llama"
    theirs = hf_model.state_dict()
    filled: set[str] = set()
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if name == "lm_head.weight" and c.tie_embeddings:
                continue  # HF ties it to the embedding itself
            targets = _hf_names(name, scheme)
            value = value.t() if scheme == "gpt2" and _is_conv1d(name) else value
            sizes = [theirs[t].shape[0] for t in targets]
            for target, part in zip(targets, value.split(sizes) if len(targets) > 1 else (value,)):
                theirs[target].copy_(part)
            filled.update(targets)
        for name, target in theirs.items():
            if name in filled or name.endswith(HF_MASK_SUFFIXES + ("rotary_emb.inv_freq",)) or name == "lm_head.weight":
                continue
            if not name.endswith(".bias"):
                raise HFLoadError(f"HF parameter {name!r} has no counterpart in our model")
            target.zero_()  # a model trained without biases is one whose biases are zero
    return hf_model.to(model.device).eval()
