"""The benchmark scripts run end to end (on tiny shapes: this checks they work, it times nothing)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generate_benchmark_runs_on_a_tiny_model():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "generate.py"), "--runs", "1", "--layers", "1", "--width", "32",
         "--heads", "2", "--vocab", "100", "--prompt-len", "8", "--new-tokens", "4", "--breakdown",
         "--native-ablation"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    for row in ("prefill ours", "(a) ours, no capture", "(b) ours, full capture", "(c) HF generate",
                "(d) HF generate + attentions", "bandwidth floor", "blocks, capture", "unembedding, 2 rows",
                "at most", "(b') ours, full capture, oneDNN GEMV", "native GEMV: on"):
        assert row in out.stdout


def test_train_benchmark_runs():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train.py"), "--steps", "1", "--only", "tiny (lessons)"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| tiny (lessons)" in out.stdout and "x |" in out.stdout


def test_train_benchmark_step_ms_prints_our_default_step_time():
    # What each child process of --ablations runs (the full --ablations takes minutes: default-config steps).
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train.py"), "--steps", "1", "--step-ms"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[-1]) > 0
