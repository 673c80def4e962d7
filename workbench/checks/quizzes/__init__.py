"""Each lesson's quiz answer key, one module per lesson: ``lesson_NN.py`` holds ``QUESTIONS`` (see
:mod:`workbench.checks.quiz`)."""
