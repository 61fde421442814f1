"""Compile a SearchSpace into the two networkx graphs everything else reads.

Cell graph (``nx.DiGraph``): nodes are cell node ids with ``role`` ("input" | "intermediate");
each edge ``u -> v`` carries ``ops`` (candidate op names) and ``index`` (its row in the alphas).
Graph attributes: ``outputs``, ``combine``, ``decode_k``, ``decode_exclude``.

Network graph (``nx.DiGraph``): nodes are ``(layer, level)``; layer 0 is the stem, layers
1..L are cells; a node at level i has stride ``strides[i]``. Each edge is a transition
(``transition`` = "down" | "same" | "up") from layer l-1 to layer l. Node attributes: ``stride``,
``width`` (channels of one cell node), ``channels`` (the state's channels), ``role``
("stem" | "cell"), ``cell_type`` ("normal" | "reduce"), ``prev_prev`` (the layer l-2 state the
cell reads as its first input, or None), ``final`` (a head reads it). Only states reachable
from the stem exist. A chain is the special case with one node per layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import networkx as nx

from ..errors import SpecError
from .blocks import STEMS

if TYPE_CHECKING:
    from .spec import SearchSpace

Node = tuple[int, int]

_LEVEL_STEP = {"down": 1, "same": 0, "up": -1}


def build_cell_graph(space: SearchSpace) -> nx.DiGraph:
    cell = space.cell
    graph = nx.DiGraph(outputs=cell.outputs, combine=cell.combine, decode_k=cell.decode_k,
                       decode_exclude=cell.decode_exclude)
    graph.add_nodes_from(range(cell.inputs), role="input")
    graph.add_nodes_from(cell.intermediate, role="intermediate")
    for index, edge in enumerate(sorted(cell.edges, key=lambda e: (e.target, e.source))):
        graph.add_edge(edge.source, edge.target, ops=edge.ops, index=index)

    file = space.file
    if not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        path = " -> ".join(str(u) for u, _ in cycle) + f" -> {cycle[0][0]}"
        raise SpecError(file, "cell.edges", f"the edges form a cycle ({path}); a cell must be a DAG")
    for node in cell.intermediate:
        if graph.in_degree(node) == 0:
            raise SpecError(file, "cell.edges", f"intermediate node {node} has no input edge; "
                            "expected at least one edge ending at it")
        if graph.in_degree(node) < cell.decode_k:
            raise SpecError(file, "cell.decode.k", f"node {node} has {graph.in_degree(node)} input "
                            f"edge(s) but decoding keeps k={cell.decode_k}; lower k or add edges")
        usable = [op for u in graph.predecessors(node) for op in graph.edges[u, node]["ops"]
                  if op not in cell.decode_exclude]
        if not usable:
            raise SpecError(file, "cell.decode.exclude", f"every candidate op into node {node} is "
                            "excluded from decoding; expected at least one op that can be kept")
    reaching_outputs = set(cell.outputs).union(*(nx.ancestors(graph, node) for node in cell.outputs))
    for node in cell.intermediate:
        if node not in reaching_outputs:
            raise SpecError(file, "cell.outputs", f"intermediate node {node} feeds no output; add it "
                            "to outputs or an edge from it")
    return graph


def _add_state(graph: nx.DiGraph, space: SearchSpace, layer: int, level: int, cell_type: str) -> None:
    net = space.network
    width = net.C * 2 ** level
    graph.add_node((layer, level), layer=layer, level=level, stride=net.strides[level], width=width,
                   channels=len(space.cell.outputs) * width, role="cell", cell_type=cell_type,
                   final=layer == net.layers, prev_prev=None)


def build_network_graph(space: SearchSpace) -> nx.DiGraph:
    net = space.network
    graph = nx.DiGraph(type=net.type, strides=net.strides, layers=net.layers)
    stem_channels, _ = STEMS[net.stem.type].shape(**net.stem.params)
    graph.add_node((0, 0), layer=0, level=0, stride=net.strides[0], width=stem_channels,
                   channels=stem_channels, role="stem", cell_type=None, final=net.layers == 0,
                   prev_prev=None)

    if net.type == "chain":
        level = 0
        for layer in range(1, net.layers + 1):
            reduces = (layer - 1) in net.reductions
            level += int(reduces)
            cell_type = "reduce" if reduces and net.reduction_mode == "cell" else "normal"
            _add_state(graph, space, layer, level, cell_type)
            previous = next(n for n in graph if n[0] == layer - 1)
            graph.add_edge(previous, (layer, level), transition="down" if reduces else "same")
    else:
        frontier = {0}
        for layer in range(1, net.layers + 1):
            reached: set[int] = set()
            for source in sorted(frontier):
                for move in net.transitions:
                    target = source + _LEVEL_STEP[move]
                    if 0 <= target < len(net.strides):
                        if (layer, target) not in graph:
                            _add_state(graph, space, layer, target, "normal")
                        graph.add_edge((layer - 1, source), (layer, target), transition=move)
                        reached.add(target)
            frontier = reached

    for node, data in graph.nodes(data=True):
        layer, level = node
        if layer == 1:
            data["prev_prev"] = (0, 0)  # as in DARTS, the first cell reads the stem twice
        elif layer >= 2:
            if net.type == "chain":
                data["prev_prev"] = next(n for n in graph if n[0] == layer - 2)
            elif (layer - 2, level) in graph:
                data["prev_prev"] = (layer - 2, level)
    return graph


def cell_input_stride(graph: nx.DiGraph, node: tuple[int, int]) -> int:
    """The resolution a cell works at: its predecessor's for DARTS reduction cells (their ops
    stride by 2), its own otherwise (inputs are resampled by preprocessing)."""
    data = graph.nodes[node]
    if data["cell_type"] == "reduce":
        (previous,) = graph.predecessors(node)
        return graph.nodes[previous]["stride"]
    return data["stride"]


def beta_groups(network_graph: nx.DiGraph) -> list[tuple[Node, list[Node]]]:
    """The softmax groups of the betas, in the supernet's order: every state with more than one
    outgoing transition, its targets sorted by level. The supernet orders its betas by it."""
    groups = [(node, sorted(network_graph.successors(node), key=lambda n: n[1]))
              for node in sorted(network_graph.nodes)]
    return [(node, targets) for node, targets in groups if len(targets) > 1]
