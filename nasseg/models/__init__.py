"""Segmentation (and DARTS CIFAR) networks: the baselines, and networks from decoded architectures.

    model = nasseg.models.build("autodeeplab_s", 19)           # a registered model by name
    model = nasseg.models.build("runs/x/arch.yaml", 11, F=32)  # from a saved ArchSpec file
    model = nasseg.models.build(arch_spec, 11, kind="cifar")   # or an ArchSpec object
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..arch import ArchSpec
from . import autodeeplab_net, darts_net  # noqa: F401  (import registers their models)
from .from_arch import build_from_arch
from .registry import available_models, register_model
from .registry import build as build_registered

ARCH_SUFFIXES = (".yaml", ".yml")


def build(name_or_arch_path: str | Path | ArchSpec, num_classes: int, **kwargs) -> nn.Module:
    """A registered model by name, or the retrain network of an ArchSpec (object or YAML path)."""
    if isinstance(name_or_arch_path, ArchSpec) or str(name_or_arch_path).endswith(ARCH_SUFFIXES):
        return build_from_arch(name_or_arch_path, num_classes, **kwargs)
    return build_registered(str(name_or_arch_path), num_classes, **kwargs)


__all__ = ["available_models", "build", "build_from_arch", "build_registered", "register_model"]
