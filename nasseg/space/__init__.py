"""The search-space DSL: YAML files -> validated specs -> networkx graphs.

    space = nasseg.space.load("darts")            # a built-in space by name
    space = nasseg.space.load("my_space.yaml")     # or a file
    space.cell_graph, space.network_graph          # what supernets, decoders and drawings read
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..config import resolve_builtin
from .ops import OPS, OpDef, register_op
from .spec import SearchSpace, parse_space, read_space_file

BUILTIN_DIR = Path(str(resources.files("nasseg") / "search_spaces"))


def builtin_spaces() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def resolve(name_or_path: str | Path) -> Path:
    """A path as given, or a built-in space's file for a bare name such as ``darts``."""
    return resolve_builtin(name_or_path, BUILTIN_DIR, "space")


def load(name_or_path: str | Path) -> SearchSpace:
    """Read, validate and compile a search space; raises SpecError (one line) on any problem."""
    space = read_space_file(resolve(name_or_path))
    space.cell_graph, space.network_graph  # compile now so graph-level errors surface at load time
    return space


def is_space_file(data: object) -> bool:
    """Whether a parsed YAML document looks like a search space (vs an ArchSpec or a job)."""
    return isinstance(data, dict) and "cell" in data and "network" in data


__all__ = ["OPS", "OpDef", "register_op", "SearchSpace", "load", "parse_space", "builtin_spaces",
           "resolve", "is_space_file", "BUILTIN_DIR"]
