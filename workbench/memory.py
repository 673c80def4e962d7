"""Keep freed memory inside the process, so a training step reuses pages instead of faulting in fresh ones.

glibc's ``malloc`` serves allocations above 32 MB with ``mmap`` and gives them back to the kernel on ``free``. A
training step of the default model allocates several such buffers every step (the 16 x 256 x 4096 logits and their
gradients, 67 MB each in fp32), so each step makes the kernel map and zero tens of thousands of fresh pages: on the
2-core machines we train on, keeping the pages made the step 1.09-1.18x faster. Serving everything from the heap
and never trimming it lets the next step reuse the same, already mapped pages. The process keeps its peak memory for
its lifetime, which a training run does anyway.

``WORKBENCH_KEEP_FREED_MEMORY=0`` switches this off (the benchmark's ablation uses it).
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int: the largest one, 2 GiB of free heap top before any trim


def keep_freed_memory() -> bool:
    """Make glibc serve every allocation from the heap and never hand freed heap back to the kernel.

    Returns whether the setting took effect: False off Linux/glibc, or with ``WORKBENCH_KEEP_FREED_MEMORY=0``.
    Affects the whole process from this call on; memory already allocated is unchanged.
    """
    if os.environ.get("WORKBENCH_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
