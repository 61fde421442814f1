"""Former home of the spec readers; everything moved to :mod:`nasseg.config`."""

from .config import describe, did_you_mean, load_yaml, resolve_builtin

__all__ = ["describe", "did_you_mean", "load_yaml", "resolve_builtin"]
