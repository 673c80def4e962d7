"""What the app costs: tokens per second a ``gradio_client`` receives from the app, with every view on, against
bare ``workbench.stream`` (full capture, as the app runs it) on the same model, prompt and seed; and the time to
the first token each way.

The app runs in its own process (``python -m workbench app``), as it would for a class; this process is the
client, and runs the bare loop while the server is idle. Runs alternate between the two, after one warm-up each;
the table gives medians.

Usage: ``python benchmarks/app.py`` (``--help`` for options). Targets: overhead <= 25 %, first token <= 300 ms on
CPU for the shipped model.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from gradio_client import Client

from workbench import SamplingConfig, generate, load_model, stream

SETTINGS = dict(temperature=0.8, top_k=40, top_p=0.95)


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, threads: int, cap: int) -> tuple[subprocess.Popen, Client]:
    """Start ``python -m workbench app`` and return it with a client once it answers."""
    cmd = [sys.executable, "-m", "workbench", "app", "--model", model, "--device", "cpu", "--port", str(port),
           "--max-new-tokens-cap", str(cap), "--concurrency", "1"]
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a full pipe would block the server
    server = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    deadline = time.time() + 180
    while time.time() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise SystemExit(f"the app exited: {log.read()[-2000:]}")
        try:
            return server, Client(f"http://127.0.0.1:{port}/", verbose=False)
        except Exception:  # not listening yet
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the app did not start within 180 s")


def time_bare(model, tok, prompt: str, cfg: SamplingConfig) -> tuple[float, float, int]:
    """Bare ``stream``: (seconds to the first token, total seconds, tokens)."""
    start = time.perf_counter()
    first, n = 0.0, 0
    for n, _ in enumerate(stream(model, tok, prompt, cfg), 1):
        if n == 1:
            first = time.perf_counter() - start
    return first, time.perf_counter() - start, n


def time_app(client: Client, prompt: str, cfg: SamplingConfig) -> tuple[float, float, str]:
    """Through the app's public API: (seconds to the first token received, total seconds, final text)."""
    start = time.perf_counter()
    job = client.submit(prompt, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p, cfg.seed,
                        api_name="/generate")
    first = 0.0
    for out in job:
        if not first and out[0]:
            first = time.perf_counter() - start
    return first, time.perf_counter() - start, job.outputs()[-1][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shakespeare", help="model to serve (default: %(default)s)")
    parser.add_argument("--prompt", default="ROMEO:", help="prompt (default: %(default)s)")
    parser.add_argument("--new-tokens", type=int, default=200, help="tokens per run (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per contender (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads, both sides (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, tok = load_model(args.model, device="cpu")
    cfg = SamplingConfig(max_new_tokens=args.new_tokens, seed=0, **SETTINGS)
    server, client = start_server(args.model, free_port(), args.threads, max(args.new_tokens, 1))
    try:
        bare, app = [], []
        for run in range(args.runs + 1):  # run 0 warms up both sides
            b, a = time_bare(model, tok, args.prompt, cfg), time_app(client, args.prompt, cfg)
            if a[2] != generate(model, tok, args.prompt, cfg).text:
                raise SystemExit("the app's text differs from workbench.stream with the same seed")
            if run:
                bare.append(b)
                app.append(a)
    finally:
        server.terminate()
        server.wait(timeout=30)

    def row(name: str, results: list, n_tokens: int, base_tps: float | None) -> str:
        first = statistics.median(r[0] for r in results) * 1000
        tps = statistics.median(n_tokens / r[1] for r in results)
        # Overhead: extra wall time per token delivered, relative to the bare loop.
        rel = f"{tps / base_tps:.2f}x ({(base_tps / tps - 1) * 100:+.0f}% time per token)" if base_tps else "1.00x"
        return f"| {name} | {tps:.1f} | {first:.0f} | {rel} |"

    n = bare[0][2]
    base_tps = statistics.median(n / r[1] for r in bare)
    print(f"\n{args.model}, prompt {args.prompt!r}, {n} tokens, seed 0, {args.threads} threads, "
          f"median of {args.runs}\n")
    print("| contender | tok/s | first token ms | vs bare |\n|---|---:|---:|---:|")
    print(row("bare `workbench.stream` (full capture)", bare, n, None))
    print(row("app via `gradio_client`, every view on", app, n, base_tps))


if __name__ == "__main__":
    main()
