"""``nasseg bench``: supernet step time and peak memory against a straightforward implementation and
the original codes."""

from .suites import NetConfig, Variant

__all__ = ["NetConfig", "Variant"]
