"""Save and load models: our checkpoint directories, the models shipped in ``assets/models``, and HF GPT-2.

Our directory format::

    config.json        {"format": "gpt-workbench", "model": {GPTConfig fields}, ...metadata}
    model.safetensors  weights (the tied output matrix stored once, as transformer.wte.weight)
    tokenizer.json     the tokenizer (see workbench.tokenizers)

Files are written to a temporary name and renamed, so an interrupted save never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from workbench.fast import accelerate
from workbench.hf import HFLoadError, from_hf, load_hf_model
from workbench.model import GPT, GPTConfig, resolve_device
from workbench.tokenizers import ENDOFTEXT, BPETokenizer, GPT2Tokenizer, Tokenizer, load_tokenizer

FORMAT = "gpt-workbench"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"
TIED_KEY = "lm_head.weight"  # shares storage with transformer.wte.weight; safetensors refuses shared tensors


def shipped_models() -> list[str]:
    """Names of the models in ``assets/models`` that ``load_model(name)`` finds."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "config.json").is_file())


def umask_mode(directory: bool = False) -> int:
    """The permissions a plain ``open()`` (or ``mkdir``) would give a new file (mkstemp's are private, 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and an atomic rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, umask_mode())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    model: GPT, tokenizer: Tokenizer | None, directory: str | Path, **metadata: Any
) -> Path:
    """Write ``model`` (and ``tokenizer``) as one of our checkpoint directories; extra ``metadata`` goes in config.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k != TIED_KEY}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".model.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, umask_mode())
    try:
        save_file(state, tmp, metadata={"format": FORMAT})
        os.replace(tmp, directory / "model.safetensors")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if tokenizer is not None:
        tokenizer.save(directory)
    config = {"format": FORMAT, "model": asdict(model.config), **metadata}
    atomic_write_bytes(directory / "config.json", json.dumps(config, indent=2).encode())
    return directory


def load_checkpoint(directory: str | Path, device: str | torch.device = "auto") -> tuple[GPT, Tokenizer | None]:
    """Load one of our checkpoint directories: ``(model in eval mode, accelerated, tokenizer or None)``."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    model = GPT(GPTConfig(**config["model"]))
    state = load_file(directory / "model.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {TIED_KEY}:
        raise ValueError(f"{directory}: weights do not match the config (missing {missing}, unexpected {unexpected})")
    has_tokenizer = any((directory / f).exists() for f in ("tokenizer.json", "vocab.json"))
    tokenizer = load_tokenizer(directory) if has_tokenizer else None
    return accelerate(model.to(resolve_device(device)).eval()), tokenizer


def load_model(name_or_path: str | Path, device: str | torch.device = "auto") -> tuple[GPT, Tokenizer | None]:
    """Load a model and its tokenizer, in eval mode and with :func:`workbench.fast.accelerate`'s speed-ups, from any
    source we know.

    ``name_or_path`` may be a shipped model's name (``"shakespeare"``), one of our checkpoint directories, a
    directory written by ``transformers``' ``save_pretrained`` (GPT-2 only), or a hub id such as ``"gpt2"`` (needs
    internet or a local HF cache).
    """
    text = str(name_or_path)
    if text in shipped_models():
        return load_checkpoint(SHIPPED_DIR / text, device)
    path = Path(text).expanduser()
    if path.is_dir() and (path / "latest").is_file():  # a training run directory: its newest checkpoint
        path = path / (path / "latest").read_text().strip()
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{path} has no config.json: not a model directory")
        config = json.loads(config_file.read_text())
        if config.get("format") == FORMAT:
            return load_checkpoint(path, device)
        model = from_hf(load_hf_model(path))
        return accelerate(model.to(resolve_device(device)).eval()), _hf_tokenizer(path)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        shipped = ", ".join(shipped_models()) or "none yet"
        raise FileNotFoundError(f"no model directory at {text!r} (shipped models: {shipped})")
    try:
        hf_model = load_hf_model(text)
    except HFLoadError as err:
        shipped = ", ".join(shipped_models()) or "none yet"
        raise HFLoadError(f"{err}\n(shipped models that work offline: {shipped})") from err
    return accelerate(from_hf(hf_model).to(resolve_device(device)).eval()), _hf_tokenizer(text)


def _hf_tokenizer(source: str | Path) -> Tokenizer | None:
    """The GPT-2 tokenizer saved beside an HF model, or None when the directory has no tokenizer files."""
    path = Path(source)
    if path.is_dir() and not any((path / f).exists() for f in ("tokenizer.json", "vocab.json")):
        return None
    return GPT2Tokenizer.from_pretrained(source)


def export_hf(model: GPT, tokenizer: Tokenizer | None, directory: str | Path) -> Path:
    """Write ``model`` as a Hugging Face GPT-2 directory (``GPT2LMHeadModel.from_pretrained`` loads it).

    A byte-level BPE tokenizer is written as HF's ``GPT2TokenizerFast``; a character tokenizer has no HF GPT-2
    equivalent, so only the model is written then.
    """
    directory = Path(directory)
    eos = getattr(tokenizer, "start_id", None) if isinstance(tokenizer, (BPETokenizer, GPT2Tokenizer)) else None
    model.to_hf(eos_token_id=eos).save_pretrained(directory)
    if isinstance(tokenizer, GPT2Tokenizer):
        tokenizer.save(directory)
    elif isinstance(tokenizer, BPETokenizer):
        from transformers import GPT2TokenizerFast

        end = ENDOFTEXT
        GPT2TokenizerFast(tokenizer_object=tokenizer._tk, bos_token=end, eos_token=end, unk_token=end).save_pretrained(directory)
    # safetensors writes its file private (0600) whatever the umask: give every file the permissions a plain
    # open() would, so that others can read a shared model when the umask allows it.
    for path in directory.iterdir():
        if path.is_file():
            os.chmod(path, umask_mode())
    return directory
