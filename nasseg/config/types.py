"""Field types shared by the schemas: strict scalars (a string is not a number, true is not 1) with
their valid ranges, so that a bad value fails at reading time, naming its key."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, Strict, WithJsonSchema

from ..rundirs import MAX_NAME_LENGTH, PLAIN_NAME, check_run_name

Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # an integer is a valid float
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]

PositiveInt = Annotated[int, Strict(), Field(ge=1)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0)]
Probability = Annotated[float, Strict(), Field(ge=0, le=1)]
OpenUnit = Annotated[float, Strict(), Field(gt=0, lt=1)]  # strictly between 0 and 1
Size = tuple[PositiveInt, PositiveInt]  # [H, W] in pixels
Seed = NonNegativeInt

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _device(value: str) -> str:
    if not _DEVICE.match(value):
        raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {value!r}")
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
