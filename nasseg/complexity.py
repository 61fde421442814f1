"""Parameter and multiply-add counting shared by `nasseg info`, the models table and benchmarks."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(params: Iterable[nn.Parameter]) -> int:
    """Number of scalars in a set of parameters (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def count_macs(run_forward: Callable[[], object]) -> int:
    """Multiply-adds of one call of ``run_forward`` (FLOPs of convs/matmuls counted by torch, halved).

    Run it on the ``meta`` device (model and input built under ``torch.device("meta")``) to count
    large inputs without computing anything.
    """
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        run_forward()
    return counter.get_total_flops() // 2


@contextlib.contextmanager
def meta_device():
    """Build modules and tensors without memory or compute, for counting at full resolution."""
    with torch.device("meta"):
        yield


def median_latency(model: nn.Module, size: tuple[int, int], repeats: int = 5, warmup: int = 1,
                   device: str | torch.device = "cpu") -> float:
    """Median wall time in seconds of one eval-mode forward pass of a 1x3xHxW input on this machine.

    Runs under ``torch.inference_mode`` after ``warmup`` untimed passes; on a CUDA device each pass
    is synchronized before the clock stops. The model is moved to ``device`` (in place).
    """
    import statistics
    import time

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = torch.device(device)
    model.to(device).eval()
    x = torch.randn(1, 3, *size, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)
