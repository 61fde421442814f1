"""How much memory a job can use on this machine now."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Available:
    bytes: int
    source: str  # where the figure comes from, for messages


def available_memory(device: str) -> Available | None:
    """Free memory of ``device`` (``cpu``, ``cuda``, ``cuda:N``): on CUDA what the driver reports
    free, on CPU the memory the kernel can give without swapping (MemAvailable of /proc/meminfo).
    None where it is not known (a CPU job on a system without /proc)."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return Available(int(free), f"free on {device}")
    return _meminfo_available()


def _meminfo_available() -> Available | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return Available(int(line.split()[1]) * 1024, "MemAvailable")
    except OSError:
        pass
    return None


__all__ = ["Available", "available_memory"]
