"""The model card of a finished training run: the model exported with a README.md that says what it is.

The card states what a reader needs to trust and to repeat the run: the corpus and tokenizer it was trained on,
the recipe and the command, the machine and the wall time, the loss curve, the held-out loss measured again on
every held-out token, and unedited samples.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

import torch

from workbench.checkpoint import load_checkpoint, save_checkpoint
from workbench.data import CORPORA, HELD_OUT_PLAYS, build_corpus
from workbench.files import atomic_write
from workbench.generate import generate
from workbench.model import resolve_device
from workbench.sampling import SamplingConfig
from workbench.train import TrainConfig, heldout_loss

CARD_PROMPTS = ("ROMEO:", "First Citizen:\nWe are accounted poor citizens", "")
CARD_SAMPLING = dict(max_new_tokens=120, temperature=0.8, top_k=40, top_p=0.95, seed=0)  # SamplingConfig fields


def describe_machine(device: torch.device) -> str:
    """The machine a run trains on, for its model card: the GPU if it uses one, CPU cores, torch threads, versions."""
    gpu = f"{torch.cuda.get_device_name(device)} (CUDA), " if device.type == "cuda" else ""
    return (f"{gpu}{platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def write_model_card(cfg: TrainConfig, checkpoint: Path, export_dir: str | Path, *, command: str,
                     wall_seconds: float, machine: str | None = None) -> Path:
    """Copy the checkpoint's model and tokenizer to ``export_dir`` and write its model card (README.md) there:
    the corpus, the command, wall time and machine, the loss curve, held-out loss per token and per character, and
    samples. ``machine`` says where it trained; by default, this machine with ``cfg.device``."""
    model, tok = load_checkpoint(checkpoint, device="cpu")
    corpus = build_corpus(cfg, tok)
    per_token, per_char = heldout_loss(model, corpus.val_ids, corpus.val_chars, cfg.block_size)
    export_dir = Path(export_dir)
    step = json.loads((checkpoint / "config.json").read_text())["step"]
    save_checkpoint(model, tok, export_dir, step=step, heldout_nats_per_token=round(per_token, 4),
                    heldout_nats_per_char=round(per_char, 4), heldout_plays=list(HELD_OUT_PLAYS))

    rows = [json.loads(line) for line in (Path(cfg.out_dir) / "metrics.jsonl").read_text().splitlines() if line]
    curve = [r for r in rows if r.get("val_loss") is not None]
    tok_s = sorted(r["tok_per_s"] for r in rows)
    samples = [(p, generate(model, tok, p, SamplingConfig(**CARD_SAMPLING), capture=False).text) for p in CARD_PROMPTS]

    characters = cfg.corpus == "shakespeare-char"
    late = f" from step {math.ceil(cfg.dropout_from * cfg.max_steps)}" if cfg.dropout_from else ""
    how = "Trained with this command:"
    if "--preset default" in command:  # only then is `make train-default` the same recipe
        how = ("Trained with this command. `make train-default` runs the same preset (`--preset default`), on CUDA "
               "when\nthere is a GPU and on the CPU otherwise:")
    lines = [
        f"# {export_dir.name}: a small GPT-2 trained on Shakespeare (`{cfg.corpus}`)",
        "",
        f"Trained from scratch with `workbench.train` on the corpus `{cfg.corpus}`: {CORPORA[cfg.corpus]}.",
        f"Held out for validation, never trained on: {', '.join(HELD_OUT_PLAYS)}.",
        "",
        "| | |",
        "|---|---|",
        f"| parameters | {model.num_params():,} |",
        f"| shape | {cfg.n_layer} layers x {cfg.n_head} heads x {cfg.n_embd} wide, context {cfg.block_size} tokens |",
        f"| tokenizer | characters, {tok.vocab_size} tokens |" if characters else
        f"| tokenizer | byte-level BPE, {tok.vocab_size} tokens, trained on the modern-spelling training plays |",
        f"| training | {step} steps x {cfg.batch_size * cfg.grad_accum} sequences x {cfg.block_size} tokens, AdamW "
        f"lr {cfg.lr} (warmup {cfg.warmup_steps}, cosine to {cfg.min_lr}), weight decay {cfg.weight_decay}, "
        f"dropout {cfg.dropout}{late} (attention {cfg.attn_dropout}){', bf16 autocast' if cfg.bf16 else ''} |",
        f"| **held-out loss** | **{per_token:.4f} nats per token, {per_char:.4f} nats per character** "
        f"({len(corpus.val_ids):,} tokens, {corpus.val_chars:,} characters, every token scored once) |",
        f"| wall time | {wall_seconds / 60:.1f} minutes (median {tok_s[len(tok_s) // 2]:,.0f} tokens/s) |",
        f"| machine | {machine or describe_machine(resolve_device(cfg.device))} |",
        "",
        how,
        "",
        "```bash",
        command,
        "```",
        "",
        "## Loss curve",
        "",
        "Train loss is the step's batch; validation is the mean over the same held-out windows at each evaluation",
        "(nats per token).",
        "",
        "| step | train loss | val loss | learning rate |",
        "|---:|---:|---:|---:|",
        *[f"| {r['step']} | {r['train_loss']:.3f} | {r['val_loss']:.3f} | {r['lr']:.2e} |" for r in curve],
        "",
        "## Samples",
        "",
        f"Unedited, `SamplingConfig({', '.join(f'{k}={v}' for k, v in CARD_SAMPLING.items())})`:",
        "",
    ]
    for prompt, text in samples:
        lines += [f"**Prompt** {prompt!r}:", "", "```text", prompt + text, "```", ""]
    card = export_dir / "README.md"
    atomic_write(card, lambda tmp: tmp.write_text("\n".join(lines), encoding="utf-8"))
    return card
