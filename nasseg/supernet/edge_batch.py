"""The candidate convs of the edges that read one state, as one call per layer (fast path ``batched_edges``).

In a cell, every edge that leaves a state reads the same ``relu(state)``, and each runs the same candidate
convs (sep_conv, dil_conv / atrous_conv) with weights of its own. With k such edges, each layer of a conv
candidate can be one call for all k: the input repeated k times along the channels (edge-major; for backward
the conv keeps the input once and repeats it again, by saved-tensor hooks), depthwise convs with
groups = k * C, the pointwise convs as one batched matrix product (groups = k), and one BatchNorm over the
k * C channels (:func:`~nasseg.layers.side_by_side_batch_norm`: each edge's own statistics and running
averages); the candidates' weighted sum is taken for all k edges at once, each edge reading its channels
(:class:`Partial`). Every output channel is computed from the same inputs and weights as before, so the
function and its gradients are the same. Where the state is small (an Auto-DeepLab lattice state at batch 2), a
step is bound by the number of calls and this pays; where it is large (DARTS at batch 64) the kernels are bound
by memory traffic, and repeating the input costs more than the calls it saves. So the path runs below
:data:`MAX_ELEMENTS` only (where the lean layers of a chain network compute as their plain blocks do).

From :data:`LEAN_MIN_ELEMENTS` up (k edges' tensors), where fast path ``lean_saved`` applies, the side-by-side
layers keep less for backward: the BatchNorms their outputs (with the ReLU after them in their function, except
under ``lean.relu_apart``), and the depthwise conv after that ReLU neither the ReLU's output (computed again)
nor, with frozen weights, anything but its input's size (:mod:`nasseg.lean`).
"""

from __future__ import annotations

import contextlib
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import fastpaths, lean
from ..layers import DilConv, GroupBatchNorm2d, SepConv, side_by_side_batch_norm
from .depthwise import LeanDilConv, LeanSepConv

# a state (all its stacked samples) of fewer elements than this batches its edges. Measured forward + backward
# (CPU, 1 thread, NHWC; benchmarks/darts_kernels.py kernels): at the Auto-DeepLab lattice's 4-6 x 8-64 channels
# x 4-32 px (4-33k elements) k edges in one call took 0.51-1.23x the time of k calls, 0.82x at the median
# (sep_conv and dil_conv, k = 5 and 10); at DARTS' 64 x 16-64 channels x 8-32 px (262k-1M elements), 1.1-1.4x.
MAX_ELEMENTS = 1 << 16

# side by side, k edges' tensors (k x the state's elements) of at least this many keep less for backward (fast path
# lean_saved, side_by_side_blocks); below, the output-keeping BatchNorm's Python costs more time than its bytes are
# worth. Auto-DeepLab F=8, 12 layers, batch 2, 128x128 (peak MB; search step time against lean_saved off): at every
# size 1,084 MB at 1.03-1.05x; from 2^15 up 1,107 MB at 1.02-1.03x; from 2^16 up (41 % of the calls, 71 % of the
# bytes) 1,159 MB at 0.96-1.03x; never 1,288 MB
LEAN_MIN_ELEMENTS = 1 << 16

Blocks = list[nn.Sequential]  # [ReLU or Identity, depthwise conv, pointwise conv, BatchNorm] per block


def conv_blocks(op: nn.Module) -> Blocks | None:
    """The blocks of a candidate op that :func:`side_by_side_blocks` can run (a dil_conv / atrous_conv or a
    sep_conv as the supernet holds it: its leading ReLU stripped; lean layers only where they are lean from
    lean.MIN_ELEMENTS up, not at every size), else None."""
    if type(op) in (DilConv, LeanDilConv):
        blocks = [op]
    elif type(op) in (SepConv, LeanSepConv) and all(type(block) is DilConv for block in op):
        blocks = list(op)
    else:
        return None
    if getattr(op, "every_size", False):  # lean at every size: its own forward
        return None
    for number, (relu, depthwise, pointwise, norm) in enumerate(blocks):
        if not isinstance(relu, nn.Identity if number == 0 else nn.ReLU):  # the first one stripped: reads relu(x)
            return None
        if not (isinstance(depthwise, nn.Conv2d) and depthwise.bias is None and isinstance(depthwise.padding, tuple)
                and depthwise.padding_mode == "zeros"
                and depthwise.groups == depthwise.in_channels == depthwise.out_channels):
            return None
        if not (type(pointwise) is nn.Conv2d and pointwise.kernel_size == (1, 1) and pointwise.stride == (1, 1)
                and pointwise.padding == (0, 0) and pointwise.groups == 1 and pointwise.bias is None):
            return None
        if not (type(norm) in (nn.BatchNorm2d, GroupBatchNorm2d) and norm.momentum is not None
                and not getattr(norm, "lean_every_size", False)):
            return None
    return blocks


def signature(blocks: Blocks) -> tuple:
    """What must agree for edges' blocks to run side by side."""
    return tuple((type(norm), depthwise.kernel_size, depthwise.stride, depthwise.padding, depthwise.dilation,
                  depthwise.in_channels, pointwise.out_channels, norm.affine, norm.eps, norm.momentum,
                  norm.track_running_stats)
                 for _, depthwise, pointwise, norm in blocks)


def side_by_side_blocks(edges: Sequence[Blocks], x: torch.Tensor, keep_less: bool = True) -> torch.Tensor:
    """Each edge's blocks applied to ``x`` (= relu(state)), all edges in one call per layer: the edges' outputs
    side by side along the channels, edge-major. ``keep_less``: see below (False: never)."""
    k, last = len(edges), len(edges[0]) - 1
    # where fast path lean_saved applies (nasseg.lean): the BatchNorms keep their outputs (the last one's the
    # weighted sum keeps anyway), with the ReLU after them in their function unless every ReLU must be a call of
    # its own (lean.relu_apart); a depthwise conv after that ReLU computes its input again from the BatchNorm's
    # output, and with frozen weights (the architecture step) keeps only its input's size and layout, all its
    # input gradient reads of it
    lean_here = keep_less and x.requires_grad and k * x.numel() >= LEAN_MIN_ELEMENTS and \
        lean.lean_applies(x, every_size=True)
    relu_inside = lean_here and lean.fuses_relu()
    y = torch.cat([x] * k, 1)
    stand_in = _Repeated(x, k)  # the first conv keeps x (which the other candidates keep anyway), not its k copies
    for number in range(last + 1):
        layers = [blocks[number] for blocks in edges]
        _, depthwise, pointwise, _ = layers[0]
        if number and not relu_inside:
            y = F.relu(y)
        weight = torch.cat([layer[1].weight for layer in layers])
        if lean_here and not weight.requires_grad:
            stand_in = lean.StandIn.of(y)
        with _keeping(stand_in, id(y)):
            y = F.conv2d(y, weight, None, depthwise.stride, depthwise.padding, depthwise.dilation, y.shape[1])
        y = grouped_pointwise(y, torch.cat([layer[2].weight for layer in layers]), k)
        y, normed = side_by_side_batch_norm(y, [layer[3] for layer in layers], keep_output=lean_here,
                                            relu=relu_inside and number < last)
        stand_in = None if normed is None else _ReluOf(normed)
    return y


def grouped_pointwise(y: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
    """``F.conv2d(y, weight, groups=groups)`` for a 1x1 ``weight``; on NHWC input as one batched matrix product
    (pixels x channels per group), 0.67-0.84x the grouped conv's time at the lattice's shapes (forward + backward)."""
    n, channels, height, width = y.shape
    if not (y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()):
        return F.conv2d(y, weight, None, 1, 0, 1, groups)
    rows = y.permute(0, 2, 3, 1).reshape(n * height * width, groups, channels // groups).transpose(0, 1)
    out = torch.bmm(rows, weight.view(groups, -1, channels // groups).transpose(1, 2))  # groups x pixels x out
    return out.transpose(0, 1).reshape(n, height, width, -1).permute(0, 3, 1, 2)


class _Repeated(NamedTuple):
    """A saved tensor that is ``x`` repeated ``k`` times along the channels: made again in backward."""

    x: torch.Tensor
    k: int


class _ReluOf(NamedTuple):
    """A saved tensor that is ``relu(x)``: made again in backward."""

    x: torch.Tensor


def _keeping(stand_in: _Repeated | _ReluOf | lean.StandIn | None, saved: int):
    """Saved-tensor hooks under which the tensor of id ``saved`` is kept as ``stand_in`` (None: no hooks). Autograd
    keeps the hooks with what they packed: they hold an id, not the tensor, which is alive (so its id is unique)
    while they run."""
    if stand_in is None:
        return contextlib.nullcontext()
    return torch.autograd.graph.saved_tensors_hooks(lambda t: stand_in if id(t) == saved else t, _unpack)


def _unpack(saved):
    # (double backward, where only _Repeated is packed: autograd attaches the saved tensor's own history, the
    # repeat of x, to what this returns)
    if isinstance(saved, _Repeated):
        return torch.cat([saved.x] * saved.k, 1)
    if isinstance(saved, lean.StandIn):
        return saved.empty()
    return torch.relu(saved.x) if isinstance(saved, _ReluOf) else saved


def agree(norms: list[nn.BatchNorm2d]) -> bool:
    """Whether the norms can run side by side now (momentum and mode may be set after the supernet is built)."""
    first = norms[0]
    return first.momentum is not None and all(norm.momentum == first.momentum and norm.training == first.training
                                              for norm in norms)


class Member(NamedTuple):
    """One edge's conv candidate in a group that runs side by side."""

    edge: int  # edge index in the cell
    position: int  # the candidate's position among the edge's ops (and its weights)
    blocks: Blocks
    lean: bool  # a lean layer (fast path lean_saved): native only below lean.MIN_ELEMENTS


class EdgeBatches:
    """For one cell: per state, the groups of (edge, op position) whose conv candidates run side by side."""

    def __init__(self, edges: Sequence[nn.Module], sources: dict[int, list[int]], keep_less: bool = True):
        """``edges``: the cell's MixedOps by edge index; ``sources``: per state, the indices of the edges reading it;
        ``keep_less``: the side-by-side layers keep less for backward where they may (:func:`side_by_side_blocks`)."""
        self.keep_less = keep_less
        self.groups: dict[int, list[list[Member]]] = {}
        for state, indices in sources.items():
            by_signature: dict[tuple, list[Member]] = {}
            for index in indices:
                edge = edges[index]
                for position, op in zip(edge.positions, edge.ops):
                    blocks = conv_blocks(op)
                    if blocks is not None:
                        lean_op = isinstance(op, (LeanDilConv, LeanSepConv))
                        by_signature.setdefault((position, lean_op, signature(blocks)), []).append(
                            Member(index, position, blocks, lean_op))
            groups = [members for members in by_signature.values() if len(members) > 1]
            if groups:
                self.groups[state] = groups

    def outputs(self, state: int, x: torch.Tensor, relu: Callable[[], torch.Tensor], weights: Sequence[torch.Tensor],
                active: Sequence[Sequence[bool]] | None) -> dict[int, Partial]:
        """Per edge reading ``state`` = ``x`` (``relu()``: its ReLU), the weighted sum of its conv candidates that
        ran side by side (``weights``: each edge's op weights); empty where the path does not run. Pruned ops
        (``active``) are left out."""
        groups = self.groups.get(state)
        if not groups or x.numel() >= MAX_ELEMENTS or not fastpaths.enabled("batched_edges", x.device):
            return {}
        by_members: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}  # edges -> [(position, outputs)]
        for members in groups:
            members = [m for m in members if active is None or active[m.edge][m.position]]
            if len(members) < 2 or not agree([norm for m in members for *_, norm in m.blocks]):
                continue
            if members[0].lean and x.numel() >= lean.MIN_ELEMENTS:
                continue  # lean layers leave the native path from lean.MIN_ELEMENTS up: they keep their own
            y = side_by_side_blocks([m.blocks for m in members], relu(), self.keep_less)
            by_members.setdefault(tuple(m.edge for m in members), []).append((members[0].position, y))
        found: dict[int, Partial] = {}
        for edges, outputs in by_members.items():
            # sum_p w[edge, p] * y_p over the positions, all edges at once: a weight per channel (edge-major)
            positions = [position for position, _ in outputs]
            channel_weights = torch.stack([weights[index] for index in edges])[:, positions].t() \
                .repeat_interleave(outputs[0][1].shape[1] // len(edges), dim=1)
            total = None
            for (_, y), w in zip(outputs, channel_weights.unbind(0)):
                w = w.view(1, -1, 1, 1)
                total = y * w if total is None else torch.addcmul(total, y, w)
            for index, part in zip(edges, total.chunk(len(edges), 1)):
                done = frozenset(positions)
                if index in found:  # (pruned ops: an edge in groups with different other edges)
                    part, done = found[index].total + part, found[index].positions | done
                found[index] = Partial(done, part)
        return found


class Partial(NamedTuple):
    """Part of an edge's mixed sum: the weighted sum of its candidates at ``positions``."""

    positions: frozenset[int]
    total: torch.Tensor
