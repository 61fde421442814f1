"""Networks built from a DARTS genotype (an ArchSpec with ``normal`` and ``reduce`` cells).

:class:`NetworkCIFAR` is the DARTS evaluation network of quark0/darts ``model.py`` (3,349,342
parameters for DARTS_V2 with C=36, 20 layers, 10 classes; the auxiliary head adds 476,426).
:class:`DartsSegNet` stacks the same cells behind a stride-4 stem and ends in the DeepLabV3+
ASPP and decoder. Registered as ``darts_v2_cifar`` and ``darts_v2_seg``.

The cell helpers :func:`build_edge_ops` and :func:`run_cell` are shared with the Auto-DeepLab
retrain network, which differs only in how a cell's inputs are pre-processed.
"""

from __future__ import annotations

from typing import Annotated, Callable, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field, Strict
from torch import Tensor, nn

from ..arch import ArchSpec, CellGenotype, load
from ..config.types import Channels
from ..errors import NassegError
from ..layers import FactorizedReduce, Identity, ReLUConvBN
from ..space.blocks import STEMS
from ..space.ops import OPS
from .deeplabv3plus import ASPP, ASPP_RATES, Decoder
from .registry import register_model

OpFactory = Callable[[str, int, int], nn.Module]  # (op name, channels, stride) -> module

DARTS_AUX_WEIGHT = 0.4  # weight of the auxiliary head's loss in DARTS evaluation training


def registry_op(name: str, C: int, stride: int) -> nn.Module:
    """An op from the op registry with affine BN, as in a retrained (evaluation) network."""
    return OPS[name].build(C, stride, True)


def drop_path(x: Tensor, drop_prob: float) -> Tensor:
    """Zero whole samples with probability ``drop_prob`` and rescale the rest (DARTS drop-path)."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


def build_edge_ops(genotype: CellGenotype, C: int, reduction: bool, make_op: OpFactory) -> nn.ModuleList:
    """One op per kept edge, in :meth:`CellGenotype.edges` order; stride 2 on edges leaving the
    cell's inputs when ``reduction``."""
    return nn.ModuleList(make_op(op, C, 2 if reduction and source < genotype.inputs else 1)
                         for source, _, op in genotype.edges())


def run_cell(genotype: CellGenotype, ops: nn.ModuleList, inputs: Sequence[Tensor], drop_prob: float = 0.0) -> Tensor:
    """Evaluate a cell on its pre-processed inputs: each node sums its edges' ops, the output is
    the channel concat of ``genotype.concat``. Drop-path (``drop_prob`` > 0) skips identities."""
    states = dict(enumerate(inputs))
    for (source, node, _), op in zip(genotype.edges(), ops):  # edges come in node order
        h = op(states[source])
        if drop_prob > 0 and not isinstance(op, Identity):
            h = drop_path(h, drop_prob)
        states[node] = h + states[node] if node in states else h
    return torch.cat([states[node] for node in genotype.concat], dim=1)


def darts_cells(arch: ArchSpec) -> tuple[CellGenotype, CellGenotype]:
    """The (normal, reduce) genotypes of a chain ArchSpec; both must take two inputs."""
    missing = [kind for kind in ("normal", "reduce") if kind not in arch.cells]
    if missing:
        raise NassegError(f"architecture {arch.name!r} has no {' or '.join(missing)} cell; a DARTS "
                          f"network needs both (cells: {', '.join(arch.cells)})")
    for kind in ("normal", "reduce"):
        if arch.cells[kind].inputs != 2:
            raise NassegError(f"architecture {arch.name!r}: the {kind} cell has "
                              f"{arch.cells[kind].inputs} inputs; DARTS cells take 2")
    return arch.cells["normal"], arch.cells["reduce"]


class DartsCell(nn.Module):
    """A discrete DARTS cell: pre-process both inputs to C channels, run the genotype.

    The input from two cells back is factorized-reduced when the previous cell was a reduction
    (it is then at twice the resolution); otherwise ReLU-conv1x1-BN.
    """

    def __init__(self, genotype: CellGenotype, c_prev_prev: int, c_prev: int, C: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        self.genotype = genotype
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(c_prev_prev, C) if reduction_prev
                            else ReLUConvBN(c_prev_prev, C, 1))
        self.preprocess1 = ReLUConvBN(c_prev, C, 1)
        self.ops = build_edge_ops(genotype, C, reduction, registry_op)
        self.out_channels = len(genotype.concat) * C

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float = 0.0) -> Tensor:
        return run_cell(self.genotype, self.ops, [self.preprocess0(s0), self.preprocess1(s1)],
                        drop_prob if self.training else 0.0)


Layers = Annotated[int, Strict(), Field(ge=3, le=1000)]  # cells; two of them are reductions


def reduction_layers(layers: int) -> tuple[int, int]:
    """DARTS places its two reduction cells at layers // 3 and 2 * layers // 3."""
    return layers // 3, 2 * layers // 3


def stack_cells(arch: ArchSpec, C: int, layers: int, c_stem: int) -> tuple[nn.ModuleList, list[int]]:
    """Cells ``0..layers-1`` after a stem of ``c_stem`` channels (channels double at reductions), and
    the output channels of every cell."""
    if layers < 3:
        raise NassegError(f"a DARTS network needs at least 3 layers (two are reductions), got {layers}")
    normal, reduce = darts_cells(arch)
    reductions = reduction_layers(layers)
    cells = nn.ModuleList()
    c_prev_prev, c_prev, c_curr, reduction_prev = c_stem, c_stem, C, False
    for i in range(layers):
        reduction = i in reductions
        c_curr *= 2 if reduction else 1
        cells.append(DartsCell(reduce if reduction else normal, c_prev_prev, c_prev, c_curr, reduction, reduction_prev))
        c_prev_prev, c_prev, reduction_prev = c_prev, cells[-1].out_channels, reduction
    return cells, [cell.out_channels for cell in cells]


class AuxiliaryHeadCIFAR(nn.Module):
    """DARTS auxiliary classifier on the 8x8 feature after the second reduction."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),  # 8x8 -> 2x2
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class NetworkCIFAR(nn.Module):
    """The DARTS CIFAR evaluation network: stem conv3x3 to 3C + BN, ``layers`` cells, global
    pool + linear.

    Returns the logits; in training mode with ``auxiliary`` it returns ``[aux_logits, logits]``
    (the main output last, as ICNet does), the auxiliary loss weighted by :data:`DARTS_AUX_WEIGHT`.
    Set ``drop_path_prob`` during training (DARTS ramps it linearly to 0.2).
    """

    output_loss_weights = (DARTS_AUX_WEIGHT, 1.0)  # [aux, main] in training mode
    default_input = (32, 32)  # what `nasseg info` assumes without --input: CIFAR images

    def __init__(self, C: int = 36, num_classes: int = 10, layers: int = 20, auxiliary: bool = False,
                 genotype: ArchSpec | None = None):
        super().__init__()
        genotype = genotype or load("darts_v2")
        self.layers = layers
        self.drop_path_prob = 0.0
        c_stem = 3 * C
        self.stem = nn.Sequential(nn.Conv2d(3, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        self.cells, channels = stack_cells(genotype, C, layers, c_stem)
        self.aux_layer = reduction_layers(layers)[1]
        self.auxiliary_head = AuxiliaryHeadCIFAR(channels[self.aux_layer], num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        aux_logits = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_layer and self.auxiliary_head is not None and self.training:
                aux_logits = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits if aux_logits is None else [aux_logits, logits]


class DartsSegNet(nn.Module):
    """DARTS cells as a segmentation encoder, with the DeepLabV3+ ASPP and decoder.

    Stem: three 3x3 conv-BN-ReLU (64, 64, 128; strides 2, 1, 2) to stride 4; ``layers`` cells
    with reductions at ``layers // 3`` and ``2 * layers // 3`` (output stride 16); ReLU, ASPP
    (256 channels, rates 6/12/18); decoder on the last stride-4 cell's output (48-channel
    projection); logits upsampled bilinearly to the input size.
    """

    def __init__(self, genotype: ArchSpec, C: int = 32, layers: int = 12, num_classes: int = 19):
        super().__init__()
        self.drop_path_prob = 0.0
        stem_channels = (64, 64, 128)
        self.stem = STEMS["three_conv"].build(channels=stem_channels, strides=(2, 1, 2))
        self.cells, channels = stack_cells(genotype, C, layers, stem_channels[-1])
        self.low_level_layer = reduction_layers(layers)[0] - 1  # last cell at stride 4
        self.aspp = ASPP(channels[-1], ASPP_RATES[16])
        self.decoder = Decoder(channels[self.low_level_layer], 256, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        s0 = s1 = self.stem(x)
        low_level = s1
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.low_level_layer:
                low_level = s1
        logits = self.decoder(self.aspp(F.relu(s1)), low_level)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_model("darts_v2_cifar")
def darts_v2_cifar(num_classes: int = 10, *, C: Channels = 36, layers: Layers = 20,
                   auxiliary: bool = False) -> NetworkCIFAR:
    """DARTS_V2 CIFAR evaluation network (3.35M parameters at the defaults)."""
    return NetworkCIFAR(C, num_classes, layers, auxiliary, load("darts_v2"))


@register_model("darts_v2_seg")
def darts_v2_seg(num_classes: int, *, C: Channels = 32, layers: Layers = 12) -> DartsSegNet:
    """DARTS_V2 cells in a DeepLabV3+-style segmentation network (output stride 16)."""
    return DartsSegNet(load("darts_v2"), C, layers, num_classes)
