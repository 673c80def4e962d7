"""Command line: ``python -m workbench <command> --help``.

Commands: ``generate`` (sample text from any model we can load). More arrive with training and the app.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from workbench.checkpoint import shipped_models

DEFAULT_MODEL = "shakespeare"


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
        "an HF GPT-2 directory, or a hub id like 'gpt2' (needs internet) (default: %(default)s)",
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workbench", description="GPT Workbench command line.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_generate(sub)
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
