"""What the app costs: tokens per second a ``gradio_client`` receives from the app, with every view on, against
bare ``workbench.stream`` (full capture, as the app runs it) on the same model, prompt and seed; and the time to
the first token each way.

Tokens per second count until the client holds every token, two ways: end to end (from the request, so the
first-token latency is in it) and while streaming (after the first token). The frame after the last token, with
every view redrawn at the last step, is timed separately.

The app runs in its own process (``python -m workbench app``), as it would for a class; this process is the
client, and runs the bare loop while the server is idle. Runs alternate between the two, after one warm-up each;
the table gives medians.

Usage: ``python benchmarks/app.py`` (``--help`` for options). Targets: overhead <= 25 %, first token <= 300 ms on
CPU for the shipped model.
"""

from __future__ import annotations

import argparse
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


def start_server(model: str, port: int, threads: int | None, cap: int) -> tuple[subprocess.Popen, Client]:
    """Start ``python -m workbench app`` (with ``--threads`` when given) and return it with a client once it answers."""
    cmd = [sys.executable, "-m", "workbench", "app", "--model", model, "--device", "cpu", "--port", str(port),
           "--max-new-tokens-cap", str(cap), "--concurrency", "1"]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a full pipe would block the server
    server = subprocess.Popen(cmd, stdout=log, stderr=log)
    deadline = time.time() + 180
    # ssl_verify=False: the app is plain http on this machine, so there is nothing to verify, and with it on,
    # gradio_client builds a certificate store for each of the two connections a request opens (35 ms each here).
    while time.time() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise SystemExit(f"the app exited: {log.read()[-2000:]}")
        try:
            return server, Client(f"http://127.0.0.1:{port}/", verbose=False, ssl_verify=False)
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


def time_app(client: Client, prompt: str, cfg: SamplingConfig) -> tuple[float, float, str, float]:
    """Through the app's public API: (seconds to the first token received, seconds until the client holds every
    token, final text, seconds until the last frame, which also carries the views redrawn at the last step)."""
    start = time.perf_counter()
    job = client.submit(prompt, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p, cfg.seed,
                        api_name="/generate")
    first = 0.0
    arrivals = []  # (seconds, text) of every frame
    for out in job:
        arrivals.append((time.perf_counter() - start, out[0]))
        if not first and out[0]:
            first = arrivals[-1][0]
    done = time.perf_counter() - start
    final = job.outputs()[-1][0]
    all_tokens = next((t for t, text in arrivals if text == final), done)
    return first, all_tokens, final, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shakespeare", help="model to serve (default: %(default)s)")
    parser.add_argument("--prompt", default="ROMEO:", help="prompt (default: %(default)s)")
    parser.add_argument("--new-tokens", type=int, default=200, help="tokens per run (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per contender (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads of the bare loop (default: %(default)s)")
    parser.add_argument("--app-threads", type=int, default=None,
                        help="the app's --threads (default: the app's own default, 1 for a small model)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, tok = load_model(args.model, device="cpu")
    cfg = SamplingConfig(max_new_tokens=args.new_tokens, seed=0, **SETTINGS)
    server, client = start_server(args.model, free_port(), args.app_threads, max(args.new_tokens, 1))
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

    def rates(results: list, n_tokens: int) -> tuple[float, float, float]:
        """Medians of: first-token ms, end-to-end tok/s (from the request), streaming tok/s (after the first)."""
        first = statistics.median(r[0] for r in results) * 1000
        end_to_end = statistics.median(n_tokens / r[1] for r in results)
        streaming = statistics.median((n_tokens - 1) / (r[1] - r[0]) for r in results)
        return first, end_to_end, streaming

    def row(name: str, mine: tuple, base: tuple | None) -> str:
        first, e2e, streaming = mine
        # Overhead: extra wall time per token delivered, relative to the bare loop.
        rel = [f"{v / b:.2f}x ({(b / v - 1) * 100:+.0f}%)" for v, b in zip((e2e, streaming), base[1:])] if base \
            else ["1.00x", "1.00x"]
        return f"| {name} | {first:.0f} | {e2e:.1f} | {rel[0]} | {streaming:.1f} | {rel[1]} |"

    n = bare[0][2]
    base = rates(bare, n)
    app_threads = args.app_threads if args.app_threads is not None else "the app's default"
    print(f"\n{args.model}, prompt {args.prompt!r}, {n} tokens, seed 0, bare loop {args.threads} threads, "
          f"app threads: {app_threads}, median of {args.runs}\n")
    print("| contender | first token ms | tok/s end to end | vs bare (time per token) | tok/s while streaming "
          "| vs bare (time per token) |\n|---|---:|---:|---:|---:|---:|")
    print(row("bare `workbench.stream` (full capture)", base, None))
    print(row("app via `gradio_client`, every view on", rates(app, n), base))
    views = statistics.median((r[3] - r[1]) * 1000 for r in app)
    print(f"\nAfter the last token, the last frame (every view redrawn at the last step) arrives {views:.0f} ms later.")


if __name__ == "__main__":
    main()
