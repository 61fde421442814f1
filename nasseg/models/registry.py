"""The model registry: segmentation networks by name, built as ``builder(num_classes, **kwargs)``.

The hand-designed baselines register themselves on import; other modules (e.g. networks decoded
from a search) add theirs the same way::

    @register_model("my_net")
    def my_net(num_classes: int, *, width: PositiveInt = 32) -> nn.Module: ...

Keyword arguments are checked against the builder's signature (names, types, Annotated ranges)
before anything is built: ``model_args.width: must be >= 1, got -4``.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..config import validate_keywords
from ..registry import Registry

ModelBuilder = Callable[..., nn.Module]

# the modules whose import registers the baseline models (imported on the first lookup: they import us)
MODELS: Registry[ModelBuilder] = Registry("model", builtins=(
    "nasseg.models.deeplabv3plus", "nasseg.models.duc_hdc", "nasseg.models.icnet",
    "nasseg.models.darts_net", "nasseg.models.autodeeplab_net"))


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator adding a builder ``(num_classes, **kwargs) -> nn.Module`` under ``name``."""
    return MODELS.decorator(name)


def available_models() -> list[str]:
    return list(MODELS)


def check_model_args(builder: ModelBuilder, kwargs: dict[str, Any], skip: int = 1) -> dict[str, Any]:
    """``kwargs`` validated against the builder's keywords (after its first ``skip`` parameters);
    errors name ``model_args.KEY``."""
    return validate_keywords(builder, kwargs, skip=skip, key="model_args")


def build(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build model ``name`` for ``num_classes`` classes; unknown names and bad options are user errors."""
    builder = MODELS.get_entry(name)
    return builder(num_classes, **check_model_args(builder, kwargs))
