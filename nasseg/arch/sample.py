"""Random architectures drawn uniformly from a search space, under the decoders' constraints.

A valid architecture of a space obeys the rules the decoders (nasseg.arch.decode) apply:

- a cell genotype keeps, for every intermediate node, ``decode_k`` distinct incoming edges among
  those with at least one op outside ``decode_exclude`` (all of them when fewer have one), and on
  each kept edge one op from that edge's candidates minus the excluded ops. Two genotypes are the
  same when every node keeps the same set of (input, op) pairs (the order they are listed in does
  not matter: a node sums its inputs);
- a lattice path is a walk through the network graph from the stem to a final-layer state, one
  transition (down, same, up, as the space allows) per layer; a chain has the one fixed path.

*Uniform* means every valid architecture has the same probability: each cell type (normal,
reduce) is drawn independently and uniformly over its genotypes, and the path uniformly over the
valid paths, so an architecture of a space with G genotypes per cell type, T cell types and P
paths has probability 1 / (G**T * P) (:func:`count_architectures`). Within a cell the nodes are
independent, so a node's set of kept edges S is drawn with probability proportional to the number
of op choices it leaves, the product of |usable ops(e)| over e in S, then one op uniformly per
kept edge; a path is drawn forwards, each step with probability proportional to the number of
complete paths through the next state. Every choice is one exact integer draw from the raw 64-bit
stream of numpy's PCG64 bit generator (rejection sampling, integer weights: no rounding), so the
same seed gives the same architecture on every machine and numpy release (numpy keeps bit streams
stable; the transformations of ``Generator`` methods may change between releases).
"""

from __future__ import annotations

import bisect
import itertools
import math
from typing import Any, Mapping, Sequence

import networkx as nx
import numpy as np

from ..space import SearchSpace
from .spec import ArchSpec, CellGenotype

Node = tuple[int, int]
Rng = np.random.Generator | int | Sequence[int]


def generator(rng: Rng) -> np.random.Generator:
    """A numpy Generator: ``rng`` itself, or a new one seeded with an int or a sequence of ints."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


RAW_RANGE = 2 ** 64  # the raw draws of numpy's bit generators are 64-bit integers


def draw_below(n: int, rng: np.random.Generator) -> int:
    """A uniform integer in [0, n): raw 64-bit draws, rejecting the top partial block so every value
    has the same number of raw values mapping to it."""
    if not 0 < n <= RAW_RANGE:
        raise ValueError(f"expected 0 < n <= 2**64, got {n}")
    limit = RAW_RANGE - RAW_RANGE % n
    while True:
        raw = int(rng.bit_generator.random_raw())
        if raw < limit:
            return raw % n


def _pick(weights: Sequence[int], rng: np.random.Generator) -> int:
    """An index drawn with probability weights[i] / sum(weights), from one exact integer draw."""
    return bisect.bisect_right(list(itertools.accumulate(weights)), draw_below(sum(weights), rng))


def node_choices(cell_graph: nx.DiGraph, node: int) -> list[tuple[tuple[int, ...], list[tuple[str, ...]]]]:
    """What a node may keep: each valid set of input nodes (sorted) with the usable ops of each edge."""
    exclude = set(cell_graph.graph["decode_exclude"])
    usable = {source: tuple(op for op in cell_graph.edges[source, node]["ops"] if op not in exclude)
              for source in sorted(cell_graph.predecessors(node))}
    sources = [source for source, ops in usable.items() if ops]
    keep = min(cell_graph.graph["decode_k"], len(sources))
    return [(subset, [usable[s] for s in subset]) for subset in itertools.combinations(sources, keep)]


def _intermediate(cell_graph: nx.DiGraph) -> list[int]:
    return sorted(n for n, role in cell_graph.nodes(data="role") if role == "intermediate")


def count_genotypes(cell_graph: nx.DiGraph) -> int:
    """The number of valid genotypes of one cell type."""
    return math.prod(sum(math.prod(len(ops) for ops in edge_ops) for _, edge_ops in node_choices(cell_graph, node))
                     for node in _intermediate(cell_graph))


def sample_cell(cell_graph: nx.DiGraph, rng: Rng, op_keys: Mapping[str, str] | None = None) -> CellGenotype:
    """One genotype, uniform over the valid genotypes of the cell graph; ``op_keys`` maps the space's
    op names to registry keys (what an ArchSpec stores), as the decoder does."""
    rng = generator(rng)
    op_keys = op_keys or {}
    inputs = sum(1 for _, role in cell_graph.nodes(data="role") if role == "input")
    nodes: dict[int, tuple[tuple[str, int], ...]] = {}
    for node in _intermediate(cell_graph):
        choices = node_choices(cell_graph, node)
        subset, edge_ops = choices[_pick([math.prod(len(ops) for ops in e) for _, e in choices], rng)]
        kept = [(ops[draw_below(len(ops), rng)], source) for source, ops in zip(subset, edge_ops)]
        nodes[node] = tuple((op_keys.get(op, op), source) for op, source in kept)
    return CellGenotype(inputs, nodes, tuple(cell_graph.graph["outputs"]))


def _paths_to_end(network_graph: nx.DiGraph) -> dict[Node, int]:
    """Number of complete paths (to a final-layer state) from every state."""
    count: dict[Node, int] = {}
    for node in sorted(network_graph.nodes, reverse=True):  # later layers first
        successors = list(network_graph.successors(node))
        count[node] = sum(count[s] for s in successors) if successors else int(bool(network_graph.nodes[node]["final"]))
    return count


def count_paths(network_graph: nx.DiGraph) -> int:
    """The number of valid network-level paths (1 for a chain)."""
    return _paths_to_end(network_graph)[(0, 0)]


def sample_path(network_graph: nx.DiGraph, rng: Rng) -> list[int]:
    """The stride of every cell layer (1..L) on a path drawn uniformly over the valid paths."""
    rng = generator(rng)
    count = _paths_to_end(network_graph)
    node, strides = (0, 0), []
    while True:
        successors = sorted(s for s in network_graph.successors(node) if count[s])
        if not successors:
            return strides
        node = successors[_pick([count[s] for s in successors], rng)]
        strides.append(network_graph.nodes[node]["stride"])


def count_architectures(space: SearchSpace) -> int:
    """The number of valid architectures: genotypes per cell type, to the power of the cell types,
    times the paths of a lattice. A uniform draw gives each of them 1 / this."""
    paths = count_paths(space.network_graph) if space.network.type == "lattice" else 1
    return count_genotypes(space.cell_graph) ** len(space.cell_types) * paths


def sample_architecture(space: SearchSpace, rng: Rng, name: str | None = None,
                        meta: Mapping[str, Any] | None = None) -> ArchSpec:
    """An architecture drawn uniformly from ``space`` (see the module docstring): the cell types in
    the space's order, then the lattice path. ``rng``: a numpy Generator or a seed."""
    rng = generator(rng)
    op_keys = {op.name: op.op for op in space.ops}
    cells = {cell_type: sample_cell(space.cell_graph, rng, op_keys) for cell_type in space.cell_types}
    path = tuple(sample_path(space.network_graph, rng)) if space.network.type == "lattice" else None
    return ArchSpec(name or f"{space.name}_random", cells, path, space.name, dict(meta or {}))
