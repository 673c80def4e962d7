"""The native GEMV (workbench/gemv.c): built here, exact to float32 rounding, independent of the thread count,
and a clean fallback to oneDNN when it cannot be built."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch

from workbench import GPT, GPTConfig, SamplingConfig, generate, native
from workbench.fast import accelerate

COMPILER = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def test_it_builds_wherever_there_is_a_compiler():
    # CI installs gcc, so there this asserts the kernel is on; elsewhere the status must say why it is off.
    if COMPILER:
        assert native.native_status().startswith("on"), native.native_status()
    else:
        assert "no C compiler" in native.native_status()


needs_kernel = pytest.mark.skipif(native.gemv_library() is None, reason=native.native_status())


@needs_kernel
@pytest.mark.parametrize("n_out,n_in", [(2304, 768), (768, 3072), (50257, 64), (7, 33), (5, 16), (1, 1)])
def test_gemv_matches_float64_for_every_shape_and_both_thread_counts(n_out, n_in):
    lib = native.gemv_library()
    g = torch.Generator().manual_seed(n_out * n_in)
    w, x, b = (torch.randn(*s, generator=g) for s in ((n_out, n_in), (1, 1, n_in), (n_out,)))
    reference = x.double() @ w.double().T + b.double()
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(native.gemv(lib, w, x, b))
    finally:
        torch.set_num_threads(threads)
    assert outs[0].shape == (1, 1, n_out)
    torch.testing.assert_close(outs[0].double(), reference, atol=2e-5 * n_in**0.5, rtol=1e-5)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])  # bit for bit, whatever the threads
    torch.testing.assert_close(native.gemv(lib, w, x, None), outs[0] - b, atol=2e-5 * n_in**0.5, rtol=1e-5)


@needs_kernel
def test_gemv_reads_strided_inputs_correctly():
    lib = native.gemv_library()
    w = torch.randn(64, 96)[:, ::2]  # not contiguous: gemv must copy it, and keep the copy alive for the call
    x = torch.randn(3, 48)[1:2]
    bias = torch.randn(128)[::2]
    torch.testing.assert_close(native.gemv(lib, w, x, bias), x @ w.T + bias, atol=1e-5, rtol=1e-5)


FALLBACK = textwrap.dedent(
    """
    import torch
    from workbench import GPT, GPTConfig, SamplingConfig, generate, native
    from workbench.fast import accelerate
    torch.manual_seed(0)
    model = accelerate(GPT(GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=512)).eval())
    out = generate(model, None, [1, 2, 3], SamplingConfig(max_new_tokens=6, temperature=0))
    print(native.native_status())
    print(out.token_ids)
    """
)


@pytest.mark.parametrize("env", [{"WORKBENCH_NATIVE": "0"}, {"CC": "false"}], ids=["switched-off", "bad-compiler"])
def test_without_the_kernel_generation_falls_back_to_onednn_with_the_same_tokens(env, tmp_path):
    def run(extra):
        environ = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), **extra}
        out = subprocess.run([sys.executable, "-c", FALLBACK], capture_output=True, text=True, env=environ, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.splitlines()

    status, tokens = run(env)
    assert status.startswith("off: ") and ("WORKBENCH_NATIVE=0" in status or "could not build" in status), status
    _, reference = run({})
    assert tokens == reference


@needs_kernel
def test_a_model_decodes_through_the_kernel_exactly_like_a_full_forward(monkeypatch):
    # 512 x 1536 and 2048 x 512 weights are above fast.PACKED_MIN_ELEMENTS: each decoding step uses the kernel.
    calls = []
    kernel = native.gemv
    monkeypatch.setattr(native, "gemv", lambda *args: calls.append(1) or kernel(*args))
    torch.manual_seed(0)
    model = accelerate(GPT(GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=512)).eval())
    out = generate(model, None, [1, 2, 3], SamplingConfig(max_new_tokens=8, temperature=0), capture=False)
    assert len(calls) >= 7 * 2 * 3  # decoding steps after the prompt x layers x (c_attn, c_fc, c_proj) at least
    ids = torch.tensor([[1, 2, 3, *out.token_ids]])
    with torch.inference_mode():
        logits = model(ids)[0, 2:-1]  # the full forward's next-token logits at each decoded position
    assert logits.argmax(-1).tolist() == out.token_ids


@needs_kernel
def test_an_unusable_cache_directory_builds_in_the_temp_directory_instead(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(native, "_cache_dir", lambda: blocker / "cache")  # mkdir fails: a file is in the way
    built = native._build(COMPILER)
    assert built.is_file() and built.parent.parent == Path(tempfile.gettempdir())
