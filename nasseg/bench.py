"""The benchmark networks under the import path the side-by-side scripts of the original codes use
(``from nasseg.bench import NetConfig, Variant``); the benchmarks live in :mod:`nasseg.shell.bench`."""

from .shell.bench import NetConfig, Variant

__all__ = ["NetConfig", "Variant"]
