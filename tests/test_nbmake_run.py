"""The notebook runner of the lesson tests (tests/nbmake_run.py): cells that draw through ``ipywidgets.interact``
never stall the notebook client, and a stall fails the run.

Before the fix, about one ``interact`` cell in 40 left its reply unread in the client's shell socket until the cell's
timeout (jupyter/nbclient#312; see tests/nbmake_run.py for why). 80 such cells stalled at least once in most runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

RUNNER = Path(__file__).resolve().parent / "nbmake_run.py"
CELLS = 80
TIMEOUT_S = 60  # a stall lasts until a cell's timeout; the runner fails one whose reply came 30 s late


def widget_notebook(path: Path) -> Path:
    cells = [new_code_cell("import ipywidgets as widgets\n\ndef show(x=0):\n    print('x is', x)")]
    cells += [new_code_cell(f"widgets.interact(show, x=widgets.IntSlider(value={i}, max={CELLS}));")
              for i in range(CELLS)]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def run(path: Path, *runner: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *runner, "--nbmake", "--overwrite", f"--nbmake-timeout={TIMEOUT_S}", "-q",
           "-p", "no:cacheprovider", "--no-cov", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=path.parent, timeout=600)


def test_interact_cells_run_without_a_stall(tmp_path):
    path = widget_notebook(tmp_path / "widgets.ipynb")
    result = run(path, str(RUNNER))
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-3000:]
    executed = nbformat.read(path, as_version=4)
    # Each slider's function ran and printed; its output went to the Output widget that nbclient stands in for.
    state = executed.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    printed = "".join(o.get("text", "") for w in state.values() for o in w["state"].get("outputs", []))
    assert all(f"x is {i}\n" in printed for i in range(CELLS)), printed[-500:]


def test_runner_replaces_what_it_means_to(monkeypatch):
    from nbclient import NotebookClient
    from nbclient.output_widget import OutputWidget

    sys.path.insert(0, str(RUNNER.parent))
    try:
        import nbmake_run
    finally:
        sys.path.remove(str(RUNNER.parent))
    monkeypatch.setattr(OutputWidget, "_publish_msg", OutputWidget._publish_msg)
    monkeypatch.setattr(NotebookClient, "async_execute_cell", NotebookClient.async_execute_cell)
    nbmake_run.patch_nbclient()
    assert OutputWidget._publish_msg is nbmake_run._publish_msg
    assert NotebookClient.async_execute_cell is nbmake_run._execute_cell_in_time
