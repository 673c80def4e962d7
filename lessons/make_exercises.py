"""Write the student version of every lesson: each solution block becomes a stub.

The solution notebooks (``lessons/NN_topic.ipynb``) are the source. In their code cells, the lines from
``### BEGIN SOLUTION`` to ``### END SOLUTION`` (inclusive) are replaced by one line,
``raise NotImplementedError  # your code here``, indented like the BEGIN line, so function signatures stay and the
check that follows reports "not implemented yet". Outputs are cleared. Never edit the student versions by hand:
run ``make exercises`` (or ``python lessons/make_exercises.py [--out DIR]``).
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
BANNER = (
    "> **Exercise version.** Write your code where a cell says `# your code here`, then run the check below it. "
    "This file is generated from the solution notebook `../{name}` by `make exercises`; edits here are overwritten."
)


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


def student_version(solution: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """A copy of ``solution`` with solutions stubbed, outputs cleared and a banner cell first."""
    notebook = copy.deepcopy(solution)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs = []
            cell.execution_count = None
    notebook.cells.insert(0, nbformat.v4.new_markdown_cell(BANNER.format(name=name)))
    for number, cell in enumerate(notebook.cells):
        cell.id = str(number)  # sequential ids, as nbstripout writes them, so the file is already stripped
    return notebook


def write_exercises(out_dir: Path) -> list[Path]:
    """Write the student version of every solution notebook into ``out_dir``; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(LESSONS.glob("[0-9][0-9]_*.ipynb")):
        solution = nbformat.read(path, as_version=4)
        target = out_dir / path.name
        nbformat.write(student_version(solution, path.name), target)
        written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=LESSONS / "exercises", help="where to write (default: %(default)s)")
    args = parser.parse_args()
    for path in write_exercises(args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
