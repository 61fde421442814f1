"""Segmentation (and DARTS CIFAR) networks: the baselines, and networks from decoded architectures.

    model = nasseg.models.build("autodeeplab_s", 19)           # a registered model by name
    model = nasseg.models.build("runs/x/arch.yaml", 11, F=32)  # from a saved ArchSpec file
    model = nasseg.models.build(arch_spec, 11, kind="cifar")   # or an ArchSpec object
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..arch import ArchSpec, load
from .from_arch import arch_builder, build_from_arch
from .registry import MODELS, available_models, check_model_args, register_model
from .registry import build as build_registered

ARCH_SUFFIXES = (".yaml", ".yml")


def check_args(name_or_arch_path: str | Path | ArchSpec, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The model's keywords validated as ``build`` would, without building it (a registered name is
    looked up, an ArchSpec file read)."""
    if isinstance(name_or_arch_path, ArchSpec) or str(name_or_arch_path).endswith(ARCH_SUFFIXES):
        arch = name_or_arch_path if isinstance(name_or_arch_path, ArchSpec) else load(name_or_arch_path)
        return arch_builder(arch, kwargs)[1]
    return check_model_args(MODELS.get_entry(str(name_or_arch_path)), kwargs)


def build(name_or_arch_path: str | Path | ArchSpec, num_classes: int, **kwargs) -> nn.Module:
    """A registered model by name, or the retrain network of an ArchSpec (object or YAML path)."""
    if isinstance(name_or_arch_path, ArchSpec) or str(name_or_arch_path).endswith(ARCH_SUFFIXES):
        return build_from_arch(name_or_arch_path, num_classes, **kwargs)
    return build_registered(str(name_or_arch_path), num_classes, **kwargs)


__all__ = ["MODELS", "available_models", "build", "check_args", "check_model_args", "build_from_arch", "build_registered", "register_model"]
