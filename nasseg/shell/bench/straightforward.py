"""The papers' supernets written the straightforward way: the baseline of ``nasseg bench``.

Built from the same compiled search space as :class:`nasseg.supernet.Supernet` and computing exactly
the same function, but in the style of the original code, with none of nasseg's optimisations:

* every candidate op runs on every edge, ``none`` as a multiply by zero (DARTS ``operations.py`` ``Zero``);
* every op applies its own leading ReLU to the edge input, none shared (DARTS ``operations.py``);
* a mixed op is ``sum(w * op(x) for w, op in zip(weights, ops))`` (DARTS ``model_search.py``);
* each transition into a lattice state has its own pre-processing, the cell runs once per
  transition, and every state is kept until the forward pass ends (Auto-DeepLab's search code);
* the architecture parameters always require grad, so the weight step's backward also computes
  alpha/beta gradients and the first-order architecture step's backward weight gradients (DARTS
  ``train_search.py`` / ``architect.py``); no BatchNorm statistics are frozen or restored.

``load_from(ours)`` copies every weight, buffer, alpha and beta of a nasseg supernet; the two then
agree to float rounding (tests/test_straightforward.py). The one deviation from DARTS' code:
:class:`FactorizedReduce` pads by one pixel before the shifted branch (as nasseg does) so that odd
sizes work (Auto-DeepLab at 321x321 has 81x81 states); for even sizes this is DARTS' ``conv_2(x[:, :, 1:, 1:])``.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import networkx as nx
import torch
import torch.nn.functional as F
from torch import nn

from nasseg.space.blocks import HEADS, STEMS, upsample_to
from nasseg.space.compile import beta_groups, cell_input_stride
from nasseg.space.ops import OPS
from nasseg.space.spec import SearchSpace

Node = tuple[int, int]


# --- DARTS operations.py ------------------------------------------------------------------------

class ReLUConvBN(nn.Module):
    def __init__(self, c_in, c_out, kernel, stride, padding, affine=True, dilation=1):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(c_out, affine=affine))

    def forward(self, x):
        return self.op(x)


class DilConv(nn.Module):
    def __init__(self, c_in, c_out, kernel, stride, padding, dilation, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride=stride, padding=padding, dilation=dilation, groups=c_in,
                      bias=False),
            nn.Conv2d(c_in, c_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(c_out, affine=affine))

    def forward(self, x):
        return self.op(x)


class SepConv(nn.Module):
    def __init__(self, c_in, c_out, kernel, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride=stride, padding=padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, padding=0, bias=False),
            nn.BatchNorm2d(c_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride=1, padding=padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(c_out, affine=affine))

    def forward(self, x):
        return self.op(x)


class Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x.mul(0.)
        return x[:, :, ::self.stride, ::self.stride].mul(0.)


class FactorizedReduce(nn.Module):
    def __init__(self, c_in, c_out, affine=True):
        super().__init__()
        assert c_out % 2 == 0
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]  # == x[:, :, 1:, 1:] for even sizes
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


# DARTS operations.py's OPS, with Auto-DeepLab's atrous names and plain convolutions
DARTS_OPS = {
    "none": lambda C, stride, affine: Zero(stride),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "skip_connect": lambda C, stride, affine: nn.Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine),
    "conv_1x1": lambda C, stride, affine: ReLUConvBN(C, C, 1, stride, 0, affine=affine),
    "conv_3x3": lambda C, stride, affine, dilation=1: ReLUConvBN(C, C, 3, stride, dilation, affine=affine,
                                                                dilation=dilation),
}
DARTS_OPS.update(atrous_conv_3x3=DARTS_OPS["dil_conv_3x3"], atrous_conv_5x5=DARTS_OPS["dil_conv_5x5"])


def build_op(registry_name: str, C: int, stride: int, affine: bool, **params) -> nn.Module:
    """An op of the registry, written as in DARTS operations.py; ops the original papers do not
    have (noise, custom registrations) fall back to nasseg's own builder."""
    if registry_name in DARTS_OPS:  # the space checked the params against nasseg's builder: conv_3x3's dilation
        return DARTS_OPS[registry_name](C, stride, affine, **params)
    return OPS[registry_name].build(C, stride, affine, **params)


# --- DARTS model_search.py / Auto-DeepLab cell -------------------------------------------------

class MixedOp(nn.Module):
    def __init__(self, space: SearchSpace, op_names: Sequence[str], C: int, stride: int, affine: bool):
        super().__init__()
        self.ops = nn.ModuleList()
        for name in op_names:
            spec = space.op(name)
            op = build_op(spec.op, C, stride, affine, **spec.params)
            if OPS[spec.op].bn_in_search:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self.ops.append(op)

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self.ops))


class Cell(nn.Module):
    """The cell DAG; inputs arrive pre-processed. A missing input (None) has no ops applied, as
    Auto-DeepLab's cells without an l-2 state skip their ``None`` ops."""

    def __init__(self, space: SearchSpace, C: int, reduction: bool, affine: bool):
        super().__init__()
        graph: nx.DiGraph = space.cell_graph
        self.n_inputs = space.cell.inputs
        self.outputs = list(graph.graph["outputs"])
        self.mean = graph.graph["combine"] == "mean"
        self.order = [n for n in nx.topological_sort(graph) if graph.nodes[n]["role"] == "intermediate"]
        self.incoming = {v: [(u, graph.edges[u, v]["index"]) for u in sorted(graph.predecessors(v))]
                         for v in self.order}
        edges = sorted(graph.edges(data=True), key=lambda e: e[2]["index"])
        self.edges = nn.ModuleList([
            MixedOp(space, data["ops"], C, 2 if reduction and u < self.n_inputs else 1, affine)
            for u, _, data in edges])

    def forward(self, inputs, weights):
        states = dict(enumerate(inputs))
        for v in self.order:
            terms = [self.edges[i](states[u], weights[i]) for u, i in self.incoming[v] if states[u] is not None]
            if not terms:
                states[v] = None
            else:
                states[v] = sum(terms) / len(terms) if self.mean else sum(terms)
        present = next(states[v] for v in self.outputs if states[v] is not None)
        return torch.cat([states[v] if states[v] is not None else torch.zeros_like(present)
                          for v in self.outputs], dim=1)


class Preprocess(nn.Module):
    """ReLU-conv1x1-BN (same stride), factorized reduce per halving, or ReLU-conv1x1-BN + bilinear
    upsampling; one per transition (Auto-DeepLab's preprocess_down/same/up) and one for l-2."""

    def __init__(self, c_in: int, c_out: int, factor: float, affine: bool):
        super().__init__()
        self.upsample = factor < 1
        if factor > 1:
            halvings = int(round(math.log2(factor)))
            self.op = nn.Sequential(*[FactorizedReduce(c_in if i == 0 else c_out, c_out, affine)
                                      for i in range(halvings)])
        else:
            self.op = ReLUConvBN(c_in, c_out, 1, 1, 0, affine=affine)

    def forward(self, x, size):
        x = self.op(x)
        if self.upsample:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x


def _key(node: Node) -> str:
    return f"L{node[0]}_{node[1]}"


class StraightforwardSupernet(nn.Module):
    """The naive supernet of ``space``; the same function as ``nasseg.supernet.Supernet(space)``."""

    def __init__(self, space: SearchSpace, num_classes: int | None = None, affine: bool = False):
        super().__init__()
        self.space = space
        self.graph: nx.DiGraph = space.network_graph
        net = space.network
        self.num_classes = num_classes or net.classes
        head_def = HEADS[net.head.type]
        self.segmentation = head_def.segmentation
        self.strides = net.strides
        self.stem = STEMS[net.stem.type].build(**net.stem.params)
        self.cells = nn.ModuleDict()
        self.preprocess = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.nodes = sorted(n for n in self.graph.nodes if self.graph.nodes[n]["role"] != "stem")
        for node in self.nodes:
            data = self.graph.nodes[node]
            key, width, work = _key(node), data["width"], cell_input_stride(self.graph, node)
            self.cells[key] = Cell(space, width, data["cell_type"] == "reduce", affine)
            for source in sorted(self.graph.predecessors(node)):
                src = self.graph.nodes[source]
                self.preprocess[f"{key}_from_{_key(source)}"] = Preprocess(src["channels"], width,
                                                                          work / src["stride"], affine)
            if data["prev_prev"] is not None and space.cell.inputs == 2:
                pp = self.graph.nodes[data["prev_prev"]]
                self.preprocess[f"{key}_pp"] = Preprocess(pp["channels"], width, work / pp["stride"], affine)
            if data["final"]:
                self.heads[key] = head_def.build(data["channels"], data["stride"], self.num_classes,
                                                 **net.head.params)
        # alphas as in DARTS: one (edges x ops) matrix per cell type when every edge has the same
        # op set, else one flat vector split per edge; betas: one softmax group per state with
        # several outgoing transitions (nasseg's grouping, so both nets compute the same function)
        edges = sorted(space.cell_graph.edges(data=True), key=lambda e: e[2]["index"])
        self.edge_sizes = [len(data["ops"]) for _, _, data in edges]
        uniform = len(set(self.edge_sizes)) == 1
        shape = (len(self.edge_sizes), self.edge_sizes[0]) if uniform else (sum(self.edge_sizes),)
        self.alphas = nn.ParameterDict({t: nn.Parameter(1e-3 * torch.randn(*shape)) for t in space.cell_types})
        self.beta_groups = beta_groups(self.graph)
        self.beta_sizes = [len(targets) for _, targets in self.beta_groups]
        self.betas = nn.Parameter(1e-3 * torch.randn(sum(self.beta_sizes))) if self.beta_sizes else None

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values()) + ([self.betas] if self.betas is not None else [])

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return (p for p in self.parameters() if id(p) not in arch)

    def forward(self, x):
        states = {(0, 0): self.stem(x)}
        h, w = states[(0, 0)].shape[-2:]
        sizes = []
        for _ in self.strides:
            sizes.append((h, w))
            h, w = (h + 1) // 2, (w + 1) // 2
        weights = {}
        for cell_type, alpha in self.alphas.items():
            weights[cell_type] = (F.softmax(alpha, dim=-1) if alpha.dim() == 2 else
                                  [F.softmax(a, dim=-1) for a in torch.split(alpha, self.edge_sizes)])
        betas = {}
        if self.betas is not None:
            for (source, targets), chunk in zip(self.beta_groups, torch.split(self.betas, self.beta_sizes)):
                for target, b in zip(targets, F.softmax(chunk, dim=-1)):
                    betas[(source, target)] = b
        for node in self.nodes:
            data = self.graph.nodes[node]
            key = _key(node)
            size = sizes[self.strides.index(cell_input_stride(self.graph, node))]
            pp = None
            if f"{key}_pp" in self.preprocess:
                pp = self.preprocess[f"{key}_pp"](states[data["prev_prev"]], size)
            outs = []
            for source in self.graph.predecessors(node):
                prev = self.preprocess[f"{key}_from_{_key(source)}"](states[source], size)
                y = self.cells[key]([pp, prev] if self.space.cell.inputs == 2 else [prev], weights[data["cell_type"]])
                outs.append(betas[(source, node)] * y if (source, node) in betas else y)
            states[node] = sum(outs)
        logits = []
        for node in self.nodes:
            if self.graph.nodes[node]["final"]:
                y = self.heads[_key(node)](states[node])
                logits.append(upsample_to(y, tuple(x.shape[-2:])) if self.segmentation else y)
        return sum(logits)

    # --- parameters shared with nasseg's supernet ----------------------------------------------

    def paired_names(self, ours: nn.Module) -> list[tuple[str, str]]:
        """(name in ``ours.state_dict()``, name in ``self.state_dict()``) of every tensor, matched block by
        block (stem, each pre-processing, each candidate op of each edge, heads), inside a block by
        registration order with equal shapes: nasseg strips ReLUs, DARTS flattens SepConv."""
        pairs: list[tuple[str, str]] = []
        ours_sd, mine_sd = ours.state_dict(), self.state_dict()

        def block(src_prefix: str, dst_prefix: str) -> None:
            src = [k for k in ours_sd if k.startswith(src_prefix + ".")]
            dst = [k for k in mine_sd if k.startswith(dst_prefix + ".")]
            if len(src) != len(dst) or any(ours_sd[a].shape != mine_sd[b].shape for a, b in zip(src, dst)):
                raise ValueError(f"cannot match {src_prefix} of nasseg's supernet "
                                 f"({[tuple(ours_sd[k].shape) for k in src]}) with {dst_prefix} "
                                 f"({[tuple(mine_sd[k].shape) for k in dst]})")
            pairs.extend(zip(src, dst))

        block("stem", "stem")
        for name in self.preprocess:
            block(f"resample.{name}", f"preprocess.{name}")
        for key, cell in self.cells.items():
            for i, edge in enumerate(ours.cells[key].edges):
                for k, position in enumerate(edge.positions):
                    block(f"cells.{key}.edges.{i}.ops.{k}", f"cells.{key}.edges.{i}.ops.{position}")
        for key in self.heads:
            block(f"heads.{key}", f"heads.{key}")
        for cell_type in self.alphas:
            pairs.append((f"alphas.{cell_type}", f"alphas.{cell_type}"))
        if self.betas is not None:
            pairs.append(("betas", "betas"))
        missing = set(mine_sd) - {b for _, b in pairs}
        left = set(ours_sd) - {a for a, _ in pairs}
        if missing or left:
            raise ValueError(f"unmatched tensors: straightforward {sorted(missing)[:5]}, nasseg {sorted(left)[:5]}")
        return pairs

    @torch.no_grad()
    def load_from(self, ours: nn.Module) -> "StraightforwardSupernet":
        """Copy every weight, BatchNorm buffer, alpha and beta of a nasseg ``Supernet``."""
        ours_sd, mine_sd = ours.state_dict(), self.state_dict()
        for src, dst in self.paired_names(ours):
            mine_sd[dst].copy_(ours_sd[src].reshape(mine_sd[dst].shape))
        return self


# --- DARTS train_search.py / architect.py steps ----------------------------------------------

def straightforward_weight_step(model: StraightforwardSupernet, x: torch.Tensor, y: torch.Tensor,
                                optimizer: torch.optim.Optimizer, clip: float,
                                ignore_index: int = 255) -> float:
    """``optimizer`` holds the weights only; the backward also fills the alphas' .grad."""
    optimizer.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits, y, ignore_index=ignore_index)
    loss.backward()
    nn.utils.clip_grad_norm_(list(model.weight_parameters()), clip)
    optimizer.step()
    return loss.item()


def straightforward_arch_step_first(model: StraightforwardSupernet, x: torch.Tensor, y: torch.Tensor,
                                    arch_optimizer: torch.optim.Optimizer, ignore_index: int = 255) -> float:
    """First-order DARTS: ``loss.backward()`` on the validation batch (weights' grads included)."""
    arch_optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y, ignore_index=ignore_index)
    loss.backward()
    arch_optimizer.step()
    return loss.item()

