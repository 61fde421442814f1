"""The model registry: segmentation networks by name, built as ``builder(num_classes, **kwargs)``.

The hand-designed baselines register themselves on import; other modules (e.g. networks decoded
from a search) add theirs the same way::

    @register_model("my_net")
    def my_net(num_classes: int, *, width: int = 32) -> nn.Module: ...
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Callable

from torch import nn

from ..errors import NassegError

ModelBuilder = Callable[..., nn.Module]

MODELS: dict[str, ModelBuilder] = {}

# Modules whose import registers the baseline models (imported on first use: they import us).
_BUILTIN_MODULES = ("nasseg.models.deeplabv3plus", "nasseg.models.duc_hdc", "nasseg.models.icnet")


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator adding a builder ``(num_classes, **kwargs) -> nn.Module`` under ``name``."""

    def add(builder: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise NassegError(f"model {name!r} is already registered")
        MODELS[name] = builder
        return builder

    return add


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def available_models() -> list[str]:
    """Sorted names of every registered model."""
    _load_builtins()
    return sorted(MODELS)


def build(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build model ``name`` for ``num_classes`` classes; unknown names/options are user errors."""
    _load_builtins()
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise NassegError(f"unknown model {name!r}{hint} (available: {', '.join(sorted(MODELS))})")
    builder = MODELS[name]
    try:
        inspect.signature(builder).bind(num_classes, **kwargs)
    except TypeError as exc:
        raise NassegError(f"model {name!r}: {exc}") from None
    return builder(num_classes, **kwargs)
