"""Convert between our :class:`~workbench.model.GPT` and Hugging Face's ``GPT2LMHeadModel``.

The parameter names already match, so conversion is a key-for-key copy with two wrinkles:

* HF implements GPT-2's projections as ``Conv1D`` whose weight is ``[in, out]``; ``nn.Linear`` stores ``[out, in]``.
  The four projection weights (``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj``) are transposed.
* HF may carry causal-mask buffers (``attn.bias``, ``attn.masked_bias``) in older checkpoints; ours is derived and
  non-persistent, so those are ignored.

:func:`from_hf` and :func:`to_hf` are also ``GPT.from_hf`` and ``model.to_hf()`` (bound in ``workbench/__init__.py``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from workbench.model import GPT, GPTConfig

if TYPE_CHECKING:
    from transformers import GPT2Config, GPT2LMHeadModel

CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
HF_MASK_SUFFIXES = ("attn.bias", "attn.masked_bias")


class HFLoadError(ValueError):
    """A model could not be loaded as GPT-2 (missing path, unreachable hub id, other architecture)."""


def _is_conv1d(name: str) -> bool:
    return name.startswith("transformer.h.") and name.endswith(CONV1D_SUFFIXES)


def config_from_hf(hf_config: GPT2Config) -> GPTConfig:
    """Our config for an HF GPT-2 config; refuse variants our model does not implement."""
    if getattr(hf_config, "model_type", None) != "gpt2":
        raise HFLoadError(
            f"this is a {getattr(hf_config, 'model_type', 'unknown')!r} model; only GPT-2 (model_type 'gpt2', "
            "GPT2LMHeadModel) is supported"
        )
    unsupported = []
    if hf_config.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        unsupported.append(f"activation_function={hf_config.activation_function!r} (need tanh GELU, 'gelu_new')")
    if abs(hf_config.layer_norm_epsilon - 1e-5) > 1e-12:
        unsupported.append(f"layer_norm_epsilon={hf_config.layer_norm_epsilon} (need 1e-5)")
    if hf_config.n_inner not in (None, 4 * hf_config.n_embd):
        unsupported.append(f"n_inner={hf_config.n_inner} (need 4 * n_embd)")
    if getattr(hf_config, "scale_attn_by_inverse_layer_idx", False):
        unsupported.append("scale_attn_by_inverse_layer_idx=True")
    if not getattr(hf_config, "scale_attn_weights", True):
        unsupported.append("scale_attn_weights=False")
    if getattr(hf_config, "tie_word_embeddings", True) is False:
        unsupported.append("tie_word_embeddings=False")
    if unsupported:
        raise HFLoadError("unsupported GPT-2 variant: " + "; ".join(unsupported))
    return GPTConfig(
        vocab_size=hf_config.vocab_size,
        block_size=hf_config.n_positions,
        n_layer=hf_config.n_layer,
        n_head=hf_config.n_head,
        n_embd=hf_config.n_embd,
        dropout=0.0,  # we load for inference and analysis; set model.config / modules yourself to fine-tune
        bias=True,
    )


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


def load_hf_model(source: str | Path) -> GPT2LMHeadModel:
    """Load ``GPT2LMHeadModel`` from a local directory or a hub id (e.g. ``"gpt2"``, needs internet or HF cache)."""
    from transformers import AutoConfig, GPT2LMHeadModel

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
    return GPT2LMHeadModel.from_pretrained(str(source), attn_implementation="eager")


def from_hf(source: GPT2LMHeadModel | str | Path) -> GPT:
    """Our GPT with the weights of an HF GPT-2 (a ``GPT2LMHeadModel``, a local directory, or a hub id)."""
    hf_model = source if not isinstance(source, (str, Path)) else load_hf_model(source)
    model = GPT(config_from_hf(hf_model.config))
    ours = model.state_dict()
    with torch.no_grad():
        for name, tensor in hf_model.state_dict().items():
            if name.endswith(HF_MASK_SUFFIXES) and name not in ours:
                continue
            if name not in ours:
                raise HFLoadError(f"unexpected parameter {name!r} in the HF model")
            value = tensor.t() if _is_conv1d(name) else tensor
            if value.shape != ours[name].shape:
                raise HFLoadError(f"shape mismatch for {name}: HF {tuple(value.shape)}, ours {tuple(ours[name].shape)}")
            ours[name].copy_(value)
    return model.to(dtype=next(hf_model.parameters()).dtype)


def to_hf(model: GPT, eos_token_id: int | None = None) -> GPT2LMHeadModel:
    """An HF ``GPT2LMHeadModel`` with our weights (in our dtype, on our device). Round-trips bit-exactly.

    ``eos_token_id`` defaults to GPT-2's ``<|endoftext|>`` (50256) when the vocabulary has it, else none.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    if eos_token_id is None and c.vocab_size > 50256:
        eos_token_id = 50256
    hf_config = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.block_size,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        activation_function="gelu_new",
        resid_pdrop=c.dropout,
        embd_pdrop=c.dropout,
        attn_pdrop=c.attn_dropout,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        attn_implementation="eager",  # so that output_attentions works; SDPA is HF's default otherwise
    )
    hf_model = GPT2LMHeadModel(hf_config).to(dtype=model.transformer.wte.weight.dtype)
    hf_state = hf_model.state_dict()
    ours = model.state_dict()
    with torch.no_grad():
        for name, target in hf_state.items():
            if name in ours:
                target.copy_(ours[name].t() if _is_conv1d(name) else ours[name])
            elif name.endswith(".bias") and not c.bias:
                target.zero_()  # a model trained without biases is a GPT-2 whose biases are zero
            elif not name.endswith(HF_MASK_SUFFIXES):
                raise HFLoadError(f"HF parameter {name!r} has no counterpart in our model")
    return hf_model.to(model.device).eval()
