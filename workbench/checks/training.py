"""Checks for lesson 07, training: the loss (cross-entropy), one AdamW step, the warmup + cosine schedule.

Planted mistakes: :func:`adamw_variant` and :func:`schedule_variant` are the AdamW step and the schedule written out
with switches (correct at their defaults), and :data:`ADAMW_MISTAKES` and :data:`SCHEDULE_MISTAKES` map each hint to
the switches that plant its mistake.
"""

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
    Say,
    Verdict,
    _call_keeping_inputs,
    _close,
    _compare_tensors,
    _fresh_generator,
    _matching_mistake,
    _passed,
    _zh,
    run_check,
    say,
)


def check_cross_entropy(cross_entropy: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Verdict:
    """``cross_entropy(logits, targets)``: the mean over all positions of ``-log softmax(logits)[target]``.

    ``logits`` is ``(B, T, vocab)``, ``targets`` ``(B, T)`` (the next tokens); the result is a 0-d tensor. The
    reference is ``F.cross_entropy`` over the flattened positions: the loss :class:`workbench.model.GPT` returns when
    it is given ``targets``. One case has a huge row (a naive ``exp`` overflows) and a target far below its row's
    maximum (a naive ``log(softmax)`` underflows to ``log(0)``).
    """

    def body() -> Say:
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
                raise Hint(say(
                    f"return the loss as a 0-d tensor, not a Python {type(got).__name__} (.item() cuts it off from "
                    "autograd, and training calls loss.backward() on it)",
                    f"请把损失作为 0 维张量返回，而不是 Python 的 {type(got).__name__}（.item() 会把它和 autograd "
                    "断开，而训练要对它调用 loss.backward()）",
                ))
            if isinstance(got, torch.Tensor) and got.shape == want.shape and torch.isinf(got).any():
                raise Hint(say(
                    "the loss is inf: softmax underflowed to 0 for a very unlikely target, and log(0) = -inf. Compute "
                    "log-probabilities directly, logits - logsumexp(logits) over the last axis (torch.logsumexp), "
                    "instead of log(softmax(logits))",
                    "损失是 inf：对一个极不可能的目标，softmax 下溢成了 0，而 log(0) = -inf。请直接算对数概率，"
                    "沿最后一个轴算 logits - logsumexp(logits)（torch.logsumexp），而不是 log(softmax(logits))",
                ))
            mistakes: Mistakes = {
                say("the loss was summed over positions, not averaged (the article's formula is a sum): divide by the "
                    "number of positions, B·T",
                    "损失是对各位置求和而不是求平均（文章的公式是求和）：要除以位置数 B·T"): lambda: -right.sum(),
                say("the sum runs over time and the mean over the batch only: average over all B·T positions",
                    "沿时间求了和、只在批次上求了平均：应对全部 B·T 个位置求平均"): lambda: -right.sum(dim=1).mean(),
                say("this averages the probability of the right token, not its log: the loss is -log p",
                    "这里平均的是正确词元的概率，而不是它的对数：损失是 -log p"): lambda: -right.exp().mean(),
                say("the log is base 2 (bits); the loss uses the natural log (nats)",
                    "对数以 2 为底（比特）；损失用的是自然对数（奈特）"): lambda: -right.mean() / math.log(2),
                say("the sign is flipped: the loss is the *negative* log-probability, so it is never below 0",
                    "符号反了：损失是*负*的对数概率，所以永远不小于 0"): lambda: right.mean(),
                say("every log-probability was averaged, not only the right token's: pick each position's target with "
                    "gather",
                    "平均了所有的对数概率，而不只是正确词元的：用 gather 取出每个位置的目标"): lambda: -log_probs.mean(),
                say("softmax over the wrong axis: each position's logits are normalized over the vocabulary (the last "
                    "axis)",
                    "softmax 的轴错了：每个位置的 logits 要在词表上（最后一个轴）归一化"): lambda: (
                    -torch.log_softmax(logits, dim=-2).gather(-1, targets.unsqueeze(-1)).mean()
                ),
                say("the targets were shifted once more: they already are the next tokens, so score logits[:, t] "
                    "against targets[:, t]",
                    "目标又被移了一位：它们本来就是下一个词元，所以 logits[:, t] 直接对应 targets[:, t]"): lambda: (
                    F.cross_entropy(logits[:, :-1].flatten(0, 1), targets[:, 1:].flatten())
                ),
                say("the per-position losses were returned: average them into one number",
                    "返回的是每个位置的损失：要把它们平均成一个数"): lambda: -right,
                say("the logits were used as log-probabilities: they are not normalized. Take the log-softmax first, "
                    "logits - logsumexp(logits) over the last axis, then pick each target's entry",
                    "把 logits 当成了对数概率：它们并没有归一化。先做 log-softmax，即沿最后一个轴算 "
                    "logits - logsumexp(logits)，再取出每个目标对应的那一项"): lambda: (
                    -logits.gather(-1, targets.unsqueeze(-1)).mean()
                ),
            }
            nan_hint = say(
                "NaN in the loss: exp of a large logit overflowed to inf (float32 stops at about exp(88)) and inf/inf "
                "is NaN. Subtract each row's maximum before exp, or use torch.logsumexp, which does",
                "损失里有 NaN：大的 logit 取 exp 溢出成了 inf（float32 到 exp(88) 左右就到头了），而 inf/inf 是 NaN。"
                "求 exp 之前先减去每一行的最大值，或者用 torch.logsumexp，它会这样做",
            )
            shape_hint = say("Return one number, the mean over all positions, as a 0-d tensor.",
                             "请返回一个数：所有位置的平均值，作为 0 维张量。")
            worst = max(
                worst, _compare_tensors(got, want, mistakes, shape_hint=shape_hint, nan_hint=nan_hint, atol=1e-4)
            )
        return _passed(len(cases), worst)

    return run_check("cross_entropy", body)


def adamw_variant(
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
    decay: bool = True,
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
    shrink = 1.0 if l2 or not decay else 1 - (lr * weight_decay if decay_with_lr else weight_decay)
    if return_hats:
        m, v = m_hat, v_hat  # the corrected averages handed back as the state
    if decay_after:
        return (param - sign * lr * update) * shrink, m, v
    return param * shrink - sign * lr * update, m, v


ADAMW_MISTAKES: dict[Say, dict[str, Any]] = {  # hint -> the switches of adamw_variant that plant it
    say("no bias correction (the article's update uses m and v as they are): both start at 0, so divide them by "
        "(1 - beta1**step) and (1 - beta2**step)",
        "没有偏差修正（文章里的更新直接用 m 和 v）：两者都从 0 开始，所以要分别除以 (1 - beta1**step) 和 "
        "(1 - beta2**step)"): dict(correct_m=False, correct_v=False),
    say("only v is bias-corrected: m needs it too, m / (1 - beta1**step)",
        "只修正了 v 的偏差：m 也要修正，m / (1 - beta1**step)"): dict(correct_m=False),
    say("only m is bias-corrected: v needs it too, v / (1 - beta2**step)",
        "只修正了 m 的偏差：v 也要修正，v / (1 - beta2**step)"): dict(correct_v=False),
    say("the bias correction divides by 1 - beta, not 1 - beta**step: the correction must fade as the steps add up",
        "偏差修正除的是 1 - beta 而不是 1 - beta**step：修正应随步数增加而逐渐消失"): dict(power=False),
    say("the bias correction used step + 1: `step` already counts this update (1 on the first one), as "
        "torch.optim.AdamW counts",
        "偏差修正用了 step + 1：`step` 已经把这次更新算进去了（第一次更新时为 1），与 torch.optim.AdamW 的计数一致"):
        dict(step_offset=1),
    # Before the L2 mistake: at step 1, m̂ / sqrt(v̂) is about ±1 whatever the gradient, so L2 and no decay at all
    # give the same parameter there (L2 shows in m first; a missing decay only in the parameter).
    say("the weight decay is missing: AdamW also shrinks the parameter at every step, "
        "param * (1 - lr * weight_decay) - lr * m̂ / (sqrt(v̂) + eps)",
        "漏了权重衰减：AdamW 每一步还要让参数缩小，param * (1 - lr * weight_decay) - lr * m̂ / (sqrt(v̂) + eps)"):
        dict(decay=False),
    say("the weight decay was added to the gradient (L2 regularization, what torch.optim.Adam's weight_decay does); "
        "AdamW decouples it: shrink the parameter directly, param * (1 - lr * weight_decay), and keep it out of m "
        "and v",
        "权重衰减被加到了梯度上（这是 L2 正则化，也就是 torch.optim.Adam 的 weight_decay 的做法）；AdamW 把它解耦："
        "直接让参数缩小 param * (1 - lr * weight_decay)，不要让它进入 m 和 v"): dict(l2=True),
    say("the weight decay is not scaled by the learning rate: AdamW multiplies the parameter by "
        "(1 - lr * weight_decay)",
        "权重衰减没有乘上学习率：AdamW 是把参数乘以 (1 - lr * weight_decay)"): dict(decay_with_lr=False),
    say("the decay was applied after the update: AdamW shrinks the parameter as it was before this step, "
        "param * (1 - lr * weight_decay) - lr * m̂ / (sqrt(v̂) + eps)",
        "衰减是在更新之后才做的：AdamW 缩小的是这一步之前的参数，"
        "param * (1 - lr * weight_decay) - lr * m̂ / (sqrt(v̂) + eps)"): dict(decay_after=True),
    say("eps is inside the square root: divide by sqrt(v̂) + eps", "eps 放进了平方根里：应除以 sqrt(v̂) + eps"): dict(
        eps_inside=True
    ),
    say("the betas weight the wrong terms: m = beta1 * m + (1 - beta1) * grad keeps most of the old average (and v "
        "likewise with beta2)",
        "beta 乘错了项：m = beta1 * m + (1 - beta1) * grad 保留旧平均的大部分（v 与 beta2 同理）"): dict(
        swap_betas=True
    ),
    say("the update goes uphill: subtract lr * m̂ / (sqrt(v̂) + eps) from the parameter",
        "更新方向是上坡：应从参数中减去 lr * m̂ / (sqrt(v̂) + eps)"): dict(sign=-1.0),
    say("m and v came back bias-corrected: return the raw running averages m and v as the state, and correct them "
        "afresh at every step (the correction depends on the step)",
        "返回的 m 和 v 是修正过偏差的：状态应是未修正的滑动平均 m 和 v，每一步再重新修正（修正量取决于步数）"): dict(
        return_hats=True
    ),
}

_ADAMW_NOT_FINITE = say(
    "inf or NaN: in Adam the only division is in the update, by sqrt(v̂) + eps. m and v are running averages of grad "
    "and grad * grad with nothing divided inside them (the article divides by sqrt(v) and sqrt(m) there, which fails "
    "at once: v starts at 0, and m is negative wherever the gradient is)",
    "inf 或 NaN：Adam 里唯一的除法在更新中，除以 sqrt(v̂) + eps。m 和 v 是 grad 与 grad * grad 的滑动平均，里面不做"
    "任何除法（文章在那里除以 sqrt(v) 和 sqrt(m)，这立刻就会出错：v 从 0 开始，而梯度为负的地方 m 也为负）",
)


def _compare_adamw_part(
    name: str, got: Any, want: torch.Tensor, mistakes: Mistakes, atol: float, step: int
) -> float:
    """Raise a Hint unless the student's new ``name`` matches torch's; return the largest absolute difference."""
    if not isinstance(got, torch.Tensor):
        raise Hint(say(f"the new {name} should be a torch.Tensor, got {type(got).__name__}",
                       f"新的 {name} 应是 torch.Tensor，却得到了 {type(got).__name__}"))
    if got.shape != want.shape:
        raise Hint(say(
            f"the new {name} has shape {tuple(got.shape)}, expected {tuple(want.shape)}, the parameter's shape",
            f"新的 {name} 形状为 {tuple(got.shape)}，应为 {tuple(want.shape)}，即参数的形状",
        ))
    if _close(got, want, atol, RTOL):
        return (got.float() - want.float()).abs().max().item()

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:  # equal_nan: a planted mistake may be NaN where yours is
        return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=atol, rtol=RTOL, equal_nan=True)

    hint = _matching_mistake(got, mistakes, same)
    if hint:
        raise Hint(hint)
    if not torch.isfinite(got).all():
        raise Hint(say(f"the new {name} has {_ADAMW_NOT_FINITE}", f"新的 {name} 里有 {_zh(_ADAMW_NOT_FINITE)}"))
    diff = (got.float() - want.float()).abs().max().item()
    raise Hint(say(
        f"the new {name} differs from torch.optim.AdamW's at step {step} (largest difference {diff:.3g}); no known "
        "mistake matches",
        f"第 {step} 步时新的 {name} 与 torch.optim.AdamW 的不同（最大差值 {diff:.3g}）；没有已知错误与之吻合",
    ))


def check_adamw_step(adamw_step: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> Verdict:
    """``adamw_step(param, grad, m, v, step, lr, betas, eps, weight_decay)`` -> the new ``(param, m, v)``.

    The reference is ``torch.optim.AdamW`` itself, run for several steps on a random parameter with random gradients.
    Before each of its steps, the student's function gets the same parameter, gradient and state (``exp_avg``,
    ``exp_avg_sq``; zeros before the first step) and ``step`` counting from 1; its three tensors must match the
    optimizer's parameter, ``exp_avg`` and ``exp_avg_sq`` after the step. m is compared first, then v, then the
    parameter, so the hint names the first thing that went wrong.
    """

    def body() -> Say:
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
                    if isinstance(got, (tuple, list)):
                        what = say(f"{len(got)} values", f"{len(got)} 个值")
                    else:
                        what = say(f"a {type(got).__name__}", f"一个 {type(got).__name__}")
                    raise Hint(say(f"return the three new tensors (param, m, v), got {what}",
                                   f"请返回三个新张量 (param, m, v)，你返回的是{what.zh}"))
                weight.grad = grad.clone()
                optimizer.step()
                state = optimizer.state[weight]
                want = (weight.detach().clone(), state["exp_avg"].clone(), state["exp_avg_sq"].clone())
                for i, name, atol in ((1, "m", 1e-6 * scale), (2, "v", 1e-6 * scale**2), (0, "param", 1e-6)):
                    mistakes = {
                        hint: lambda planted=planted, i=i: adamw_variant(*inputs, **planted)[i]
                        for hint, planted in ADAMW_MISTAKES.items()
                    }
                    diff = _compare_adamw_part(name, got[i], want[i], mistakes, atol, step)
                    if name == "param":
                        worst = max(worst, diff)
                m, v = want[1], want[2]
        return say(
            f"matches torch.optim.AdamW over {n_steps} steps on {len(cases)} random parameters "
            f"(largest parameter difference {worst:.1e})",
            f"在 {len(cases)} 个随机参数上连续 {n_steps} 步与 torch.optim.AdamW 一致（参数的最大差值 {worst:.1e}）",
        )

    return run_check("adamw_step", body)


def schedule_variant(
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


SCHEDULE_MISTAKES: dict[Say, dict[str, bool]] = {  # hint -> the switch of schedule_variant that plants it
    say("the warmup starts at 0: step 0 already gets lr / warmup_steps, lr * (step + 1) / warmup_steps (a rate of 0 "
        "would waste the first step)",
        "预热从 0 开始了：第 0 步就该得到 lr / warmup_steps，即 lr * (step + 1) / warmup_steps（学习率为 0 会白白浪费"
        "第一步）"): dict(warmup_from_zero=True),
    say("the warmup runs one step too long (step <= warmup_steps): at step warmup_steps the cosine starts, at "
        "exactly lr",
        "预热多跑了一步（step <= warmup_steps）：到第 warmup_steps 步时余弦已经开始，且恰好等于 lr"): dict(
        warmup_inclusive=True
    ),
    say("there is no warmup: for step < warmup_steps the rate rises linearly, lr * (step + 1) / warmup_steps",
        "没有预热：step < warmup_steps 时学习率应线性上升，lr * (step + 1) / warmup_steps"): dict(no_warmup=True),
    say("the decay's progress is counted from step 0: count it from the end of the warmup, "
        "(step - warmup_steps) / (max_steps - warmup_steps)",
        "衰减的进度是从第 0 步算起的：应从预热结束时算起，(step - warmup_steps) / (max_steps - warmup_steps)"): dict(
        progress_from_zero=True
    ),
    say("after max_steps the rate climbs again: it stays at min_lr (clamp the progress at 1)",
        "过了 max_steps 学习率又升了回去：它应保持在 min_lr（把进度截断在 1）"): dict(clamp=False),
    say("the cosine decays to 0, not to min_lr: min_lr + 0.5 * (1 + cos(pi * progress)) * (lr - min_lr)",
        "余弦衰减到了 0 而不是 min_lr：min_lr + 0.5 * (1 + cos(pi * progress)) * (lr - min_lr)"): dict(to_zero=True),
    say("the cosine goes below min_lr: use 0.5 * (1 + cos(pi * progress)), which runs from 1 down to 0",
        "余弦低于 min_lr 了：请用 0.5 * (1 + cos(pi * progress))，它从 1 降到 0"): dict(no_half=True),
    say("the decay is linear; it follows half a cosine: min_lr + 0.5 * (1 + cos(pi * progress)) * (lr - min_lr)",
        "衰减是线性的；它应沿半个余弦下降：min_lr + 0.5 * (1 + cos(pi * progress)) * (lr - min_lr)"): dict(linear=True),
}


def _same_rates(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-12) for x, y in zip(a, b))


def check_lr_at(lr_at: Callable[[int, float, float, int, int], float]) -> Verdict:
    """``lr_at(step, lr, min_lr, warmup_steps, max_steps)``: linear warmup, then cosine decay to ``min_lr``.

    The reference is :func:`workbench.train.lr_at`, the schedule ``train()`` uses, at every step from 0 to a few
    past ``max_steps``, for the ``tiny-char`` preset's schedule, one without warmup and two random ones.
    """
    from workbench.train import TrainConfig
    from workbench.train import lr_at as reference

    def body() -> Say:
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
                    raise Hint(say(f"return the learning rate as a number, got {type(value).__name__}",
                                   f"请把学习率作为一个数返回，你返回的是 {type(value).__name__}"))
                got.append(float(value))
            if _same_rates(got, want):
                continue
            mistakes = {
                hint: lambda planted=planted: [
                    schedule_variant(s, lr, min_lr, warmup, max_steps, **planted) for s in steps
                ]
                for hint, planted in SCHEDULE_MISTAKES.items()
            }
            hint = _matching_mistake(got, mistakes, _same_rates)
            if hint:
                raise Hint(hint)
            s = next(s for s in steps if not _same_rates([got[s]], [want[s]]))
            if s < warmup:
                phase = say("the warmup", "预热阶段")
            elif s <= max_steps:
                phase = say("the decay", "衰减阶段")
            else:
                phase = say("past max_steps", "max_steps 之后")
            call = f"lr_at({s}, lr={lr:.3g}, min_lr={min_lr:.3g}, warmup_steps={warmup}, max_steps={max_steps})"
            raise Hint(say(
                f"{call} = {got[s]:.4g}, expected {want[s]:.4g} (in {phase}); no known mistake matches",
                f"{call} = {got[s]:.4g}，应为 {want[s]:.4g}（在{phase.zh}）；没有已知错误与之吻合",
            ))
        n = len(cases)
        return say(f"matches workbench.train.lr_at at every step of {n} schedules, warmup, decay and past the end",
                   f"在 {n} 个学习率调度的每一步（预热、衰减和结束之后）都与 workbench.train.lr_at 一致")

    return run_check("lr_at", body)


__all__ = [name for name in dir() if name.startswith("check_")]
