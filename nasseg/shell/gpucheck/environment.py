"""The machine of a GPU check: the device it checks (or one line why there is none), what the
table's header says about the machine, and float32 that stays float32 on CUDA."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from typing import Any, Iterator

import torch

from nasseg.errors import NassegError


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
