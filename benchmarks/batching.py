"""A class on one server: many sessions generating at once, batched decoding against today's worker pool.

Two contenders, side by side in one run of this script, on the same model, prompt and seeds:

- ``GenerationPool`` (``workbench/workers.py``): ``--pool-size`` worker processes (the app's 4 before batching), each
  generating one sequence alone; the other sessions wait for a free worker;
- ``BatchedPool`` (``workbench/batch_server.py``): ``--loops`` worker processes (the app's default: one per core),
  each a decoding loop that steps its share of the sessions in one forward pass (``workbench/batching.py``).

For 1, 4, 16 and 32 concurrent sessions (all started together, each asking for ``--new-tokens`` tokens with full
capture and the app's per-step view, ``step_data``, as the app runs them: made by the server for a sequence alone
in its batch, by its worker otherwise): aggregate tokens
per second (all tokens / time until the last session finished), and the p50/p95 of each session's time to its
first token and to its last. Each figure is the median over ``--runs`` rounds; a round measures every count with
each contender in turn, so that the machine's changing load lands on all of them alike. The last
column gives each contender's aggregate rate over its own one-session rate. Targets (the issue): at 16 sessions,
batched aggregate >= 6x one session's, p95 first token <= 1 s.

It also counts how often a seeded, sampled sequence decoded in the batch differs from the same seed decoded
alone (``workbench.stream``): rows computed together equal a lone row only to rounding, so a draw that lands
within rounding of a boundary between two tokens can pick the other one.

Usage: ``python benchmarks/batching.py`` (``--help`` for options). Pools run their workers on one torch thread
each, as the app does for a small model.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Callable

import numpy as np
import torch

from workbench import SamplingConfig, load_model, stream
from workbench.app.session import step_data
from workbench.batch_server import BatchedPool, default_loops
from workbench.workers import GenerationPool

SETTINGS = dict(temperature=0.8, top_k=40, top_p=0.95)
SESSIONS = (1, 4, 16, 32)
POOL_SIZE = 4  # the app's concurrency, one worker per generation, before batching
DEFAULT_LOOPS = default_loops(1)  # the app's: one per core for a one-thread model
TARGET_RATIO, TARGET_FIRST_S = 6.0, 1.0  # at 16 sessions: aggregate vs one session, p95 time to first token


def run_sessions(pool, ids: list[int], n: int, new_tokens: int) -> dict:
    """Start ``n`` sessions at once; their times to first and last token, aggregate tok/s, and their tokens."""
    start = threading.Barrier(n + 1)
    first, finish, tokens = [0.0] * n, [0.0] * n, [[] for _ in range(n)]
    errors: list[str] = []

    def session(i: int) -> None:
        cfg = SamplingConfig(max_new_tokens=new_tokens, seed=i, **SETTINGS)
        start.wait()
        t0 = time.perf_counter()
        try:
            for data in pool.stream(ids, cfg, view=step_data):
                if not tokens[i]:
                    first[i] = time.perf_counter() - t0
                tokens[i].append(data["id"])
        except Exception as err:  # reported: a benchmark with errors has no figures to trust
            errors.append(repr(err))
        finish[i] = time.perf_counter() - t0

    threads = [threading.Thread(target=session, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} session(s) failed, the first: {errors[0]}")
    return dict(rate=sum(map(len, tokens)) / wall, first=first, finish=finish, tokens=tokens)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def divergence(runs: list[list[int]], reference: Callable[[int], list[int]]) -> tuple[int, int, int]:
    """(sequences that differ from their solo reference, tokens compared, tokens before the first difference)."""
    differ = compared = agreed = 0
    for seed, got in enumerate(runs):
        want = reference(seed)
        compared += len(want)
        same = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        agreed += same
        differ += got != want
    return differ, compared, agreed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shakespeare", help="model (default: %(default)s)")
    parser.add_argument("--prompt", default="ROMEO:", help="every session's prompt (default: %(default)s)")
    parser.add_argument("--new-tokens", type=int, default=200, help="tokens per session (default: %(default)s)")
    parser.add_argument("--sessions", type=int, nargs="+", default=list(SESSIONS),
                        help="concurrent sessions to measure (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per contender and count (default: %(default)s)")
    parser.add_argument("--pool-size", type=int, default=POOL_SIZE,
                        help="worker processes of the pool (default: %(default)s, the app's before batching)")
    parser.add_argument("--loops", type=int, default=DEFAULT_LOOPS,
                        help="decoding loops (worker processes) of the batched pool (default: %(default)s)")
    args = parser.parse_args()
    if args.new_tokens < 1 or args.runs < 1 or min(args.sessions) < 1:
        parser.error("--new-tokens, --runs and --sessions must be at least 1")
    torch.set_num_threads(1)

    model, tok = load_model(args.model, device="cpu")
    ids = tok.encode(args.prompt)
    contenders = {
        f"pool ({args.pool_size} workers)": GenerationPool(model, tok, size=args.pool_size, threads=1),
        "batched": BatchedPool(model, tok, max_batch=max(args.sessions), loops=args.loops, threads=1),
    }
    results: dict[str, dict[int, list[dict]]] = {name: {n: [] for n in args.sessions} for name in contenders}
    try:
        for pool in contenders.values():  # warm-up: workers started, weights packed, kernels loaded
            run_sessions(pool, ids, min(4, max(args.sessions)), min(args.new_tokens, 20))
        # Rounds of every count and contender, so that a change in the machine's load lands on all of them alike.
        for _ in range(args.runs):
            for n in args.sessions:
                for name, pool in contenders.items():
                    results[name][n].append(run_sessions(pool, ids, n, args.new_tokens))
    finally:
        for pool in contenders.values():
            pool.close()

    solo: dict[int, list[int]] = {}

    def reference(seed: int) -> list[int]:
        if seed not in solo:
            cfg = SamplingConfig(max_new_tokens=args.new_tokens, seed=seed, **SETTINGS)
            solo[seed] = [s.token_id for s in stream(model, tok, ids, cfg)]
        return solo[seed]

    print(f"\n{args.model}, prompt {args.prompt!r}, {args.new_tokens} new tokens per session, full capture and the "
          f"app's step view, sampled (seeds 0..n-1), one torch thread per worker, {args.loops} batched loop(s), "
          f"median of {args.runs} rounds\n")
    print("| contender | sessions | aggregate tok/s | first token p50 / p95 s | finish p50 / p95 s "
          "| aggregate vs its 1 session |\n|---|---:|---:|---:|---:|---:|")
    rates = {name: {n: statistics.median(r["rate"] for r in results[name][n]) for n in args.sessions}
             for name in contenders}
    for n in args.sessions:
        for name in contenders:
            runs = results[name][n]
            first = [statistics.median(percentile(r["first"], q) for r in runs) for q in (50, 95)]
            finish = [statistics.median(percentile(r["finish"], q) for r in runs) for q in (50, 95)]
            ratio = f"{rates[name][n] / rates[name][1]:.1f}x" if 1 in args.sessions else "n/a"
            print(f"| {name} | {n} | {rates[name][n]:.0f} | {first[0]:.2f} / {first[1]:.2f} | {finish[0]:.2f} / "
                  f"{finish[1]:.2f} | {ratio} |")
    if {1, 16} <= set(args.sessions):
        ratio = rates["batched"][16] / rates["batched"][1]
        first95 = statistics.median(percentile(r["first"], 95) for r in results["batched"][16])
        met = ratio >= TARGET_RATIO and first95 <= TARGET_FIRST_S
        print(f"\nTarget at 16 sessions (batched): aggregate >= {TARGET_RATIO:.0f}x one session's and p95 first "
              f"token <= {TARGET_FIRST_S:.0f} s: {'met' if met else 'not met'} ({ratio:.1f}x, {first95:.2f} s)")

    largest = max(args.sessions)
    for name in contenders:
        differ, compared, agreed = divergence(results[name][largest][0]["tokens"], reference)
        print(f"\n{name}, {largest} sessions: {differ} of {largest} seeded sequences differ from the same seed "
              f"decoded alone; {agreed} of {compared} sampled tokens agree up to each sequence's first difference")


if __name__ == "__main__":
    main()
