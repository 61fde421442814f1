"""Supernets built from a compiled search space (see network.py)."""

from __future__ import annotations

from ..space import SearchSpace, load
from .mixed import MixedOp, SearchCell
from .network import Supernet


def build(space: SearchSpace | str, num_classes: int | None = None) -> Supernet:
    """The supernet of a space (object, file or built-in name)."""
    if not isinstance(space, SearchSpace):
        space = load(space)
    return Supernet(space, num_classes)


__all__ = ["Supernet", "MixedOp", "SearchCell", "build"]
