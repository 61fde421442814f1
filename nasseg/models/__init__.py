"""Segmentation (and DARTS CIFAR) networks: the baselines, and networks from decoded architectures.

    model = nasseg.models.build("autodeeplab_s", 19)           # a registered model by name
    model = nasseg.models.build("runs/x/arch.yaml", 11, F=32)  # from a saved ArchSpec file
    model = nasseg.models.build(arch_spec, 11, kind="cifar")   # or an ArchSpec object
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..arch import ArchSpec, load
from ..complexity import count_params, meta_device
from ..config import describe
from ..config.types import Channels
from ..errors import NassegError, SpecError
from .autodeeplab_net import AutoDeepLab
from .darts_net import DartsSegNet, Layers, NetworkCIFAR
from .registry import MODELS, available_models, check_model_args, register_model
from .registry import build as build_registered

ARCH_SUFFIXES = (".yaml", ".yml")
# Weights a network may hold: 1 G parameters = 4 GB of float32, 17x DeepLabV3+ ResNet-101. Keywords
# that are each in range (C, layers, F, classes) can still multiply into a network no machine holds;
# such a network is counted on the meta device and refused before any memory is allocated.
MAX_PARAMETERS = 2**30
CHAIN_KINDS = ("seg", "cifar")  # what a chain ArchSpec becomes (model_args.kind)


def _autodeeplab(arch: ArchSpec, num_classes: int, *, F: Channels = 20, separable_atrous: bool = False) -> AutoDeepLab:
    return AutoDeepLab(arch, num_classes, F, separable_atrous)


def _darts_seg(arch: ArchSpec, num_classes: int, *, C: Channels = 32, layers: Layers = 12) -> DartsSegNet:
    return DartsSegNet(arch, C, layers, num_classes)


def _darts_cifar(arch: ArchSpec, num_classes: int, *, C: Channels = 36, layers: Layers = 20,
                 auxiliary: bool = False) -> NetworkCIFAR:
    return NetworkCIFAR(C, num_classes, layers, auxiliary, arch)


def arch_builder(arch: ArchSpec, kwargs: dict[str, Any]) -> tuple[Callable[..., nn.Module], dict[str, Any]]:
    """The retrain-network builder of ``arch`` and its validated keywords: a lattice architecture (it has a
    ``path``) becomes an :class:`AutoDeepLab` (keywords ``F``, the filter multiplier, and ``separable_atrous``);
    a chain with ``normal`` and ``reduce`` cells a :class:`DartsSegNet` (``C``, ``layers``), or with
    ``kind="cifar"`` a :class:`NetworkCIFAR` (``C``, ``layers``, ``auxiliary``)."""
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
    """The retrain network of ``arch`` for ``num_classes`` classes (keywords as :func:`arch_builder`);
    unknown keywords and bad values are user errors."""
    if not isinstance(arch, ArchSpec):
        arch = load(arch)
    builder, kwargs = arch_builder(arch, kwargs)
    return builder(arch, num_classes, **kwargs)


def _arch(name_or_arch_path: str | Path | ArchSpec) -> ArchSpec | None:
    """The ArchSpec given, or read from an ArchSpec file; None for a registered model's name."""
    if isinstance(name_or_arch_path, ArchSpec):
        return name_or_arch_path
    return load(name_or_arch_path) if str(name_or_arch_path).endswith(ARCH_SUFFIXES) else None


def check_args(name_or_arch_path: str | Path | ArchSpec, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The model's keywords validated as ``build`` would, without building it."""
    arch = _arch(name_or_arch_path)
    if arch is not None:
        return arch_builder(arch, kwargs)[1]
    return check_model_args(MODELS.get_entry(str(name_or_arch_path)), kwargs)


def build(name_or_arch_path: str | Path | ArchSpec, num_classes: int, **kwargs) -> nn.Module:
    """A registered model by name, or the retrain network of an ArchSpec (object or YAML path);
    a network over :data:`MAX_PARAMETERS` weights is refused (NassegError) before it is allocated."""
    arch = _arch(name_or_arch_path)
    def make() -> nn.Module:
        if arch is not None:
            return build_from_arch(arch, num_classes, **kwargs)
        return build_registered(str(name_or_arch_path), num_classes, **kwargs)

    if torch.get_default_device().type != "meta":
        with meta_device():
            params = count_params(make().parameters())
        if params > MAX_PARAMETERS:
            given = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "default keywords"
            label = f"architecture {arch.name!r}" if isinstance(name_or_arch_path, ArchSpec) else name_or_arch_path
            raise NassegError(f"{label} ({given}, {num_classes} classes) would hold "
                              f"{params:,} weights ({params * 4 / 2**30:,.0f} GiB of float32); nasseg builds at "
                              f"most {MAX_PARAMETERS:,}: lower the model's width (C, F) or layers")
    return make()


__all__ = ["MAX_PARAMETERS", "MODELS", "available_models", "build", "check_args", "check_model_args", "build_from_arch",
           "build_registered", "register_model"]
