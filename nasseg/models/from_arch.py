"""Build a trainable network from a decoded architecture (an ArchSpec object or its YAML file).

- a lattice architecture (it has a ``path``) -> :class:`AutoDeepLab` (keyword ``F``, the filter
  multiplier, default 20; ``separable_atrous``);
- a chain architecture with ``normal`` and ``reduce`` cells -> :class:`DartsSegNet` (keywords
  ``C``, ``layers``), or :class:`NetworkCIFAR` with ``kind="cifar"`` (``C``, ``layers``,
  ``auxiliary``).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

from torch import nn

from ..arch import ArchSpec, load
from ..errors import NassegError
from .autodeeplab_net import AutoDeepLab
from .darts_net import DartsSegNet, NetworkCIFAR

CHAIN_KINDS = ("seg", "cifar")


def _autodeeplab(arch: ArchSpec, num_classes: int, *, F: int = 20,
                 separable_atrous: bool = False) -> AutoDeepLab:
    return AutoDeepLab(arch, num_classes, F, separable_atrous)


def _darts_seg(arch: ArchSpec, num_classes: int, *, C: int = 32, layers: int = 12) -> DartsSegNet:
    return DartsSegNet(arch, C, layers, num_classes)


def _darts_cifar(arch: ArchSpec, num_classes: int, *, C: int = 36, layers: int = 20,
                 auxiliary: bool = False) -> NetworkCIFAR:
    return NetworkCIFAR(C, num_classes, layers, auxiliary, arch)


def _call(builder: Callable[..., nn.Module], arch: ArchSpec, num_classes: int, kwargs: dict) -> nn.Module:
    try:
        inspect.signature(builder).bind(arch, num_classes, **kwargs)
    except TypeError as exc:
        raise NassegError(f"architecture {arch.name!r}: {exc}") from None
    return builder(arch, num_classes, **kwargs)


def build_from_arch(arch: ArchSpec | str | Path, num_classes: int, **kwargs) -> nn.Module:
    """The retrain network of ``arch`` for ``num_classes`` classes (see the module doc for the
    keywords); unknown keywords are user errors."""
    if not isinstance(arch, ArchSpec):
        arch = load(arch)
    if arch.path is not None:
        return _call(_autodeeplab, arch, num_classes, kwargs)
    kind = kwargs.pop("kind", "seg")
    if kind not in CHAIN_KINDS:
        raise NassegError(f"architecture {arch.name!r}: kind must be one of {', '.join(CHAIN_KINDS)}, "
                          f"got {kind!r}")
    return _call(_darts_cifar if kind == "cifar" else _darts_seg, arch, num_classes, kwargs)
