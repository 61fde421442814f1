"""The supernet, built generically from a compiled search space.

One builder for both network kinds: every state ``(layer, level)`` of the network graph is a
cell applied to (prev_prev, prev), where prev runs over the state's incoming transitions. A
lattice state sums its transitions weighted by softmax(beta) of the source state's outgoing
transitions (Auto-DeepLab); a chain state has a single transition and no beta. The cell's ops
are shared by the transitions of one state, each transition has its own pre-processing (as in
the Auto-DeepLab search code).

Shared work (exact, same function as the papers' code): `none` is never computed, and the ReLU that
most ops and every pre-processing block apply first is computed once per state for all its
readers (:func:`strip_leading_relu`). Optional: ``checkpoint_cells`` recomputes each state's
forward during backward instead of keeping its activations (memory for time; :mod:`.recompute`), and
``prune_below`` skips ops whose softmax weight fell below a threshold (an approximation).

Architecture parameters are kept apart from the weights: :meth:`arch_parameters` (alphas per
cell type, betas) and :meth:`weight_parameters` (everything else).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import networkx as nx
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NassegError
from .. import fastpaths
from ..layers import FactorizedReduce, Noise, ReLUConvBN, all_modules, batch_norm_groups
from ..space.blocks import HEADS, STEMS, upsample_to
from ..space.compile import beta_groups, cell_input_stride
from ..space.spec import SearchSpace
from .mixed import ReluCache, SearchCell, strip_leading_relu
from .recompute import recompute_in_backward, region_members

Node = tuple[int, int]


def node_key(node: Node) -> str:
    return f"L{node[0]}_{node[1]}"


def resampling_op(c_in: int, c_out: int, factor: float, affine: bool) -> nn.Module:
    """Auto-DeepLab's pre-processing of a transition (with its leading ReLU): a factorized reduce per
    halving (factor 2, 4, ...), else ReLU-conv1x1-BN (followed by upsampling for factor < 1)."""
    if factor > 1:
        halvings = int(round(math.log2(factor)))
        return nn.Sequential(*[FactorizedReduce(c_in if i == 0 else c_out, c_out, affine) for i in range(halvings)])
    return ReLUConvBN(c_in, c_out, 1, affine=affine)


class Resample(nn.Module):
    """Project a state to ``c_out`` channels and move it ``factor`` = stride_out / stride_in.

    1: ReLU-conv1x1-BN; 2, 4, ...: factorized reduce per halving; 1/2, 1/4, ...: ReLU-conv1x1-BN
    then bilinear upsampling to the target size. The leading ReLU is stripped: the caller passes
    relu(x), shared with every other reader of the state.
    """

    def __init__(self, c_in: int, c_out: int, factor: float, affine: bool):
        super().__init__()
        self.upsample = factor < 1
        self.op = resampling_op(c_in, c_out, factor, affine)
        strip_leading_relu(self.op)

    def forward(self, relu_x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.op(relu_x)
        if self.upsample:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x


@dataclass(frozen=True)
class StatePlan:
    """What one state of the supernet is made of: its cell (width, reduction), its pre-processing
    ``(name, source state, resampling factor)`` per input, and whether a head reads it."""

    node: Node
    width: int
    reduction: bool
    level: int  # the level whose resolution the cell works at
    resamples: tuple[tuple[str, Node, float], ...]
    final: bool


def state_plans(space: SearchSpace) -> list[StatePlan]:
    """The plan of every cell state, in the order the supernet builds them."""
    graph = space.network_graph
    level_of = {stride: i for i, stride in enumerate(space.network.strides)}
    plans = []
    for node in sorted(graph.nodes):
        data = graph.nodes[node]
        if data["role"] == "stem":
            continue
        work = cell_input_stride(graph, node)
        resamples = [(f"from_{node_key(source)}", source, work / graph.nodes[source]["stride"])
                     for source in sorted(graph.predecessors(node))]
        if data["prev_prev"] is not None and space.cell.inputs == 2:
            resamples.append(("pp", data["prev_prev"], work / graph.nodes[data["prev_prev"]]["stride"]))
        plans.append(StatePlan(node, data["width"], data["cell_type"] == "reduce", level_of[work],
                               tuple(resamples), data["final"]))
    return plans


def level_sizes(stem_size: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    """The feature size at each level: the stem's output, then halved (rounding up) per level."""
    h, w = stem_size
    sizes = []
    for _ in range(levels):
        sizes.append((h, w))
        h, w = (h + 1) // 2, (w + 1) // 2
    return sizes


class Supernet(nn.Module):
    def __init__(self, space: SearchSpace, num_classes: int | None = None, affine: bool = False,
                 checkpoint_cells: bool = False, prune_below: float = 0.0, checkpoint_max_stride: int | None = None,
                 lean_saved: bool | None = None):
        super().__init__()
        self.space = space
        self.checkpoint_cells = checkpoint_cells  # recompute each state in backward (less memory)
        # ... only the states at this stride or finer (None: all); coarse states hold few bytes for their time
        self.checkpoint_max_stride = checkpoint_max_stride
        self.prune_below = prune_below  # skip candidate ops whose softmax weight is below this
        # the candidate ops keep fewer tensors for backward (nasseg.lean): None: on chain networks, for tensors
        # of at least lean.MIN_ELEMENTS elements (a lattice step at batch 2 is per-call bound: the lean layers'
        # calls cost it more time than they save), and on any network for the conv candidates that run side by
        # side (edge_batch.LEAN_MIN_ELEMENTS); True: at every size, on any network; False: nowhere
        self.lean_saved = space.network.type == "chain" if lean_saved is None else lean_saved
        lean = "off" if not self.lean_saved else "large" if lean_saved is None else "all"
        self.pinned_active: dict[str, list[list[bool]]] | None = None  # active_ops held fixed (search.steps)
        self._weight_parameters: tuple[nn.Parameter, ...] | None = None  # (weight_parameters: listed once)
        self.graph: nx.DiGraph = space.network_graph
        net = space.network
        self.num_classes = num_classes or net.classes
        if not self.num_classes:
            raise NassegError(f"{space.file or space.name}: network.classes is not set; pass the "
                              "number of classes (e.g. --classes 19)")
        head_def = HEADS[net.head.type]
        self.segmentation = head_def.segmentation
        self.strides = net.strides

        self.stem = STEMS[net.stem.type].build(**net.stem.params)
        self.cells = nn.ModuleDict()
        self.resample = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.layers: list[list[Node]] = [[] for _ in range(net.layers + 1)]
        for node in sorted(self.graph.nodes):
            self.layers[node[0]].append(node)
        self.final_nodes = [node for node in self.layers[-1] if self.graph.nodes[node]["final"]]
        self.work_level: dict[Node, int] = {}  # fixed per state: looked up here, not in every forward

        for plan in state_plans(space):
            key = node_key(plan.node)
            self.work_level[plan.node] = plan.level
            self.cells[key] = SearchCell(space, plan.width, plan.reduction, affine, lean,
                                         side_by_side_lean=lean_saved is not False)
            for name, source, factor in plan.resamples:
                channels = self.graph.nodes[source]["channels"]
                self.resample[f"{key}_{name}"] = Resample(channels, plan.width, factor, affine)
            if plan.final:
                data = self.graph.nodes[plan.node]
                self.heads[key] = head_def.build(data["channels"], data["stride"], self.num_classes,
                                                 **net.head.params)

        self._build_arch_parameters()
        # the `noise` op draws random numbers: a recomputed state must draw the same ones
        self.draws_random = any(isinstance(m, Noise) for m in self.modules())
        # per checkpointed state: its modules' parameters and BatchNorms (region_members), found once;
        # cleared by .to() / .double(); code that swaps modules or parameters otherwise must clear it
        self._regions: dict[Node, tuple[list[nn.Parameter], list[nn.Module]]] = {}
        self._batch_norms: list[nn.Module] | None = None  # batch_norms(), found once; cleared with _regions

    # --- architecture parameters ------------------------------------------------------------

    def _build_arch_parameters(self) -> None:
        cell_graph = self.space.cell_graph
        edges = sorted(cell_graph.edges(data=True), key=lambda e: e[2]["index"])
        self.edge_sizes = [len(data["ops"]) for _, _, data in edges]
        self.alphas = nn.ParameterDict({
            cell_type: nn.Parameter(1e-3 * torch.randn(sum(self.edge_sizes)))
            for cell_type in self.space.cell_types
        })
        # betas: one softmax group per state with more than one outgoing transition
        self.beta_groups: list[tuple[Node, list[Node]]] = beta_groups(self.graph)
        sizes = [len(targets) for _, targets in self.beta_groups]
        self.beta_sizes = sizes
        self.betas = nn.Parameter(1e-3 * torch.randn(sum(sizes))) if sizes else None

    def arch_parameters(self) -> list[nn.Parameter]:
        params = list(self.alphas.values())
        return params + ([self.betas] if self.betas is not None else [])

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter but the alphas and betas. Listed once, at the first call: a supernet's modules are fixed
        when it is built (to_channels_last keeps the parameter objects), and walking the Auto-DeepLab lattice's 38
        thousand modules takes 0.07 s, twice a search step (1.5 % of a step at 128x128)."""
        if self._weight_parameters is None:
            arch = {id(p) for p in self.arch_parameters()}
            self._weight_parameters = tuple(p for p in self.parameters() if id(p) not in arch)
        return iter(self._weight_parameters)

    def edge_weights(self, cell_type: str) -> list[torch.Tensor]:
        """softmax(alpha) of every cell edge, in edge-index order."""
        alpha = self.alphas[cell_type]
        if len(set(self.edge_sizes)) == 1:
            return list(F.softmax(alpha.view(len(self.edge_sizes), -1), dim=-1).unbind(0))
        return [F.softmax(chunk, dim=-1) for chunk in torch.split(alpha, self.edge_sizes)]

    def transition_weights(self) -> dict[tuple[Node, Node], torch.Tensor]:
        """softmax(beta) over each state's outgoing transitions; states with one have none."""
        if self.betas is None:
            return {}
        weights = {}
        for (source, targets), chunk in zip(self.beta_groups, torch.split(self.betas, self.beta_sizes)):
            for target, w in zip(targets, F.softmax(chunk, dim=-1).unbind(0)):
                weights[(source, target)] = w
        return weights

    # --- forward ----------------------------------------------------------------------------

    def state_inputs(self, node: Node) -> list[Node]:
        """The states a state reads: its transitions' sources, then its l-2 input if it has one."""
        sources = list(self.graph.predecessors(node))
        pp = self.graph.nodes[node]["prev_prev"]
        if f"{node_key(node)}_pp" in self.resample and pp not in sources:
            sources.append(pp)
        return sources

    def state_forward(self, node: Node, inputs: dict[Node, torch.Tensor], relu: ReluCache | None,
                      sizes: list[tuple[int, int]], alphas: dict[str, list[torch.Tensor]],
                      betas: dict[tuple[Node, Node], torch.Tensor],
                      active: dict[str, list[list[bool]]] | None) -> torch.Tensor:
        """One state: sum over its transitions of beta * cell(pre-processed l-2 state, pre-processed source).

        ``inputs`` holds (at least) the states it reads; ``relu`` caches their ReLUs across states,
        None makes a cache local to this call (checkpointed regions)."""
        data = self.graph.nodes[node]
        key = node_key(node)
        size = sizes[self.work_level[node]]
        relu = relu if relu is not None else ReluCache(inputs)
        cell_type = data["cell_type"]
        pp = None
        if f"{key}_pp" in self.resample:
            pp = self.resample[f"{key}_pp"](relu(data["prev_prev"]), size)
        sources = list(self.graph.predecessors(node))
        cell, active = self.cells[key], None if active is None else active[cell_type]
        if len(sources) > 1 and fastpaths.enabled("batched_transitions", inputs[sources[0]].device):
            # one cell call for all T transitions: the pre-processed sources stacked along the batch
            # (T * B samples), BatchNorm statistics per transition (batch_norm_groups); pp's B samples
            # once, the edges that read it broadcast into the stacked sums (mixed.stacked_sum)
            prev = torch.cat([self.resample[f"{key}_from_{node_key(source)}"](relu(source), size)
                              for source in sources])
            with batch_norm_groups(prev.shape[0] // len(sources), len(sources)):
                outputs = cell([pp, prev][-self.space.cell.inputs:], alphas[cell_type], active).chunk(len(sources))
        else:
            pp_relu = {0: F.relu(pp)} if pp is not None and self._shares_pp(node) else None
            outputs = []
            for source in sources:
                prev = self.resample[f"{key}_from_{node_key(source)}"](relu(source), size)
                cell_inputs = [pp, prev] if self.space.cell.inputs == 2 else [prev]
                outputs.append(cell(cell_inputs, alphas[cell_type], active, input_relus=pp_relu))
        out = None
        for source, y in zip(sources, outputs):
            if (source, node) in betas:
                y = betas[(source, node)] * y
            out = y if out is None else out + y
        return out

    def _shares_pp(self, node: Node) -> bool:
        """More than one cell evaluation reads this state's pre-processed l-2 input."""
        return self.graph.in_degree(node) > 1

    def _recomputed_state(self, node: Node, states: dict[Node, torch.Tensor], sizes: list[tuple[int, int]],
                          alphas: dict[str, list[torch.Tensor]], betas: dict[tuple[Node, Node], torch.Tensor],
                          active: dict[str, list[list[bool]]] | None) -> torch.Tensor:
        """:meth:`state_forward` keeping only the state's inputs for backward (``checkpoint_cells``)."""
        key, cell_type = node_key(node), self.graph.nodes[node]["cell_type"]
        sources = self.state_inputs(node)
        beta_keys = [(source, node) for source in self.graph.predecessors(node) if (source, node) in betas]
        weights = alphas[cell_type]
        n_states, n_weights = len(sources), len(weights)

        def run(*tensors: torch.Tensor) -> torch.Tensor:
            # relu() is recomputed inside (no cache shared with other states)
            return self.state_forward(node, dict(zip(sources, tensors[:n_states])), None, sizes,
                                      {cell_type: list(tensors[n_states:n_states + n_weights])},
                                      dict(zip(beta_keys, tensors[n_states + n_weights:])), active)

        if node not in self._regions:
            self._regions[node] = region_members(
                [self.cells[key]] + [m for name, m in self.resample.items() if name.startswith(f"{key}_")])
        tensors = [states[source] for source in sources] + list(weights) + [betas[k] for k in beta_keys]
        return recompute_in_backward(run, tensors, *self._regions[node], random=self.draws_random)

    def _apply(self, fn, recurse=True):
        self._regions.clear()  # .to() / .double() may give modules new parameter objects
        self._batch_norms = None
        return super()._apply(fn, recurse)

    def batch_norms(self) -> list[nn.Module]:
        """Every BatchNorm of the supernet (what :func:`~nasseg.layers.frozen_bn_stats` switches), found once."""
        if self._batch_norms is None:
            self._batch_norms = [m for m in all_modules([self]) if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        return self._batch_norms

    def level_sizes(self, stem_out: torch.Tensor) -> list[tuple[int, int]]:
        return level_sizes(tuple(stem_out.shape[-2:]), len(self.strides))

    def active_ops(self, alphas: dict[str, list[torch.Tensor]]) -> dict[str, list[list[bool]]] | None:
        """Per cell type and edge, which candidates are computed (``prune_below``); None = all."""
        if self.prune_below <= 0:
            return None
        if self.pinned_active is not None:
            return self.pinned_active
        return {cell_type: [w.detach().ge(self.prune_below).tolist() for w in weights]
                for cell_type, weights in alphas.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states: dict[Node, torch.Tensor] = {(0, 0): self.stem(x)}
        relu = ReluCache(states)
        sizes = self.level_sizes(states[(0, 0)])
        alphas = {cell_type: self.edge_weights(cell_type) for cell_type in self.alphas}
        betas = self.transition_weights()
        active = self.active_ops(alphas)
        recompute = self.checkpoint_cells and torch.is_grad_enabled()

        for layer in self.layers[1:]:
            for node in layer:
                if recompute and (self.checkpoint_max_stride is None
                                  or self.graph.nodes[node]["stride"] <= self.checkpoint_max_stride):
                    states[node] = self._recomputed_state(node, states, sizes, alphas, betas, active)
                else:
                    states[node] = self.state_forward(node, states, relu, sizes, alphas, betas, active)
            # states two layers back are no longer needed by anything
            for node in [n for n in states if n[0] == layer[0][0] - 2]:
                del states[node]
                relu.forget(node)

        logits = None
        for node in self.final_nodes:
            y = self.heads[node_key(node)](states[node])
            if self.segmentation:
                y = upsample_to(y, tuple(x.shape[-2:]))
            logits = y if logits is None else logits + y
        return logits
