"""Build a trainable network from a decoded architecture (an ArchSpec object or its YAML file).

- a lattice architecture (it has a ``path``) -> :class:`AutoDeepLab` (keyword ``F``, the filter
  multiplier, default 20; ``separable_atrous``);
- a chain architecture with ``normal`` and ``reduce`` cells -> :class:`DartsSegNet` (keywords
  ``C``, ``layers``), or :class:`NetworkCIFAR` with ``kind="cifar"`` (``C``, ``layers``,
  ``auxiliary``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..arch import ArchSpec, load
from ..config import describe
from ..config.types import Channels
from ..errors import SpecError
from .autodeeplab_net import AutoDeepLab
from .darts_net import DartsSegNet, Layers, NetworkCIFAR
from .registry import check_model_args

CHAIN_KINDS = ("seg", "cifar")


def _autodeeplab(arch: ArchSpec, num_classes: int, *, F: Channels = 20,
                 separable_atrous: bool = False) -> AutoDeepLab:
    return AutoDeepLab(arch, num_classes, F, separable_atrous)


def _darts_seg(arch: ArchSpec, num_classes: int, *, C: Channels = 32, layers: Layers = 12) -> DartsSegNet:
    return DartsSegNet(arch, C, layers, num_classes)


def _darts_cifar(arch: ArchSpec, num_classes: int, *, C: Channels = 36, layers: Layers = 20,
                 auxiliary: bool = False) -> NetworkCIFAR:
    return NetworkCIFAR(C, num_classes, layers, auxiliary, arch)


def arch_builder(arch: ArchSpec, kwargs: dict[str, Any]) -> tuple[Callable[..., nn.Module], dict[str, Any]]:
    """The retrain-network builder of ``arch`` and its validated keywords (see the module doc)."""
    kwargs = dict(kwargs)
    if arch.path is not None:
        builder = _autodeeplab
    else:
        kind = kwargs.pop("kind", "seg")
        if kind not in CHAIN_KINDS:
            raise SpecError(None, "model_args.kind", f"expected one of {', '.join(CHAIN_KINDS)} (the network "
                            f"architecture {arch.name!r} becomes), got {describe(kind)}")
        builder = _darts_cifar if kind == "cifar" else _darts_seg
    return builder, check_model_args(builder, kwargs, skip=2)


def build_from_arch(arch: ArchSpec | str | Path, num_classes: int, **kwargs) -> nn.Module:
    """The retrain network of ``arch`` for ``num_classes`` classes (see the module doc for the
    keywords); unknown keywords and bad values are user errors."""
    if not isinstance(arch, ArchSpec):
        arch = load(arch)
    builder, kwargs = arch_builder(arch, kwargs)
    return builder(arch, num_classes, **kwargs)
