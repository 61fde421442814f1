"""ArchSpec: a discrete architecture (what a search finds), stored as YAML.

    name: darts_v2
    space: darts_cifar            # the space it was decoded from (informative)
    cells:
      normal:
        inputs: 2                 # node ids 0..inputs-1 are the cell inputs (0 = two layers back)
        nodes:                    # intermediate node -> kept edges [op, input node]
          2: [[sep_conv_3x3, 0], [sep_conv_3x3, 1]]
          ...
        concat: [2, 3, 4, 5]      # nodes concatenated into the cell output
      reduce: {...}
    path: [4, 4, 4, 8, ...]       # lattice spaces: the stride of every cell layer
    meta: {epoch: 49}             # free-form provenance

Op names are op-registry names, the vocabulary of search spaces, so a decoded cell can be
drawn, rebuilt and retrained anywhere. Writing and reading again gives an equal ArchSpec.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Sequence

import yaml
from pydantic import Field

from ..config import describe, did_you_mean, load_yaml, spec, validate
from ..config.types import Int, NonNegativeInt, Str
from ..errors import SpecError
from ..space.ops import OPS
from ..space.spec import MAX_LAYERS

Edge = tuple[str, int]  # (op, input node)


@dataclass(frozen=True)
class CellGenotype:
    inputs: int
    nodes: dict[int, tuple[Edge, ...]]
    concat: tuple[int, ...]

    def edges(self) -> list[tuple[int, int, str]]:
        """(input, node, op) for every kept edge, in node order."""
        return [(source, node, op) for node, kept in sorted(self.nodes.items()) for op, source in kept]

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": self.inputs,
                "nodes": {node: [[op, source] for op, source in kept] for node, kept in sorted(self.nodes.items())},
                "concat": list(self.concat)}


@dataclass(frozen=True)
class ArchSpec:
    name: str
    cells: dict[str, CellGenotype]
    path: tuple[int, ...] | None = None
    space: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name}
        if self.space:
            data["space"] = self.space
        data["cells"] = {kind: cell.to_dict() for kind, cell in self.cells.items()}
        if self.path is not None:
            data["path"] = list(self.path)
        if self.meta:
            data["meta"] = self.meta
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def save(self, path: str | Path) -> Path:
        from ..io import atomic_write_text
        return atomic_write_text(path, self.to_yaml())


# --- the document -----------------------------------------------------------------------------

Node = Annotated[int, Field(ge=1, le=10_000, strict=True)]
KeptEdge = Annotated[tuple[Str, NonNegativeInt], Field(description="expected [op, input node]")]


@spec
class CellDoc:
    nodes: Annotated[dict[Node, Annotated[tuple[KeptEdge, ...], Field(
        min_length=1, description="expected a list of [op, input node] pairs")]],
        Field(min_length=1, description="expected a mapping node -> [[op, input node], ...]")]
    inputs: Annotated[int, Field(ge=1, le=2, strict=True)] = 2
    concat: Annotated[tuple[Int, ...], Field(min_length=1)] | None = None  # default: every intermediate node


@spec
class ArchDoc:
    """An ArchSpec file (see the module docstring); ``nasseg schema arch`` prints it as JSON Schema."""

    cells: Annotated[dict[Str, CellDoc], Field(min_length=1, description="expected a mapping of cell types, e.g. normal")]
    name: Str | None = None
    space: Str | None = None
    path: Annotated[tuple[Int, ...], Field(min_length=1, max_length=MAX_LAYERS)] | None = None  # lattice: each layer's stride
    meta: dict[Str, Any] = dataclasses.field(default_factory=dict)  # free-form provenance


def _read_cell(doc: CellDoc, file: str | None, key: str) -> CellGenotype:
    inputs = doc.inputs
    for node, kept in doc.nodes.items():
        where = f"{key}.nodes.{node}"
        if node < inputs:
            raise SpecError(file, where, f"node ids must be integers >= {inputs} (0..{inputs - 1} are the inputs)")
        for j, (op, source) in enumerate(kept):
            if op not in OPS:
                raise SpecError(file, f"{where}[{j}]", f"unknown op {describe(op)}" + did_you_mean(op, OPS))
            if not source < node or (source >= inputs and source not in doc.nodes):
                raise SpecError(file, f"{where}[{j}]", f"input {source} is not an earlier node of the cell")
    concat = doc.concat if doc.concat is not None else tuple(sorted(doc.nodes))
    for j, node in enumerate(concat):
        if node not in doc.nodes:
            raise SpecError(file, f"{key}.concat[{j}]", f"{node} is not an intermediate node; "
                            f"expected one of {sorted(doc.nodes)}")
        if node in concat[:j]:
            raise SpecError(file, f"{key}.concat[{j}]", f"node {node} is listed twice; expected each node once")
    return CellGenotype(inputs, dict(doc.nodes), concat)


def check_path(path: Sequence[int], file: str | None = None) -> tuple[int, ...]:
    """A lattice path: positive strides, each a power of two, moving at most one level per layer."""
    for j, stride in enumerate(path):
        if stride < 1 or stride & (stride - 1):
            raise SpecError(file, f"path[{j}]", f"expected a power-of-two stride, got {describe(stride)}")
    for j, (a, b) in enumerate(zip(path, path[1:]), start=1):
        if b not in (a // 2, a, a * 2):
            raise SpecError(file, f"path[{j}]", f"stride {b} after {a}: a layer may move at most one level "
                            f"(expected {a // 2}, {a} or {a * 2})")
    return tuple(path)


def parse_arch(data: Any, file: str | None = None) -> ArchSpec:
    if isinstance(data, dict) and "cells" not in data and {"cell", "network"} <= data.keys():
        raise SpecError(file, None, "a search space, not an ArchSpec (an ArchSpec has 'cells'; "
                        "`nasseg decode RUN_DIR` writes one from a search)")
    doc = validate(ArchDoc, data, file)
    cells = {kind: _read_cell(cell, file, f"cells.{kind}") for kind, cell in doc.cells.items()}
    path = check_path(doc.path, file) if doc.path is not None else None
    return ArchSpec(doc.name or (Path(file).stem if file else "arch"), cells, path, doc.space, dict(doc.meta))


def is_arch_file(data: object) -> bool:
    return isinstance(data, dict) and "cells" in data


def load_arch(path: str | Path) -> ArchSpec:
    return parse_arch(load_yaml(path), str(path))
