"""Process-wide settings, made once at each entry point of the shell (the ``nasseg`` command, a Ray
Tune trial, a Ray Train worker, a benchmark child process) and never by the library core."""

from __future__ import annotations

import os


def configure_process(threads: int | None = None) -> None:
    """glibc keeps freed heap for reuse (nasseg.heap), figures render off-screen, and torch uses
    ``threads`` intra-op threads when given."""
    from nasseg.heap import keep_freed_heap

    keep_freed_heap()
    # drawings and plots are written to files, never shown: no display, no GUI toolkit in workers
    os.environ.setdefault("MPLBACKEND", "Agg")
    if threads is not None:
        import torch
        torch.set_num_threads(threads)
