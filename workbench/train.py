"""Training: AdamW with warmup + cosine decay, gradient accumulation and clipping, held-out evaluation by play,
resumable checkpoints, and data parallelism under ``torchrun``.

A run writes to its run directory (``TrainConfig.out_dir``): ``metrics.jsonl``, one JSON line per logged step
(step, train_loss, val_loss, lr, tok_per_s), and checkpoints with a ``latest`` pointer, written and resumed by
:mod:`workbench.checkpoint` (its docstring shows the layout). The corpus comes from
:func:`workbench.data.build_corpus`; the model card of a finished run from :mod:`workbench.model_card`.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from workbench.checkpoint import latest_checkpoint, load_training_checkpoint, save_training_checkpoint
from workbench.data import CORPORA, build_corpus, get_batch
from workbench.fast import accelerate
from workbench.memory import keep_freed_memory
from workbench.model import GPT, GPTConfig, resolve_device
from workbench.tokenizers import load_tokenizer

def _opt(default: Any, help: str) -> Any:
    """A config field whose help text the CLI shows (``python -m workbench train --help``)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything a training run depends on; each field's help text is in its metadata."""

    out_dir: str = _opt("runs/default", "run directory: checkpoints and metrics.jsonl")
    corpus: str = _opt(
        "shakespeare-bpe",
        "shakespeare-bpe (byte-level BPE), shakespeare-bpe+folio (the same, plus the First Folio's old-spelling "
        "texts of the training plays as extra training text) or shakespeare-char (characters)",
    )
    vocab_size: int = _opt(4096, "BPE vocabulary to train on the training plays (ignored for characters)")
    n_layer: int = _opt(6, "transformer blocks")
    n_head: int = _opt(8, "attention heads per block")
    n_embd: int = _opt(256, "model width")
    block_size: int = _opt(256, "context length in tokens")
    dropout: float = _opt(0.1, "dropout on residual branches and embeddings")
    dropout_from: float = _opt(
        0.0, "late dropout: none before this fraction of max_steps, then --dropout (0 = dropout from the start)"
    )
    attn_dropout: float = _opt(0.0, "dropout on the attention weights (> 0 makes a CPU step ~1.5x slower)")
    bias: bool = _opt(True, "biases in Linear and LayerNorm (GPT-2 has them)")
    batch_size: int = _opt(16, "sequences per micro-batch (per process)")
    grad_accum: int = _opt(1, "micro-batches per optimizer step")
    max_steps: int = _opt(2500, "optimizer steps in the whole run")
    lr: float = _opt(1.5e-3, "peak learning rate, reached after warmup")
    min_lr: float = _opt(1e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = _opt(200, "linear warmup from 0 to lr")
    weight_decay: float = _opt(0.1, "AdamW decoupled weight decay, on matrices only (not biases, LayerNorms)")
    beta1: float = _opt(0.9, "AdamW beta1")
    beta2: float = _opt(0.99, "AdamW beta2 (0.99: small batches are noisy)")
    grad_clip: float = _opt(1.0, "clip the global gradient norm to this; 0 = off")
    eval_every: int = _opt(250, "evaluate on the held-out plays every N steps")
    eval_batches: int = _opt(20, "batches per evaluation")
    save_every: int = _opt(500, "checkpoint every N steps (and at the end)")
    log_every: int = _opt(10, "metrics.jsonl line every N steps")
    seed: int = _opt(1337, "seeds weights, batches and dropout")
    device: str = _opt("auto", "auto (CUDA if present), cpu, cuda")
    bf16: bool = _opt(False, "bfloat16 autocast: on CUDA, and on CPUs with bf16 instructions (else fp32, with a warning)")
    compile: bool = _opt(False, "torch.compile the model (slow start, faster steps on GPU)")
    threads: int = _opt(0, "torch CPU threads; 0 = torch's default")

    def validate(self) -> None:
        if self.corpus not in CORPORA:
            raise ValueError(f"corpus must be one of {', '.join(CORPORA)}, got {self.corpus!r}")
        for name in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "grad_accum", "max_steps",
                     "eval_every", "eval_batches", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr < 1 or not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need 0 < lr < 1 and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if not 0 <= self.dropout_from < 1:
            raise ValueError(f"dropout_from must be in [0, 1), got {self.dropout_from}")
        if self.warmup_steps < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("warmup_steps, grad_clip and weight_decay must be >= 0")


PRESETS: dict[str, dict[str, Any]] = {
    # The shipped model (assets/models/shakespeare): `make train-default`, 80 minutes on 2 CPU cores with bf16
    # instructions, about 4 on an H200 shared with 8 other runs. 6 layers x 6 heads x 192 wide: at a fixed time
    # budget, a narrower model that sees more tokens read the held-out plays better than a 256-wide one that sees
    # fewer. bf16 autocast and no attention dropout make a CPU step 2x faster (about 5,400-5,600 tokens/s): 6,300
    # steps x 16 x 256 tokens, ~9 passes over the modern plays plus the First Folio's old-spelling texts of the
    # training plays (1.3585 nats/char on the held-out works at 5,500 steps against 1.3808 without them). Late
    # dropout (none for the first half, then 0.1) and weight decay 0.2 read 1.3384 on one H200 run, against 1.3538
    # for dropout 0.1 throughout with decay 0.1 (README, "Training and the shipped model", has the sweep).
    "default": dict(out_dir="runs/shakespeare", corpus="shakespeare-bpe+folio", n_head=6, n_embd=192, lr=2e-3,
                    max_steps=6300, dropout_from=0.5, weight_decay=0.2, bf16=True),
    # A character model that trains in a couple of minutes on a laptop CPU, for the lessons.
    "tiny-char": dict(
        out_dir="runs/tiny-char", corpus="shakespeare-char", n_layer=4, n_head=4, n_embd=128, block_size=64,
        batch_size=12, max_steps=500, lr=2e-3, min_lr=2e-4, warmup_steps=50, dropout=0.0, eval_every=100,
        eval_batches=10, save_every=200,
    ),
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a named preset (``default``, ``tiny-char``) with field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return replace(TrainConfig(), **{**PRESETS[name], **overrides})


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


# --------------------------------------------------------------------------------------------- schedule


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``lr`` over ``warmup_steps``, then cosine decay to ``min_lr`` at ``max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def dropout_at(step: int, cfg: TrainConfig) -> float:
    """Dropout on embeddings and residual branches for ``step``: none before ``dropout_from * max_steps``, then
    ``dropout``. Early on the model underfits and dropout only slows it; later it curbs memorising the training plays."""
    return cfg.dropout if step >= cfg.dropout_from * cfg.max_steps else 0.0


def set_dropout(model: GPT, p: float) -> None:
    """Set the dropout on ``model``'s embeddings and residual branches (the attention weights' stays as it is)."""
    model.transformer.drop.p = p
    for block in model.transformer.h:
        block.attn.resid_dropout.p = block.mlp.dropout.p = p


def cpu_has_bf16() -> bool:
    """Whether oneDNN can multiply bfloat16 natively on this CPU (AVX512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bf16_autocast(device: torch.device) -> Any:
    """bfloat16 autocast for ``device``: always on CUDA; on the CPU only where :func:`cpu_has_bf16` (a 1.3x faster
    step for the default model on the reference machine), since emulated bf16 is slower than fp32."""
    if device.type == "cpu" and not cpu_has_bf16():
        warnings.warn("bf16: this CPU has no bfloat16 instructions; training in fp32 instead", stacklevel=2)
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, fused: bool = False) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (Linear and embedding weights) and none on biases and LayerNorms."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused or None)


# ------------------------------------------------------------------------------------------ distributed


@dataclass
class Dist:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when run directly)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """Join the process group when launched by ``torchrun`` (gloo on CPU, nccl on CUDA)."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def accumulate_gradients(
    model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], autocast: Any = None
) -> float:
    """Forward/backward over micro-batches, gradients averaged over them (and over processes under DDP).

    Under DDP, gradients are synchronised only on the last micro-batch. Returns the mean loss.
    """
    total = 0.0
    for i, (x, y) in enumerate(batches):
        last = i == len(batches) - 1
        sync = model.no_sync() if isinstance(model, torch.nn.parallel.DistributedDataParallel) and not last else nullcontext()
        with sync, (autocast or nullcontext()):
            _, loss = model(x, y)
            (loss / len(batches)).backward()
        total += loss.item()
    return total / len(batches)


# ------------------------------------------------------------------------------------------------ train


@dataclass
class TrainResult:
    """What a finished (or interrupted) run reports."""

    step: int
    checkpoint: Path | None
    train_loss: float
    val_loss: float | None
    interrupted: bool = False
    seconds: float = 0.0


def evaluate(model: GPT, data: torch.Tensor, cfg: TrainConfig, device: torch.device, autocast: Any) -> float:
    """Mean loss on ``eval_batches`` windows of the held-out data; the windows are the same at every evaluation."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    was_training = model.training
    model.eval()
    losses = []
    with torch.no_grad(), autocast:
        for _ in range(cfg.eval_batches):
            x, y = get_batch(data, cfg.batch_size, cfg.block_size, gen, device)
            losses.append(model(x, y)[1].item())
    model.train(was_training)
    return sum(losses) / len(losses)


def heldout_loss(
    model: GPT, ids: torch.Tensor, n_chars: int, block_size: int, device: torch.device | str = "cpu", batch_size: int = 16
) -> tuple[float, float]:
    """Loss over the whole held-out text, every token scored once, in consecutive windows of ``block_size``:
    ``(nats per token, nats per character)``. Per character is what compares across tokenizers."""
    model.eval()
    n_windows = (len(ids) - 1) // block_size
    full = ids[: n_windows * block_size + 1]
    x_all = full[:-1].view(n_windows, block_size)
    y_all = full[1:].view(n_windows, block_size)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, n_windows, batch_size):
            x, y = x_all[i : i + batch_size].to(device), y_all[i : i + batch_size].to(device)
            logits = model(x)
            total += torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
            count += y.numel()
        tail = ids[n_windows * block_size :].to(device)  # the last, shorter window
        if len(tail) > 1:
            logits = model(tail[None, :-1])
            total += torch.nn.functional.cross_entropy(logits[0].float(), tail[1:], reduction="sum").item()
            count += len(tail) - 1
    return total / count, total / n_chars


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    on_log: Callable[[dict], None] | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Run (or with ``resume`` continue) training as ``cfg`` says. Returns when ``max_steps`` is reached, or on
    Ctrl-C after saving a checkpoint. Raises :class:`TrainingDiverged` (last good checkpoint kept) on a NaN loss.

    A fresh run (no ``resume``) refuses a run directory that already holds checkpoints, which it would replace,
    unless ``overwrite`` says to: FileExistsError names both ways on."""
    cfg.validate()
    held = latest_checkpoint(cfg.out_dir) or next(Path(cfg.out_dir).glob("ckpt-*"), None)
    if not resume and not overwrite and held is not None:
        raise FileExistsError(
            f"{cfg.out_dir} already holds checkpoints ({held.name}) that a fresh run would replace: continue it "
            "with --resume, start over with --overwrite, or choose another --out-dir"
        )
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    keep_freed_memory()  # each step reuses the last step's pages (a CPU step of the default model is ~1.1x faster)
    ddp = init_distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(device)
    run_dir = Path(cfg.out_dir)
    autocast = bf16_autocast(device) if cfg.bf16 else nullcontext()

    ckpt = latest_checkpoint(run_dir) if resume else None
    if resume and ckpt is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {run_dir}")
    tokenizer = load_tokenizer(ckpt) if ckpt else None
    tokenizer, train_ids, val_ids, _ = build_corpus(cfg, tokenizer)

    torch.manual_seed(cfg.seed)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, attn_dropout=cfg.attn_dropout,
                          bias=cfg.bias)).to(device)
    accelerate(model)  # the cheaper dropout mask while training, packed weights while evaluating
    optimizer = make_optimizer(model, cfg, fused=device.type == "cuda")
    batch_rng = torch.Generator().manual_seed(cfg.seed + 1000 * ddp.rank)  # each process sees different windows
    start_step = load_training_checkpoint(ckpt, model, optimizer, batch_rng) if ckpt is not None else 0

    raw_model = model
    if ddp.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)

    settings = asdict(cfg)  # saved with every checkpoint
    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum * ddp.world_size
    metrics = (run_dir / "metrics.jsonl") if ddp.is_main else None
    if metrics is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            metrics.write_text("")
    bar = tqdm(total=cfg.max_steps, initial=start_step, disable=not (progress and ddp.is_main), unit="step",
               desc="train")
    step, loss, val_loss, last_ckpt = start_step, float("nan"), None, ckpt
    started = time.perf_counter()
    model.train()
    try:
        while step < cfg.max_steps:
            t0 = time.perf_counter()
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            set_dropout(raw_model, dropout_at(step, cfg))
            batches = [get_batch(train_ids, cfg.batch_size, cfg.block_size, batch_rng, device) for _ in range(cfg.grad_accum)]
            loss = accumulate_gradients(model, batches, autocast)
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {loss} at step {step + 1}; stopped. The last good checkpoint is "
                    f"{last_ckpt or 'none (no checkpoint was written yet)'}. Try a lower --lr or --grad-clip."
                )
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tok_per_s = tokens_per_step / (time.perf_counter() - t0)

            record: dict[str, Any] | None = None
            if step % cfg.eval_every == 0 or step == cfg.max_steps:
                if ddp.is_main:
                    val_loss = evaluate(raw_model, val_ids, cfg, device, autocast)
                record = {"step": step, "train_loss": loss, "val_loss": val_loss, "lr": lr, "tok_per_s": tok_per_s}
            elif step % cfg.log_every == 0:
                record = {"step": step, "train_loss": loss, "lr": lr, "tok_per_s": tok_per_s}
            if record is not None and metrics is not None:
                with metrics.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                if on_log:
                    on_log(record)
            if (step % cfg.save_every == 0 or step == cfg.max_steps) and ddp.is_main:
                last_ckpt = save_training_checkpoint(run_dir, raw_model, tokenizer, optimizer, settings, step, batch_rng)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tok_per_s:,.0f}", refresh=False)
            bar.update(1)
    except KeyboardInterrupt:
        if ddp.is_main and step > start_step:
            last_ckpt = save_training_checkpoint(run_dir, raw_model, tokenizer, optimizer, settings, step, batch_rng)
        bar.close()
        return TrainResult(step, last_ckpt, loss, val_loss, interrupted=True, seconds=time.perf_counter() - started)
    finally:
        bar.close()
        if ddp.world_size > 1 and dist.is_initialized():
            del model  # DDP's reducer holds the process group; tearing the group down under it can abort a rank
            dist.barrier()
            dist.destroy_process_group()
    return TrainResult(step, last_ckpt, loss, val_loss, seconds=time.perf_counter() - started)
