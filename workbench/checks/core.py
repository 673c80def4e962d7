"""What every lesson's checks share: the verdict line and its language, fresh random inputs, tensor comparison with
known mistakes."""


from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

ATOL = 1e-5
RTOL = 1e-5

Mistakes = dict[str, Callable[[], Any]]  # hint -> what the code would return with that mistake


LANGUAGES = ("en", "zh")
_language = "en"


def use_language(language: str) -> None:
    """Speak ``language`` ("en" or "zh") in every verdict and hint from now on, in this Python process (the first
    code cell of each lesson of the Chinese edition calls ``checks.use_language("zh")``)."""
    global _language
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, not {language!r}")
    _language = language


def language() -> str:
    """The language verdicts and hints are printed in: "en" or "zh"."""
    return _language


class Say(str):
    """A message in English and in Chinese. It is the English text as a ``str`` (so it can key a dict of mistakes
    and be compared), and :func:`shown` gives the text in the language in use when it is printed."""

    zh: str

    def __new__(cls, en: str, zh: str) -> Say:
        text = super().__new__(cls, en)
        text.zh = zh
        return text


def say(en: str, zh: str) -> Say:
    """One message in both languages; format each yourself (``say(f"... {x}", f"... {x}")``)."""
    return Say(en, zh)


def _zh(message: object) -> str:
    """The Chinese text of ``message`` (a :class:`Say`), or ``message`` itself: for composing one Say from others."""
    return message.zh if isinstance(message, Say) else str(message)


def shown(message: object) -> str:
    """``message`` in the language in use: a :class:`Say` in Chinese under ``use_language("zh")``, else as is."""
    if _language == "zh" and isinstance(message, Say):
        return message.zh
    return str(message)


class Verdict:
    """What a check returns: true when it passed. A notebook shows nothing for it (the check has printed its line),
    so a check as a cell's last expression does not add a stray ``True`` under the verdict."""

    def __init__(self, passed: bool) -> None:
        self.passed = passed

    def __bool__(self) -> bool:
        return self.passed

    def __eq__(self, other: object) -> bool:
        return bool(self) == other if isinstance(other, (bool, Verdict)) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.passed)

    def __repr__(self) -> str:
        return repr(self.passed)

    def _ipython_display_(self) -> None:  # IPython: display nothing
        pass


class Hint(Exception):
    """The student's code is wrong; the message (a :class:`Say`, or plain English) is the one hint to show."""


def _fresh_generator() -> torch.Generator:
    """A generator with a new seed on every check, so a solution cannot be fitted to fixed inputs."""
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(6), "little"))


def run_check(name: str, body: Callable[[], str]) -> Verdict:
    """Run ``body`` (which returns a success detail or raises :class:`Hint`) and print the verdict line in the
    language in use."""
    try:
        detail = body()
    except NotImplementedError:
        todo = say("not implemented yet (write the code where it says 'your code here', then rerun)",
                   "尚未实现（在写着 'your code here' 的地方写好代码，再运行一次）")
        print(f"○ {name}: {shown(todo)}")
        return Verdict(False)
    except Hint as hint:
        print(f"✗ {name}: {shown(hint.args[0] if hint.args else '')}")
        return Verdict(False)
    except Exception as err:  # the student's code crashed: one line, not a traceback
        print(f"✗ {name}: {shown(_crash_hint(err))}")
        return Verdict(False)
    print(f"✓ {name}: {shown(detail)}")
    return Verdict(True)


_NOT_CONTIGUOUS = "view size is not compatible with input tensor's size and stride"


def _crash_hint(err: Exception) -> Say:
    """The line for a student's code that raised ``err``: its type and message, and what to do where the cause is
    known (torch's own message is English in either language)."""
    raised = say(f"your code raised {type(err).__name__}: {err}", f"你的代码抛出了 {type(err).__name__}: {err}")
    if isinstance(err, RuntimeError) and _NOT_CONTIGUOUS in str(err):
        # The classic of merging heads: transpose(1, 2) only changes strides, so a .view() of it cannot work.
        en, zh = str(raised).rstrip("."), raised.zh.rstrip(".")  # torch's message ends with a full stop already
        return say(
            f"{en}. After a transpose the tensor is not contiguous in memory, so .view() cannot regroup it: use "
            ".reshape(...) (or .contiguous().view(...))",
            f"{zh}。transpose 之后张量在内存中不再连续，.view() 无法重新组合它：改用 .reshape(...)"
            "（或 .contiguous().view(...)）",
        )
    return raised


def _call_keeping_inputs(fn: Callable[..., Any], names: Sequence[str], *args: Any) -> Any:
    """Call ``fn(*args)``; raise a Hint naming any argument the call changed in place."""
    before = [a.clone() if isinstance(a, torch.Tensor) else list(a) if isinstance(a, list) else a for a in args]
    out = fn(*args)
    for name, arg, copy in zip(names, args, before):
        same = torch.equal(arg, copy) if isinstance(arg, torch.Tensor) else arg == copy
        if not same:
            raise Hint(say(
                f"your code changed its input `{name}` in place (an in-place op such as `+=`, `masked_fill_` or "
                "`list.pop`); leave inputs as they are and build a new result",
                f"你的代码原地修改了输入 `{name}`（用了 `+=`、`masked_fill_` 或 `list.pop` 之类的原地操作）；"
                "不要改动输入，另建一个新结果",
            ))
    return out


def _close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=atol, rtol=rtol)


def _matching_mistake(got: Any, mistakes: Mistakes, same: Callable[[Any, Any], bool]) -> str | None:
    """The hint of the first known mistake whose output equals ``got`` (mistakes that cannot run are skipped)."""
    for hint, compute in mistakes.items():
        try:
            wrong = compute()
        except Exception:  # this mistake is impossible at these shapes
            continue
        if same(got, wrong):
            return hint
    return None


def _compare_tensors(
    got: Any,
    want: torch.Tensor,
    mistakes: Mistakes,
    *,
    shape_hint: str = "",
    nan_hint: str = say("the output contains NaN", "输出里有 NaN"),
    atol: float = ATOL,
    rtol: float = RTOL,
) -> float:
    """Raise a Hint unless ``got`` matches ``want``; return the largest absolute difference."""
    if not isinstance(got, torch.Tensor):
        raise Hint(say(f"expected a torch.Tensor, got {type(got).__name__}",
                       f"应返回 torch.Tensor，却得到了 {type(got).__name__}"))
    if got.shape != want.shape:
        # A known mistake of another shape (heads not transposed, say) explains itself better than the shapes.
        hint = _matching_mistake(got, mistakes, lambda a, b: _close(a, b, atol, rtol))
        raise Hint(hint or say(
            f"output shape {tuple(got.shape)}, expected {tuple(want.shape)}. {shape_hint}".strip(),
            f"输出形状为 {tuple(got.shape)}，应为 {tuple(want.shape)}。{_zh(shape_hint)}".strip(),
        ))
    if torch.isnan(got).any() and not torch.isnan(want).any():
        # A known mistake that gives NaN in the same places (a max taken over the wrong axis, say) is more precise
        # than the general NaN hint.
        def same_nan(a: torch.Tensor, b: torch.Tensor) -> bool:
            return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=atol, rtol=rtol, equal_nan=True)

        raise Hint(_matching_mistake(got, mistakes, same_nan) or nan_hint)
    if _close(got, want, atol, rtol):
        return (got.float() - want.float()).abs().max().item() if got.numel() else 0.0
    hint = _matching_mistake(got, mistakes, lambda a, b: _close(a, b, atol, rtol))
    diff = (got.float() - want.float()).abs().max().item()
    raise Hint(hint or say(
        f"values differ from the reference (largest difference {diff:.3g}); no known mistake matches",
        f"数值与参考实现不同（最大差值 {diff:.3g}）；没有已知错误与之吻合",
    ))


def _passed(n_cases: int, max_diff: float | None = None) -> Say:
    if max_diff is None:
        return say(f"matches the reference on {n_cases} random inputs", f"在 {n_cases} 组随机输入上与参考实现一致")
    exact = say("bit-exact", "逐位相同") if max_diff == 0.0 else say(
        f"max difference {max_diff:.1e}", f"最大差值 {max_diff:.1e}")
    return say(f"matches the reference on {n_cases} random inputs ({exact})",
               f"在 {n_cases} 组随机输入上与参考实现一致（{exact.zh}）")


def randomize(module: nn.Module, g: torch.Generator, std: float = 0.3) -> nn.Module:
    """Give every parameter random values (LayerNorm weights around 1), so that any mix-up changes the output."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            is_norm_weight = p.dim() == 1 and name.endswith("weight")
            p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if is_norm_weight else 0.0))
    return module.eval()


def _load_student(student_cls: type[nn.Module], reference: nn.Module, *args: Any) -> nn.Module:
    """Build the student's module and copy the reference's weights into it, by GPT-2's parameter names."""
    student = student_cls(*args)
    missing = set(reference.state_dict()) - set(student.state_dict())
    if missing:
        names = ", ".join(sorted(missing))
        raise Hint(say(
            f"your module has no parameters named {names}; keep GPT-2's names so that weights load (the names are "
            "given in __init__)",
            f"你的模块里没有名为 {names} 的参数；请保留 GPT-2 的参数名，权重才能载入（__init__ 里已给出这些名字）",
        ))
    student.load_state_dict(reference.state_dict(), strict=False)
    return student.eval()
