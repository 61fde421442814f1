"""The benchmark networks under a stable import path (``from nasseg.bench import NetConfig,
Variant``), used by scripts that time nasseg beside other codes; the benchmarks live in
:mod:`nasseg.shell.bench`."""

from .shell.bench.nets import NetConfig, Variant

__all__ = ["NetConfig", "Variant"]
