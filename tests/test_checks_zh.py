"""Every check speaks Chinese under ``checks.use_language("zh")``: each planted mistake's hint, the ✓ detail of a correct
implementation and the "not implemented" of a stub; and a check cell in a real kernel shows its verdict line only.

The cases are the lesson test modules' own lists (imported, not retyped), so a mistake planted there is checked here
in Chinese too. In English, :func:`verdicts.verdict` asserts on every check the suites run that no Chinese is printed.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from workbench import checks

import test_checks_assistant as lesson_15
import test_checks_encoder_decoder as lesson_10
import test_checks_generation as lesson_08
import test_checks_inside as lesson_09
import test_checks_modern as lesson_14
import test_checks_real_gpt2 as lessons_11_13
import test_checks_training as lesson_07
import test_lessons as lessons_01_06
from verdicts import case_ids, has_chinese, planted_ids, stub_of, verdict

ROOT = Path(__file__).resolve().parent.parent

PLANTED = [
    *lessons_01_06.PLANTED, *lesson_07.PLANTED, *lesson_08.PLANTED_08, *lesson_09.PLANTED, *lesson_10.PLANTED,
    *lessons_11_13.PLANTED, *lesson_14.PLANTED, *lesson_15.PLANTED,
]
CORRECT = [
    *lessons_01_06.CORRECT, *lesson_07.CORRECT, *lesson_08.CORRECT_08, *lesson_09.CORRECT, *lesson_10.CORRECT,
    *lessons_11_13.CORRECT, *lesson_14.CORRECT, *lesson_15.CORRECT,
]


# Lesson 08's stubs are its own (a cache's stub leaves append to write, not forward); the others are built alike.
STUBS = [(check, stub_of(student)) for check, student in dict(CORRECT).items() if check not in dict(lesson_08.STUBS_08)]
STUBS += lesson_08.STUBS_08


# --------------------------------------------------------------------------------- what counts as English prose

_CODE = re.compile(r"`[^`]*`")
# A Python or torch error message quoted in a hint stays as the interpreter wrote it: from "SomethingError: " to
# the next Chinese character or full-width parenthesis.
_QUOTED_ERROR = re.compile(r"\b\w*(?:Error|Exception): [^\u4e00-\u9fff（]*")
_PLAIN_PARENS = re.compile(r"（[^（）\u4e00-\u9fff]*）")  # full-width parentheses around code or an error, no Chinese
_WORD = r"(?<![\w.'])[A-Za-z]{2,}(?![\w.('])"  # a word of prose: not part of an identifier, a call or a quote
_SENTENCE = re.compile(rf"{_WORD}(?: {_WORD}){{3,}}")


def english_sentences(text: str) -> list[str]:
    """Runs of 4+ English words in ``text`` outside code spans and quoted error messages: untranslated prose."""
    prose = _PLAIN_PARENS.sub("", _QUOTED_ERROR.sub("", _CODE.sub("", text)))
    return _SENTENCE.findall(prose)


def test_english_prose_is_found_and_code_is_not():
    assert english_sentences("这是 ReLU：the activation is missing here")
    assert english_sentences("✗ gelu: values differ from the reference (largest difference 1)")
    for chinese in ("✗ attention: 请用 masked_fill(~mask, float('-inf'))，softmax 才会给它们 0",
                    "✗ MLP: 你的代码抛出了 AttributeError: 'Tensor' object has no attribute 'x'",
                    "✗ last_token_states: 下标越过了末尾（index 9 is out of bounds for dimension 1 with size 9）",
                    "○ softmax: 尚未实现（在写着 'your code here' 的地方写好代码，再运行一次）",
                    "✗ layer_norm: 你的代码原地修改了输入 `x`（用了 `+=`、`masked_fill_` 或 `list.pop` 之类的原地操作）"):
        assert not english_sentences(chinese), chinese


# -------------------------------------------------------------------------------------------- in Chinese


@pytest.fixture
def zh():
    """Chinese for one test; English again afterwards, whatever happened in between."""
    checks.use_language("zh")
    try:
        yield
    finally:
        checks.use_language("en")


def assert_chinese(out: str) -> None:
    assert has_chinese(out), out
    assert not english_sentences(out), f"untranslated English {english_sentences(out)} in {out!r}"
    assert "Traceback" not in out, out


@pytest.mark.parametrize("check, wrong, hint", PLANTED, ids=planted_ids(PLANTED))
def test_every_planted_mistake_gets_a_chinese_hint(zh, capsys, check, wrong, hint):
    ok, out = verdict(capsys, check, wrong)
    assert not ok and out.startswith("✗"), out
    assert_chinese(out)


@pytest.mark.parametrize("check, student", CORRECT, ids=case_ids(CORRECT))
def test_a_correct_implementation_gets_a_chinese_detail(zh, capsys, check, student):
    ok, out = verdict(capsys, check, student)
    assert ok and out.startswith("✓"), out
    assert_chinese(out)


@pytest.mark.parametrize("check, stub", STUBS, ids=case_ids(STUBS))
def test_a_stub_is_not_implemented_in_chinese(zh, capsys, check, stub):
    ok, out = verdict(capsys, check, stub)
    assert not ok and out.startswith("○") and "尚未实现" in out, out
    assert_chinese(out)


def test_the_success_detail_formats_each_language_with_the_same_values(zh, capsys):
    ok, out = verdict(capsys, checks.check_multihead, lessons_01_06.MultiHead)
    assert ok and "在 4 组随机输入上与参考实现一致（逐位相同）" in out, out


# -------------------------------------------------------------------------------------------- in English


@pytest.mark.parametrize("check, student", CORRECT + STUBS, ids=case_ids(CORRECT + STUBS))
def test_english_prints_no_chinese(capsys, check, student):
    """English is the default; a line with Chinese in it would mean a message formatted the Chinese side into the
    English one (``verdict`` asserts the same on every planted mistake of the lesson test modules)."""
    assert checks.language() == "en"
    _, out = verdict(capsys, check, student)
    assert not has_chinese(out), out


def test_a_verdict_is_true_or_false_but_not_the_singletons(capsys):
    passed, failed = checks.check_gelu(lessons_01_06.gelu), checks.check_gelu(lessons_01_06.doubled)
    capsys.readouterr()
    assert passed and passed == True and not failed and failed == False  # noqa: E712  what notebooks may compare
    assert passed is not True and failed is not False  # a Verdict, which a notebook does not display


# ------------------------------------------------------------------------------------------ in a kernel


def test_a_check_cell_shows_its_verdict_and_no_stray_true(tmp_path):
    """In Jupyter, a check as a cell's last expression prints its verdict line and displays nothing more: the
    Verdict it returns has no execute_result (a bool would add ``True`` under every ✓)."""
    code = nbformat.v4.new_code_cell
    notebook = nbformat.v4.new_notebook(cells=[
        code("import torch\n\nfrom workbench import checks"),
        code("def softmax(x):\n    e = torch.exp(x - x.amax(dim=-1, keepdim=True))\n"
             "    return e / e.sum(dim=-1, keepdim=True)"),
        code("checks.check_softmax(softmax)"),
    ])
    # The kernel starts in the repository, so that it imports this checkout's workbench.
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = notebook.cells[2].outputs
    assert [o.output_type for o in outputs] == ["stream"], outputs
    assert outputs[0].name == "stdout" and outputs[0].text.startswith("✓ softmax: matches the reference"), outputs
