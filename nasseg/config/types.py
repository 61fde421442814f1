"""Field types shared by the schemas: strict scalars (a string is not a number, true is not 1) with
their valid ranges, so that a bad value fails at reading time, naming its key. Every float is finite:
YAML's ``.nan`` and ``.inf`` (or ``1e999``) are refused, not carried into an optimiser or a loop."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, Strict, WithJsonSchema

from ..rundirs import MAX_NAME_LENGTH, PLAIN_NAME, check_run_name
from .schema import describe

Int = Annotated[int, Strict()]
Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]  # finite; an integer is a valid float
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]

PositiveInt = Annotated[int, Strict(), Field(ge=1)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegativeFloat = Annotated[Float, Field(ge=0)]
Probability = Annotated[Float, Field(ge=0, le=1)]
OpenUnit = Annotated[Float, Field(gt=0, lt=1)]  # strictly between 0 and 1
# a training batch: batch normalisation needs two values per channel (DeepLab's image pooling has one per image)
BatchSize = Annotated[int, Strict(), Field(ge=2, description="expected an integer >= 2 (batch normalisation needs 2 images)")]
Seed = Annotated[int, Strict(), Field(ge=0, le=2**32 - 1)]  # what every RNG (torch, numpy, random) takes
MAX_CHANNELS = 4096  # a layer's width (C, F, stem and head channels): DARTS and Auto-DeepLab use 16-256
Channels = Annotated[int, Strict(), Field(ge=1, le=MAX_CHANNELS)]
MAX_CLASSES = 10_000  # classes of a segmentation head: ADE20K-full has 3,688; the logits are per class and pixel
Classes = Annotated[int, Strict(), Field(ge=1, le=MAX_CLASSES)]

# An image size nasseg resizes to, crops or feeds a network: at most the pixels nasseg decodes
# (8192 x 8192, nasseg.data.datasets.MAX_IMAGE_PIXELS), so that a typo such as [99999, 99999]
# fails here instead of allocating tens of gigabytes.
MAX_SIZE_PIXELS = 8192 * 8192


def _within_pixel_limit(size: tuple[int, int]) -> tuple[int, int]:
    if size[0] * size[1] > MAX_SIZE_PIXELS:
        raise ValueError(f"{size[0]}x{size[1]} is {size[0] * size[1]:,} pixels; expected [H, W] of at most "
                         f"{MAX_SIZE_PIXELS:,} pixels (8192 x 8192)")
    return size


Size = Annotated[tuple[PositiveInt, PositiveInt], AfterValidator(_within_pixel_limit)]  # [H, W] in pixels

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _device(value: str) -> str:
    if not _DEVICE.match(value):
        raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {describe(value)}")
    return value


Device = Annotated[str, Strict(), AfterValidator(_device),
                   WithJsonSchema({"type": "string", "pattern": _DEVICE.pattern, "description": "auto, cpu, cuda or cuda:N"})]

RunName = Annotated[str, Strict(), AfterValidator(check_run_name), WithJsonSchema({
    "type": "string", "pattern": f"^{PLAIN_NAME.pattern}$", "maxLength": MAX_NAME_LENGTH,
    "not": {"pattern": r"\.\."}, "description": "a plain run name: the folder under --out the run is written to"})]


def one_or_many(value: Any) -> Any:
    """YAML shorthand: ``seeds: 3`` means ``seeds: [3]``."""
    return [value] if isinstance(value, int) and not isinstance(value, bool) else value


Seeds = Annotated[tuple[Seed, ...], BeforeValidator(one_or_many), Field(min_length=1)]
