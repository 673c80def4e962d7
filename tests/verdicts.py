"""What every planted-mistake test of the lesson checks asserts: one verdict line, and which one."""

from __future__ import annotations

from typing import Any, Callable

import pytest


def verdict(capsys: pytest.CaptureFixture[str], check: Callable[[Any], bool], student: Any) -> tuple[bool, str]:
    """Run ``check(student)``; return its result and the one verdict line it printed."""
    ok = check(student)
    out = capsys.readouterr().out
    assert sum(out.count(mark) for mark in "✓✗○") == 1, f"exactly one verdict expected: {out!r}"
    return ok, out


def not_implemented(*args: Any, **kwargs: Any) -> Any:
    """A student's function (or class) before any code is written."""
    raise NotImplementedError


def assert_names_mistake(capsys: pytest.CaptureFixture[str], check: Callable[[Any], bool], wrong: Any,
                         hint: str) -> None:
    """The check fails ``wrong`` with ✗ and the hint of its planted mistake, never a traceback."""
    ok, out = verdict(capsys, check, wrong)
    assert not ok and out.startswith("✗"), out
    assert hint in out, out
    assert "Traceback" not in out
