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


def planted_mistake_test(planted: list[tuple[Callable[[Any], bool], Any, str]]) -> Callable[..., None]:
    """The test that every ``(check, wrong, hint)`` in ``planted`` fails ``wrong`` naming its hint (see
    :func:`assert_names_mistake`), parametrized with readable ids. Assign it to ``test_check_names_the_planted_mistake``
    in the lesson's test module."""

    @pytest.mark.parametrize(
        "check, wrong, hint", planted,
        ids=[f"{c.__name__}-{h.split()[0]}-{i}" for i, (c, _, h) in enumerate(planted)],
    )
    def test_check_names_the_planted_mistake(capsys: pytest.CaptureFixture[str], check: Callable[[Any], bool],
                                             wrong: Any, hint: str) -> None:
        assert_names_mistake(capsys, check, wrong, hint)

    return test_check_names_the_planted_mistake
