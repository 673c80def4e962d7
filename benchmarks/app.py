"""What the app costs: tokens per second that reach a ``gradio_client`` and that a real browser paints, with every
view on, against bare ``workbench.stream`` (full capture, as the app runs it) on the same model, prompt and seed;
the time to the first token each way; and how far the browser's painted views trail the server.

Four contenders, timed in one run of this script:

- bare ``workbench.stream`` in this process, while the app and the browser are idle;
- the app's decoding pool alone (:class:`workbench.batch_server.BatchedPool`, as the app makes it, in this process,
  with the app's view of each step): what decoding in a worker process costs before any server or page;
- the app's public API through ``gradio_client``: tokens count when the client holds them;
- the app in Chromium (Debian's ``/usr/bin/chromium``, headless, driven by Playwright, 1280x720): the settings are
  typed into the page, Generate is clicked, and tokens count when the page has painted them. The page's renderer
  logs every paint (``window.wbPaintLog``: steps shown, the page's clock, state, and the server's wall-clock time
  of its newest step), and every paint redraws every view at the latest step; page and server share this
  machine's clock.

Tokens per second count until the contender holds (or has painted) every token, two ways: end to end (from the
request or the click, so the first-token latency is in it) and while streaming (after the first token). For the
browser also: views painted per second while streaming; the lag, from the server receiving its last step to the
page first painting it; and the first view, from the server receiving the first token to the page painting it.
The client's and the page's text must equal ``workbench.generate``'s for the same seed. For the client, the
frame after the last token, with every view redrawn at the last step, is timed separately.

Where the time goes (on Linux, read from ``/proc``): the CPU seconds that the server, its decoding workers,
Chromium's renderer and Chromium's other processes spend over each browser run, against the run's wall time, and
how long their threads waited for a core. And the decoding worker's CPU time per token with the pool alone,
through the client, and in the browser: the worker does the same work in each, so what it needs more is what the
processes on the other core cost it (on this machine's two cores they share the caches).

The app runs in its own process (``python -m workbench app``), as it would for a class; this process runs the
bare loop and drives the client and the browser. A round runs each contender once, one after the other, and rounds
follow a warm-up round; the tables give medians of the rates, and for the ratios the median (and range) of each
round's ratio, measured seconds apart.

Usage: ``python benchmarks/app.py`` (``--help`` for options; ``--no-browser`` skips the browser). Targets: overhead
<= 25 % and first token <= 300 ms on CPU for the shipped model through the client; in the browser, on a 512-token
run: lag <= 300 ms, painted tokens per second >= 0.9x bare ``stream``, first view <= 300 ms after the first token.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from gradio_client import Client

from workbench import SamplingConfig, generate, load_model, stream
from workbench.app import cpu_threads
from workbench.app.session import step_data
from workbench.batch_server import BatchedPool

SETTINGS = dict(temperature=0.8, top_k=40, top_p=0.95)
CHROMIUM = "/usr/bin/chromium"  # Debian's: `playwright install` cannot download a browser here
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1280, "height": 720}
LAG_TARGET_MS = 300
FIRST_VIEW_TARGET_MS = 300
PAINTED_RATE_TARGET = 0.9  # painted tokens per second over the bare loop's
TARGET_TOKENS = 512  # the lag target is stated for a run of this length


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
    # gradio_client builds a certificate store for each of the two connections a request opens.
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


def time_pool(pool: BatchedPool, tok, prompt: str, cfg: SamplingConfig) -> tuple[float, float, str]:
    """The app's decoding pool alone, each step made into the page's data: (seconds to the first step, total
    seconds, text)."""
    start = time.perf_counter()
    first, ids = 0.0, []
    for data in pool.stream(prompt, cfg, view=step_data):
        if not ids:
            first = time.perf_counter() - start
        ids.append(data["id"])
    return first, time.perf_counter() - start, tok.decode(ids)


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


@dataclass
class BrowserRun:
    """One generation as the page painted it; times in seconds from the click, lags in ms."""

    first: float  # the first paint showing a token
    all_tokens: float  # the first paint showing every token
    paints: int  # paints after the first token's, up to the one showing every token
    lag_ms: float  # the first paint showing every token, after the server received the last step
    first_view_ms: float  # the first paint showing a token, after the server received the newest step it shows
    text: str


class Browser:
    """Chromium on the app's page, with the prompt and settings typed in as a user would."""

    def __init__(self, url: str, prompt: str, cfg: SamplingConfig) -> None:
        from playwright.sync_api import sync_playwright  # only with the browser: --no-browser needs no Playwright

        self._playwright = sync_playwright().start()
        try:
            self._browser = self._playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            self.page = self._browser.new_page(viewport=VIEWPORT, locale="en-US")
            self.errors: list[str] = []  # the page's uncaught errors: reported, as they may explain odd figures
            self.page.on("pageerror", lambda err: self.errors.append(str(err)))
            self.page.goto(url)
            self.page.wait_for_selector(".wb", timeout=60_000)
            self.page.fill("#prompt textarea", prompt)
            for selector, value in (("#max-new-tokens", cfg.max_new_tokens), ("#temperature", cfg.temperature),
                                    ("#top-k", cfg.top_k), ("#top-p", cfg.top_p)):
                number = f"{selector} input[type=number]"
                self.page.fill(number, str(value))
                self.page.press(number, "Enter")  # a slider's number box takes its value on Enter
            self.page.fill("#seed input", str(cfg.seed))
        except BaseException:
            self.close()
            raise

    def run(self, n_tokens: int, timeout_s: float) -> BrowserRun:
        """Click Generate and wait until the page shows the run done; read its paint log."""
        page = self.page
        before = page.evaluate("document.querySelector('.wb').dataset.run || ''")
        # Clear the log and click in one call, with the page's clock: the paint times come from the same clock,
        # and a click from here would add Playwright's round trips and checks to the first-token time.
        click = page.evaluate("""() => {
            window.wbPaintLog.length = 0;
            const t = Date.now();
            document.querySelector('#generate').click();
            return t;
        }""")
        try:
            page.wait_for_function(
                """(before) => {
                    const wb = document.querySelector('.wb');
                    return wb.dataset.run && wb.dataset.run !== before
                        && ['done', 'stopped', 'error'].includes(wb.dataset.state);
                }""",
                arg=before, timeout=timeout_s * 1000, polling=100)  # polled on a timer, not on every frame
        except Exception:
            page.click("#stop")  # so the app does not go on generating while this error ends the script
            raise
        state = page.evaluate("document.querySelector('.wb').dataset.state")
        if state != "done":
            status = page.evaluate("document.querySelector('.wb-status').textContent")
            raise SystemExit(f"the page ended its run as {state!r}: {status}")
        log = page.evaluate("window.wbPaintLog.slice()")
        text = page.evaluate("document.querySelector('.wb-text-gen').textContent")
        # A paint of the previous run (between the clearing and the click's answer) is not this run's: its
        # steps reached the server before the click.
        log = [e for e in log if e[0] == 0 or e[3] >= click]
        first = next((i for i, e in enumerate(log) if e[0] >= 1), None)
        last = next((i for i, e in enumerate(log) if e[0] >= n_tokens), None)
        if first is None or last is None:
            raise SystemExit(f"the page's paint log lacks the run's tokens (length {len(log)}; the page keeps "
                             f"a bounded log): {log[:3]} ... {log[-3:]}")
        t_last_step = log[-1][3]  # the final frame's: when the server received the last step
        return BrowserRun(
            first=(log[first][1] - click) / 1000,
            all_tokens=(log[last][1] - click) / 1000,
            paints=last - first,
            lag_ms=log[last][1] - t_last_step,
            first_view_ms=log[first][1] - log[first][3],
            text=text,
        )

    def profile_scripts(self, runs: int, n_tokens: int, timeout_s: float) -> list[tuple[float, str]]:
        """The page's script time by function over ``runs`` more runs, from Chromium's sampling profiler (every
        200 us): (ms of self time per run, "function file:line"), most first. The profiler slows the page, so these
        runs are not timed."""
        cdp = self.page.context.new_cdp_session(self.page)
        cdp.send("Profiler.enable")
        cdp.send("Profiler.setSamplingInterval", {"interval": 200})
        cdp.send("Profiler.start")
        for _ in range(runs):
            self.run(n_tokens, timeout_s)
        profile = cdp.send("Profiler.stop")["profile"]
        cdp.detach()
        frames = {node["id"]: node["callFrame"] for node in profile["nodes"]}
        spent: dict[str, float] = {}
        for node, us in zip(profile["samples"], profile["timeDeltas"]):
            frame = frames[node]
            name = frame["functionName"] or "(anonymous)"
            where = f" {frame['url'].rsplit('/', 1)[-1]}:{frame['lineNumber'] + 1}" if frame["url"] else ""
            spent[name + where] = spent.get(name + where, 0.0) + us / 1000 / runs
        return sorted(((ms, name) for name, ms in spent.items() if name not in ("(idle)", "(program)")),
                      reverse=True)

    def close(self) -> None:
        browser = getattr(self, "_browser", None)
        if browser is not None:
            browser.close()
        self._playwright.stop()


def process_tree(root: int) -> list[int]:
    """``root`` and every process under it, from Linux's ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:  # it ended while we looked
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds the processes have spent so far (0 for one that has ended)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def waiting_seconds(pids: list[int]) -> float:
    """Seconds the processes' threads have spent runnable but waiting for a core so far (Linux's schedstat; 0 for
    one that has ended): what a run loses to the other processes on the machine, rather than to its own work."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return total / 1e9


def process_groups(server_pid: int) -> dict[str, list[int]]:
    """The processes whose CPU time a browser run is charged: the server, its children (the decoding workers), and
    Chromium's renderer and other processes (this script and Playwright's driver are left out)."""
    server_tree = process_tree(server_pid)
    groups: dict[str, list[int]] = {"server": [server_pid], "decoding workers": server_tree[1:],
                                    "Chromium renderer": [], "Chromium, other processes": []}
    for pid in process_tree(os.getpid())[1:]:
        try:
            # Chromium rewrites its command line as one string, so look for the flag in the whole text.
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pid not in server_tree and "chromium" in command:
            groups["Chromium renderer" if "--type=renderer" in command else "Chromium, other processes"].append(pid)
    return groups


def median(values) -> float | None:
    """The median of the defined values; None when there are none."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def per_second(count: float, seconds: float) -> float | None:
    """``count / seconds``; None when no time passed (every token arrived, or was painted, at once)."""
    return count / seconds if seconds > 0 else None


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shakespeare", help="model to serve (default: %(default)s)")
    parser.add_argument("--prompt", default="ROMEO:", help="prompt (default: %(default)s)")
    parser.add_argument("--new-tokens", type=int, default=TARGET_TOKENS,
                        help="tokens per run, at least 2; the lag target is for %(default)s (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per contender (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads of the bare loop (default: %(default)s)")
    parser.add_argument("--compare-threads", type=int, default=None, metavar="N",
                        help="also time the bare loop on N threads in every round, and give the client's and the "
                             "page's rates against it too (e.g. 1: the app's worker decodes on one thread)")
    parser.add_argument("--app-threads", type=int, default=None,
                        help="the app's --threads (default: the app's own default, 1 for a small model)")
    parser.add_argument("--no-browser", action="store_true",
                        help="skip the browser contender (no Chromium, no Playwright)")
    parser.add_argument("--profile-page", type=int, default=0, metavar="RUNS",
                        help="after the timed rounds, RUNS more browser runs under Chromium's sampling profiler, and "
                             "the page's script time by function (default: none)")
    args = parser.parse_args()
    if args.new_tokens < 2:
        parser.error("--new-tokens must be at least 2 (streaming rates count from the first token)")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.compare_threads is not None and args.compare_threads < 1:
        parser.error("--compare-threads must be at least 1")
    if args.profile_page < 0:
        parser.error("--profile-page must be at least 0")
    if args.profile_page and args.no_browser:
        parser.error("--profile-page needs the browser")
    torch.set_num_threads(args.threads)

    model, tok = load_model(args.model, device="cpu")
    cfg = SamplingConfig(max_new_tokens=args.new_tokens, seed=0, **SETTINGS)
    expected = generate(model, tok, args.prompt, cfg).text
    port = free_port()
    server, client = start_server(args.model, port, args.app_threads, args.new_tokens)
    pool = BatchedPool(model, tok, threads=cpu_threads(model, args.app_threads))  # as the app makes its own
    browser = None
    page_errors: list[str] = []
    try:
        if not args.no_browser:
            browser = Browser(f"http://127.0.0.1:{port}/", args.prompt, cfg)
        bare, alone, app, painted, other_bare = [], [], [], [], []
        on_linux = os.path.isdir("/proc/self")
        groups = process_groups(server.pid) if on_linux else {}
        pool_workers = [child.pid for child in multiprocessing.active_children()] if on_linux else []
        # Per browser run: CPU seconds and seconds waiting for a core of each group, and the run's wall seconds.
        cpu: list[tuple[dict[str, float], dict[str, float], float]] = []
        worker_ms: dict[str, list[float]] = {"pool alone": [], "app via the client": [], "app in Chromium": []}
        for run in range(args.runs + 1):  # run 0 warms up every contender
            b = time_bare(model, tok, args.prompt, cfg)
            if args.compare_threads is not None:
                torch.set_num_threads(args.compare_threads)
                o = time_bare(model, tok, args.prompt, cfg)
                torch.set_num_threads(args.threads)
            worker_before = cpu_seconds(pool_workers)
            d = time_pool(pool, tok, args.prompt, cfg)
            if d[2] != expected:
                raise SystemExit("the pool's text differs from workbench.generate with the same seed")
            if run and on_linux:
                worker_ms["pool alone"].append((cpu_seconds(pool_workers) - worker_before) / b[2] * 1000)
            worker_before = cpu_seconds(groups.get("decoding workers", []))
            a = time_app(client, args.prompt, cfg)
            if a[2] != expected:
                raise SystemExit("the app's text differs from workbench.generate with the same seed")
            if run and groups:
                worker_ms["app via the client"].append(
                    (cpu_seconds(groups["decoding workers"]) - worker_before) / b[2] * 1000)
            if browser is not None:
                # Generous: the page waits for the model, which a busy machine slows down.
                before = {k: (cpu_seconds(v), waiting_seconds(v)) for k, v in groups.items()}
                started = time.perf_counter()
                p = browser.run(b[2], timeout_s=120 + 20 * b[1])
                spent = {k: cpu_seconds(v) - before[k][0] for k, v in groups.items()}
                waited = {k: waiting_seconds(v) - before[k][1] for k, v in groups.items()}
                if p.text != expected:
                    raise SystemExit(f"the page's text differs from workbench.generate with the same seed:\n"
                                     f"page: {p.text!r}\ngenerate: {expected!r}")
            if run:
                bare.append(b)
                if args.compare_threads is not None:
                    other_bare.append(o)
                alone.append(d)
                app.append(a)
                if browser is not None:
                    painted.append(p)
                    if groups:
                        cpu.append((spent, waited, time.perf_counter() - started))
                        worker_ms["app in Chromium"].append(spent["decoding workers"] / b[2] * 1000)
        scripts = browser.profile_scripts(args.profile_page, bare[0][2], 120 + 20 * bare[0][1]) if (
            args.profile_page) else []
    finally:
        if browser is not None:
            page_errors = browser.errors
            browser.close()
        pool.close()
        server.terminate()
        server.wait(timeout=30)

    n = bare[0][2]

    def per_round(results: list[tuple[float, float]]) -> list[tuple[float, float | None]]:
        """Each run's (end-to-end tok/s, tok/s while streaming); ``results`` are (seconds to the first token,
        seconds to every token)."""
        return [(n / r[1], per_second(n - 1, r[1] - r[0])) for r in results]

    bare_rates = per_round([b[:2] for b in bare])
    client_rates = per_round([a[:2] for a in app])
    page_rates = per_round([(p.first, p.all_tokens) for p in painted])  # empty without the browser

    def paired(mine: list[tuple[float, float | None]], which: int,
               base: list[tuple[float, float | None]] | None = None) -> tuple[float | None, float | None, float | None]:
        """Median, lowest and highest of this contender's rate over the bare loop's (or ``base``'s) in the same
        round. A round's runs follow each other within seconds, so a ratio within a round is spared the machine's
        slower drifts (this VM's speed wanders by a quarter over minutes), which a ratio of two medians is not."""
        ratios = [m[which] / b[which] for m, b in zip(mine, base or bare_rates) if m[which] and b[which]]
        return (statistics.median(ratios), min(ratios), max(ratios)) if ratios else (None, None, None)

    def ratio(value: float | None, base: float | None) -> float | None:
        return value / base if value is not None and base else None

    def versus(r: tuple[float | None, float | None, float | None]) -> str:
        return "n/a" if r[0] is None else f"{r[0]:.2f}x ({r[1]:.2f}-{r[2]:.2f})"

    def row(name: str, results: list[tuple[float, float]], base: bool = False) -> str:
        mine = per_round(results)
        first = statistics.median(r[0] for r in results) * 1000
        e2e, streaming = median(m[0] for m in mine), median(m[1] for m in mine)
        rel = ["1.00x", "1.00x"] if base else [versus(paired(mine, 0)), versus(paired(mine, 1))]
        return f"| {name} | {first:.0f} | {e2e:.1f} | {rel[0]} | {fmt(streaming, '.1f')} | {rel[1]} |"

    app_threads = args.app_threads if args.app_threads is not None else "the app's default"
    print(f"\n{args.model}, prompt {args.prompt!r}, {n} tokens, seed 0, bare loop {args.threads} threads, "
          f"app threads: {app_threads}, {args.runs} rounds; rates are medians, ratios the median (and range) of "
          "each round's rate over the bare loop's in that round\n")
    print("| contender | first token ms | tok/s end to end | vs bare, end to end | tok/s while streaming "
          "| vs bare, while streaming |\n|---|---:|---:|---:|---:|---:|")
    print(row("bare `workbench.stream` (full capture)", [b[:2] for b in bare], base=True))
    if other_bare:
        print(row(f"bare `workbench.stream` (full capture), {args.compare_threads} thread(s)",
                  [o[:2] for o in other_bare]))
    print(row("the app's decoding pool alone, the page's data of every step", [d[:2] for d in alone]))
    print(row("app via `gradio_client`, every view on", [a[:2] for a in app]))
    if painted:
        print(row("app in Chromium, tokens painted, every view on", [(p.first, p.all_tokens) for p in painted]))
    if other_bare:
        other_rates = per_round([o[:2] for o in other_bare])
        against = [("client", client_rates)] + ([("browser", page_rates)] if painted else [])
        print(f"\nAgainst the bare loop on {args.compare_threads} thread(s), in the same rounds (end to end / while "
              "streaming): " + ", ".join(f"{name} {versus(paired(rates, 0, other_rates))} / "
                                         f"{versus(paired(rates, 1, other_rates))}" for name, rates in against))
    medians = [(median(m[0] for m in rates), median(m[1] for m in rates)) for rates in
               [bare_rates, client_rates] + ([page_rates] if painted else [])]
    print("\nThe same as a ratio of the median rates (end to end / while streaming): client " + ", browser ".join(
        f"{fmt(ratio(m[0], medians[0][0]), '.2f')}x / {fmt(ratio(m[1], medians[0][1]), '.2f')}x" for m in medians[1:]))
    print("\nEach round's tok/s while streaming (bare, client" + (", browser" if painted else "") + "): " + "; ".join(
        "/".join(fmt(rates[1], ".0f") for rates in round_rates)
        for round_rates in zip(bare_rates, client_rates, *([page_rates] if painted else []))))
    if any(worker_ms.values()):
        print("\nThe decoding worker's CPU ms per token (median), doing the same work in each: "
              + ", ".join(f"{name} {statistics.median(ms):.2f}" for name, ms in worker_ms.items() if ms))
    views = statistics.median((r[3] - r[1]) * 1000 for r in app)
    print(f"\nThrough `gradio_client`, the last frame (every view redrawn at the last step) arrives {views:.0f} ms "
          "after the last token.")
    if not painted:
        return

    lag = statistics.median(p.lag_ms for p in painted)
    first_view = statistics.median(p.first_view_ms for p in painted)
    paint_rate = median(per_second(p.paints, p.all_tokens - p.first) for p in painted)
    e2e_ratio, streaming_ratio = paired(page_rates, 0)[0], paired(page_rates, 1)[0]

    def met(value: float | None, ok) -> str:
        return "n/a" if value is None else "yes" if ok(value) else "no"

    lag_target = f"<= {LAG_TARGET_MS} ms on a {TARGET_TOKENS}-token run"
    lag_met = met(lag, lambda v: v <= LAG_TARGET_MS) if n == TARGET_TOKENS else f"n/a ({n} tokens)"
    print(f"\nIn Chromium (every paint redraws every view at the latest step), medians of {args.runs} rounds:\n")
    print("| browser figure | value | target | met |\n|---|---:|---|---|")
    print(f"| first token painted, ms after the click | {statistics.median(p.first for p in painted) * 1000:.0f} | | |")
    print(f"| lag: last step on the server to its first paint, ms | {lag:.0f} | {lag_target} | {lag_met} |")
    print(f"| first view: first token on the server to its first paint, ms | {first_view:.0f} | "
          f"<= {FIRST_VIEW_TARGET_MS} ms | {met(first_view, lambda v: v <= FIRST_VIEW_TARGET_MS)} |")
    for how, r in (("end to end", e2e_ratio), ("while streaming", streaming_ratio)):
        print(f"| painted tok/s vs bare `stream`, {how} | {fmt(r, '.3f')}{'x' if r is not None else ''} | "
              f">= {PAINTED_RATE_TARGET}x | {met(r, lambda v: v >= PAINTED_RATE_TARGET)} |")
    print(f"| views painted per second while streaming | {fmt(paint_rate, '.1f')} | | |")
    if cpu:
        wall = statistics.median(w for *_, w in cpu)
        print(f"\nWhere the time goes: CPU seconds over a browser run, and seconds its threads were ready to run "
              f"but waited for a core (medians of {len(cpu)}; the run's wall time {wall:.2f} s, {os.cpu_count()} "
              "cores)\n")
        print("| process | CPU s per run | cores busy while it runs | s waiting for a core |\n|---|---:|---:|---:|")
        for name in cpu[0][0]:
            busy = statistics.median(spent[name] / w for spent, _, w in cpu)
            print(f"| {name} | {statistics.median(spent[name] for spent, _, _ in cpu):.2f} | {busy:.2f} | "
                  f"{statistics.median(waited[name] for _, waited, _ in cpu):.2f} |")
    if scripts:
        total = sum(ms for ms, _ in scripts)
        print(f"\nThe page's script time per browser run under the profiler ({args.profile_page} runs; {total:.0f} ms "
              "a run, besides the browser's own style, layout and paint), the functions that took most:\n")
        print("| function | ms per run |\n|---|---:|")
        for ms, name in scripts[:15]:
            print(f"| {name} | {ms:.1f} |")
    if page_errors:
        print(f"\nThe page raised {len(page_errors)} error(s); the first: {page_errors[0]}")


if __name__ == "__main__":
    main()
