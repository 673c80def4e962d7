"""The package's shape: every module imports, no import runs in a circle, model.py stands on torch alone, no module
is over 500 lines, the module map in docs/ARCHITECTURE.md names every module, and README's links stay inside the
repository."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "workbench"
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """Every module that ``path`` imports, at the top or inside a function, as the dotted names it resolves to."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package this module sits in
                package = module_name(path).split(".")
                package = package if path.name == "__init__.py" else package[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # `from workbench import native` imports the module workbench.native; `from x import name`, x itself
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in SOURCES else base for a in node.names}
    return found


GRAPH = {name: {m for m in imports_of(path) if m in SOURCES and m != name} for name, path in SOURCES.items()}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_no_import_runs_in_a_circle():
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name):] + [name]
            pytest.fail("import circle: " + " -> ".join(cycle))
        if name in done:
            return
        for imported in sorted(GRAPH[name]):
            visit(imported, path + [name])
        done.add(name)

    for name in sorted(GRAPH):
        visit(name, [])


def test_the_model_imports_only_torch():
    imported = {name.split(".")[0] for name in imports_of(PACKAGE / "model.py")}
    assert imported - set(sys.stdlib_module_names) == {"torch"}


def test_every_gpt_has_the_methods_bound_by_the_package_even_when_only_the_model_is_imported():
    code = ("import torch; from workbench.model import GPT, GPTConfig; "
            "m = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=4)); "
            "logits, trace = m.run_with_trace(torch.zeros(1, 3, dtype=torch.long)); "
            "assert trace.attention.shape == (1, 1, 1, 3, 3); "
            "assert GPT.from_hf(m.to_hf()).config == m.config")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_no_module_is_over_500_lines():
    long = {name: n for name, path in SOURCES.items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_files_are_made_atomically_in_one_place():
    makers = [name for name, path in SOURCES.items() if "mkstemp" in path.read_text(encoding="utf-8")]
    assert makers == ["workbench.files"]


def test_the_module_map_names_every_module():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named = set(re.findall(r"[\w/]+\.py", text))
    # the quizzes' answer keys are one module per lesson, named together as lesson_NN.py
    unnamed = [str(p.relative_to(PACKAGE)) for p in SOURCES.values()
               if str(p.relative_to(PACKAGE)) not in named and not re.fullmatch(r"lesson_\d\d\.py", p.name)]
    assert not unnamed, f"docs/ARCHITECTURE.md does not name {unnamed}"
    assert "checks/quizzes/lesson_NN.py" in named


def test_readme_links_stay_inside_the_repository():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(\s*<?([^)\s>]+)", text) + re.findall(r"^\[[^\]]+\]:\s*(\S+)", text, re.MULTILINE)
    targets += re.findall(r"""(?:href|src)=["']([^"']+)""", text)
    outside = [t for t in targets if not t.startswith(("http://", "https://", "#"))
               if not (ROOT / t.split("#")[0]).resolve().is_relative_to(ROOT)]
    assert targets and not outside, outside
