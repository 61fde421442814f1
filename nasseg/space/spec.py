"""Search-space specs: the dataclasses a YAML file is read into, and the reading with validation.

A space file has three parts (see docs/dsl.md for every key)::

    ops:     candidate operations (registry names, optionally with parameters)
    cell:    inputs, intermediate nodes, edges (dense or explicit, optional per-edge op subsets),
             combine rule, outputs, decode rule
    network: chain (DARTS) or lattice (Auto-DeepLab), with stem and head

Cell node ids: inputs are 0..inputs-1 (0 = the state two layers back, 1 = the previous state,
as in DARTS), intermediate nodes follow.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SpecError
from ..spec_reader import Section, describe, did_you_mean, is_instance, load_yaml
from .blocks import HEADS, STEMS
from .ops import OPS

if TYPE_CHECKING:
    import networkx as nx

TRANSITIONS = ("down", "same", "up")


@dataclass(frozen=True)
class OpSpec:
    """A candidate op of the space: ``name`` as it appears in alphas/genotypes, ``op`` the registry key."""

    name: str
    op: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EdgeSpec:
    source: int
    target: int
    ops: tuple[str, ...]  # candidate op names on this edge, in the order of the space's op list


@dataclass(frozen=True)
class CellSpec:
    inputs: int
    nodes: int
    edges: tuple[EdgeSpec, ...]
    combine: str  # "sum" | "mean"
    outputs: tuple[int, ...]
    decode_k: int
    decode_exclude: tuple[str, ...]

    @property
    def intermediate(self) -> range:
        return range(self.inputs, self.inputs + self.nodes)


@dataclass(frozen=True)
class BlockSpec:
    """A stem or head: a registry type plus its keyword parameters."""

    type: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkSpec:
    """Chain (one fixed path, reductions at given layers) or lattice (every reachable stride).

    ``C`` is the width of one cell node at the first level; a node at level i has ``C * 2**i``
    channels and a cell outputs ``len(cell.outputs)`` times that (DARTS C, Auto-DeepLab F).
    """

    type: str  # "chain" | "lattice"
    C: int
    layers: int
    stem: BlockSpec
    head: BlockSpec
    classes: int | None
    strides: tuple[int, ...]  # stride of each level; strides[0] is the stem's stride
    reductions: tuple[int, ...] = ()  # chain: 0-based cell layers that halve the resolution
    reduction_mode: str = "cell"  # chain: "cell" = DARTS reduction cells, "preprocess" = resample inputs
    transitions: tuple[str, ...] = TRANSITIONS  # lattice: allowed moves between layers


@dataclass(frozen=True)
class SearchSpace:
    name: str
    file: str | None
    description: str
    ops: tuple[OpSpec, ...]
    cell: CellSpec
    network: NetworkSpec

    def op(self, name: str) -> OpSpec:
        return next(o for o in self.ops if o.name == name)

    @property
    def op_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.ops)

    @cached_property
    def cell_graph(self) -> "nx.DiGraph":
        from .compile import build_cell_graph
        return build_cell_graph(self)

    @cached_property
    def network_graph(self) -> "nx.DiGraph":
        from .compile import build_network_graph
        return build_network_graph(self)

    @property
    def cell_types(self) -> tuple[str, ...]:
        """Cell kinds with their own alphas: DARTS chains have normal and reduction cells."""
        net = self.network
        if net.type == "chain" and net.reduction_mode == "cell" and net.reductions:
            return ("normal", "reduce")
        return ("normal",)


# --- reading --------------------------------------------------------------------------------

def _check_op_params(root: Section, key: str, params: dict[str, Any], op: str) -> None:
    allowed = OPS[op].params()
    for name in params:
        if name not in allowed:
            takes = f"takes {', '.join(allowed)}" if allowed else "takes no parameters"
            raise root.error(f"{key}.{name}", f"unknown parameter; op {op!r} {takes}"
                             + did_you_mean(name, allowed))


def _read_ops(root: Section) -> tuple[OpSpec, ...]:
    raw = root.get("ops", list)
    if not raw:
        raise root.error("ops", "empty op set; expected at least one op name")
    ops: list[OpSpec] = []
    for i, entry in enumerate(raw):
        key = f"ops[{i}]"
        if isinstance(entry, str):
            name, op, params = entry, entry, {}
        elif isinstance(entry, dict):
            item = Section(entry, root.file, key)
            op = item.get("op", str, None) or item.get("name", str)
            name = item.get("name", str, op)
            params = {k: v for k, v in entry.items() if k not in ("name", "op")}
            item._used.update(params)
        else:
            raise root.error(key, f"expected an op name or a mapping with 'name', got {describe(entry)}")
        if op not in OPS:
            raise root.error(key, f"unknown op {op!r}; registered ops: {', '.join(sorted(OPS))}"
                             + did_you_mean(op, OPS))
        _check_op_params(root, key, params, op)
        if any(o.name == name for o in ops):
            raise root.error(key, f"op {name!r} is listed twice; give the second one another 'name'")
        ops.append(OpSpec(name, op, params))
    return tuple(ops)


def _read_op_subset(sec: Section, key: str, raw: Any, all_ops: tuple[str, ...]) -> tuple[str, ...]:
    if not is_instance(raw, list):
        raise sec.error(key, f"expected a list of op names, got {describe(raw)}")
    if not raw:
        raise sec.error(key, "empty op set; expected at least one op name")
    for j, name in enumerate(raw):
        if name not in all_ops:
            hint = did_you_mean(str(name), all_ops) or did_you_mean(str(name), OPS)
            raise sec.error(f"{key}[{j}]", f"unknown op {name!r}; this space's ops are "
                            f"{', '.join(all_ops)}" + hint)
    return tuple(o for o in all_ops if o in raw)  # canonical order


def _read_cell(root: Section, ops: tuple[OpSpec, ...]) -> CellSpec:
    sec = root.section("cell")
    op_names = tuple(o.name for o in ops)
    inputs = sec.get_int("inputs", 2, minimum=1)
    if inputs > 2:
        raise sec.error("inputs", f"expected 1 or 2 (the previous state, and the one before it), got {inputs}")
    nodes = sec.get_int("nodes", minimum=1)
    all_nodes = range(inputs + nodes)
    intermediate = range(inputs, inputs + nodes)

    raw_edges = sec.get("edges", (str, list), "dense")
    edges: list[EdgeSpec] = []
    if isinstance(raw_edges, str):
        if raw_edges != "dense":
            raise sec.error("edges", f"expected 'dense' or a list of edges, got {raw_edges!r}")
        edges = [EdgeSpec(s, t, op_names) for t in intermediate for s in range(t)]
    else:
        for i, raw in enumerate(raw_edges):
            item = Section(raw, sec.file, f"{sec.key('edges')}[{i}]")
            source = item.get("from", int)
            target = item.get("to", int)
            for key, node in (("from", source), ("to", target)):
                if node not in all_nodes:
                    raise item.error(key, f"node {node} does not exist; nodes are 0..{inputs + nodes - 1}")
            if target < inputs:
                raise item.error("to", f"node {target} is an input node; edges must end at an "
                                 f"intermediate node ({inputs}..{inputs + nodes - 1})")
            subset = _read_op_subset(item, "ops", item.get("ops", list, op_names), op_names) \
                if item.has("ops") else op_names
            item.finish()
            if any(e.source == source and e.target == target for e in edges):
                raise item.error(None, f"edge {source}->{target} is listed twice")
            edges.append(EdgeSpec(source, target, subset))

    raw_outputs = sec.get("outputs", (str, list), "intermediate")
    if isinstance(raw_outputs, str):
        if raw_outputs != "intermediate":
            raise sec.error("outputs", f"expected 'intermediate' or a list of node ids, got {raw_outputs!r}")
        outputs = tuple(intermediate)
    else:
        for j, node in enumerate(raw_outputs):
            if not is_instance(node, int) or node not in intermediate:
                raise sec.error(f"outputs[{j}]", f"{describe(node)} is not an intermediate node; "
                                f"expected one of {inputs}..{inputs + nodes - 1}")
        outputs = tuple(raw_outputs)
        if not outputs:
            raise sec.error("outputs", "empty; expected at least one intermediate node")

    combine = sec.get_choice("combine", ("sum", "mean"), "sum")
    decode = sec.section("decode", {})
    decode_k = decode.get_int("k", 2, minimum=1)
    exclude_raw = decode.get("exclude", list, [o.name for o in ops if OPS[o.op].is_zero])
    for j, name in enumerate(exclude_raw):
        if name not in op_names:
            raise decode.error(f"exclude[{j}]", f"unknown op {name!r}; this space's ops are "
                               f"{', '.join(op_names)}" + did_you_mean(str(name), op_names))
    decode.finish()
    sec.finish()
    return CellSpec(inputs, nodes, tuple(edges), combine, outputs, decode_k, tuple(exclude_raw))


def _read_block(net: Section, key: str, registry: dict, default: dict | None = None) -> BlockSpec:
    block = net.section(key, default)
    kind = block.get_choice("type", sorted(registry))
    params = {k: v for k, v in block.data.items() if k != "type"}
    allowed = registry[kind].params()
    for name in params:
        if name not in allowed:
            raise block.error(name, f"unknown parameter of {key} {kind!r}; expected "
                              f"{', '.join(allowed) or 'none'}" + did_you_mean(name, allowed))
    defaults = inspect.signature(registry[kind].build).parameters
    for name, value in params.items():
        default_value = defaults[name].default
        if default_value is not inspect.Parameter.empty and default_value is not None:
            expected = (list, tuple) if isinstance(default_value, (list, tuple)) else type(default_value)
            if not is_instance(value, expected):
                raise block.error(name, f"expected {type(default_value).__name__}, got {describe(value)}")
    return BlockSpec(kind, params)


def _read_network(root: Section) -> NetworkSpec:
    net = root.section("network")
    kind = net.get_choice("type", ("chain", "lattice"))
    layers = net.get_int("layers", minimum=1)
    stem = _read_block(net, "stem", STEMS)
    head = _read_block(net, "head", HEADS)
    classes = net.get_int("classes", None, minimum=1)
    try:
        stem_channels, stem_stride = STEMS[stem.type].shape(**stem.params)
    except (TypeError, ValueError) as exc:
        raise net.error("stem", str(exc)) from None

    if kind == "chain":
        width = net.get_int("C", minimum=1)
        raw = net.get("reductions", (str, list), "thirds")
        if isinstance(raw, str):
            if raw != "thirds":
                raise net.error("reductions", f"expected 'thirds' or a list of layer indices, got {raw!r}")
            reductions = tuple(sorted({layers // 3, 2 * layers // 3})) if layers >= 3 else ()
        else:
            for j, layer in enumerate(raw):
                if not is_instance(layer, int) or not 0 <= layer < layers:
                    raise net.error(f"reductions[{j}]", f"expected a layer index 0..{layers - 1}, "
                                    f"got {describe(layer)}")
            reductions = tuple(sorted(set(raw)))
        mode = net.get_choice("reduction_mode", ("cell", "preprocess"), "cell")
        strides = tuple(stem_stride * 2 ** i for i in range(len(reductions) + 1))
        net.finish()
        return NetworkSpec("chain", width, layers, stem, head, classes, strides, reductions, mode)

    width = net.get_int("F", minimum=1)
    strides = tuple(net.get("strides", list, [4, 8, 16, 32]))
    for j, stride in enumerate(strides):
        if not is_instance(stride, int) or stride < 1:
            raise net.error(f"strides[{j}]", f"expected a positive integer, got {describe(stride)}")
    if not strides:
        raise net.error("strides", "empty; expected a doubling sequence such as [4, 8, 16, 32]")
    if any(b != 2 * a for a, b in zip(strides, strides[1:])):
        raise net.error("strides", f"{list(strides)} is not a doubling sequence; each stride must be "
                        "twice the previous one, e.g. [4, 8, 16, 32]")
    if strides[0] != stem_stride:
        raise net.error("strides", f"the first stride must equal the stem's stride {stem_stride}, "
                        f"got {strides[0]}")
    transitions = tuple(net.get("transitions", list, list(TRANSITIONS)))
    for j, move in enumerate(transitions):
        if move not in TRANSITIONS:
            raise net.error(f"transitions[{j}]", f"expected one of {', '.join(TRANSITIONS)}, got "
                            f"{describe(move)}" + did_you_mean(str(move), TRANSITIONS))
    if "same" not in transitions and "down" not in transitions:
        raise net.error("transitions", "needs 'same' or 'down' so that every layer has a state")
    net.finish()
    return NetworkSpec("lattice", width, layers, stem, head, classes, strides,
                       transitions=tuple(t for t in TRANSITIONS if t in transitions),
                       reduction_mode="preprocess")


def parse_space(data: Any, file: str | None = None, name: str | None = None) -> SearchSpace:
    """Validate a parsed YAML document and return the SearchSpace (graphs are built by compile)."""
    root = Section(data, file)
    space_name = root.get("name", str, name or (Path(file).stem if file else "space"))
    description = root.get("description", str, "")
    ops = _read_ops(root)
    cell = _read_cell(root, ops)
    network = _read_network(root)
    root.finish()
    return SearchSpace(space_name, file, description, ops, cell, network)


def read_space_file(path: str | Path) -> SearchSpace:
    return parse_space(load_yaml(path), str(path))


__all__ = ["OpSpec", "EdgeSpec", "CellSpec", "BlockSpec", "NetworkSpec", "SearchSpace",
           "parse_space", "read_space_file", "SpecError", "TRANSITIONS"]
