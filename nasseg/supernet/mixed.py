"""Mixed ops and weighted cells: the continuous relaxation of a cell (DARTS eq. 2)."""

from __future__ import annotations

from typing import Sequence

import networkx as nx
import torch
from torch import nn

from ..space.ops import OPS
from ..space.spec import SearchSpace


class MixedOp(nn.Module):
    """sum_o softmax(alpha)_o * o(x) over the candidate ops of one edge.

    `none` contributes weight * 0 = 0 to the sum and nothing to any gradient, so it is not
    computed at all (exact, and the cheapest op there is); its alpha still receives gradient
    through the softmax.
    """

    def __init__(self, space: SearchSpace, op_names: Sequence[str], C: int, stride: int, affine: bool):
        super().__init__()
        self.stride = stride
        self.positions: list[int] = []  # index into the edge's weights of each computed op
        ops = []
        for position, name in enumerate(op_names):
            spec = space.op(name)
            definition = OPS[spec.op]
            if definition.is_zero:
                continue
            op = definition.build(C, stride, affine, **spec.params)
            if definition.bn_in_search:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            ops.append(op)
            self.positions.append(position)
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if not self.ops:  # an edge whose only candidate is `none`
            return x[:, :, :: self.stride, :: self.stride].mul(0.0)
        out = None
        for position, op in zip(self.positions, self.ops):
            term = weights[position] * op(x)
            out = term if out is None else out + term
        return out


class SearchCell(nn.Module):
    """A cell DAG with a MixedOp on every edge; nodes combine their incoming edges.

    Inputs arrive already pre-processed to the cell's width and working resolution. A missing
    input (None: an Auto-DeepLab state with no layer l-2 state at its stride) contributes nothing.
    In a reduction cell, edges leaving input nodes have stride 2 (DARTS).
    """

    def __init__(self, space: SearchSpace, C: int, reduction: bool, affine: bool = False):
        super().__init__()
        graph: nx.DiGraph = space.cell_graph
        self.inputs = space.cell.inputs
        self.outputs = list(graph.graph["outputs"])
        self.mean = graph.graph["combine"] == "mean"
        self.order = [n for n in nx.topological_sort(graph) if graph.nodes[n]["role"] == "intermediate"]
        self.incoming = {v: [(u, graph.edges[u, v]["index"]) for u in sorted(graph.predecessors(v))]
                         for v in self.order}
        self.edges = nn.ModuleList([None] * graph.number_of_edges())
        for u, v, data in graph.edges(data=True):
            stride = 2 if reduction and u < self.inputs else 1
            self.edges[data["index"]] = MixedOp(space, data["ops"], C, stride, affine)

    def forward(self, inputs: Sequence[torch.Tensor | None], weights: Sequence[torch.Tensor]) -> torch.Tensor:
        states: dict[int, torch.Tensor | None] = dict(enumerate(inputs))
        for v in self.order:
            terms = [self.edges[i](states[u], weights[i]) for u, i in self.incoming[v] if states[u] is not None]
            if not terms:
                states[v] = None
                continue
            total = terms[0]
            for term in terms[1:]:
                total = total + term
            states[v] = total / len(terms) if self.mean else total
        present = next(states[v] for v in self.outputs if states[v] is not None)
        return torch.cat([states[v] if states[v] is not None else torch.zeros_like(present)
                          for v in self.outputs], dim=1)
