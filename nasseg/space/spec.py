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

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from ..config import describe, did_you_mean, load_yaml, spec, validate
from ..config.types import MAX_CHANNELS, Classes, Int, NonNegativeInt, PositiveInt, Str
from ..errors import SpecError
from ..registry import KeywordEntry, Registry
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


# --- the document: what a space file may say, with its ranges -----------------------------------

# Bounds that keep a space describable in a second or two (``nasseg info``) and buildable: far above
# the published spaces (DARTS: 4 nodes, 8 cells; Auto-DeepLab: 5 nodes, 12 layers, 4 strides).
MAX_CELL_NODES = 24
MAX_LAYERS = 256
MAX_LEVELS = 8
MAX_OPS = 64
MAX_CANDIDATE_OPS = 20_000  # candidate ops over every cell of the supernet (edges x ops x cell states)
MAX_WIDTH = MAX_CHANNELS  # C or F


def _bounded(low: int, high: int) -> Any:
    return Annotated[int, Field(ge=low, le=high, strict=True)]


@spec
class EdgeDoc:
    source: Annotated[NonNegativeInt, Field(alias="from")]
    to: NonNegativeInt
    ops: Annotated[tuple[Str, ...], Field(min_length=1, description="expected a list of op names")] | None = None


@spec
class DecodeDoc:
    k: PositiveInt = 2  # incoming edges kept per node
    exclude: tuple[Str, ...] | None = None  # default: the space's zero op (none)


@spec
class CellDoc:
    nodes: _bounded(1, MAX_CELL_NODES)
    inputs: _bounded(1, 2) = 2
    edges: Literal["dense"] | Annotated[tuple[EdgeDoc, ...], Field(min_length=1)] = "dense"
    combine: Literal["sum", "mean"] = "sum"
    outputs: Literal["intermediate"] | Annotated[tuple[Int, ...], Field(min_length=1)] = "intermediate"
    decode: DecodeDoc = DecodeDoc()


Block = Annotated[dict[Str, Any], Field(description="expected a mapping with 'type' and its parameters")]


@spec
class ChainDoc:
    type: Literal["chain"]
    C: _bounded(1, MAX_WIDTH)
    layers: _bounded(1, MAX_LAYERS)
    stem: Block
    head: Block
    classes: Classes | None = None
    reductions: Literal["thirds"] | tuple[Int, ...] = "thirds"
    reduction_mode: Literal["cell", "preprocess"] = "cell"


@spec
class LatticeDoc:
    type: Literal["lattice"]
    F: _bounded(1, MAX_WIDTH)
    layers: _bounded(1, MAX_LAYERS)
    stem: Block
    head: Block
    classes: Classes | None = None
    strides: Annotated[tuple[PositiveInt, ...], Field(min_length=1, max_length=MAX_LEVELS)] = (4, 8, 16, 32)
    transitions: Annotated[tuple[Literal["down", "same", "up"], ...], Field(min_length=1)] = TRANSITIONS


@spec
class SpaceDoc:
    """A search-space file (docs/dsl.md); ``nasseg schema space`` prints it as JSON Schema."""

    ops: Annotated[tuple[Str | dict[Str, Any], ...], Field(
        min_length=1, max_length=MAX_OPS, description="expected a list of op names or {name, op, PARAM: ...} mappings")]
    cell: CellDoc
    network: Annotated[ChainDoc | LatticeDoc, Field(discriminator="type")]
    name: Str | None = None
    description: Str = ""


# --- from the document to the SearchSpace, checking what spans several keys ----------------------

def _check_params(entry: KeywordEntry, what: str, params: dict[str, Any], file: str | None, key: str) -> dict[str, Any]:
    """The parameters of an op, stem or head, validated; an unknown one is named with those ``what`` takes."""
    allowed = entry.params()
    for param in params:
        if param not in allowed:
            takes = f"takes {', '.join(allowed)}" if allowed else "takes no parameters"
            raise SpecError(file, f"{key}.{param}", f"unknown parameter; {what} {takes}" + did_you_mean(param, allowed))
    return entry.check_params(params, file, key)


def _read_ops(doc: SpaceDoc, file: str | None) -> tuple[OpSpec, ...]:
    ops: list[OpSpec] = []
    for i, entry in enumerate(doc.ops):
        key = f"ops[{i}]"
        entry = {"op": entry} if isinstance(entry, str) else dict(entry)
        op = entry.pop("op", None) or entry.get("name")
        name = entry.pop("name", op)
        if not isinstance(op, str) or not isinstance(name, str):
            raise SpecError(file, key, f"expected an op name or a mapping with 'name' (and 'op'), got {describe(entry)}")
        if op not in OPS:
            raise SpecError(file, key, f"unknown op {describe(op)}; registered ops: {', '.join(sorted(OPS))}"
                            + did_you_mean(op, OPS))
        params = _check_params(OPS[op], f"op {op!r}", entry, file, key)
        if any(o.name == name for o in ops):
            raise SpecError(file, key, f"op {describe(name)} is listed twice; give the second one another 'name'")
        ops.append(OpSpec(name, op, params))
    return tuple(ops)


def _op_subset(names: tuple[str, ...], all_ops: tuple[str, ...], file: str | None, key: str) -> tuple[str, ...]:
    for j, name in enumerate(names):
        if name not in all_ops:
            hint = did_you_mean(name, all_ops) or did_you_mean(name, OPS)
            raise SpecError(file, f"{key}[{j}]", f"unknown op {describe(name)}; this space's ops are {', '.join(all_ops)}"
                            + hint)
    return tuple(o for o in all_ops if o in names)  # canonical order


def _read_cell(doc: CellDoc, ops: tuple[OpSpec, ...], file: str | None) -> CellSpec:
    op_names = tuple(o.name for o in ops)
    inputs, nodes = doc.inputs, doc.nodes
    intermediate = range(inputs, inputs + nodes)
    last = inputs + nodes - 1
    if doc.edges == "dense":
        edges = [EdgeSpec(s, t, op_names) for t in intermediate for s in range(t)]
    else:
        edges = []
        for i, edge in enumerate(doc.edges):
            key = f"cell.edges[{i}]"
            for name, node in (("from", edge.source), ("to", edge.to)):
                if node > last:
                    raise SpecError(file, f"{key}.{name}", f"node {node} does not exist; nodes are 0..{last}")
            if edge.to < inputs:
                raise SpecError(file, f"{key}.to", f"node {edge.to} is an input node; edges must end at an "
                                f"intermediate node ({inputs}..{last})")
            subset = _op_subset(edge.ops, op_names, file, f"{key}.ops") if edge.ops is not None else op_names
            if any(e.source == edge.source and e.target == edge.to for e in edges):
                raise SpecError(file, key, f"edge {edge.source}->{edge.to} is listed twice")
            edges.append(EdgeSpec(edge.source, edge.to, subset))
    if doc.outputs == "intermediate":
        outputs = tuple(intermediate)
    else:
        for j, node in enumerate(doc.outputs):
            if node not in intermediate:
                raise SpecError(file, f"cell.outputs[{j}]", f"{node} is not an intermediate node; "
                                f"expected one of {inputs}..{last}")
        outputs = doc.outputs
    default_exclude = tuple(o.name for o in ops if OPS[o.op].is_zero)
    exclude = default_exclude if doc.decode.exclude is None else \
        _op_subset(doc.decode.exclude, op_names, file, "cell.decode.exclude")
    return CellSpec(inputs, nodes, tuple(edges), doc.combine, outputs, doc.decode.k, exclude)


def _read_block(block: dict[str, Any], key: str, registry: Registry, file: str | None) -> BlockSpec:
    params = dict(block)
    kind = params.pop("type", None)
    if kind not in registry:
        got = "missing" if kind is None else f"got {describe(kind)}"
        raise SpecError(file, f"{key}.type", f"{got}; expected one of {', '.join(registry)}"
                        + (did_you_mean(kind, registry) if kind is not None else ""))
    return BlockSpec(kind, _check_params(registry[kind], f"{registry.kind} {kind!r}", params, file, key))


def _read_network(doc: ChainDoc | LatticeDoc, file: str | None) -> NetworkSpec:
    stem = _read_block(doc.stem, "network.stem", STEMS, file)
    head = _read_block(doc.head, "network.head", HEADS, file)
    try:
        _, stem_stride = STEMS[stem.type].shape(**stem.params)
    except (TypeError, ValueError) as exc:
        raise SpecError(file, "network.stem", str(exc)) from None
    layers = doc.layers
    if isinstance(doc, ChainDoc):
        if doc.reductions == "thirds":
            reductions = tuple(sorted({layers // 3, 2 * layers // 3})) if layers >= 3 else ()
        else:
            for j, layer in enumerate(doc.reductions):
                if not 0 <= layer < layers:
                    raise SpecError(file, f"network.reductions[{j}]", f"expected a layer index 0..{layers - 1}, got {layer}")
            reductions = tuple(sorted(set(doc.reductions)))
        strides = tuple(stem_stride * 2 ** i for i in range(len(reductions) + 1))
        return NetworkSpec("chain", doc.C, layers, stem, head, doc.classes, strides, reductions, doc.reduction_mode)
    strides = doc.strides
    if any(b != 2 * a for a, b in zip(strides, strides[1:])):
        raise SpecError(file, "network.strides", f"{list(strides)} is not a doubling sequence; each stride must be "
                        "twice the previous one, e.g. [4, 8, 16, 32]")
    if strides[0] != stem_stride:
        raise SpecError(file, "network.strides", f"the first stride must equal the stem's stride {stem_stride}, "
                        f"got {strides[0]}")
    if "same" not in doc.transitions and "down" not in doc.transitions:
        raise SpecError(file, "network.transitions", "needs 'same' or 'down' so that every layer has a state")
    return NetworkSpec("lattice", doc.F, layers, stem, head, doc.classes, strides,
                       transitions=tuple(t for t in TRANSITIONS if t in doc.transitions), reduction_mode="preprocess")


def _check_size(space: SearchSpace, file: str | None) -> None:
    """Refuse a supernet too large to describe or build, before building anything."""
    net, cell = space.network, space.cell
    per_cell = sum(len(e.ops) for e in cell.edges)
    states = net.layers * (len(net.strides) if net.type == "lattice" else 1)  # an upper bound on cell states
    if per_cell * states > MAX_CANDIDATE_OPS:
        raise SpecError(file, "network.layers", f"the supernet would hold up to {per_cell * states:,} candidate ops "
                        f"({per_cell} per cell x {states} cell states); the limit is {MAX_CANDIDATE_OPS:,}: "
                        "use fewer layers, nodes, edges or ops")


def parse_space(data: Any, file: str | None = None, name: str | None = None) -> SearchSpace:
    """Validate a parsed YAML document and return the SearchSpace (graphs are built by compile)."""
    doc = validate(SpaceDoc, data, file)
    ops = _read_ops(doc, file)
    space = SearchSpace(doc.name or name or (Path(file).stem if file else "space"), file, doc.description, ops,
                        _read_cell(doc.cell, ops, file), _read_network(doc.network, file))
    _check_size(space, file)
    return space


def read_space_file(path: str | Path) -> SearchSpace:
    return parse_space(load_yaml(path), str(path))


__all__ = ["OpSpec", "EdgeSpec", "CellSpec", "BlockSpec", "NetworkSpec", "SearchSpace", "SpaceDoc",
           "parse_space", "read_space_file", "SpecError", "TRANSITIONS"]
