"""Checks for lesson 15, from a base model to an assistant: the loss mask of supervised fine-tuning, and LoRA."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.checks.core import Hint, Say, Verdict, _call_keeping_inputs, _fresh_generator, run_check, say
from workbench.instruct import IGNORE, sft_targets
from workbench.lora import LoRALinear

# ------------------------------------------------------------------------------------------- the loss mask


def _sft_variant(
    prompt_ids: Sequence[int],
    answer_ids: Sequence[int],
    end: int,
    *,
    masked_shift: int = 0,
    mask_answer: bool = False,
    mask_nothing: bool = False,
    no_end: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`workbench.instruct.sft_targets` written out, with switches to plant one mistake at a time."""
    sequence = torch.tensor([*prompt_ids, *answer_ids, *([] if no_end else [end])], dtype=torch.long)
    x, y = sequence[:-1], sequence[1:].clone()
    first_answer = len(prompt_ids) - 1 + masked_shift  # the target index of the first answer token
    if mask_answer:
        y[first_answer:] = IGNORE
    elif not mask_nothing:
        y[:first_answer] = IGNORE
    return x, y


_SFT_MISTAKES: dict[Say, dict[str, Any]] = {  # hint -> the switches of _sft_variant that plant it
    say("one target too many is masked: the first answer token is never trained. y[t] is the token after x[t], so "
        "the first answer token is y[len(prompt) - 1]; mask y[:len(prompt) - 1]",
        "多遮了一个目标：答案的第一个词元从来没被训练。y[t] 是 x[t] 之后的词元，所以答案的第一个词元是 "
        "y[len(prompt) - 1]；应遮住 y[:len(prompt) - 1]"): dict(masked_shift=1),
    say("one target too few is masked: the last prompt token is still a target. y[t] is the token after x[t], so "
        "the prompt's tokens (after the first) are y[:len(prompt) - 1]; mask exactly those",
        "少遮了一个目标：提示的最后一个词元仍是目标。y[t] 是 x[t] 之后的词元，所以提示的词元（第一个之后）是 "
        "y[:len(prompt) - 1]；正好遮住这些"): dict(masked_shift=-1),
    say("the answer is masked and the prompt is trained: the other way round. The model should learn to answer, so "
        "the prompt's targets are -100 and the answer's (and the end token's) are kept",
        "遮住的是答案、训练的是提示：正好反了。模型要学的是回答，所以提示的目标设为 -100，"
        "答案（和结束词元）的目标保留"): dict(mask_answer=True),
    say("nothing is masked: every prompt token is a target too, so the model also learns to write questions. Set "
        "the prompt's targets to -100 (the value F.cross_entropy ignores)",
        "什么都没遮：提示的每个词元也都是目标，模型于是也学着写问题。把提示的目标设为 -100"
        "（F.cross_entropy 忽略的值）"): dict(mask_nothing=True),
    say("the end token is missing: append `end` after the answer, so that its target teaches the model to stop",
        "漏了结束词元：在答案之后加上 `end`，它作为目标才能教会模型停下来"): dict(no_end=True),
}


def _same_pair(got: Any, want: tuple[torch.Tensor, torch.Tensor]) -> bool:
    return (isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(t, torch.Tensor) for t in got)
            and all(g.shape == w.shape and torch.equal(g.long(), w) for g, w in zip(got, want)))


def check_sft_targets(
    sft_targets_fn: Callable[[list[int], list[int], int], tuple[torch.Tensor, torch.Tensor]],
) -> Verdict:
    """``sft_targets(prompt_ids, answer_ids, end)`` -> ``(x, y)``: the inputs and the masked targets of one example.

    The reference is :func:`workbench.instruct.sft_targets`, on random prompts and answers of several lengths (a
    one-token prompt and a one-token answer among them). Ids are compared exactly.
    """

    def body() -> Say:
        g = _fresh_generator()
        # (prompt, answer) lengths. The first tells every planted mistake apart (with a prompt of 1 or 2 tokens, a
        # mask one short masks nothing, or all but the end); the others are the edge cases.
        cases = [(5, 3), (2, 1), (1, 1), (7, 4)]
        cases += [(int(torch.randint(3, 20, (), generator=g)), int(torch.randint(2, 10, (), generator=g)))]
        for n_prompt, n_answer in cases:
            prompt = torch.randint(1, 500, (n_prompt,), generator=g).tolist()
            answer = torch.randint(1, 500, (n_answer,), generator=g).tolist()
            end = 0
            got = _call_keeping_inputs(sft_targets_fn, ["prompt_ids", "answer_ids"], prompt, answer, end)
            want = sft_targets(prompt, answer, end)
            if _same_pair(got, want):
                continue
            if not (isinstance(got, (tuple, list)) and len(got) == 2):
                raise Hint(say("return two tensors, (x, y): the inputs and the targets",
                               "请返回两个张量 (x, y)：输入和目标"))
            for hint, switches in _SFT_MISTAKES.items():
                try:
                    wrong = _sft_variant(prompt, answer, end, **switches)
                except Exception:  # this mistake cannot happen at these lengths
                    continue
                if _same_pair(got, wrong):
                    raise Hint(hint)
            raise Hint(say(
                f"for a prompt of {n_prompt} tokens and an answer of {n_answer}, expected x = {want[0].tolist()} "
                f"and y = {want[1].tolist()}; no known mistake matches",
                f"提示 {n_prompt} 个词元、答案 {n_answer} 个词元时，应得到 x = {want[0].tolist()}，"
                f"y = {want[1].tolist()}；没有已知错误与之吻合",
            ))
        return say(f"matches workbench.instruct.sft_targets on {len(cases)} random prompts and answers (exact ids)",
                   f"在 {len(cases)} 组随机提示和答案上与 workbench.instruct.sft_targets 一致（词元 id 完全相同）")

    return run_check("sft_targets", body)


# ------------------------------------------------------------------------------------------------------ LoRA


class _LoRAVariant(LoRALinear):
    """:class:`workbench.lora.LoRALinear` with switches to plant one mistake at a time."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, *, b_random: bool = False,
                 scale_inverted: bool = False, transposed: bool = False, base_trainable: bool = False,
                 merge_in_place: bool = False) -> None:
        super().__init__(base, r, alpha)
        self.transposed, self.merge_in_place = transposed, merge_in_place
        if scale_inverted:
            self.scale = r / alpha
        if b_random:
            nn.init.kaiming_uniform_(self.B)
        if transposed:  # A as (in, r) and B as (r, out): x @ A @ B, the same function, the other layout
            self.A = nn.Parameter(self.A.detach().T.contiguous())
            self.B = nn.Parameter(self.B.detach().T.contiguous())
        if base_trainable:
            self.base.requires_grad_(True)

    def delta_weight(self) -> torch.Tensor:
        return self.scale * (self.A @ self.B).T if self.transposed else super().delta_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            return self.base(x) + self.scale * (x @ self.A @ self.B)
        return super().forward(x)

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        if self.merge_in_place:  # folds the update into the base layer this module still adds it to
            self.base.weight += self.delta_weight()
            return self.base
        return super().merge()


_LORA_MISTAKES: dict[Say, dict[str, bool]] = {  # hint -> the switch of _LoRAVariant that plants it
    say("at init the layer differs from the base layer: B must start at zero (nn.init.zeros_ or torch.zeros), so "
        "that B @ A = 0 and fine-tuning starts from the base model exactly",
        "初始化时这一层与基础层不同：B 必须从零开始（nn.init.zeros_ 或 torch.zeros），这样 B @ A = 0，"
        "微调正好从基础模型出发"): dict(b_random=True),
    say("the update is scaled by r / alpha: the scale is alpha / r (a larger alpha means a larger update; dividing by "
        "r keeps the update's size when the rank changes)",
        "更新乘的是 r / alpha：缩放系数应是 alpha / r（alpha 越大更新越大；除以 r 让更新的大小不随秩变化）"):
        dict(scale_inverted=True),
    say("A and B are transposed: store A as (r, in_features) and B as (out_features, r), like nn.Linear weights, so "
        "that delta W = B @ A has the base weight's shape (out_features, in_features)",
        "A 和 B 转置了：A 应是 (r, in_features)、B 应是 (out_features, r)，与 nn.Linear 的权重同样排布，"
        "这样 delta W = B @ A 才与基础权重的形状 (out_features, in_features) 相同"): dict(transposed=True),
    say("the base layer's weights are not frozen: set requires_grad_(False) on every parameter of base, so that "
        "only A and B train (that is the point of LoRA)",
        "基础层的权重没有冻结：对 base 的每个参数调用 requires_grad_(False)，只让 A 和 B 训练（这正是 LoRA 的意义）"):
        dict(base_trainable=True),
    say("merge() changed the base layer in place, so the layer now applies the update twice (W + delta W in the base, "
        "plus B @ A again in forward): build a new nn.Linear with weight W + delta W and leave base as it is",
        "merge() 原地改了基础层，于是这一层把更新加了两次（基础层里已是 W + delta W，forward 里又加一次 B @ A）："
        "新建一个权重为 W + delta W 的 nn.Linear，不要动 base"): dict(merge_in_place=True),
}

def _lora_hint(switch: str) -> Say:
    """The hint of the planted mistake that ``switch`` (a keyword of _LoRAVariant) plants."""
    return next(hint for hint, switches in _LORA_MISTAKES.items() if switches.get(switch))


_CASES = ((12, 20, 4, 16.0, True), (16, 9, 2, 3.0, False), (24, 24, 8, 8.0, True))  # (in, out, r, alpha, bias)


def _scale_inverted(case: tuple[int, int, int, float, bool], state: dict[str, torch.Tensor | None],
                    x: torch.Tensor, got: torch.Tensor) -> bool:
    """Whether ``got`` is what the layer computes from ``x`` with these weights (``base.weight``, ``base.bias``,
    ``A``, ``B``) and the scale r / alpha. The other planted mistakes show earlier: in the layer's parameters, at
    init, or in merge()."""
    n_in, n_out, r, alpha, bias = case
    planted = _LoRAVariant(nn.Linear(n_in, n_out, bias=bias), r, alpha, scale_inverted=True)
    with torch.no_grad():
        for name, value in state.items():
            if value is not None:
                planted.get_parameter(name).copy_(value)
        return torch.allclose(planted(x), got, atol=1e-5, rtol=1e-5)


def _lora_hint(switch: str) -> Say:
    """The hint of the planted mistake that ``switch`` (a keyword of _LoRAVariant) plants."""
    return next(hint for hint, switches in _LORA_MISTAKES.items() if switches.get(switch))


_CASES = ((12, 20, 4, 16.0, True), (16, 9, 2, 3.0, False), (24, 24, 8, 8.0, True))  # (in, out, r, alpha, bias)


def _matching_lora_mistake(case: tuple[int, int, int, float, bool], state: dict[str, torch.Tensor],
                           x: torch.Tensor, got: torch.Tensor) -> Say | None:
    """The hint of the planted mistake whose layer, given the same weights (``state``: ``weight``, ``bias``, ``A``,
    ``B``), computes ``got`` from ``x``. Mistakes seen in the layer's parameters are found before this is needed."""
    n_in, n_out, r, alpha, bias = case
    for hint, switches in _LORA_MISTAKES.items():
        if not switches.get("scale_inverted"):
            continue  # the others show in the parameters, at init, or in merge()
        planted = _LoRAVariant(nn.Linear(n_in, n_out, bias=bias), r, alpha, **switches)
        with torch.no_grad():
            for name, value in state.items():
                if value is not None:
                    planted.get_parameter(name).copy_(value)
            if torch.allclose(planted(x), got, atol=1e-5, rtol=1e-5):
                return hint
    return None


def check_lora_linear(lora_linear: Callable[[nn.Linear, int, float], nn.Module]) -> Verdict:
    """``LoRALinear(base, r, alpha)``: a frozen ``nn.Linear`` plus ``(alpha / r) * B @ A``, with ``A`` of shape
    ``(r, in_features)``, ``B`` of ``(out_features, r)`` and zero, and ``merge()`` -> one ``nn.Linear``.

    Four things are checked on random layers, each exactly by construction:

    1. *At init* the layer is the base layer: the same output (B is zero), only ``A`` and ``B`` train.
    2. *The function*: with random ``A`` and ``B``, the output is the full layer ``W + (alpha / r) B A``'s, i.e.
       ``F.linear(x, W + delta W, b)``.
    3. *The gradient step*: LoRA trains the full weight through a rank-``r`` update. If ``G`` is the gradient of the
       loss for the full weight ``W + delta W``, the chain rule gives ``dL/dB = (alpha / r) G A^T`` and
       ``dL/dA = (alpha / r) B^T G``; the student's gradients must be those, and the base weight gets none.
    4. *merge()* gives an ``nn.Linear`` computing the same function, and leaves the layer itself unchanged.
    """

    def body() -> Say:
        g = _fresh_generator()
        for case in _CASES:
            n_in, n_out, r, alpha, bias = case
            base = nn.Linear(n_in, n_out, bias=bias)
            with torch.no_grad():
                for p in base.parameters():
                    p.copy_(torch.randn(p.shape, generator=g))
            W, b = base.weight.detach().clone(), None if base.bias is None else base.bias.detach().clone()
            layer = lora_linear(base, r, alpha)
            A, B = getattr(layer, "A", None), getattr(layer, "B", None)
            if not isinstance(A, nn.Parameter) or not isinstance(B, nn.Parameter):
                raise Hint(say("the layer needs two nn.Parameter attributes, A and B",
                               "这一层需要两个 nn.Parameter 属性 A 和 B"))
            if A.shape == (n_in, r) and B.shape == (r, n_out):
                raise Hint(_lora_hint("transposed"))
            if A.shape != (r, n_in) or B.shape != (n_out, r):
                raise Hint(say(
                    f"A has shape {tuple(A.shape)} and B {tuple(B.shape)}; expected A ({r}, {n_in}) = (r, in_features) "
                    f"and B ({n_out}, {r}) = (out_features, r)",
                    f"A 的形状是 {tuple(A.shape)}，B 是 {tuple(B.shape)}；应为 A ({r}, {n_in}) = (r, in_features)，"
                    f"B ({n_out}, {r}) = (out_features, r)",
                ))
            trainable = {id(p) for p in layer.parameters() if p.requires_grad}
            if any(id(p) in trainable for p in base.parameters()):
                raise Hint(_lora_hint("base_trainable"))
            if id(A) not in trainable or id(B) not in trainable:
                raise Hint(say("A and B must require gradients: they are what fine-tuning trains",
                               "A 和 B 必须需要梯度：微调训练的正是它们"))
            x = torch.randn(5, 3, n_in, generator=g)
            with torch.no_grad():
                at_init = layer(x)
            if not torch.allclose(at_init, base(x), atol=1e-6, rtol=1e-6):
                hint = _lora_hint("b_random")
                raise Hint(hint if B.detach().abs().sum() > 0 else say(
                    "at init the layer's output differs from the base layer's, although B is zero: forward is "
                    "base(x) + (alpha / r) * x @ A.T @ B.T",
                    "初始化时这一层的输出与基础层不同，而 B 是零：forward 应是 base(x) + (alpha / r) * x @ A.T @ B.T"))
            if torch.count_nonzero(A) == 0:
                raise Hint(say("A is zero at init: with A and B both zero neither gets a gradient. Initialise A "
                               "randomly (as nn.Linear does) and only B at zero",
                               "A 初始化为零：A 和 B 都为零时两者都得不到梯度。A 要随机初始化（如 nn.Linear 那样），"
                               "只有 B 从零开始"))
            # 2. the function, with random factors
            with torch.no_grad():
                A.copy_(torch.randn(A.shape, generator=g) * 0.3)
                B.copy_(torch.randn(B.shape, generator=g) * 0.3)
            delta = (alpha / r) * (B.detach() @ A.detach())
            full = nn.Linear(n_in, n_out, bias=bias)  # full fine-tuning's layer, at the same point
            with torch.no_grad():
                full.weight.copy_(W + delta)
                if bias:
                    full.bias.copy_(b)
            out = layer(x)
            if not torch.allclose(out, full(x), atol=1e-5, rtol=1e-5):
                state = {"base.weight": W, "base.bias": b, "A": A.detach(), "B": B.detach()}
                if _scale_inverted(case, state, x, out.detach()):
                    raise Hint(_lora_hint("scale_inverted"))
                raise Hint(say(
                    "with random A and B the output is not F.linear(x, W + (alpha / r) * B @ A, bias); no known "
                    "mistake matches",
                    "A 和 B 随机时，输出不等于 F.linear(x, W + (alpha / r) * B @ A, bias)；没有已知错误与之吻合"))
            # 3. the gradient step: LoRA's gradients are full fine-tuning's, pushed through the factors
            weights = torch.randn(out.shape, generator=g)  # a random linear loss: every output counts
            (out * weights).sum().backward()
            (full(x) * weights).sum().backward()
            G = full.weight.grad
            if base.weight.grad is not None:
                raise Hint(_lora_hint("base_trainable"))
            for name, got, want in (("B", B.grad, (alpha / r) * G @ A.detach().T),
                                    ("A", A.grad, (alpha / r) * B.detach().T @ G)):
                if got is None or not torch.allclose(got, want, atol=1e-4, rtol=1e-4):
                    raise Hint(say(
                        f"the gradient of {name} is not (alpha / r) times the full weight's gradient pushed through "
                        "the other factor; is forward using A and B themselves (not detached copies)?",
                        f"{name} 的梯度不等于 (alpha / r) 乘以完整权重的梯度经另一个因子传过来的结果；"
                        "forward 用的是 A 和 B 本身（而不是 detach 后的副本）吗？"))
            # 4. merge
            with torch.no_grad():
                merged = layer.merge()
                if not isinstance(merged, nn.Linear):
                    raise Hint(say(f"merge() should return an nn.Linear, not {type(merged).__name__}",
                                   f"merge() 应返回 nn.Linear，而不是 {type(merged).__name__}"))
                after = layer(x)
                if not torch.allclose(after, out, atol=1e-5, rtol=1e-5):
                    # What merging in place does: the base now holds W + delta W, and forward adds delta W again.
                    raise Hint(_lora_hint("merge_in_place"))
                if not torch.allclose(merged(x), out, atol=1e-5, rtol=1e-5):
                    raise Hint(say("the merged layer computes something else: its weight is W + (alpha / r) * B @ A "
                                   "and its bias the base's",
                                   "合并后的层算出的结果不同：它的权重应是 W + (alpha / r) * B @ A，偏置是基础层的"))
        return say(f"equals the base layer at init, the full layer W + (alpha/r)·B·A after, with full fine-tuning's "
                   f"gradient through the factors, and merges exactly ({len(_CASES)} random layers)",
                   f"初始化时等于基础层，之后等于完整的 W + (alpha/r)·B·A 层，梯度正是完整微调的梯度经因子传来的结果，"
                   f"合并也完全一致（{len(_CASES)} 个随机层）")

    return run_check("lora_linear", body)


__all__ = [name for name in dir() if name.startswith("check_")]
