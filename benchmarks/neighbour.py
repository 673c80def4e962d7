"""What a process on the other core costs the app's decoding loop: the shipped model decoded as the app's worker
decodes it (one thread, the batched loop, full capture), pinned to one core, alone and beside a neighbour pinned
to another core that either only spins (no memory traffic) or streams through a 64 MB array (as a browser's
renderer or a server's Python, less evenly, does).

The neighbours do nothing the loop waits for, so a slower step is the price of sharing the machine's caches and
memory with them. Each round runs every case once, one after the other; the table gives the median milliseconds
per token and the median of each round's ratio to the loop alone in that round.

Usage: ``python benchmarks/neighbour.py`` (``--help`` for options). Linux only (CPU affinity).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

from workbench import SamplingConfig, load_model
from workbench.batching import BatchedDecoder

NEIGHBOURS = {
    "alone": None,
    "beside a process that spins": "while True: pass",
    "beside a process streaming 64 MB": "import torch\ntorch.set_num_threads(1)\na = torch.ones(8 << 20, "
                                        "dtype=torch.float64)\nwhile True: a += 1",
}


def ms_per_token(model, tok, prompt: str, cfg: SamplingConfig) -> float:
    """One generation through the batched decoder, as the app's worker runs a lone session: ms per token."""
    decoder = BatchedDecoder(model, tok)
    start = time.perf_counter()
    n = 1 if decoder.add(0, prompt, cfg).step is not None else 0
    while len(decoder):
        n += len(decoder.step())
    return (time.perf_counter() - start) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shakespeare", help="model to decode (default: %(default)s)")
    parser.add_argument("--new-tokens", type=int, default=512, help="tokens per generation (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every case (default: %(default)s)")
    args = parser.parse_args()
    if args.new_tokens < 1 or args.rounds < 1:
        parser.error("--new-tokens and --rounds must be at least 1")
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("this needs two cores: one for the loop, one for its neighbour")
    os.sched_setaffinity(0, {cores[0]})
    torch.set_num_threads(1)
    model, tok = load_model(args.model, device="cpu")
    cfg = SamplingConfig(max_new_tokens=args.new_tokens, temperature=0.8, top_k=40, top_p=0.95, seed=0)
    ms_per_token(model, tok, "ROMEO:", cfg)  # warm-up
    results: dict[str, list[float]] = {name: [] for name in NEIGHBOURS}
    for _ in range(args.rounds):
        for name, code in NEIGHBOURS.items():
            neighbour = None
            if code is not None:
                neighbour = subprocess.Popen([sys.executable, "-c", code],
                                             preexec_fn=lambda: os.sched_setaffinity(0, {cores[1]}))
                time.sleep(0.5)  # running, and its array touched
            try:
                results[name].append(ms_per_token(model, tok, "ROMEO:", cfg))
            finally:
                if neighbour is not None:
                    neighbour.kill()
                    neighbour.wait()
    print(f"\n{args.model}, {args.new_tokens} tokens, one thread on core {cores[0]}, neighbour on core {cores[1]}, "
          f"{args.rounds} rounds\n")
    print("| the decoding loop | ms per token | time vs alone, per round |\n|---|---:|---:|")
    for name, times in results.items():
        ratios = [t / a for t, a in zip(times, results["alone"])]
        print(f"| {name} | {statistics.median(times):.3f} | {statistics.median(ratios):.2f}x "
              f"({min(ratios):.2f}-{max(ratios):.2f}) |")


if __name__ == "__main__":
    main()
