"""The benchmark scripts report what they ran: their tables follow from the runs they made.

Each script's ``main()`` runs here on tiny shapes with its clock replaced by scripted durations (the real work still
runs), so that every number it prints can be checked exactly: tokens/s is the tokens actually generated (or trained
on) over the median of the scripted times, each ratio is the ratio of those times, and the table has one row per
contender that ran, labelled with what ran. Nothing here measures speed.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2LMHeadModel

from workbench.native import native_status

ROOT = Path(__file__).resolve().parent.parent


def load_script(name: str):
    """A benchmarks/ script as a module (they are scripts, not a package), imported afresh for each test."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table(out: str, header: str) -> dict[str, list[str]]:
    """The rows of the markdown table under the header line starting with ``header``: first cell -> other cells."""
    lines = out.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = {}
    for line in itertools.takewhile(lambda s: s.startswith("|"), lines[start + 2 :]):  # after the header and ---
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def number(cell: str) -> float:
    """A table cell as a number: '1,234' -> 1234.0, '2.50x' -> 2.5, '31%' -> 31.0."""
    return float(cell.replace(",", "").rstrip("x%"))


def gpt2_params(vocab: int, positions: int, width: int, layers: int) -> int:
    """GPT-2's parameter count with the unembedding tied to the token embedding, counted here from its parts."""
    block = 2 * width + (width * 3 * width + 3 * width) + (width * width + width)  # ln_1, c_attn, attn c_proj
    block += 2 * width + (width * 4 * width + 4 * width) + (4 * width * width + width)  # ln_2, c_fc, mlp c_proj
    return vocab * width + positions * width + layers * block + 2 * width  # wte, wpe, blocks, ln_f


# ------------------------------------------------------------------------------------ benchmarks/generate.py

GENERATE_CONTENDERS = [  # in the order the script runs them, with --native-ablation
    "prefill ours", "prefill HF", "(a) ours, no capture", "(b) ours, full capture", "(c) HF generate",
    "(d) HF generate + attentions", "(a') ours, no capture, oneDNN GEMV", "(b') ours, full capture, oneDNN GEMV",
]
# The scripted median seconds of each contender, and each run's factor: the median of (1, 5, 2) is 2, the mean is
# not, so a script reporting means or minima gives other numbers.
GENERATE_MEDIANS = [0.004, 0.010, 0.016, 0.020, 0.032, 0.040, 0.020, 0.025]
RUN_FACTORS = [0.5, 2.5, 1.0]


def test_generate_benchmark_reports_the_tokens_it_generated_over_its_median_times(monkeypatch, capsys):
    bench = load_script("generate")
    n_new, prompt_len, vocab, width, layers = 4, 8, 100, 32, 1
    runs, k = len(RUN_FACTORS), len(GENERATE_CONTENDERS)

    timed_calls = itertools.count()
    real_timed = bench.timed

    def scripted_timed(fn) -> float:
        # The contenders' timed runs come first, run after run, in contender order; later calls (the breakdown's
        # own medians) keep the real clock.
        i = next(timed_calls)
        if i >= runs * k:
            return real_timed(fn)
        fn()
        run, contender = divmod(i, k)
        return GENERATE_MEDIANS[contender] * RUN_FACTORS[run]

    made: list[int] = []  # the tokens each call of either side actually generated

    def counting_generate(*args, **kwargs):
        out = real_generate(*args, **kwargs)
        made.append(len(out.token_ids))
        return out

    def counting_hf_generate(self, inputs, *args, **kwargs):
        out = real_hf_generate(self, inputs, *args, **kwargs)
        sequences = out.sequences if kwargs.get("return_dict_in_generate") else out
        made.append(sequences.shape[1] - inputs.shape[1])
        return out

    real_generate, real_hf_generate = bench.generate, GPT2LMHeadModel.generate
    weight_bytes = 4 * gpt2_params(vocab, 1024, width, layers)  # the script's models have 1024 positions
    monkeypatch.setattr(bench, "timed", scripted_timed)
    monkeypatch.setattr(bench, "generate", counting_generate)
    monkeypatch.setattr(GPT2LMHeadModel, "generate", counting_hf_generate)
    monkeypatch.setattr(bench, "copy_bandwidth", lambda: 1000.0 * weight_bytes)  # a floor of 1000 tok/s
    monkeypatch.setattr(bench, "fp32_matmul_flops", lambda: 150e9)
    monkeypatch.setattr(sys, "argv", [
        "generate.py", "--runs", str(runs), "--layers", str(layers), "--width", str(width), "--heads", "2",
        "--vocab", str(vocab), "--prompt-len", str(prompt_len), "--new-tokens", str(n_new), "--breakdown",
        "--native-ablation", "--threads", str(torch.get_num_threads())])
    bench.main()
    out = capsys.readouterr().out

    # Every generation, timed or not, on both sides, made the tokens the table divides by.
    assert len(made) >= runs * 6 and set(made) == {n_new}, made
    median = dict(zip(GENERATE_CONTENDERS, GENERATE_MEDIANS))
    assert "bandwidth floor 1000.0 tok/s" in out  # the weights' bytes counted right
    assert f"native GEMV: {native_status()}" in out

    prefill = table(out, f"| prefill 1x{prompt_len} |")
    assert list(prefill) == ["prefill ours", "prefill HF"]
    for name, (ms, vs_hf) in prefill.items():
        assert number(ms) == pytest.approx(1e3 * median[name], abs=0.05)
        assert number(vs_hf) == pytest.approx(median["prefill HF"] / median[name], abs=0.005)

    decode = table(out, f"| decode {n_new} tokens after {prompt_len} |")
    assert list(decode) == GENERATE_CONTENDERS[2:]  # one row per decoding contender that ran, no other
    for name, (tok_s, vs_c, floor) in decode.items():
        assert number(tok_s) == pytest.approx(n_new / median[name], abs=0.05)
        assert number(vs_c) == pytest.approx(median["(c) HF generate"] / median[name], abs=0.005)
        assert number(floor) == pytest.approx(100 * (n_new / median[name]) / 1000.0, abs=0.5)

    # The breakdown's bound uses the same medians, per token.
    a_ms, hf_ms = 1e3 * median["(a) ours, no capture"] / n_new, 1e3 * median["(c) HF generate"] / n_new
    assert f"(a) takes {a_ms:.1f} ms/token and HF {hf_ms:.1f}" in out
    steps = table(out, "| one decoding step at position")
    one_row = number(next(v for k, v in steps.items() if k.startswith("unembedding, 1 row"))[0])
    lens_rows = number(next(v for k, v in steps.items() if k.startswith(f"unembedding, {2 * layers} rows"))[0])
    best_b, at_most = map(float, re.search(r"= ([\d.]+) ms/token -> at most ([\d.]+)x HF", out).groups())
    assert best_b == pytest.approx(a_ms + lens_rows - one_row, abs=0.06)
    assert at_most == pytest.approx(hf_ms / best_b, rel=0.02)


# --------------------------------------------------------------------------------------- benchmarks/train.py


class ScriptedClock:
    """A clock that moves only when a training step runs, by the next of a cycle of durations per contender. With
    a cycle of 3 and 3 timed steps, every contender's median is its cycle's median, whatever the warm-up count."""

    def __init__(self, cycles: dict[bool, list[float]]):
        self.now = 0.0
        self.cycles = {hf: itertools.cycle(c) for hf, c in cycles.items()}

    def perf_counter(self) -> float:
        return self.now

    def advance(self, hf: bool) -> None:
        self.now += next(self.cycles[hf])


def run_train_script(monkeypatch, capsys, argv: list[str], cycles: dict[bool, list[float]]):
    """benchmarks/train.py's main() with ``argv``, on the scripted clock; returns its output and, per step function it
    built, (ours or HF, the model, the batch's input ids)."""
    bench = load_script("train")
    clock = ScriptedClock(cycles)
    built: list[tuple[bool, torch.nn.Module, torch.Tensor]] = []
    real_step_fn = bench.step_fn

    def scripted_step_fn(model, optimizer, x, y, hf, autocast):
        step = real_step_fn(model, optimizer, x, y, hf, autocast)
        built.append((hf, model, x))

        def timed_step() -> None:
            step()  # the real training step runs; only its duration is scripted
            clock.advance(hf)

        return timed_step

    monkeypatch.setattr(bench, "step_fn", scripted_step_fn)
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    monkeypatch.setattr(bench, "keep_freed_memory", lambda: None)  # process-wide: not in the test process
    monkeypatch.setattr(sys, "argv", ["train.py", *argv, "--threads", str(torch.get_num_threads())])
    bench.main()
    return capsys.readouterr().out, built


def test_train_benchmark_row_is_the_config_it_trained_at_its_median_speeds(monkeypatch, capsys):
    ours_cycle, hf_cycle = [0.010, 0.050, 0.020], [0.030, 0.015, 0.090]
    out, built = run_train_script(monkeypatch, capsys, ["--steps", "3", "--only", "tiny (lessons)"],
                                  {False: ours_cycle, True: hf_cycle})
    assert [hf for hf, _, _ in built] == [False, True]  # one config: our step and HF's
    (_, ours, x), (_, hf_model, hf_x) = built
    assert torch.equal(x, hf_x)  # the same batch on both sides
    c = ours.config
    assert hf_model.config.n_layer == c.n_layer and hf_model.config.n_embd == c.n_embd
    rows = table(out, "| config | ours tok/s |")
    assert len(rows) == 1  # --only: one row, and it names the config that ran
    label, (ours_tps, hf_tps, ratio) = next(iter(rows.items()))
    assert label == f"tiny (lessons): {c.n_layer}x{c.n_head}x{c.n_embd}, ctx {x.shape[1]}, batch {x.shape[0]}"
    tokens = x.numel()  # tokens per step, as trained
    ours_s, hf_s = statistics.median(ours_cycle), statistics.median(hf_cycle)
    assert number(ours_tps) == pytest.approx(tokens / ours_s, abs=0.5)
    assert number(hf_tps) == pytest.approx(tokens / hf_s, abs=0.5)
    assert number(ratio) == pytest.approx(hf_s / ours_s, abs=0.005)


def test_train_benchmark_step_ms_prints_our_default_config_step_in_ms(monkeypatch, capsys):
    # What each child process of --ablations runs and reports (the full --ablations takes minutes). One timed step
    # (after the warm-ups): the median itself is checked above; here, which step and which unit.
    out, built = run_train_script(monkeypatch, capsys, ["--steps", "1", "--step-ms"], {False: [1.234]})
    assert len(built) == 1 and not built[0][0]  # our step only
    _, model, x = built[0]
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.block_size, c.vocab_size) == (6, 6, 192, 256, 4096)  # the default
    assert tuple(x.shape) == (16, 256)
    assert float(out.split()[-1]) == pytest.approx(1234.0, abs=0.05)


# ----------------------------------------------------------------------------------- benchmarks/neighbour.py

def test_neighbour_benchmark_gives_each_cases_median_and_its_ratio_to_alone_round_by_round(monkeypatch, capsys):
    neighbour = load_script("neighbour")
    if len(neighbour.os.sched_getaffinity(0)) < 2:
        pytest.skip("the benchmark needs two cores")
    scripted = iter([9.0, 2.0, 3.0, 4.0, 4.0, 4.0, 6.0])  # the warm-up; then per round: alone, spinning, streaming
    started: list = []
    real_popen = neighbour.subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(neighbour.subprocess, "Popen", popen)
    running = []  # per generation: the neighbour running meanwhile, and the cores it may run on

    def fake_generation(*_):
        last = started[-1] if started and started[-1].poll() is None else None
        running.append(None if last is None else neighbour.os.sched_getaffinity(last.pid))
        return next(scripted)

    monkeypatch.setattr(neighbour, "ms_per_token", fake_generation)
    monkeypatch.setattr(neighbour, "load_model", lambda *a, **k: (None, None))
    affinity = neighbour.os.sched_getaffinity(0)
    monkeypatch.setattr(sys, "argv", ["neighbour.py", "--rounds", "2"])
    try:
        neighbour.main()
    finally:
        neighbour.os.sched_setaffinity(0, affinity)  # main() pins this process to one core
    rows = table(capsys.readouterr().out, "| the decoding loop")
    other = sorted(affinity)[1]
    assert running == [None] + [None, {other}, {other}] * 2  # each neighbour on the other core, and only in its case
    assert all(process.poll() is not None for process in started)  # and stopped after it
    assert list(rows) == ["alone", "beside a process that spins", "beside a process streaming 64 MB"]
    assert rows["alone"] == ["3.000", "1.00x (1.00-1.00)"]
    assert rows["beside a process that spins"] == ["3.500", "1.25x (1.00-1.50)"]
    assert rows["beside a process streaming 64 MB"] == ["5.000", "1.75x (1.50-2.00)"]
