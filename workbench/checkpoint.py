"""Save and load models: our checkpoint directories, training run directories, the models shipped in
``assets/models``, and Hugging Face models (GPT-2, Llama, Mistral, Qwen2, Qwen3; see :mod:`workbench.hf`).

Our directory format::

    config.json        {"format": "gpt-workbench", "model": {GPTConfig fields}, ...metadata}
    model.safetensors  weights (a tied output matrix stored once, as transformer.wte.weight)
    tokenizer.json     the tokenizer (see workbench.tokenizers)

A training run directory holds several of them, and what resuming needs::

    runs/NAME/
        latest                 the name of the newest complete checkpoint (rewritten atomically)
        ckpt-000400/           config.json, model.safetensors, tokenizer.json, optimizer.pt, trainer_state.pt
        metrics.jsonl          one JSON line per logged step (written by workbench.train)

Files are written to a temporary name and renamed (:func:`workbench.files.atomic_write`), so an interrupted save
never leaves a half-written file. A checkpoint directory is written in full under a temporary name and renamed,
then ``latest`` is replaced; a kill at any moment leaves ``latest`` naming a complete checkpoint.
``load_model("runs/NAME")`` loads the latest one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from workbench.fast import accelerate
from workbench.files import atomic_write, umask_mode
from workbench.hf import HFLoadError, from_hf, load_hf_model
from workbench.model import GPT, GPTConfig, resolve_device
from workbench.tokenizers import ENDOFTEXT, BPETokenizer, GPT2Tokenizer, HFTokenizer, Tokenizer, load_tokenizer

FORMAT = "gpt-workbench"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"
TIED_KEY = "lm_head.weight"  # when tied, shares storage with transformer.wte.weight; safetensors refuses that


def shipped_models() -> list[str]:
    """Names of the models in ``assets/models`` that ``load_model(name)`` finds."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "config.json").is_file())


def save_checkpoint(
    model: GPT, tokenizer: Tokenizer | None, directory: str | Path, **metadata: Any
) -> Path:
    """Write ``model`` (and ``tokenizer``) as one of our checkpoint directories; extra ``metadata`` goes in config.json."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tied = model.config.tie_embeddings
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not (tied and k == TIED_KEY)}
    atomic_write(directory / "model.safetensors", lambda tmp: save_file(state, tmp, metadata={"format": FORMAT}))
    if tokenizer is not None:
        tokenizer.save(directory)
    config = {"format": FORMAT, "model": asdict(model.config), **metadata}
    atomic_write(directory / "config.json", lambda tmp: tmp.write_text(json.dumps(config, indent=2)))
    return directory


def load_checkpoint(directory: str | Path, device: str | torch.device = "auto") -> tuple[GPT, Tokenizer | None]:
    """Load one of our checkpoint directories: ``(model in eval mode, accelerated, tokenizer or None)``."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    model = GPT(GPTConfig(**config["model"]))
    load_weights(model, directory)
    has_tokenizer = any((directory / f).exists() for f in ("tokenizer.json", "vocab.json"))
    tokenizer = load_tokenizer(directory) if has_tokenizer else None
    return accelerate(model.to(resolve_device(device)).eval()), tokenizer


def load_weights(model: GPT, directory: str | Path) -> None:
    """Copy ``directory/model.safetensors`` into ``model``, refusing weights that do not fit it exactly: a missing,
    an unexpected or a differently shaped tensor is a ``ValueError`` naming them, before anything is copied."""
    directory = Path(directory)
    state = load_file(directory / "model.safetensors")
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state) - ({TIED_KEY} if model.config.tie_embeddings else set()))
    unexpected = sorted(set(state) - set(ours))
    reshaped = sorted(k for k in set(state) & set(ours) if state[k].shape != ours[k].shape)
    if missing or unexpected or reshaped:
        raise ValueError(f"{directory}: weights do not match the model (missing {missing}, unexpected {unexpected}, "
                         f"other shapes {reshaped})")
    model.load_state_dict(state, strict=False)  # strict would ask for lm_head.weight, stored once as the embedding


def load_model(name_or_path: str | Path, device: str | torch.device = "auto") -> tuple[GPT, Tokenizer | None]:
    """Load a model and its tokenizer, in eval mode and with :func:`workbench.fast.accelerate`'s speed-ups, from any
    source we know.

    ``name_or_path`` may be a shipped model's name (``"shakespeare"``), one of our checkpoint directories, a
    directory written by ``transformers``' ``save_pretrained`` (GPT-2, Llama, Mistral, Qwen2, Qwen3), or a hub id
    such as ``"gpt2"``, ``"HuggingFaceTB/SmolLM2-135M"`` or ``"Qwen/Qwen2.5-0.5B"`` (needs internet or a local HF
    cache). An HF model's tokenizer is read from its ``tokenizer.json`` (GPT-2's also from vocab.json + merges.txt).
    """
    text = str(name_or_path)
    if text in shipped_models():
        return load_checkpoint(SHIPPED_DIR / text, device)
    path = Path(text).expanduser()
    if path.is_dir() and (path / "latest").is_file():  # a training run directory: its newest checkpoint
        newest = latest_checkpoint(path)
        if newest is None:
            raise FileNotFoundError(f"run directory {path}: its `latest` names no complete checkpoint")
        path = newest
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{path} has no config.json: not a model directory")
        config = json.loads(config_file.read_text())
        if config.get("format") == FORMAT:
            return load_checkpoint(path, device)
        hf_model = load_hf_model(path)
        model = from_hf(hf_model)
        return accelerate(model.to(resolve_device(device)).eval()), _hf_tokenizer(path, hf_model.config.model_type)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        shipped = ", ".join(shipped_models()) or "none yet"
        raise FileNotFoundError(f"no model directory at {text!r} (shipped models: {shipped})")
    try:
        hf_model = load_hf_model(text)
    except HFLoadError as err:
        shipped = ", ".join(shipped_models()) or "none yet"
        raise HFLoadError(f"{err}\n(shipped models that work offline: {shipped})") from err
    model = accelerate(from_hf(hf_model).to(resolve_device(device)).eval())
    return model, _hf_tokenizer(text, hf_model.config.model_type)


def _hf_tokenizer(source: str | Path, model_type: str) -> Tokenizer | None:
    """The tokenizer saved beside an HF model (GPT-2's adapter for GPT-2, the ``tokenizer.json`` adapter for the
    other families), or None when the directory has no tokenizer files."""
    path = Path(source)
    if path.is_dir() and not any((path / f).exists() for f in ("tokenizer.json", "vocab.json")):
        return None
    return GPT2Tokenizer.from_pretrained(source) if model_type == "gpt2" else HFTokenizer.from_pretrained(source)


def export_hf(model: GPT, tokenizer: Tokenizer | None, directory: str | Path) -> Path:
    """Write ``model`` as a Hugging Face directory of its family (:func:`workbench.hf.hf_family`: GPT-2, Llama,
    Qwen2 or Qwen3), which ``AutoModelForCausalLM.from_pretrained`` loads with the same logits.

    A byte-level BPE tokenizer is written as HF's ``GPT2TokenizerFast``, an HF model's tokenizer as its
    ``tokenizer.json``; a character tokenizer has no HF equivalent, so only the model is written then.
    """
    directory = Path(directory)
    eos = getattr(tokenizer, "start_id", None) if isinstance(tokenizer, (BPETokenizer, GPT2Tokenizer)) else None
    eos = tokenizer.eos_id if isinstance(tokenizer, HFTokenizer) else eos
    model.to_hf(eos_token_id=eos).save_pretrained(directory)
    if isinstance(tokenizer, (GPT2Tokenizer, HFTokenizer)):
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


# ------------------------------------------------------------------------------------------ run directories


def save_training_checkpoint(
    run_dir: Path,
    model: GPT,
    tokenizer: Tokenizer,
    optimizer: torch.optim.Optimizer,
    train_config: dict[str, Any],
    step: int,
    batch_rng: torch.Generator,
    keep: int = 2,
) -> Path:
    """Write ``run_dir/ckpt-STEP`` completely under a temporary name, rename it, then point ``latest`` at it.

    ``train_config`` (the run's settings) goes into config.json under ``"train"``. At every moment ``latest`` names
    a complete checkpoint, so a kill during a save leaves the previous one usable. A checkpoint of the same step (a
    fresh run in an old run's directory) is replaced: ``latest`` names the new copy while the old one moves aside.
    Afterwards only the newest ``keep`` checkpoints up to this step remain; later-numbered ones belong to an older
    run and are removed.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-{step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{name}.", suffix=".tmp"))  # unique: never a stale one
    try:
        os.chmod(tmp, umask_mode(directory=True))
        save_checkpoint(model, tokenizer, tmp, step=step, train=train_config)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        state = {"step": step, "torch_rng": torch.get_rng_state(), "batch_rng": batch_rng.get_state()}
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        torch.save(state, tmp / "trainer_state.pt")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = run_dir / name
    if final.exists():
        # A directory cannot replace another in one rename. `latest` names the new copy while the old one moves
        # aside; the final name then gets a hard-linked twin of the new copy (no data copied), so `latest` never
        # names a missing directory.
        _point_latest(run_dir, tmp.name)
        os.replace(final, tmp.with_suffix(".old"))
        twin = tmp.with_suffix(".twin")
        shutil.copytree(tmp, twin, copy_function=os.link)
        os.replace(twin, final)
    else:
        os.replace(tmp, final)
    _point_latest(run_dir, name)
    # Only now that `latest` names `final` may the leftovers of interrupted saves go: one of them could have been it.
    stale = list(run_dir.glob(".ckpt-*"))
    older = sorted(p for p in run_dir.glob("ckpt-*") if p.name < name)
    stale += older[: max(len(older) - keep + 1, 0)] + [p for p in run_dir.glob("ckpt-*") if p.name > name]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return final


def _point_latest(run_dir: Path, name: str) -> None:
    atomic_write(run_dir / "latest", lambda tmp: tmp.write_text(name))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint that ``run_dir/latest`` names, or None when there is none."""
    pointer = Path(run_dir) / "latest"
    if not pointer.is_file():
        return None
    path = Path(run_dir) / pointer.read_text().strip()
    return path if (path / "config.json").is_file() else None


def load_training_checkpoint(
    checkpoint: Path, model: GPT, optimizer: torch.optim.Optimizer, batch_rng: torch.Generator
) -> int:
    """Put a run back as :func:`save_training_checkpoint` left it: the weights (checked by :func:`load_weights`,
    so a model of another shape is refused), the optimizer's moments, and every random state. Returns the step."""
    load_weights(model, checkpoint)
    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True, map_location=model.device))
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
    torch.set_rng_state(state["torch_rng"])
    batch_rng.set_state(state["batch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["step"]
