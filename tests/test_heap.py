"""nasseg.heap: glibc keeps freed heap memory, so a step that allocates again faults no pages in."""

from __future__ import annotations

import subprocess
import sys

import pytest

CYCLES = """
import resource, sys, torch
from nasseg.heap import keep_freed_heap
if sys.argv[1] == "keep":
    assert keep_freed_heap()
def step():  # 400 MiB in 4 MiB blocks, as a supernet step allocates activations, then freed
    blocks = [torch.ones(2**20) for _ in range(100)]
    del blocks
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    proc = subprocess.run([sys.executable, "-c", CYCLES, mode], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_kept_heap_is_reused_without_page_faults():
    """Three 400 MiB alloc/free cycles (307 200 pages): by default glibc trims the heap after each and
    faults most pages back in (measured 210 910); with the heap kept, a few (measured 9 217)."""
    kept, default = faults("keep"), faults("default")
    assert default > 100_000
    assert kept < default / 5
