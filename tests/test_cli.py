"""The command line: help on every subcommand, generation from a checkpoint, one-line errors."""

import subprocess
import sys

import pytest
import torch

from workbench import GPT, GPTConfig, save_checkpoint
from workbench.__main__ import build_parser, main
from workbench.tokenizers import CharTokenizer


def test_every_subcommand_and_flag_has_help():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert subparsers.choices
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{name} --{action.dest} has no help text"


def test_help_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "workbench", "generate", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--max-new-tokens" in out.stdout


def test_generate_from_checkpoint(tmp_path, capsys):
    tok = CharTokenizer.from_text("ROMEO: hello there\n")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8))
    save_checkpoint(model, tok, tmp_path)
    status = main(["generate", "--model", str(tmp_path), "--prompt", "ROMEO:", "--max-new-tokens", "30",
                   "--seed", "0", "--device", "cpu"])
    out = capsys.readouterr()
    assert status == 0
    assert out.out.startswith("ROMEO:") and len(out.out.rstrip("\n")) >= len("ROMEO:") + 30 - 5
    assert "slid the window" in out.err  # 6 + 30 tokens do not fit in 16


@pytest.mark.parametrize("argv,message", [
    (["--model", "/nonexistent/dir"], "no model directory"),
    (["--temperature", "-1"], "temperature must be"),
])
def test_errors_are_one_line_with_nonzero_status(argv, message, capsys):
    status = main(["generate", *argv])
    err = capsys.readouterr().err
    assert status == 2 and message in err and "Traceback" not in err


def test_the_app_command_takes_its_defaults_from_the_app_without_importing_gradio():
    code = ("import sys; from workbench.__main__ import build_parser; "
            "a = build_parser().parse_args(['app']); from workbench.app import session; "
            "print(a.max_new_tokens_cap == session.APP_MAX_NEW_TOKENS_CAP, a.concurrency == session.APP_CONCURRENCY, "
            "'gradio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "False"]
