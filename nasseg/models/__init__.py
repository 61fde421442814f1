"""Segmentation (and DARTS CIFAR) networks: the baselines, and networks from decoded architectures.

    model = nasseg.models.build("autodeeplab_s", 19)           # a registered model by name
    model = nasseg.models.build("runs/x/arch.yaml", 11, F=32)  # from a saved ArchSpec file
    model = nasseg.models.build(arch_spec, 11, kind="cifar")   # or an ArchSpec object
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..arch import ArchSpec, load
from ..complexity import count_params, meta_device
from ..errors import NassegError
from .from_arch import arch_builder, build_from_arch
from .registry import MODELS, available_models, check_model_args, register_model
from .registry import build as build_registered

ARCH_SUFFIXES = (".yaml", ".yml")
# Weights a network may hold: 1 G parameters = 4 GB of float32, 17x DeepLabV3+ ResNet-101. Keywords
# that are each in range (C, layers, F, classes) can still multiply into a network no machine holds;
# such a network is counted on the meta device and refused before any memory is allocated.
MAX_PARAMETERS = 2**30


def check_args(name_or_arch_path: str | Path | ArchSpec, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The model's keywords validated as ``build`` would, without building it (a registered name is
    looked up, an ArchSpec file read)."""
    if isinstance(name_or_arch_path, ArchSpec) or str(name_or_arch_path).endswith(ARCH_SUFFIXES):
        arch = name_or_arch_path if isinstance(name_or_arch_path, ArchSpec) else load(name_or_arch_path)
        return arch_builder(arch, kwargs)[1]
    return check_model_args(MODELS.get_entry(str(name_or_arch_path)), kwargs)


def build(name_or_arch_path: str | Path | ArchSpec, num_classes: int, **kwargs) -> nn.Module:
    """A registered model by name, or the retrain network of an ArchSpec (object or YAML path);
    a network over :data:`MAX_PARAMETERS` weights is refused (NassegError) before it is allocated."""
    if torch.get_default_device().type != "meta":
        with meta_device():
            params = count_params(_build(name_or_arch_path, num_classes, kwargs).parameters())
        if params > MAX_PARAMETERS:
            given = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "default keywords"
            raise NassegError(f"{_label(name_or_arch_path)} ({given}, {num_classes} classes) would hold "
                              f"{params:,} weights ({params * 4 / 2**30:,.0f} GiB of float32); nasseg builds at "
                              f"most {MAX_PARAMETERS:,}: lower the model's width (C, F) or layers")
    return _build(name_or_arch_path, num_classes, kwargs)


def _build(name_or_arch_path: str | Path | ArchSpec, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    if isinstance(name_or_arch_path, ArchSpec) or str(name_or_arch_path).endswith(ARCH_SUFFIXES):
        return build_from_arch(name_or_arch_path, num_classes, **kwargs)
    return build_registered(str(name_or_arch_path), num_classes, **kwargs)


def _label(name_or_arch_path: str | Path | ArchSpec) -> str:
    return f"architecture {name_or_arch_path.name!r}" if isinstance(name_or_arch_path, ArchSpec) else str(name_or_arch_path)


__all__ = ["MAX_PARAMETERS", "MODELS", "available_models", "build", "check_args", "check_model_args", "build_from_arch",
           "build_registered", "register_model"]
