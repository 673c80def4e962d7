"""How long each lesson takes a student: every solution notebook run top to bottom in a fresh kernel, as a student
runs it (no WORKBENCH_QUICK, no Hugging Face offline switch), one after the other, with the wall time of the whole
notebook and of its slowest cell, and the CPU time the kernel used.

The CPU time is the steadier figure on a shared machine: other work slows the wall clock, much less the CPU seconds
a lesson needs (most lessons compute on one thread, so on an idle machine their wall time is close to it).

Usage: ``python benchmarks/lessons.py [--edition en|zh] [--only NN ...]``; prints a markdown table for the
syllabus (lessons/README.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
sys.path.insert(0, str(ROOT / "tests"))
from nbmake_run import patch_nbclient  # noqa: E402  nbclient's stall after ipywidgets cells, fixed as in the tests


def run(path: Path, timeout: int) -> tuple[float, float, float, str]:
    """(wall seconds for the whole notebook, the kernel's CPU seconds, wall seconds of its slowest cell, the first
    line of that cell)."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=True,
                            resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel():
        kernel = psutil.Process(client.km.provisioner.pid)
        before = sum(kernel.cpu_times()[:2])
        started = time.perf_counter()
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)
        total = time.perf_counter() - started
        cpu = sum(kernel.cpu_times()[:2]) - before
    slowest, line = 0.0, ""
    for cell in notebook.cells:
        timing = cell.metadata.get("execution", {})
        if cell.cell_type == "code" and "shell.execute_reply" in timing:
            start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
            if (end - start).total_seconds() > slowest:
                slowest, line = (end - start).total_seconds(), cell.source.strip().split("\n")[0][:60]
    return total, cpu, slowest, line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edition", choices=["en", "zh"], default="en", help="which edition (default: %(default)s)")
    parser.add_argument("--only", nargs="+", metavar="NN", help="only these lessons, by number (default: all)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds one cell may take (default: %(default)s)")
    args = parser.parse_args()
    patch_nbclient()
    for name in ("WORKBENCH_QUICK", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.pop(name, None)  # as a student runs it
    folder = LESSONS if args.edition == "en" else LESSONS / "zh"
    print("| lesson | whole notebook, wall s | kernel CPU s | slowest cell, wall s | slowest cell |\n"
          "|---|---:|---:|---:|---|")
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        if args.only and path.name[:2] not in args.only:
            continue
        total, cpu, slowest, line = run(path, args.timeout)
        print(f"| {path.stem} | {total:.0f} | {cpu:.0f} | {slowest:.0f} | `{line}` |", flush=True)


if __name__ == "__main__":
    main()
