"""Discrete architectures: the ArchSpec format (and, with the search, its decoders)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import SpecError
from ..spec_reader import did_you_mean
from .spec import ArchSpec, CellGenotype, is_arch_file, load_arch, parse_arch

BUILTIN_DIR = Path(str(resources.files("nasseg") / "archs"))


def builtin_archs() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load(name_or_path: str | Path) -> ArchSpec:
    """An ArchSpec from a file, or a built-in one by name (``darts_v2``, ``autodeeplab``)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load_arch(path)
    builtin = BUILTIN_DIR / f"{name_or_path}.yaml"
    if builtin.exists():
        return load_arch(builtin)
    names = builtin_archs()
    raise SpecError(str(name_or_path), None, "no such file or built-in architecture; built-in: "
                    + ", ".join(names) + did_you_mean(str(name_or_path), names))


__all__ = ["ArchSpec", "CellGenotype", "load", "load_arch", "parse_arch", "is_arch_file", "builtin_archs"]
