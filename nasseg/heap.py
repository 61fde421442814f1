"""glibc malloc settings for the long-running processes of a search or a training run.

By default glibc hands the top of its heap back to the operating system once more than a
(dynamically raised) threshold is free there. A supernet step whose peak exceeds the previous
steps' (a second-order DARTS step: its recorded ReLU masks and the unrolled weights) then
grows the heap again on every step, and every 4 KiB page of that growth is a page fault:
350 000 of them per second-order step of the DARTS CIFAR search net, 2-3 s of its 37 s on
the benchmark machine (docs/performance.md). Keeping freed memory for reuse removes them; the
process's peak memory is unchanged, only its resident size no longer shrinks after a peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's largest mmap threshold on 64-bit: blocks from this size on are still mapped and unmapped
# one by one (setting any threshold switches off the dynamic adjustment, whose ceiling this is)
_MMAP_THRESHOLD = 32 * 2**20
_NEVER_TRIM = 2**31 - 1
_applied = False


def keep_freed_heap() -> bool:
    """Make glibc keep freed heap memory for reuse (no automatic trimming; blocks below 32 MiB
    come from the heap). Once per process; True if in effect, False where malloc is not glibc's."""
    global _applied
    if _applied:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
    return _applied
