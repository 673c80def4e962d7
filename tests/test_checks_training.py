"""Lesson 07 (training) checks: a correct implementation passes, a stub is "not implemented yet", and each planted
mistake gets its own hint."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import nbformat
import torch
import torch.nn.functional as F

from workbench.checks import check_adamw_step, check_cross_entropy, check_lr_at
from workbench.checks.training import ADAMW_MISTAKES, SCHEDULE_MISTAKES, adamw_variant, schedule_variant

from verdicts import correct_implementation_test, not_implemented, planted_mistake_test, stub_test, verdict

ROOT = Path(__file__).resolve().parent.parent  # in tests/: the repository root
LESSON = ROOT / "lessons" / "07_training.ipynb"


# ------------------------------------------------------------------------- correct implementations


def cross_entropy(logits, targets):
    log_probs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    return -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).mean()


# AdamW and the warmup + cosine schedule, correct and with each planted mistake: the checks module's own variants
# and its tables of mistakes, so that the mistakes are defined once (checks/training.py) and every one is tested here.
adamw_step = adamw_variant
lr_at = schedule_variant


# ---------------------------------------------------------------------------- planted mistakes


def cross_entropy_naive_exp(logits, targets):
    """exp without subtracting the maximum: exp(1000) = inf, inf / inf = NaN."""
    e = logits.exp()
    return -(e / e.sum(-1, keepdim=True)).gather(-1, targets.unsqueeze(-1)).log().mean()


def cross_entropy_log_of_softmax(logits, targets):
    """log(softmax): a stable softmax still underflows to 0 for a target 200 below its row's maximum."""
    return -torch.softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).log().mean()


def adamw_as_the_article_writes_it(param, grad, m, v, step, lr, betas, eps, weight_decay):
    """§5.3.5 of the article: divides by sqrt(v_{t-1}) inside m and by sqrt(m_t) inside v, no bias correction."""
    beta1, beta2 = betas
    m = beta1 * m + (1 - beta1) * grad / torch.sqrt(v)
    v = beta2 * v + (1 - beta2) * grad**2 / torch.sqrt(m)
    return param - lr * m / (torch.sqrt(v) + eps), m, v


def adamw_in_place(param, grad, m, v, step, lr, betas, eps, weight_decay):
    new_param, new_m, new_v = adamw_step(param, grad, m, v, step, lr, betas, eps, weight_decay)
    param.copy_(new_param)  # what optimizers do; the exercise asks for new tensors
    return param, new_m, new_v


def doubled_lr(*args):
    return 2 * lr_at(*args)  # wrong in a way no known mistake explains


CORRECT = [
    (check_cross_entropy, cross_entropy),
    (check_cross_entropy, lambda logits, targets: F.nll_loss(torch.log_softmax(logits, -1).flatten(0, 1),
                                                             targets.flatten())),
    (check_adamw_step, adamw_step),
    (check_lr_at, lr_at),
]

PLANTED = [
    # (check, wrong implementation, words the hint must contain)
    (check_cross_entropy, lambda lg, t: cross_entropy(lg, t) * t.numel(), "summed over positions"),
    (check_cross_entropy, lambda lg, t: -torch.log_softmax(lg, -1).gather(-1, t.unsqueeze(-1)).squeeze(-1).sum(1)
     .mean(), "mean over the batch only"),
    (check_cross_entropy, lambda lg, t: -torch.softmax(lg, -1).gather(-1, t.unsqueeze(-1)).mean(), "not its log"),
    (check_cross_entropy, lambda lg, t: cross_entropy(lg, t) / math.log(2), "base 2"),
    (check_cross_entropy, lambda lg, t: -cross_entropy(lg, t), "sign is flipped"),
    (check_cross_entropy, lambda lg, t: -torch.log_softmax(lg, -1).mean(), "gather"),
    (check_cross_entropy, lambda lg, t: -torch.log_softmax(lg, -2).gather(-1, t.unsqueeze(-1)).mean(), "wrong axis"),
    (check_cross_entropy, lambda lg, t: F.cross_entropy(lg[:, :-1].flatten(0, 1), t[:, 1:].flatten()),
     "shifted once more"),
    (check_cross_entropy, lambda lg, t: -torch.log_softmax(lg, -1).gather(-1, t.unsqueeze(-1)).squeeze(-1),
     "per-position losses"),
    (check_cross_entropy, lambda lg, t: F.nll_loss(lg.flatten(0, 1), t.flatten()), "used as log-probabilities"),
    (check_cross_entropy, cross_entropy_naive_exp, "overflowed"),
    (check_cross_entropy, cross_entropy_log_of_softmax, "underflowed"),
    (check_cross_entropy, lambda lg, t: cross_entropy(lg, t).item(), "not a Python float"),
    (check_cross_entropy, lambda lg, t: cross_entropy(lg.sub_(lg.amax(-1, keepdim=True)), t),
     "changed its input `logits` in place"),
    *[(check_adamw_step, functools.partial(adamw_variant, **switches), hint)  # the whole hint, each mistake
      for hint, switches in ADAMW_MISTAKES.items()],
    (check_adamw_step, lambda *a: tuple(2 * t for t in adamw_step(*a)), "no known mistake matches"),
    (check_adamw_step, adamw_as_the_article_writes_it, "inf or NaN"),
    (check_adamw_step, adamw_in_place, "changed its input `param` in place"),
    (check_adamw_step, lambda *a: adamw_step(*a)[0], "return the three new tensors"),
    *[(check_lr_at, functools.partial(schedule_variant, **switches), hint)  # the whole hint, each mistake
      for hint, switches in SCHEDULE_MISTAKES.items()],
    (check_lr_at, lambda *a: str(lr_at(*a)), "as a number"),
    (check_lr_at, doubled_lr, "no known mistake matches"),
]


test_check_passes_a_correct_implementation = correct_implementation_test(CORRECT)
test_check_on_a_stub_says_not_implemented = stub_test(
    [(check, not_implemented) for check in (check_cross_entropy, check_adamw_step, check_lr_at)])


test_check_names_the_planted_mistake = planted_mistake_test(PLANTED)


# ------------------------------------------------------------------------------- extra tests for 07


def test_adamw_check_compares_with_torch_over_several_steps(capsys):
    ok, out = verdict(capsys, check_adamw_step, adamw_step)
    assert ok and "torch.optim.AdamW over 5 steps" in out, out


def test_adamw_check_is_not_fooled_by_a_first_step_that_happens_to_match(capsys):
    """1 - beta**1 == 1 - beta: a bias correction without the power is right at step 1 only."""

    def no_power(param, grad, m, v, step, lr, betas, eps, weight_decay):
        return adamw_step(param, grad, m, v, 1, lr, betas, eps, weight_decay)  # always corrects as if step were 1

    ok, out = verdict(capsys, check_adamw_step, no_power)
    assert not ok and "1 - beta**step" in out, out


def test_training_lesson_trains_less_under_workbench_quick():
    """The lesson reads WORKBENCH_QUICK (the tests set it) and trains in a temporary directory, not in the repo."""
    source = "\n".join(c.source for c in nbformat.read(LESSON, as_version=4).cells if c.cell_type == "code")
    assert 'os.environ.get("WORKBENCH_QUICK") == "1"' in source
    assert "tempfile.mkdtemp" in source and "runs/" not in source
