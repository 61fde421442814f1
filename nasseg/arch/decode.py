"""Decode continuous architecture parameters into an ArchSpec.

Cells follow the DARTS rule (quark0/darts ``Network.genotype``) generalised to any cell graph:
for every intermediate node keep the ``decode_k`` incoming edges whose strongest op outside
``decode_exclude`` has the largest weight, and on each kept edge that op. Kept edges are listed
strongest first, as DARTS does (its stable sort on ``-strength``), so DARTS_V2 reads back
unchanged. Ties go to the lower source node and to the op listed first in the space.

The network path of a lattice (Auto-DeepLab) is the maximum-product path of softmax(beta)
transition weights from the stem to any final-layer state, found by Viterbi in log space.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import networkx as nx
import numpy as np
import torch

from ..config import describe
from ..errors import NassegError
from ..space import SearchSpace, load
from ..space.compile import beta_groups
from .spec import ArchSpec, CellGenotype

Node = tuple[int, int]
Weights = np.ndarray | torch.Tensor


def _as_array(values: Weights | float) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def decode_cell(cell_graph: nx.DiGraph, edge_weights: Sequence[Weights],
                op_keys: Mapping[str, str] | None = None) -> CellGenotype:
    """The DARTS genotype of one cell type.

    ``edge_weights[i]`` are the (softmaxed) op weights of the edge with ``index`` i, in the order
    of that edge's ``ops``. ``op_keys`` maps the space's op names to registry keys (what an
    ArchSpec stores); names missing from it are kept as they are.
    """
    k = cell_graph.graph["decode_k"]
    exclude = set(cell_graph.graph["decode_exclude"])
    op_keys = op_keys or {}
    inputs = sum(1 for _, role in cell_graph.nodes(data="role") if role == "input")
    nodes: dict[int, tuple[tuple[str, int], ...]] = {}
    for node in sorted(n for n, role in cell_graph.nodes(data="role") if role == "intermediate"):
        candidates = []  # (strength, source, op) of every edge with an op that may be kept
        for source in sorted(cell_graph.predecessors(node)):
            data = cell_graph.edges[source, node]
            weights = _as_array(edge_weights[data["index"]])
            if len(weights) != len(data["ops"]):
                raise ValueError(f"edge {source}->{node} has {len(data['ops'])} ops but "
                                 f"{len(weights)} weights")
            usable = [i for i, op in enumerate(data["ops"]) if op not in exclude]
            if usable:
                best = max(usable, key=lambda i: weights[i])  # first maximum: lowest op index
                candidates.append((weights[best], source, data["ops"][best]))
        kept = sorted(candidates, key=lambda c: -c[0])[:k]  # stable: ties keep the lower source
        nodes[node] = tuple((op_keys.get(op, op), source) for _, source, op in kept)
    return CellGenotype(inputs, nodes, tuple(cell_graph.graph["outputs"]))


def log_transition_weights(groups: Sequence[tuple[Node, Sequence[Node]]],
                            betas: Weights) -> dict[tuple[Node, Node], float]:
    """log softmax(beta) of every transition, computed in float64 from the raw betas."""
    values = _as_array(betas)
    sizes = [len(targets) for _, targets in groups]
    if len(values) != sum(sizes):
        raise NassegError(f"expected {sum(sizes)} betas for this network, got {len(values)}")
    weights, start = {}, 0
    for (source, targets), size in zip(groups, sizes):
        chunk = values[start:start + size]
        start += size
        log_probs = chunk - (chunk.max() + np.log(np.exp(chunk - chunk.max()).sum()))
        weights.update({(source, target): float(lp) for target, lp in zip(targets, log_probs)})
    return weights


def decode_path(network_graph: nx.DiGraph, transition_weights: Mapping[tuple[Node, Node], Weights | float],
                log_space: bool = False) -> list[int]:
    """The stride of every cell layer (1..L) on the maximum-product path through the network.

    ``transition_weights`` maps (source, target) to softmax(beta) (or its log with
    ``log_space``); a state with a single outgoing transition needs no entry (weight 1). Scores
    are sums of logs; ties go to the lower level (the smaller stride).
    """
    def log_weight(source: Node, target: Node) -> float:
        if (source, target) not in transition_weights:
            if network_graph.out_degree(source) > 1:
                raise KeyError(f"no transition weight for {source} -> {target}")
            return 0.0
        value = float(_as_array(transition_weights[(source, target)])[0])
        if log_space:
            return value
        return math.log(value) if value > 0 else -math.inf

    score: dict[Node, float] = {(0, 0): 0.0}
    back: dict[Node, Node] = {}
    for node in sorted(n for n in network_graph.nodes if n[0] > 0):  # layer by layer
        for source in sorted(network_graph.predecessors(node)):  # ascending level
            value = score[source] + log_weight(source, node)
            if node not in score or value > score[node]:
                score[node], back[node] = value, source
    finals = sorted(n for n, final in network_graph.nodes(data="final") if final)
    node = max(finals, key=lambda n: score[n])  # first maximum: lowest level
    path = []
    while node[0] > 0:
        path.append(network_graph.nodes[node]["stride"])
        node = back[node]
    return path[::-1]


def _lattice_path(space: SearchSpace, betas: Weights | None) -> tuple[int, ...] | None:
    """The decoded path of a lattice from its raw betas (needed when it has transition choices); None for a chain."""
    if space.network.type != "lattice":
        if betas is not None:
            raise NassegError(f"space {space.name!r} is a chain; it has no betas")
        return None
    groups = beta_groups(space.network_graph)
    if betas is None and groups:
        raise NassegError(f"space {space.name!r} is a lattice with transition choices; "
                          "betas are needed to decode its path")
    weights = log_transition_weights(groups, betas) if groups else {}
    return tuple(decode_path(space.network_graph, weights, log_space=True))


def _op_keys(space: SearchSpace) -> dict[str, str]:
    return {op.name: op.op for op in space.ops}


def decode(supernet, name: str | None = None, meta: Mapping | None = None) -> ArchSpec:
    """The discrete architecture of a :class:`nasseg.supernet.Supernet` (alphas, and betas of a
    lattice); ``space`` of the result is the space's name."""
    space: SearchSpace = supernet.space
    with torch.no_grad():
        cells = {cell_type: decode_cell(space.cell_graph, supernet.edge_weights(cell_type), _op_keys(space))
                 for cell_type in space.cell_types}
        path = _lattice_path(space, supernet.betas)
    return ArchSpec(name or f"{space.name}_decoded", cells, path, space.name, dict(meta or {}))


def decode_from_arrays(space: SearchSpace | str | Path, alphas: Mapping[str, Weights],
                       betas: Weights | None = None, name: str | None = None,
                       meta: Mapping | None = None) -> ArchSpec:
    """Decode raw (pre-softmax) parameters saved from a search, without building a supernet.

    ``alphas[cell_type]`` is the flat vector of ``Supernet.alphas[cell_type]`` (any shape with
    that many entries, e.g. 14 x 8); ``betas`` is ``Supernet.betas`` and is required for a
    lattice with transition choices, refused for a chain.
    """
    if not isinstance(space, SearchSpace):
        space = load(space)
    graph = space.cell_graph
    sizes = [len(data["ops"]) for *_, data in sorted(graph.edges(data=True), key=lambda e: e[2]["index"])]
    if set(alphas) != set(space.cell_types):
        raise NassegError(f"space {space.name!r} has alphas for cell types {', '.join(space.cell_types)}; "
                          f"got {', '.join(sorted(alphas)) or 'none'}")
    cells = {}
    for cell_type in space.cell_types:
        values = _as_array(alphas[cell_type])
        if len(values) != sum(sizes):
            raise NassegError(f"alphas[{describe(cell_type)}]: expected {sum(sizes)} values "
                              f"({len(sizes)} edges), got {len(values)}")
        chunks = np.split(values, np.cumsum(sizes)[:-1])
        weights = [np.exp(c - c.max()) / np.exp(c - c.max()).sum() for c in chunks]
        cells[cell_type] = decode_cell(graph, weights, _op_keys(space))
    return ArchSpec(name or f"{space.name}_decoded", cells, _lattice_path(space, betas), space.name,
                    dict(meta or {}))
