"""One device resolver for every place that takes a device name (job files, ``--device``)."""

from __future__ import annotations

import torch

from .errors import NassegError


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; an absent CUDA or a malformed name is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NassegError(f"device {name!r} requested but CUDA is not available on this machine (use cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise NassegError(f"device {name!r}: expected auto, cpu, cuda or cuda:N") from None
