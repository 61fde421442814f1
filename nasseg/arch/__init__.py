"""Discrete architectures: the ArchSpec format, uniform random sampling from a space (.sample) and,
with the search, the decoders."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..config import resolve_builtin
from .sample import count_architectures, sample_architecture
from .spec import ArchSpec, CellGenotype, is_arch_file, load_arch, parse_arch

BUILTIN_DIR = Path(str(resources.files("nasseg") / "archs"))


def builtin_archs() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load(name_or_path: str | Path) -> ArchSpec:
    """An ArchSpec from a file, or a built-in one by name (``darts_v2``, ``autodeeplab``)."""
    return load_arch(resolve_builtin(name_or_path, BUILTIN_DIR, "architecture"))


__all__ = ["ArchSpec", "CellGenotype", "load", "load_arch", "parse_arch", "is_arch_file", "builtin_archs",
           "sample_architecture", "count_architectures"]
