"""An optional native kernel: the matrix-vector product that decoding one token spends most of its time in.

``gemv.c`` is compiled on first use with the machine's C compiler (``$CC``, else ``cc``/``gcc``; about 0.1 s) into
``$XDG_CACHE_HOME/gpt-workbench`` (default ``~/.cache/gpt-workbench``) and loaded with ctypes. It needs no
Python headers and no torch headers, only a compiler with OpenMP. Without one (or with ``WORKBENCH_NATIVE=0``),
:func:`gemv_library` returns None and :class:`workbench.fast.FastLinear` keeps oneDNN: the results agree to float32
rounding, only slower. :func:`native_status` says which it is and why.

Why a kernel of our own: for one input row, oneDNN's packed GEMV streams GPT-2 small's block weights at about
21-23 GB/s on the 2-core reference machine, while a plain sum over the same bytes reads 31-33 GB/s; the four-row
loop in ``gemv.c`` gets closer (see ``benchmarks/generate.py --native-ablation``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import torch

from workbench.files import atomic_write

SOURCE = Path(__file__).with_name("gemv.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
_status = "not loaded yet"


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpt-workbench"


def _cpu_model() -> str:
    """The CPU's name: ``-march=native`` code is only good for the CPU it was built on."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(compiler: str) -> Path:
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join(FLAGS).encode(), compiler.encode(), _cpu_model().encode()]))
    name = f"gemv-{key.hexdigest()[:16]}.so"
    try:
        return _build_into(_cache_dir() / name, compiler)
    except OSError:  # a read-only or odd home (some CI runners, containers): build in the temp directory
        return _build_into(Path(tempfile.gettempdir()) / f"gpt-workbench-{os.getuid()}" / name, compiler)


def _build_into(target: Path, compiler: str) -> Path:
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Another process may build the same file at the same moment: each writes its own temporary file and
        # renames it into place, so a reader never loads half a library.
        atomic_write(target, lambda tmp: subprocess.run(
            [compiler, *FLAGS, str(SOURCE), "-o", str(tmp)], check=True, capture_output=True, text=True
        ))
    return target


@cache
def gemv_library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first call; None when disabled or when it cannot be built here."""
    global _status
    if os.environ.get("WORKBENCH_NATIVE", "1") == "0":
        _status = "off: WORKBENCH_NATIVE=0"
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        _status = "off: no C compiler found (set CC, or install gcc)"
        return None
    try:
        lib = ctypes.CDLL(str(_build(compiler)))
    except subprocess.CalledProcessError as err:
        _status = f"off: {compiler} could not build {SOURCE.name}: {(err.stderr or '').strip()[-300:]}"
        return None
    except OSError as err:
        _status = f"off: {err}"
        return None
    lib.wb_gemv.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64, ctypes.c_int64, ctypes.c_int]
    lib.wb_gemv.restype = None
    _status = f"on: {SOURCE.name} built with {compiler}"
    return lib


def native_status() -> str:
    """Whether the native GEMV is in use, and if not, why."""
    gemv_library()
    return _status


def gemv(lib: ctypes.CDLL, weight: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T + bias`` for an ``x`` holding one row (any leading shape of size 1), float32 on the CPU."""
    n_out, n_in = weight.shape
    # Names keep the contiguous copies (when one is made) alive until the kernel has returned.
    weight, row = weight.contiguous(), x.reshape(n_in).contiguous()
    bias = None if bias is None else bias.contiguous()
    y = torch.empty(*x.shape[:-1], n_out)
    lib.wb_gemv(
        weight.data_ptr(),
        row.data_ptr(),
        None if bias is None else bias.data_ptr(),
        y.data_ptr(),
        n_out,
        n_in,
        torch.get_num_threads(),
    )
    return y
