"""keep_freed_memory: freed large buffers stay in the process (Linux/glibc), and the switch turns it off."""

import subprocess
import sys

import pytest

# In a child process (the setting is process-wide): after freeing a 256 MiB buffer, how much of it is still resident.
CHILD = """
import sys
from workbench.memory import keep_freed_memory
import torch

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

kept = keep_freed_memory()
x = torch.ones(64 * 2**20)  # 256 MiB, touched
before = rss_mib()
del x
print(kept, before - rss_mib())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
@pytest.mark.parametrize("switch,expect_kept", [("1", True), ("0", False)])
def test_freed_memory_stays_in_the_process_unless_switched_off(switch, expect_kept, monkeypatch):
    monkeypatch.setenv("WORKBENCH_KEEP_FREED_MEMORY", switch)
    out = subprocess.run([sys.executable, "-c", CHILD], check=True, capture_output=True, text=True).stdout.split()
    kept, released_mib = out[0] == "True", float(out[1])
    assert kept is expect_kept
    if expect_kept:
        assert released_mib < 16  # the buffer's pages stay mapped for the next allocation
    else:
        assert released_mib > 200  # glibc's default: a buffer this large is unmapped on free
