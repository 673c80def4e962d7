"""Every code block of the README runs as pasted, offline, on a checkout after `make setup`.

Each ```python block runs in a fresh interpreter, each runnable ```bash block in a fresh `bash -eu`, both from a
temporary working copy of the repository (its `.venv` a link to this one's): a block may write files (the shell
block exports a model into runs/), and a test must never write into the checkout. Hugging Face is offline here
(conftest.py), as on a machine without internet.

Three kinds of block are not run as pasted, each for a reason this file states:

* a block whose first line is ``# needs internet: ...`` (it downloads from the hub) is skipped, and such blocks are
  exactly the ones that name a hub id;
* a block whose first line is ``# needs the app running: ...`` runs against the app this test starts as `make app`
  does (``python -m workbench app``), on a free port instead of 7860: the one address in the block is replaced;
* shell commands in :data:`SHELL_SKIPS` (servers, the whole test suite, training runs, installs) are skipped with
  the reason given there. Any other `make` command fails the test: every target first runs `make setup`, which
  could reinstall the real .venv from a copy.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
INTERNET = "# needs internet:"
NEEDS_APP = "# needs the app running:"
APP_ADDRESS = "http://127.0.0.1:7860/"  # where `make app` serves; the app block's one address
TIMEOUT = 600  # seconds a block may take; they take under a minute each on 2 busy cores

# A command of a shell block (as its line starts) -> why this test does not run it.
SHELL_SKIPS = {
    "make app": "serves the app until stopped (tests/test_app.py serves it)",
    "make test": "the whole test suite, this file included",
    "make lab": "serves JupyterLab until stopped",
    "make exercises": "rewrites the generated notebooks (tests/test_lessons.py checks they are in sync)",
    "make handout": "builds dist/handout.zip from the notebooks (tests/test_handout.py builds it)",
    "make setup": "installs torch from a wheel index: needs internet, and replaces .venv's torch",
    "make train-default": "trains the shipped model: over an hour on 2 CPU cores",
    ".venv/bin/python -m workbench train --preset tiny-char": "trains for minutes (tests/test_train.py trains)",
    "torchrun": "data-parallel training in two processes, for minutes",
}

# Names of the GPT-2 checkpoints on the hub, and an owner/name id (a local path starting with a folder of the
# repository or runs/ is not one).
_GPT2_IDS = re.compile(r"(openai-community/)?(distil)?gpt2(-medium|-large|-xl)?")
_OWNER_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_QUOTED = re.compile(r"""["']([^"'\s]+)["']""")
_MODEL_ARG = re.compile(r"--model[ =]([^\s]+)")


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # where the block's first line is in README.md

    @property
    def id(self) -> str:
        return f"{self.lang}-line{self.line}"

    @property
    def first_line(self) -> str:
        return self.code.lstrip().split("\n", 1)[0]


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block of ``text``, in order."""
    blocks, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        if lines[i].startswith("```"):
            lang, start = lines[i][3:].strip(), i + 1
            end = next(j for j in range(start, len(lines)) if lines[j].startswith("```"))
            blocks.append(Block(lang, "\n".join(lines[start:end]) + "\n", start + 1))
            i = end
        i += 1
    return blocks


def hub_ids(code: str) -> list[str]:
    """The hub ids ``code`` names: quoted strings and ``--model`` arguments that are model ids, not local paths."""
    found = []
    for word in _QUOTED.findall(code) + _MODEL_ARG.findall(code):
        word = word.strip("\"'")
        local = (ROOT / word.split("/")[0]).exists() or word.startswith("runs/")
        if _GPT2_IDS.fullmatch(word) or (_OWNER_NAME.fullmatch(word) and not local):
            found.append(word)
    return found


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
PYTHON = [b for b in BLOCKS if b.lang == "python"]
SHELL = [b for b in BLOCKS if b.lang == "bash"]


def test_hub_id_finder_tells_ids_from_paths():
    """The finder the marking rule below rests on: it must see the ids and nothing else, or that rule proves nothing."""
    assert hub_ids('load_model("gpt2"); GPT.from_hf("openai-community/gpt2-medium")') == [
        "gpt2", "openai-community/gpt2-medium"]
    assert hub_ids("python -m workbench generate --model gpt2 --prompt 'Hello'") == ["gpt2"]
    assert hub_ids('load_model("Qwen/Qwen2.5-0.5B")') == ["Qwen/Qwen2.5-0.5B"]
    assert hub_ids('load_model("shakespeare"); Client("http://127.0.0.1:7860/"); x = "ROMEO:"') == []
    assert hub_ids("--model runs/shakespeare-hf --export assets/models/shakespeare") == []


def test_readme_has_only_python_and_shell_blocks():
    """So that every block is one this file runs or skips for a stated reason."""
    assert {b.lang for b in BLOCKS} == {"python", "bash"}
    assert len(PYTHON) >= 3 and len(SHELL) >= 5


def test_blocks_marked_as_needing_internet_are_exactly_those_naming_a_hub_id():
    marked = {b.id for b in BLOCKS if b.first_line.startswith(INTERNET)}
    naming = {b.id: hub_ids(b.code) for b in BLOCKS if hub_ids(b.code)}
    assert naming, "the README names no hub id: the marking rule is not exercised"
    assert marked == set(naming), (
        f"marked {sorted(marked)}, naming a hub id {naming}: mark a block that downloads with a first line "
        f"'{INTERNET} downloads <id> ...', and only those"
    )


@pytest.fixture(scope="module")
def working_copy(tmp_path_factory) -> Path:
    """A copy of the repository to run blocks in (what they write stays there); .venv is linked, not copied."""
    copy = tmp_path_factory.mktemp("readme") / "repo"
    skip = shutil.ignore_patterns(".git", ".venv", "runs", "dist", "__pycache__", ".pytest_cache", "*.egg-info",
                                  ".coverage", "htmlcov", ".ipynb_checkpoints")
    shutil.copytree(ROOT, copy, ignore=skip, symlinks=True)
    (copy / ".venv").symlink_to(ROOT / ".venv")
    return copy


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, env=os.environ.copy())
    assert out.returncode == 0, (
        f"exit {out.returncode}\n--- stdout\n{out.stdout[-3000:]}\n--- stderr\n{out.stderr[-3000:]}")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_address(working_copy):
    """The app as `make app` serves it (`python -m workbench app`, the shipped model), on a free port."""
    import httpx

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "workbench", "app", "--port", str(port)], cwd=working_copy,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    address = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 300  # a failsafe for a server that never starts, not a timing assertion
        while True:
            try:
                if httpx.get(address, timeout=10).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the app did not start:\n{server.communicate(timeout=30)[0][-3000:]}")
            time.sleep(0.5)
        yield address
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)  # Ctrl+C, as in the terminal running `make app`
            try:
                server.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.communicate()


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_block_runs_as_pasted(block, working_copy, request):
    if block.first_line.startswith(INTERNET):
        pytest.skip(f"README line {block.line}: {block.first_line.removeprefix('# ')}")
    code = block.code
    if block.first_line.startswith(NEEDS_APP):
        assert code.count(APP_ADDRESS) == 1, f"the app block should name the app once, at {APP_ADDRESS}"
        code = code.replace(APP_ADDRESS, request.getfixturevalue("app_address"))
    run([sys.executable, "-c", code], working_copy)


@pytest.mark.parametrize("block", SHELL, ids=[b.id for b in SHELL])
def test_shell_block_runs_as_pasted_or_is_skipped_for_a_stated_reason(block, working_copy):
    if block.first_line.startswith(INTERNET):
        pytest.skip(f"README line {block.line}: {block.first_line.removeprefix('# ')}")
    commands = [line.strip() for line in block.code.split("\n") if line.strip() and not line.strip().startswith("#")]
    reasons = {line: next((why for cmd, why in SHELL_SKIPS.items() if line.startswith(cmd)), None) for line in commands}
    unknown_make = [line for line, why in reasons.items() if why is None and line.startswith("make")]
    assert not unknown_make, f"add these to SHELL_SKIPS with the reason they are not run: {unknown_make}"
    skipped = {line: why for line, why in reasons.items() if why}
    if skipped:
        assert len(skipped) == len(commands), (
            f"README line {block.line} mixes commands this test runs with ones it skips: split the block")
        pytest.skip("; ".join(f"`{line.split('  #')[0].strip()}`: {why}" for line, why in skipped.items()))
    run(["bash", "-euo", "pipefail", "-c", block.code], working_copy)
