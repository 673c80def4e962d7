"""What every planted-mistake test of the lesson checks asserts: one verdict line, and which one."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Callable

import pytest

from workbench import checks

Check = Callable[[Any], Any]  # a check: takes the student's code, prints one line, returns a Verdict

_CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")  # CJK ideographs and CJK / full-width punctuation


def has_chinese(text: str) -> bool:
    return bool(_CJK.search(text))


def verdict(capsys: pytest.CaptureFixture[str], check: Check, student: Any) -> tuple[bool, str]:
    """Run ``check(student)``; return its result and the one verdict line it printed. In English (the default),
    the line must hold no Chinese: every message of a check is a ``say(english, chinese)``, shown in one language."""
    ok = check(student)
    out = capsys.readouterr().out
    assert isinstance(ok, checks.Verdict), f"a check returns a Verdict, not {type(ok).__name__}"
    assert sum(out.count(mark) for mark in "✓✗○") == 1, f"exactly one verdict expected: {out!r}"
    if checks.language() == "en":
        assert not has_chinese(out), f"Chinese in an English verdict: {out!r}"
    return bool(ok), out


def not_implemented(*args: Any, **kwargs: Any) -> Any:
    """A student's function (or class) before any code is written."""
    raise NotImplementedError


def stub_of(student: Any) -> Any:
    """The student notebook's version of ``student``: a module class with ``__init__`` given and ``forward`` left to
    write, or a function left to write."""
    return type("Stub", (student,), {"forward": not_implemented}) if isinstance(student, type) else not_implemented


def assert_names_mistake(capsys: pytest.CaptureFixture[str], check: Check, wrong: Any, hint: str) -> None:
    """The check fails ``wrong`` with ✗ and the hint of its planted mistake, never a traceback."""
    ok, out = verdict(capsys, check, wrong)
    assert not ok and out.startswith("✗"), out
    assert hint in out, out
    assert "Traceback" not in out


def correct_implementation_test(correct: list[tuple[Check, Any]]) -> Callable[..., None]:
    """The test that every check passes its correct implementation in ``correct`` (``(check, student)`` pairs) with
    ✓. Assign it to ``test_check_passes_a_correct_implementation`` in the lesson's test module."""

    @pytest.mark.parametrize("check, student", correct, ids=case_ids(correct))
    def test_check_passes_a_correct_implementation(capsys: pytest.CaptureFixture[str], check: Check,
                                                   student: Any) -> None:
        ok, out = verdict(capsys, check, student)
        assert ok and out.startswith("✓"), out

    return test_check_passes_a_correct_implementation


def stub_test(stubs: list[tuple[Check, Any]]) -> Callable[..., None]:
    """The test that every check says "not implemented yet" (○) for its stub in ``stubs`` (``(check, stub)`` pairs,
    a stub being what the student notebook gives before any code is written). Assign it to
    ``test_check_on_a_stub_says_not_implemented`` in the lesson's test module."""

    @pytest.mark.parametrize("check, stub", stubs, ids=case_ids(stubs))
    def test_check_on_a_stub_says_not_implemented(capsys: pytest.CaptureFixture[str], check: Check,
                                                  stub: Any) -> None:
        ok, out = verdict(capsys, check, stub)
        assert not ok and "not implemented yet" in out and out.startswith("○"), out

    return test_check_on_a_stub_says_not_implemented


def case_ids(cases: list[tuple[Check, Any]]) -> list[str]:
    """Readable test ids for a list of ``(check, code)``: the check's name, numbered where a check comes again."""
    counts = Counter(check for check, _ in cases)
    return [check.__name__ if counts[check] == 1 else f"{check.__name__}-{i}" for i, (check, _) in enumerate(cases)]


def planted_mistake_test(planted: list[tuple[Check, Any, str]]) -> Callable[..., None]:
    """The test that every ``(check, wrong, hint)`` in ``planted`` fails ``wrong`` naming its hint (see
    :func:`assert_names_mistake`), parametrized with readable ids. Assign it to ``test_check_names_the_planted_mistake``
    in the lesson's test module."""

    @pytest.mark.parametrize("check, wrong, hint", planted, ids=planted_ids(planted))
    def test_check_names_the_planted_mistake(capsys: pytest.CaptureFixture[str], check: Check, wrong: Any,
                                             hint: str) -> None:
        assert_names_mistake(capsys, check, wrong, hint)

    return test_check_names_the_planted_mistake


def planted_ids(planted: list[tuple[Check, Any, str]]) -> list[str]:
    """Readable test ids for a list of ``(check, wrong, hint)``: the check, the hint's first word, the index."""
    return [f"{c.__name__}-{h.split()[0]}-{i}" for i, (c, _, h) in enumerate(planted)]
