"""Lesson 03 (attention): the quiz's answer key. An example for the format; the lesson's author replaces it."""

from workbench.checks.core import say
from workbench.checks.quiz import Question

QUESTIONS = {
    1: Question(
        answer=0.5,
        why=say("two equal scores give two equal weights: softmax([s, s]) = [0.5, 0.5]",
                "两个相等的分数给出两个相等的权重：softmax([s, s]) = [0.5, 0.5]"),
        hint=say("softmax only cares about differences between scores; what is the difference here?",
                 "softmax 只在乎分数之间的差；这里的差是多少？"),
    ),
}
