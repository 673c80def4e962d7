"""`make handout`: the students' zip holds every student notebook of both editions and what they need, and no
solution."""

import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"


def test_handout_holds_the_student_notebooks_and_runs_the_shipped_model(tmp_path):
    out = tmp_path / "handout.zip"
    subprocess.run([sys.executable, str(LESSONS / "make_handout.py"), "--out", str(out)], check=True,
                   capture_output=True)
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "x")
    (top,) = {n.split("/")[0] for n in names}
    course = tmp_path / "x" / top
    expected = {f"lessons/{p.name}" for p in (LESSONS / "exercises").glob("[0-9][0-9]_*.ipynb")}
    expected |= {f"lessons/zh/{p.name}" for p in (LESSONS / "zh" / "exercises").glob("[0-9][0-9]_*.ipynb")}
    notebooks = {str(p.relative_to(course)) for p in course.rglob("*.ipynb")}
    assert notebooks == expected and len(expected) >= 14
    for path in course.rglob("*.ipynb"):
        sources = "".join(c.source for c in nbformat.read(path, as_version=4).cells)
        assert "### BEGIN SOLUTION" not in sources and "your code here" in sources, path
    for needed in ("README.md", "pyproject.toml", "Makefile", "workbench/model.py", "workbench/checks/quiz.py",
                   "workbench/app/static/viewer.js", "lessons/zh/GLOSSARY.md"):
        assert (course / needed).is_file(), needed
    # The unpacked course imports its own package and loads its own copy of the shipped model.
    code = ("import workbench, pathlib; from workbench import load_model; m, t = load_model('shakespeare'); "
            "print(pathlib.Path(workbench.__file__).resolve().parent.parent, m.config.n_layer, len(t.encode('ROMEO:')))")
    shown = subprocess.run([sys.executable, "-c", code], cwd=course, capture_output=True, text=True, check=True)
    where, n_layer, n_ids = shown.stdout.split()
    assert Path(where) == course.resolve() and int(n_layer) > 0 and int(n_ids) > 0
