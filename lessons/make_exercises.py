"""Write every generated edition of the lessons from the solution notebooks: the English student version, and the
简体中文 edition (solution and student version).

The English solution notebooks (``lessons/NN_topic.ipynb``) are the one source:

- **Student versions.** In code cells, the lines from ``### BEGIN SOLUTION`` to ``### END SOLUTION`` (inclusive)
  are replaced by one line, ``raise NotImplementedError  # your code here``, indented like the BEGIN line, so
  function signatures stay and the check that follows reports "not implemented yet".
- **简体中文 edition.** Each markdown cell carries its Chinese text in ``cell.metadata["zh"]``; the Chinese
  notebook takes that text and keeps every code cell as it is, so the two editions run the same code and cannot
  drift. One generated code cell first, ``checks.use_language("zh")``, makes the checks speak Chinese.

Outputs are cleared and cell ids numbered, so every file written is already stripped. Never edit the generated
notebooks by hand: run ``make exercises`` (or ``python lessons/make_exercises.py [--root DIR]``).

Layout under ``--root`` (default: ``lessons/``): ``exercises/NN_topic.ipynb``, ``zh/NN_topic.ipynb`` and
``zh/exercises/NN_topic.ipynb``.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import nbformat

LESSONS = Path(__file__).resolve().parent
BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB = "raise NotImplementedError  # your code here"
ZH = "zh"  # the metadata key of a markdown cell's Chinese text
BANNERS = {
    ("en", "student"): (
        "> **Exercise version.** Write your code where a cell says `# your code here`, then run the check below it. "
        "This file is generated from the solution notebook `../{name}` by `make exercises`; edits here are "
        "overwritten."
    ),
    ("zh", "solution"): (
        "> **简体中文版（含参考答案）。** 本笔记本由英文版 `../{name}` 生成（`make exercises`），代码与英文版完全相同；"
        "在这里的修改会被覆盖。练习版见 `exercises/{name}`。"
    ),
    ("zh", "student"): (
        "> **练习版。** 在写着 `# your code here` 的地方写代码，然后运行它下面的检查。本笔记本由英文版 `../../{name}` "
        "生成（`make exercises`）；在这里的修改会被覆盖。"
    ),
}
LANGUAGE_CELL = 'from workbench import checks\n\nchecks.use_language("zh")  # 检查的结论和提示用中文'


def strip_solutions(source: str) -> str:
    """``source`` with every solution block replaced by an indented stub line."""
    out: list[str] = []
    inside = False
    for line in source.split("\n"):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"nested {BEGIN!r}")
            inside = True
            out.append(line[: len(line) - len(line.lstrip())] + STUB)
        elif marker == END:
            if not inside:
                raise ValueError(f"{END!r} without {BEGIN!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN!r} without {END!r}")
    return "\n".join(out)


def untranslated(solution: nbformat.NotebookNode) -> list[int]:
    """Indices of the markdown cells that carry no Chinese text."""
    return [i for i, cell in enumerate(solution.cells)
            if cell.cell_type == "markdown" and not cell.metadata.get(ZH, "").strip()]


def edition(solution: nbformat.NotebookNode, name: str, language: str, student: bool) -> nbformat.NotebookNode:
    """A generated edition of ``solution``: in ``language`` ("en" or "zh"), the solutions stubbed when ``student``.

    Raises ValueError for a Chinese edition when a markdown cell has no Chinese text."""
    notebook = copy.deepcopy(solution)
    if language == "zh" and (missing := untranslated(solution)):
        raise ValueError(f"{name}: markdown cells {missing} have no metadata['{ZH}']")
    for cell in notebook.cells:
        if cell.cell_type == "code":
            if student:
                cell.source = strip_solutions(cell.source)
            cell.outputs = []
            cell.execution_count = None
        elif language == "zh":
            cell.source = cell.metadata[ZH]
        cell.metadata.pop(ZH, None)
    head = [nbformat.v4.new_markdown_cell(BANNERS[(language, "student" if student else "solution")].format(name=name))]
    if language == "zh":
        head.append(nbformat.v4.new_code_cell(LANGUAGE_CELL))
    notebook.cells[:0] = head
    for number, cell in enumerate(notebook.cells):
        cell.id = str(number)  # sequential ids, as nbstripout writes them, so the file is already stripped
    return notebook


def student_version(solution: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The English student version of ``solution``."""
    return edition(solution, name, "en", student=True)


def write_editions(root: Path, only: list[str] | None = None) -> list[Path]:
    """Write every generated edition of every solution notebook (or of the lessons numbered in ``only``) under
    ``root``; return the paths written. A lesson not yet fully translated gets no Chinese edition (and is named on
    stderr)."""
    import sys

    written = []
    for path in sorted(LESSONS.glob("[0-9][0-9]_*.ipynb")):
        if only and path.name[:2] not in only:
            continue
        solution = nbformat.read(path, as_version=4)
        targets = [(root / "exercises" / path.name, "en", True)]
        if untranslated(solution):
            print(f"{path.name}: not fully translated (markdown cells {untranslated(solution)}), no Chinese edition",
                  file=sys.stderr)
        else:
            targets += [(root / "zh" / path.name, "zh", False), (root / "zh" / "exercises" / path.name, "zh", True)]
        for target, language, student in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(edition(solution, path.name, language, student), target)
            written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=LESSONS,
                        help="where the editions go: ROOT/exercises, ROOT/zh, ROOT/zh/exercises (default: %(default)s)")
    parser.add_argument("--only", nargs="+", metavar="NN", help="only these lessons, by number (default: all)")
    args = parser.parse_args()
    for path in write_editions(args.root, args.only):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
