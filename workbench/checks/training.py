"""Checks for lesson 07, training: the loss (cross-entropy), one AdamW step, the warmup + cosine schedule."""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import torch
import torch.nn.functional as F

from workbench.checks.core import (
    RTOL,
    Hint,
    Mistakes,
    _call_keeping_inputs,
    _close,
    _compare_tensors,
    _fresh_generator,
    _matching_mistake,
    _passed,
    run_check,
)


def check_cross_entropy(cross_entropy: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> bool:
    """``cross_entropy(logits, targets)``: the mean over all positions of ``-log softmax(logits)[target]``.

    ``logits`` is ``(B, T, vocab)``, ``targets`` ``(B, T)`` (the next tokens); the result is a 0-d tensor. The
    reference is ``F.cross_entropy`` over the flattened positions: the loss :class:`workbench.model.GPT` returns when
    it is given ``targets``. One case has a huge row (a naive ``exp`` overflows) and a target far below its row's
    maximum (a naive ``log(softmax)`` underflows to ``log(0)``).
    """

    def body() -> str:
        g = _fresh_generator()
        worst = 0.0
        cases = ((2, 5, 7, False), (3, 8, 65, False), (1, 6, 11, True))  # (B, T, vocab, extreme logits)
        for B, T, V, extreme in cases:
            logits = torch.randn(B, T, V, generator=g) * 2
            targets = torch.randint(V, (B, T), generator=g)
            if extreme:
                logits[0, 0] += 1000.0  # exp(1000) is inf in float32 unless each row's maximum is subtracted first
                logits[0, 1, targets[0, 1]] -= 200.0  # p(target) ~ e^-200 underflows to 0 in float32: log(0) = -inf
            got = _call_keeping_inputs(cross_entropy, ["logits", "targets"], logits, targets)
            want = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
            log_probs = torch.log_softmax(logits, dim=-1)  # (B, T, V)
            right = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T): log p of each right token
            if isinstance(got, numbers.Number):
                raise Hint(
                    f"return the loss as a 0-d tensor, not a Python {type(got).__name__} (.item() cuts it off from "
                    "autograd, and training calls loss.backward() on it)"
                )
            if isinstance(got, torch.Tensor) and got.shape == want.shape and torch.isinf(got).any():
                raise Hint(
                    "the loss is inf: softmax underflowed to 0 for a very unlikely target, and log(0) = -inf. Compute "
                    "log-probabilities directly, logits - logsumexp(logits) over the last axis (torch.logsumexp), "
                    "instead of log(softmax(logits))"
                )
            mistakes: Mistakes = {
                "the loss was summed over positions, not averaged (the article's formula is a sum): divide by the "
                "number of positions, B·T": lambda: -right.sum(),
                "the sum runs over time and the mean over the batch only: average over all B·T positions": lambda: (
                    -right.sum(dim=1).mean()
                ),
                "this averages the probability of the right token, not its log: the loss is -log p": lambda: (
                    -right.exp().mean()
                ),
                "the log is base 2 (bits); the loss uses the natural log (nats)": lambda: -right.mean() / math.log(2),
                "the sign is flipped: the loss is the *negative* log-probability, so it is never below 0": lambda: (
                    right.mean()
                ),
                "every log-probability was averaged, not only the right token's: pick each position's target with "
                "gather": lambda: -log_probs.mean(),
                "softmax over the wrong axis: each position's logits are normalized over the vocabulary (the last "
                "axis)": lambda: -torch.log_softmax(logits, dim=-2).gather(-1, targets.unsqueeze(-1)).mean(),
                "the targets were shifted once more: they already are the next tokens, so score logits[:, t] against "
                "targets[:, t]": lambda: F.cross_entropy(logits[:, :-1].flatten(0, 1), targets[:, 1:].flatten()),
                "the per-position losses were returned: average them into one number": lambda: -right,
            }
            nan_hint = (
                "NaN in the loss: exp of a large logit overflowed to inf (float32 stops at about exp(88)) and inf/inf "
                "is NaN. Subtract each row's maximum before exp, or use torch.logsumexp, which does"
            )
            shape_hint = "Return one number, the mean over all positions, as a 0-d tensor."
            worst = max(
                worst, _compare_tensors(got, want, mistakes, shape_hint=shape_hint, nan_hint=nan_hint, atol=1e-4)
            )
        return _passed(len(cases), worst)

    return run_check("cross_entropy", body)


def _adamw_variant(
    param: torch.Tensor,
    grad: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    *,
    correct_m: bool = True,
    correct_v: bool = True,
    power: bool = True,
    step_offset: int = 0,
    l2: bool = False,
    decay_with_lr: bool = True,
    decay_after: bool = False,
    eps_inside: bool = False,
    swap_betas: bool = False,
    sign: float = 1.0,
    return_hats: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One AdamW step written out, with switches to plant one mistake at a time: the new ``(param, m, v)``."""
    beta1, beta2 = betas
    if l2:
        grad = grad + weight_decay * param  # L2 regularization: the decay rides in the gradient, through m and v
    w1, w2 = (beta1, beta2) if swap_betas else (1 - beta1, 1 - beta2)  # the weight of the new gradient
    m = (1 - w1) * m + w1 * grad
    v = (1 - w2) * v + w2 * grad * grad
    t = step + step_offset
    m_hat = m / (1 - (beta1**t if power else beta1)) if correct_m else m
    v_hat = v / (1 - (beta2**t if power else beta2)) if correct_v else v
    update = m_hat / (torch.sqrt(v_hat + eps) if eps_inside else torch.sqrt(v_hat) + eps)
    shrink = 1.0 if l2 else 1 - (lr * weight_decay if decay_with_lr else weight_decay)
    if return_hats:
        m, v = m_hat, v_hat  # the corrected averages handed back as the state
    if decay_after:
        return (param - sign * lr * update) * shrink, m, v
    return param * shrink - sign * lr * update, m, v


_ADAMW_MISTAKES: dict[str, dict[str, Any]] = {  # hint -> the switches of _adamw_variant that plant it
    "no bias correction (the article's update uses m and v as they are): both start at 0, so divide them by "
    "(1 - beta1**step) and (1 - beta2**step)": dict(correct_m=False, correct_v=False),
    "only v is bias-corrected: m needs it too, m / (1 - beta1**step)": dict(correct_m=False),
    "only m is bias-corrected: v needs it too, v / (1 - beta2**step)": dict(correct_v=False),
    "the bias correction divides by 1 - beta, not 1 - beta**step: the correction must fade as the steps add up": dict(
        power=False
    ),
    "the bias correction used step + 1: `step` already counts this update (1 on the first one), as "
    "torch.optim.AdamW counts": dict(step_offset=1),
    "the weight decay was added to the gradient (L2 regularization, what torch.optim.Adam's weight_decay does); "
    "AdamW decouples it: shrink the parameter directly, param * (1 - lr * weight_decay), and keep it out of m and v": (
        dict(l2=True)
    ),
    "the weight decay is not scaled by the learning rate: AdamW multiplies the parameter by (1 - lr * weight_decay)": (
        dict(decay_with_lr=False)
    ),
    "the decay was applied after the update: AdamW shrinks the parameter as it was before this step, "
    "param * (1 - lr * weight_decay) - lr * m̂ / (sqrt(v̂) + eps)": dict(decay_after=True),
    "eps is inside the square root: divide by sqrt(v̂) + eps": dict(eps_inside=True),
    "the betas weight the wrong terms: m = beta1 * m + (1 - beta1) * grad keeps most of the old average (and v "
    "likewise with beta2)": dict(swap_betas=True),
    "the update goes uphill: subtract lr * m̂ / (sqrt(v̂) + eps) from the parameter": dict(sign=-1.0),
    "m and v came back bias-corrected: return the raw running averages m and v as the state, and correct them "
    "afresh at every step (the correction depends on the step)": dict(return_hats=True),
}

_ADAMW_NOT_FINITE = (
    "inf or NaN: in Adam the only division is in the update, by sqrt(v̂) + eps. m and v are running averages of grad "
    "and grad * grad with nothing divided inside them (the article divides by sqrt(v) and sqrt(m) there, which fails "
    "at once: v starts at 0, and m is negative wherever the gradient is)"
)


def _compare_adamw_part(
    name: str, got: Any, want: torch.Tensor, mistakes: Mistakes, atol: float, step: int
) -> float:
    """Raise a Hint unless the student's new ``name`` matches torch's; return the largest absolute difference."""
    if not isinstance(got, torch.Tensor):
        raise Hint(f"the new {name} should be a torch.Tensor, got {type(got).__name__}")
    if got.shape != want.shape:
        raise Hint(f"the new {name} has shape {tuple(got.shape)}, expected {tuple(want.shape)}, the parameter's shape")
    if _close(got, want, atol, RTOL):
        return (got.float() - want.float()).abs().max().item()

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:  # equal_nan: a planted mistake may be NaN where yours is
        return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=atol, rtol=RTOL, equal_nan=True)

    hint = _matching_mistake(got, mistakes, same)
    if hint:
        raise Hint(hint)
    if not torch.isfinite(got).all():
        raise Hint(f"the new {name} has {_ADAMW_NOT_FINITE}")
    diff = (got.float() - want.float()).abs().max().item()
    raise Hint(
        f"the new {name} differs from torch.optim.AdamW's at step {step} (largest difference {diff:.3g}); no known "
        "mistake matches"
    )


def check_adamw_step(adamw_step: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> bool:
    """``adamw_step(param, grad, m, v, step, lr, betas, eps, weight_decay)`` -> the new ``(param, m, v)``.

    The reference is ``torch.optim.AdamW`` itself, run for several steps on a random parameter with random gradients.
    Before each of its steps, the student's function gets the same parameter, gradient and state (``exp_avg``,
    ``exp_avg_sq``; zeros before the first step) and ``step`` counting from 1; its three tensors must match the
    optimizer's parameter, ``exp_avg`` and ``exp_avg_sq`` after the step. m is compared first, then v, then the
    parameter, so the hint names the first thing that went wrong.
    """

    def body() -> str:
        g = _fresh_generator()
        worst = 0.0
        n_steps = 5
        names = ["param", "grad", "m", "v", "step", "lr", "betas", "eps", "weight_decay"]
        cases = (  # (shape, lr, betas, eps, weight_decay, gradient scale)
            ((7,), 1e-2, (0.9, 0.999), 1e-8, 0.1, 1.0),
            ((3, 4), 0.1, (0.8, 0.99), 1e-8, 0.5, 3.0),
            ((2, 3, 5), 1e-3, (0.9, 0.95), 1e-6, 0.0, 1.0),
            ((6,), 3e-2, (0.9, 0.999), 1e-6, 0.1, 1e-3),  # small gradients: where eps goes matters
        )
        for shape, lr, betas, eps, weight_decay, scale in cases:
            weight = torch.nn.Parameter(torch.randn(shape, generator=g))
            optimizer = torch.optim.AdamW([weight], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
            m, v = torch.zeros(shape), torch.zeros(shape)
            for step in range(1, n_steps + 1):
                grad = torch.randn(shape, generator=g) * scale
                inputs = (weight.detach().clone(), grad, m, v, step, lr, betas, eps, weight_decay)
                got = _call_keeping_inputs(adamw_step, names, *inputs)
                if not isinstance(got, (tuple, list)) or len(got) != 3:
                    what = f"a {type(got).__name__}" if not isinstance(got, (tuple, list)) else f"{len(got)} values"
                    raise Hint(f"return the three new tensors (param, m, v), got {what}")
                weight.grad = grad.clone()
                optimizer.step()
                state = optimizer.state[weight]
                want = (weight.detach().clone(), state["exp_avg"].clone(), state["exp_avg_sq"].clone())
                for i, name, atol in ((1, "m", 1e-6 * scale), (2, "v", 1e-6 * scale**2), (0, "param", 1e-6)):
                    mistakes = {
                        hint: lambda planted=planted, i=i: _adamw_variant(*inputs, **planted)[i]
                        for hint, planted in _ADAMW_MISTAKES.items()
                    }
                    diff = _compare_adamw_part(name, got[i], want[i], mistakes, atol, step)
                    if name == "param":
                        worst = max(worst, diff)
                m, v = want[1], want[2]
        return (
            f"matches torch.optim.AdamW over {n_steps} steps on {len(cases)} random parameters "
            f"(largest parameter difference {worst:.1e})"
        )

    return run_check("adamw_step", body)


def _schedule_variant(
    step: int,
    lr: float,
    min_lr: float,
    warmup_steps: int,
    max_steps: int,
    *,
    warmup_from_zero: bool = False,
    warmup_inclusive: bool = False,
    no_warmup: bool = False,
    progress_from_zero: bool = False,
    clamp: bool = True,
    to_zero: bool = False,
    no_half: bool = False,
    linear: bool = False,
) -> float:
    """Warmup + cosine written out, with switches to plant one mistake at a time."""
    in_warmup = step <= warmup_steps if warmup_inclusive else step < warmup_steps
    if in_warmup and not no_warmup:
        return lr * (step if warmup_from_zero else step + 1) / warmup_steps
    start = 0 if (no_warmup or progress_from_zero) else warmup_steps
    progress = (step - start) / max(1, max_steps - start)
    if clamp:
        progress = min(1.0, progress)
    floor = 0.0 if to_zero else min_lr
    if linear:
        shape = 1.0 - progress
    elif no_half:
        shape = math.cos(math.pi * progress)
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return floor + shape * (lr - floor)


_SCHEDULE_MISTAKES: dict[str, dict[str, bool]] = {  # hint -> the switch of _schedule_variant that plants it
    "the warmup starts at 0: step 0 already gets lr / warmup_steps, lr * (step + 1) / warmup_steps (a rate of 0 "
    "would waste the first step)": dict(warmup_from_zero=True),
    "the warmup runs one step too long (step <= warmup_steps): at step warmup_steps the cosine starts, at exactly lr": (
        dict(warmup_inclusive=True)
    ),
    "there is no warmup: for step < warmup_steps the rate rises linearly, lr * (step + 1) / warmup_steps": dict(
        no_warmup=True
    ),
    "the decay's progress is counted from step 0: count it from the end of the warmup, "
    "(step - warmup_steps) / (max_steps - warmup_steps)": dict(progress_from_zero=True),
    "after max_steps the rate climbs again: it stays at min_lr (clamp the progress at 1)": dict(clamp=False),
    "the cosine decays to 0, not to min_lr: min_lr + 0.5 * (1 + cos(pi * progress)) * (lr - min_lr)": dict(
        to_zero=True
    ),
    "the cosine goes below min_lr: use 0.5 * (1 + cos(pi * progress)), which runs from 1 down to 0": dict(no_half=True),
    "the decay is linear; it follows half a cosine: min_lr + 0.5 * (1 + cos(pi * progress)) * (lr - min_lr)": dict(
        linear=True
    ),
}


def _same_rates(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-12) for x, y in zip(a, b))


def check_lr_at(lr_at: Callable[[int, float, float, int, int], float]) -> bool:
    """``lr_at(step, lr, min_lr, warmup_steps, max_steps)``: linear warmup, then cosine decay to ``min_lr``.

    The reference is :func:`workbench.train.lr_at`, the schedule ``train()`` uses, at every step from 0 to a few
    past ``max_steps``, for the ``tiny-char`` preset's schedule, one without warmup and two random ones.
    """
    from workbench.train import TrainConfig
    from workbench.train import lr_at as reference

    def body() -> str:
        g = _fresh_generator()

        def uniform(low: float, high: float) -> float:
            return low + (high - low) * torch.rand((), generator=g).item()

        cases = [(2e-3, 2e-4, 50, 600), (1e-3, 1e-4, 0, 40)]  # (lr, min_lr, warmup_steps, max_steps)
        for _ in range(2):
            lr = 10 ** uniform(-4, -2)
            warmup = int(torch.randint(1, 40, (), generator=g))
            cases.append((lr, lr * uniform(0.01, 0.3), warmup, warmup + int(torch.randint(20, 300, (), generator=g))))
        for lr, min_lr, warmup, max_steps in cases:
            steps = range(max_steps + 5)
            config = TrainConfig(lr=lr, min_lr=min_lr, warmup_steps=warmup, max_steps=max_steps)
            want = [reference(s, config) for s in steps]
            got = []
            for s in steps:
                value = lr_at(s, lr, min_lr, warmup, max_steps)
                if isinstance(value, torch.Tensor) and value.numel() == 1:
                    value = value.item()
                if not isinstance(value, numbers.Real) or isinstance(value, bool):
                    raise Hint(f"return the learning rate as a number, got {type(value).__name__}")
                got.append(float(value))
            if _same_rates(got, want):
                continue
            mistakes = {
                hint: lambda planted=planted: [
                    _schedule_variant(s, lr, min_lr, warmup, max_steps, **planted) for s in steps
                ]
                for hint, planted in _SCHEDULE_MISTAKES.items()
            }
            hint = _matching_mistake(got, mistakes, _same_rates)
            if hint:
                raise Hint(hint)
            s = next(s for s in steps if not _same_rates([got[s]], [want[s]]))
            phase = "the warmup" if s < warmup else "the decay" if s <= max_steps else "past max_steps"
            raise Hint(
                f"lr_at({s}, lr={lr:.3g}, min_lr={min_lr:.3g}, warmup_steps={warmup}, max_steps={max_steps}) = "
                f"{got[s]:.4g}, expected {want[s]:.4g} (in {phase}); no known mistake matches"
            )
        return f"matches workbench.train.lr_at at every step of {len(cases)} schedules, warmup, decay and past the end"

    return run_check("lr_at", body)


__all__ = [name for name in dir() if name.startswith("check_")]
