"""Quizzes: a few questions at the end of each lesson, about the computation in it, answered in code and checked
like the exercises.

A lesson's questions live in ``workbench/checks/quizzes/lesson_NN.py`` as ``QUESTIONS = {1: Question(...), ...}``.
In the notebook, each answer is a small function whose body is a solution block (so the student version asks for
it), followed by a check cell::

    def quiz_1():
        ### BEGIN SOLUTION
        return 0.25
        ### END SOLUTION

    checks.check_quiz("03", 1, quiz_1)

A number is right within the question's relative tolerance; a choice is a letter (``"b"``), case ignored. A right
answer prints why it is right; a wrong one prints a hint, never the answer.
"""

from __future__ import annotations

import importlib
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable

from workbench.checks.core import Hint, Say, Verdict, run_check, say


@dataclass(frozen=True)
class Question:
    """One question's answer key: ``answer`` is a number or a choice letter; ``why`` is shown when the answer is
    right, ``hint`` when it is wrong."""

    answer: float | str
    why: Say
    hint: Say
    rel_tol: float = 1e-3  # for numbers: how far off an answer may be, relative to the right one

    def __post_init__(self) -> None:
        if isinstance(self.answer, str) and not (len(self.answer) == 1 and self.answer.isalpha()):
            raise ValueError(f"a choice is one letter, not {self.answer!r}")


def questions(lesson: str) -> dict[int, Question]:
    """The questions of lesson ``lesson`` (two digits, e.g. ``"03"``)."""
    try:
        module = importlib.import_module(f"workbench.checks.quizzes.lesson_{lesson}")
    except ModuleNotFoundError:
        raise ValueError(f"lesson {lesson!r} has no quiz") from None
    return module.QUESTIONS


def _as_number(value: Any) -> float | None:
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:  # a one-element tensor or array
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _judge(question: Question, given: Any) -> Say:
    if isinstance(question.answer, str):
        if not isinstance(given, str) or len(given.strip()) != 1:
            raise Hint(say(f"answer with one letter, such as \"a\" (you gave {given!r})",
                           f"请用一个字母作答，例如 \"a\"（你给的是 {given!r}）"))
        right = given.strip().lower() == question.answer.lower()
    else:
        number = _as_number(given)
        if number is None:
            raise Hint(say(f"answer with a number (you gave {given!r})", f"请用一个数作答（你给的是 {given!r}）"))
        right = math.isclose(number, question.answer, rel_tol=question.rel_tol, abs_tol=1e-12)
    if not right:
        raise Hint(question.hint)
    return question.why


def check_quiz(lesson: str, number: int, answer: Callable[[], Any]) -> Verdict:
    """Check the answer that ``answer()`` returns to question ``number`` of lesson ``lesson``'s quiz."""
    question = questions(lesson)[number]
    return run_check(f"quiz {lesson}.{number}", lambda: _judge(question, answer()))
