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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError
from ..spec_reader import Section, describe, did_you_mean, is_instance, load_yaml
from ..space.ops import OPS

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


def _read_cell(sec: Section) -> CellGenotype:
    inputs = sec.get_int("inputs", 2, minimum=1)
    raw_nodes = sec.get("nodes", dict)
    if not raw_nodes:
        raise sec.error("nodes", "empty; expected at least one intermediate node")
    nodes: dict[int, tuple[Edge, ...]] = {}
    for node, raw_edges in raw_nodes.items():
        key = f"nodes.{node}"
        if not is_instance(node, int) or node < inputs:
            raise sec.error(key, f"node ids must be integers >= {inputs} (0..{inputs - 1} are the inputs)")
        if not is_instance(raw_edges, list) or not raw_edges:
            raise sec.error(key, f"expected a list of [op, input] pairs, got {describe(raw_edges)}")
        edges = []
        for j, edge in enumerate(raw_edges):
            if not (is_instance(edge, list) and len(edge) == 2 and is_instance(edge[0], str)
                    and is_instance(edge[1], int)):
                raise sec.error(f"{key}[{j}]", f"expected [op, input node], got {describe(edge)}")
            op, source = edge
            if op not in OPS:
                raise sec.error(f"{key}[{j}]", f"unknown op {op!r}" + did_you_mean(op, OPS))
            if not 0 <= source < node or (source >= inputs and source not in raw_nodes):
                raise sec.error(f"{key}[{j}]", f"input {source} is not an earlier node of the cell")
            edges.append((op, source))
        nodes[node] = tuple(edges)
    concat = tuple(sec.get("concat", list, sorted(nodes)))
    for j, node in enumerate(concat):
        if node not in nodes:
            raise sec.error(f"concat[{j}]", f"{describe(node)} is not an intermediate node; "
                            f"expected one of {sorted(nodes)}")
    sec.finish()
    return CellGenotype(inputs, nodes, concat)


def check_path(path: list[Any], error) -> tuple[int, ...]:
    """A lattice path: positive strides, each a power of two, moving at most one level per layer."""
    for j, stride in enumerate(path):
        if not is_instance(stride, int) or stride < 1 or stride & (stride - 1):
            raise error(f"path[{j}]", f"expected a power-of-two stride, got {describe(stride)}")
    for j, (a, b) in enumerate(zip(path, path[1:]), start=1):
        if b not in (a // 2, a, a * 2):
            raise error(f"path[{j}]", f"stride {b} after {a}: a layer may move at most one level "
                        f"(expected {a // 2}, {a} or {a * 2})")
    return tuple(path)


def parse_arch(data: Any, file: str | None = None) -> ArchSpec:
    root = Section(data, file)
    name = root.get("name", str, Path(file).stem if file else "arch")
    space = root.get("space", str, None)
    cells_sec = root.section("cells")
    if not cells_sec.data:
        raise cells_sec.error(None, "empty; expected at least one cell (e.g. normal)")
    cells = {str(kind): _read_cell(cells_sec.section(kind)) for kind in list(cells_sec.data)}
    path = root.get("path", list, None)
    if path is not None:
        path = check_path(path, root.error)
    meta = root.get("meta", dict, {})
    root.finish()
    return ArchSpec(name, cells, path, space, meta)


def is_arch_file(data: object) -> bool:
    return isinstance(data, dict) and "cells" in data


def load_arch(path: str | Path) -> ArchSpec:
    return parse_arch(load_yaml(path), str(path))
