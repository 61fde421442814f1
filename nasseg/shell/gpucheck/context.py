"""The machine of a GPU check (the device it checks, or one line why there is none; what the table's
header says about it; float32 that stays float32 on CUDA) and what the checks share: settings, the
device, the CPU references computed once, where runs go, the seconds and peak GPU memory of each check."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import torch

from nasseg import space as spaces
from nasseg.config import dump_yaml, load_yaml
from nasseg.errors import NassegError
from nasseg.io import atomic_write_text
from nasseg.rundirs import remove_run_dir

from ..bench.measure import release_memory
from ..bench.nets import timed
from .settings import GpuCheckSettings

T = TypeVar("T")
RUNS = "runs"  # OUT/runs/{reference,device}/<run>: the runs the checks compare, kept for a look


def checked_device(name: str) -> torch.device:
    """``cpu`` (both sides on the CPU: checks the harness) or ``cuda[:N]``, which must exist here."""
    if name == "cpu":
        return torch.device("cpu")
    if not name.startswith("cuda"):
        raise NassegError(f"--device {name!r}: expected cuda, cuda:N or cpu")
    try:
        index = torch.device(name).index or 0
    except RuntimeError:
        raise NassegError(f"--device {name!r}: expected cuda, cuda:N or cpu") from None
    if torch.version.cuda is None:
        raise NassegError(f"no CUDA device here: torch {torch.__version__} was built without CUDA (run it with "
                          "a CUDA build of torch, or --device cpu to check the harness)")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        shown = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        raise NassegError(f"no CUDA device here: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no "
                          f"GPU{shown}")
    if index >= count:
        raise NassegError(f"no CUDA device here: {name} asked for, torch sees {count} GPU(s), cuda:0 to "
                          f"cuda:{count - 1}")
    return torch.device("cuda", index)


def describe_machine(device: torch.device) -> dict[str, Any]:
    """Versions and hardware for the table's header."""
    from nasseg import __version__

    facts: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "nasseg": __version__, "python": platform.python_version(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device),
        "cpu_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                     gpu_memory_gib=round(props.total_memory / 2**30, 1), gpus=torch.cuda.device_count(),
                     cudnn=torch.backends.cudnn.version())
    else:
        facts.update(device_name=platform.processor() or platform.machine(), gpus=0)
    return facts


@contextlib.contextmanager
def strict_float32() -> Iterator[None]:
    """TF32 off for cuDNN convolutions and CUDA matrix products inside the block (torch uses TF32,
    10-bit mantissas, for cuDNN convolutions by default): the float32 checks compare float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@dataclass
class Cost:
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
            torch.cuda.reset_peak_memory_stats(self.device)
        seconds, result = timed(compute, self.device)
        self.cost.device_seconds += seconds
        if cuda:
            self.cost.peak_gpu_bytes = max(torch.cuda.max_memory_allocated(self.device), self.cost.peak_gpu_bytes or 0)
        return result

    def run_dir(self, side: str, name: str, kind: str) -> Path:
        """OUT/runs/<side>/<name> for a fresh ``kind`` run; a run of an earlier check is replaced
        (only when nasseg made it: rundirs' one deletion rule)."""
        path = self.settings.out / RUNS / side / name
        remove_run_dir(path, kind)
        return path

    def space_file(self) -> Path:
        """The DARTS segmentation space at the check's width and depth, written once under OUT/runs."""
        path = self.settings.out / RUNS / "gpucheck_space.yaml"
        data = load_yaml(spaces.resolve("darts"))
        data.update(name="gpucheck_darts", description="the darts space at the GPU check's size")
        data["network"].update(C=self.sizes.search_width, layers=self.sizes.search_layers)
        atomic_write_text(path, dump_yaml(data))
        return path
