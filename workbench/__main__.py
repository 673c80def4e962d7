"""Command line: ``python -m workbench <command> --help``.

Commands: ``app`` (serve the live app), ``generate`` (sample text from any model we can load), ``train`` (train a
model, alone or under ``torchrun``), ``export`` (write a model as a Hugging Face directory).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from workbench.checkpoint import shipped_models

DEFAULT_MODEL = "shakespeare"


def _add_app(sub: argparse._SubParsersAction) -> None:
    from workbench.app.session import APP_CONCURRENCY, APP_MAX_NEW_TOKENS_CAP
    from workbench.sampling import MAX_NEW_TOKENS_LIMIT

    p = sub.add_parser(
        "app",
        help="serve the live app (generation you can look inside)",
        description="Serve the Gradio app: streaming generation with attention, logit, logit-lens and head-ablation "
        "views. Prints the URL to open.",
    )
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="shipped model name, one of our checkpoint or run directories, an HF directory, or a "
                   "hub id like 'gpt2' (needs internet) (default: %(default)s)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto = CUDA when present (default: %(default)s)")
    p.add_argument("--host", default=None,
                   help="address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1; "
                   "0.0.0.0 = every interface)")
    p.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT, else 7860)")
    p.add_argument("--share", action="store_true",
                   help="also open a public gradio.live link (off unless given: it sends traffic through "
                   "gradio's servers)")
    p.add_argument("--max-new-tokens-cap", type=int, default=APP_MAX_NEW_TOKENS_CAP,
                   help="most tokens one request may ask for "
                   f"(default: %(default)s; at most {MAX_NEW_TOKENS_LIMIT})")
    p.add_argument("--concurrency", type=int, default=APP_CONCURRENCY,
                   help="generations decoded at the same time, in batches; more requests wait in the queue "
                   "(default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 for a model under 20M parameters, whose matrices are too "
                   "small to share between cores, so the other core serves the page; else torch's default)")
    p.add_argument("--no-workers", dest="workers", action="store_false", default=None,
                   help="generate each request alone on a thread of the server's process, unbatched, instead of "
                   "in batches (in worker processes on the CPU, one per core for a small model: there the "
                   "server's own Python work would otherwise slow the model down; on a thread on a GPU)")
    p.set_defaults(func=_run_app)


def _run_app(args: argparse.Namespace) -> int:
    from workbench.sampling import MAX_NEW_TOKENS_LIMIT

    if not 1 <= args.max_new_tokens_cap <= MAX_NEW_TOKENS_LIMIT:
        raise ValueError(
            f"--max-new-tokens-cap must be in [1, {MAX_NEW_TOKENS_LIMIT}], got {args.max_new_tokens_cap}"
        )
    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be >= 1, got {args.concurrency}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    from workbench.app import launch  # imports gradio: only for this command

    launch(args.model, device=args.device, host=args.host, port=args.port, share=args.share,
           max_new_tokens_cap=args.max_new_tokens_cap, concurrency=args.concurrency, threads=args.threads,
           workers=args.workers)
    return 0


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text from a model",
        description="Generate a continuation of a prompt, streaming tokens to stdout as they are made.",
    )
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"shipped model name ({', '.join(shipped_models()) or 'none yet'}), one of our checkpoint directories, "
        "an HF directory (GPT-2, Llama, Mistral, Qwen2, Qwen3), or a hub id like 'gpt2' (needs internet) "
        "(default: %(default)s)",
    )
    p.add_argument("--prompt", default="", help="text to continue; empty starts from the start token")
    p.add_argument("--max-new-tokens", type=int, default=100, help="number of tokens to generate (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 means greedy (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=40, help="keep the k most likely tokens; 0 = off (default: %(default)s)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass; 1 = off (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="random seed for reproducible sampling")
    p.add_argument("--stop", action="append", default=[], help="stop after this string appears (repeatable)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda (default: %(default)s)")
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from workbench.checkpoint import load_model
    from workbench.generate import SamplingConfig, stream

    cfg = SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop=args.stop,
    )
    model, tok = load_model(args.model, device=args.device)
    if tok is None:
        raise ValueError(f"{args.model} has no tokenizer saved with it, so it cannot read a text prompt")
    print(args.prompt, end="", flush=True)
    new_ids: list[int] = []
    printed = ""
    for step in stream(model, tok, args.prompt, cfg, capture=False):
        for note in step.notes:
            print(f"\n[{note}]", file=sys.stderr)
        new_ids.append(step.token_id)
        # Decode the whole continuation each time: a multi-byte character may span several tokens.
        text = tok.decode(new_ids)
        if not text.endswith("\ufffd"):
            print(text[len(printed) :], end="", flush=True)
            printed = text
    print(tok.decode(new_ids)[len(printed) :])
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    from dataclasses import fields

    from workbench.train import PRESETS, TrainConfig, preset

    p = sub.add_parser(
        "train",
        help="train a model",
        description="Train a GPT on Shakespeare. Start from a preset and override any field. Data parallel with "
        "`torchrun --nproc_per_node N -m workbench train ...` (gloo on CPU, nccl on GPU; only rank 0 writes).",
    )
    p.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help="starting configuration: default = the shipped Shakespeare model, tiny-char = a character "
                   "model for lessons (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out-dir")
    p.add_argument("--overwrite", action="store_true",
                   help="start a fresh run in an --out-dir that already holds checkpoints, replacing them (without "
                   "this or --resume, such a directory is refused)")
    p.add_argument("--export", metavar="DIR", default=None,
                   help="when training ends, write the final model with a model card (README.md) to DIR")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar: one line per evaluation instead (logs also go to metrics.jsonl)")
    presets = {name: preset(name) for name in sorted(PRESETS)}
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        values = ", ".join(f"{name} {getattr(cfg, f.name)}" for name, cfg in presets.items())
        help_text = f"{f.metadata['help']} (if not given, the preset's: {values})".replace("%", "%%")
        if f.type in ("bool", bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            p.add_argument(flag, dest=f.name, type=kind, default=None, help=help_text)
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import shlex
    import time
    from dataclasses import fields

    from workbench.model_card import write_model_card
    from workbench.train import TrainConfig, TrainingDiverged, preset, train

    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    cfg = preset(args.preset, **overrides)
    started = time.time()
    def eval_line(record: dict) -> None:
        if "val_loss" in record:
            print(f"step {record['step']}/{cfg.max_steps}: train loss {record['train_loss']:.4f}, "
                  f"val loss {record['val_loss']:.4f}, lr {record['lr']:.2e}, {record['tok_per_s']:,.0f} tok/s",
                  flush=True)

    try:
        result = train(cfg, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite,
                       on_log=eval_line if args.no_progress and os.environ.get("RANK", "0") == "0" else None)
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 130 if result.interrupted else 0
    if result.interrupted:
        print(f"interrupted at step {result.step}; saved {result.checkpoint}. Continue with --resume.", file=sys.stderr)
        return 130
    val = "not measured" if result.val_loss is None else f"{result.val_loss:.4f}"
    print(f"done: step {result.step}, train loss {result.train_loss:.4f}, val loss {val}, "
          f"checkpoint {result.checkpoint}")
    if args.export and result.checkpoint is not None:
        command = "python -m workbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        card = write_model_card(cfg, result.checkpoint, args.export, command=command, wall_seconds=time.time() - started)
        print(f"exported to {args.export} (model card: {card})")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a model as a Hugging Face directory",
        description="Write a model as an HF directory of its family, GPT-2, Llama, Qwen2 or Qwen3 (config.json, "
        "model.safetensors, tokenizer files), that transformers' AutoModelForCausalLM.from_pretrained loads with the "
        "same logits.",
    )
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="shipped model name, our checkpoint or run directory, or an HF directory (default: %(default)s)")
    p.add_argument("--to-hf", metavar="DIR", required=True, help="directory to write (created if missing)")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from workbench.checkpoint import export_hf, load_model

    model, tok = load_model(args.model, device="cpu")
    export_hf(model, tok, args.to_hf)
    print(f"wrote {args.to_hf}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workbench", description="GPT Workbench command line.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_app(sub)
    _add_generate(sub)
    _add_train(sub)
    _add_export(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status (errors print one line, status 2)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
