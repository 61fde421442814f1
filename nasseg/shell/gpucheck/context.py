"""What the checks of one GPU check share: settings, the device, the CPU references computed once,
where runs go, and the seconds and peak GPU memory of each check."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from nasseg.config import dump_yaml, load_yaml
from nasseg.io import atomic_write_text
from nasseg.rundirs import remove_run_dir

from ..bench.measure import release_memory
from .settings import GpuCheckSettings

T = TypeVar("T")
RUNS = "runs"  # OUT/runs/{reference,device}/<run>: the runs the checks compare, kept for a look


@dataclass
class Cost:
    """Seconds on the CPU (reference) and on the device side of one check, peak GPU memory."""

    cpu_seconds: float = 0.0
    device_seconds: float = 0.0
    peak_gpu_bytes: int | None = None


class CheckContext:
    def __init__(self, settings: GpuCheckSettings, device: torch.device):
        self.settings, self.sizes, self.device = settings, settings.sizes, device
        self.references: dict[str, Any] = {}
        self.cost = Cost()

    def begin(self) -> None:
        release_memory()
        self.cost = Cost()

    def reference(self, key: str, compute: Callable[[], T]) -> T:
        """The CPU reference ``key``, computed by the first check that needs it."""
        if key not in self.references:
            start = time.perf_counter()
            self.references[key] = compute()
            self.cost.cpu_seconds += time.perf_counter() - start
        return self.references[key]

    def on_device(self, compute: Callable[[], T]) -> T:
        """``compute()`` timed with the device's queued work, its peak GPU memory recorded."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        result = compute()
        if cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.cost.peak_gpu_bytes = max(peak, self.cost.peak_gpu_bytes or 0)
        self.cost.device_seconds += time.perf_counter() - start
        return result

    def run_dir(self, side: str, name: str, kind: str) -> Path:
        """OUT/runs/<side>/<name> for a fresh ``kind`` run; a run of an earlier check is replaced
        (only when nasseg made it: rundirs' one deletion rule)."""
        path = self.settings.out / RUNS / side / name
        remove_run_dir(path, kind)
        return path

    def space_file(self) -> Path:
        """The DARTS segmentation space at the check's width and depth, written once under OUT/runs."""
        from nasseg import space as spaces

        path = self.settings.out / RUNS / "gpucheck_space.yaml"
        data = load_yaml(spaces.resolve("darts"))
        data.update(name="gpucheck_darts", description="the darts space at the GPU check's size")
        data["network"].update(C=self.sizes.search_width, layers=self.sizes.search_layers)
        atomic_write_text(path, dump_yaml(data))
        return path
