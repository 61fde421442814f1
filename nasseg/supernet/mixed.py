"""Mixed ops and weighted cells: the continuous relaxation of a cell (DARTS eq. 2)."""

from __future__ import annotations

from typing import Sequence

import networkx as nx
import torch
import torch.nn.functional as F
from torch import nn

from .. import fastpaths
from ..layers import (FactorizedReduce, GroupBatchNorm2d, compact_max_pool, group_batch_norm, replace_modules,
                      stats_frozen)
from ..space.ops import OPS
from ..space.spec import SearchSpace
from .depthwise import LeanDilConv, LeanSepConv, batched_subgrid_conv, lean_dil_conv
from .edge_batch import EdgeBatches, Partial


def strip_leading_relu(module: nn.Module) -> bool:
    """Replace the ReLU a block applies first to its input by an identity; True if it had one.

    Most candidate ops (sep/dil convs, ReLU-conv-BN, factorized reduce) start with their own ReLU
    of the same input (DARTS operations.py). The supernet strips it and applies one ReLU per
    state instead, for every op and transition reading that state: the same function, with one
    activation kept for backward instead of one per op. Parameter names do not change.
    """
    if isinstance(module, FactorizedReduce):
        if isinstance(module.relu, nn.ReLU):
            module.relu = nn.Identity()
            return True
        return False
    if isinstance(module, nn.Sequential) and len(module) > 0:
        if isinstance(module[0], nn.ReLU):
            module[0] = nn.Identity()
            return True
        return strip_leading_relu(module[0])
    return False


class ReluCache:
    """relu(state), computed at most once per state and only when some reader needs it."""

    def __init__(self, states: dict, known: dict | None = None):
        self.states = states
        self.cache: dict = dict(known or {})

    def __call__(self, key) -> torch.Tensor:
        if key not in self.cache:
            self.cache[key] = F.relu(self.states[key])
        return self.cache[key]

    def forget(self, key) -> None:
        self.cache.pop(key, None)


class MixedOp(nn.Module):
    """sum_o softmax(alpha)_o * o(x) over the candidate ops of one edge.

    `none` contributes weight * 0 = 0 to the sum and nothing to any gradient, so it is not
    computed at all (exact, and the cheapest op there is); its alpha still receives gradient
    through the softmax. Ops that begin with a ReLU get it stripped (:func:`strip_leading_relu`)
    and read the caller's shared ``relu(x)`` instead.

    ``active`` (optional, one bool per candidate) skips ops pruned by ``prune_below``: their
    weight fell below the threshold, so their term is dropped as if it were `none`.

    ``lean``: the ops keep fewer tensors for backward (:mod:`nasseg.lean`, fast path ``lean_saved``): "large"
    for tensors of at least ``nasseg.lean.MIN_ELEMENTS`` elements, "all" at every size, "off".

    ``shared`` (optional, one dict per input state, from the cell): a parameter-free op followed by a
    non-affine BatchNorm (the pools in search) computes the same on every edge that reads the state
    while its BatchNorm takes batch statistics (training mode); with fast path ``shared_pools`` the
    first such edge computes it and the others read its output, each edge's BatchNorm still moving
    its running statistics by a call without gradient on the same pooled input.

    ``precomputed`` (optional, from the cell): the weighted sum of some of this edge's conv candidates, which the
    cell computed side by side with other edges reading the same state (fast path ``batched_edges``).
    """

    def __init__(self, space: SearchSpace, op_names: Sequence[str], C: int, stride: int, affine: bool,
                 lean: str = "off"):
        super().__init__()
        self.stride = stride
        self.positions: list[int] = []  # index into the edge's weights of each computed op
        self.reads_relu: list[bool] = []  # whether the op takes relu(x) (its own ReLU stripped)
        self.share_keys: list[tuple | None] = []  # (op name, stride) of ops that `shared` may hold
        ops = []
        for position, name in enumerate(op_names):
            spec = space.op(name)
            definition = OPS[spec.op]
            if definition.is_zero:
                continue
            op = definition.build(C, stride, affine, **spec.params)
            if definition.bn_in_search:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            # lean max-pool backward; BatchNorm per transition in a batched lattice state; dilated convs'
            # sub-grids as one batch (fastpaths)
            op = replace_modules(op, lambda m: compact_max_pool(m) or group_batch_norm(m) or batched_subgrid_conv(m))
            if lean != "off":  # fewer tensors kept for backward (nasseg.lean, fast path lean_saved)
                op = replace_modules(op, lean_dil_conv)  # its children converted above
                for module in op.modules():
                    if isinstance(module, GroupBatchNorm2d):
                        module.keeps_output, module.lean_every_size = True, lean == "all"
                    elif isinstance(module, (LeanDilConv, LeanSepConv)):
                        module.every_size = lean == "all"
            self.reads_relu.append(strip_leading_relu(op))
            self.share_keys.append((name, stride) if definition.parameter_free and definition.bn_in_search else None)
            ops.append(op)
            self.positions.append(position)
        self.ops = nn.ModuleList(ops)
        self.needs_relu = any(self.reads_relu)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, relu_x: torch.Tensor | None = None,
                active: Sequence[bool] | None = None, shared: dict | None = None,
                precomputed: Partial | None = None) -> torch.Tensor:
        done, out = precomputed if precomputed is not None else ((), None)
        share = shared is not None and fastpaths.enabled("shared_pools", x.device)
        for position, op, reads_relu, key in zip(self.positions, self.ops, self.reads_relu, self.share_keys):
            if (active is not None and not active[position]) or position in done:
                continue
            if reads_relu and relu_x is None:
                relu_x = F.relu(x)
            source = relu_x if reads_relu else x
            if share and key is not None and op[1].training:
                if key in shared:
                    pooled, y = shared[key]
                    # this edge's running statistics, as its own call moves them (none to move when frozen:
                    # architecture steps, Hessian products)
                    if op[1].running_mean is not None and not stats_frozen(op[1]):
                        with torch.no_grad():
                            op[1](pooled)
                else:
                    pooled = op[0](source)
                    shared[key] = pooled, (y := op[1](pooled))
            else:
                y = op(source)
            term = weights[position] * y
            out = term if out is None else out + term
        if out is None:  # only `none` (or only pruned ops) on this edge
            return x[:, :, :: self.stride, :: self.stride].mul(0.0)
        return out


def stacked_sum(terms: Sequence[torch.Tensor]) -> torch.Tensor:
    """The sum of ``terms``; a term of B samples among terms of T stacked batches of B is added to each of
    the T (edges from an Auto-DeepLab state's l-2 input, computed once: fast path batched_transitions)."""
    total = terms[0]
    for term in terms[1:]:
        if total.shape[0] < term.shape[0]:
            total, term = term, total
        if total.shape[0] == term.shape[0]:
            total = total + term
        else:
            total = (total.unflatten(0, (-1, term.shape[0])) + term).flatten(0, 1)
    return total


class SearchCell(nn.Module):
    """A cell DAG with a MixedOp on every edge; nodes combine their incoming edges.

    Inputs arrive already pre-processed to the cell's width and working resolution. A missing
    input (None: an Auto-DeepLab state with no layer l-2 state at its stride) contributes nothing.
    In a reduction cell, edges leaving input nodes have stride 2 (DARTS).
    """

    def __init__(self, space: SearchSpace, C: int, reduction: bool, affine: bool = False, lean: str = "off",
                 side_by_side_lean: bool = True):
        """``lean``: the ops' lean layers (MixedOp); ``side_by_side_lean``: the conv candidates that run side by side
        (fast path batched_edges) keep less for backward where fast path lean_saved applies (edge_batch)."""
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
            self.edges[data["index"]] = MixedOp(space, data["ops"], C, stride, affine, lean)
        # conv candidates of the edges that read one state, side by side (fast path batched_edges)
        self.edge_batches = EdgeBatches(self.edges, {u: sorted(graph.edges[u, v]["index"] for v in graph.successors(u))
                                                     for u in graph.nodes}, side_by_side_lean)

    def forward(self, inputs: Sequence[torch.Tensor | None], weights: Sequence[torch.Tensor],
                active: Sequence[Sequence[bool]] | None = None,
                input_relus: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """``input_relus``: relu of some inputs, already computed by a caller that shares an input
        between several cell evaluations (an Auto-DeepLab state's l-2 input, one per transition)."""
        states: dict[int, torch.Tensor | None] = dict(enumerate(inputs))
        relu = ReluCache(states, input_relus)
        shared: dict = {}  # per input state: outputs its readers share (MixedOp, fast path shared_pools)
        batched: dict[int, dict] = {}  # per input state: its readers' convs run side by side (batched_edges)
        for v in self.order:
            terms = []
            for u, i in self.incoming[v]:
                if states[u] is None:
                    continue
                if u not in batched:
                    batched[u] = self.edge_batches.outputs(u, states[u], lambda u=u: relu(u), weights, active)
                edge = self.edges[i]
                terms.append(edge(states[u], weights[i], relu(u) if edge.needs_relu else None,
                                  None if active is None else active[i], shared.setdefault(u, {}), batched[u].get(i)))
            if not terms:
                states[v] = None
                continue
            total = stacked_sum(terms)
            states[v] = total / len(terms) if self.mean else total
        present = next(states[v] for v in self.outputs if states[v] is not None)
        return torch.cat([states[v] if states[v] is not None else torch.zeros_like(present)
                          for v in self.outputs], dim=1)
