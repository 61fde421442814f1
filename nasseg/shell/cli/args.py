"""Argument types shared by the sub-commands: each bad value becomes argparse's one-line usage error."""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable

from nasseg.config.types import MAX_CLASSES, MAX_SIZE_PIXELS

MAX_SCALE = 8.0  # a test-time scale (DeepLab's largest: 1.75); the scaled image is decoded in memory


def parse_size(text: str) -> tuple[int, int]:
    """'321x321' -> (321, 321); one number means a square; at most 8192 x 8192 pixels."""
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 321x321, got {text!r}") from None
    if len(sizes) == 1:
        sizes *= 2
    if len(sizes) != 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW such as 321x321, got {text!r}")
    if sizes[0] * sizes[1] > MAX_SIZE_PIXELS:
        raise argparse.ArgumentTypeError(f"{text!r} is {sizes[0] * sizes[1]:,} pixels; expected HxW of at most "
                                         f"{MAX_SIZE_PIXELS:,} pixels (8192x8192)")
    return sizes[0], sizes[1]


def parse_size_or_none(text: str) -> tuple[int, int] | str:
    """'HxW' -> (h, w); 'none' -> 'none' (whole images, or images as stored)."""
    return "none" if text.lower() == "none" else parse_size(text)


def parse_scales(text: str) -> tuple[float, ...]:
    """'0.75,1,1.25' -> (0.75, 1.0, 1.25); every scale must be positive."""
    try:
        scales = tuple(float(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected scales such as 0.75,1,1.25, got {text!r}") from None
    if not scales or not all(math.isfinite(s) and 0 < s <= MAX_SCALE for s in scales):
        raise argparse.ArgumentTypeError(f"expected scales above 0 and at most {MAX_SCALE:g}, such as 0.75,1,1.25, "
                                         f"got {text!r}")
    return scales


def _checked(cast: Callable[[str], Any], ok: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse type: ``cast(text)`` when it passes ``ok``, else "expected <expected>, got <text>"."""
    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
opacity = _checked(float, lambda v: 0 <= v <= 1, "an opacity between 0 and 1")
seed_value = _checked(int, lambda v: 0 <= v < 2**32, f"a seed 0..{2**32 - 1}")  # what torch, numpy and random take


def class_count(text: str) -> int:
    """A number of classes: 1 .. MAX_CLASSES."""
    value = positive_int(text)
    if value > MAX_CLASSES:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_CLASSES:,} classes, got {text!r}")
    return value
