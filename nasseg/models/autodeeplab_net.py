"""The Auto-DeepLab retrain network: a decoded cell repeated along a decoded lattice path.

Follows the official implementation released with the paper (tensorflow/models
``research/deeplab/core/nas_network.py`` and ``nas_cell.py``), which is what reproduces the
paper's parameter counts:

- stem: 3x3 convs of 64 (stride 2), 64, 128 (stride 2) channels; the cells' first two inputs are
  the outputs of the second (stride 2) and third (stride 4) convs;
- cell ``l`` at stride ``s`` has ``F * s / 4`` channels per block and outputs the concat of its
  ``B = 5`` blocks (``B * F * s / 4`` channels, no projection after the concat);
- H^{l-1} is bilinearly upsampled first on an up move, then ReLU-conv1x1-BN to the cell's width;
  on a down move the ops on the cell inputs have stride 2 (as in a DARTS reduction cell);
- H^{l-2} is bilinearly resized to H^{l-1}'s size and projected (ReLU-conv1x1-BN) when its width
  differs;
- ``atrous_conv_KxK`` is a *full* KxK convolution with dilation 2 (ReLU-conv-BN; with stride 2:
  bilinear halving, then an undilated conv), not the separable one of the search space. This
  is the single largest term of the model size; ``separable_atrous=True`` uses the registry's
  separable op instead (5.56M instead of 10.15M parameters at F = 20);
- ReLU, then the DeepLabV3+ ASPP (256 channels, rates 6/12/18 rescaled to the final stride) and
  decoder on the last stride-4 cell (48-channel projection), logits upsampled to the input.

Registered as ``autodeeplab_s`` / ``_m`` / ``_l`` (F = 20 / 32 / 48) on the built-in
``autodeeplab`` architecture. With 19 classes they have 10.15M / 21.62M / 44.42M parameters, as
in the paper; torch counts 317.5B / 435.0B / 653.6B multiply-adds at 1024x2048 (paper: 333.25B /
460.93B / 695.03B) and 320.5B / 439.9B / 662.4B at TF DeepLab's 1025x2049 evaluation crop. The
gap is parameter-free counting (see ``tests/test_models_arch.py``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..arch import ArchSpec, CellGenotype, load
from ..config import describe
from ..config.types import Channels
from ..errors import NassegError
from ..layers import ConvBNReLU, ReLUConvBN
from .darts_net import build_edge_ops, registry_op, run_cell
from .deeplabv3plus import ASPP, Decoder
from .registry import register_model

STEM_CHANNELS = (64, 64, 128)
STEM_STRIDE = 4
ASPP_RATES_AT_16 = (6, 12, 18)  # DeepLabV3+ rates at output stride 16, rescaled to the final stride
MAX_STRIDE = 64  # the largest power of two at which min(ASPP_RATES_AT_16) * 16 // stride is still >= 1


class AtrousConv(nn.Module):
    """ReLU -> full KxK conv with dilation 2 -> BN (the official code's ``atrous_KxK``).

    With stride 2 the input is first bilinearly resized to half size and the conv is undilated.
    """

    def __init__(self, C: int, kernel: int, stride: int):
        super().__init__()
        self.stride = stride
        dilation = 1 if stride == 2 else 2
        self.relu = nn.ReLU(inplace=False)
        self.conv = nn.Conv2d(C, C, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(C)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        if self.stride == 2:
            x = F.interpolate(x, size=halved(x.shape[-2:]), mode="bilinear", align_corners=False)
        return self.bn(self.conv(x))


def halved(size: Sequence[int]) -> tuple[int, ...]:
    """The spatial size after a stride-2 layer with 'same' padding: ceil(size / 2)."""
    return tuple((d + 1) // 2 for d in size)


def retrain_op(name: str, C: int, stride: int) -> nn.Module:
    """The official retrain ops: full atrous convs, everything else from the op registry."""
    if name.startswith("atrous_conv_"):
        return AtrousConv(C, int(name.rsplit("x", 1)[1]), stride)
    return registry_op(name, C, stride)


class AutoDeepLabStem(nn.Module):
    """conv3x3/2-BN-ReLU, conv3x3-BN, ReLU-conv3x3/2-BN; returns the stride-2 and stride-4 maps."""

    def __init__(self, channels: tuple[int, int, int] = STEM_CHANNELS):
        super().__init__()
        c0, c1, c2 = channels
        self.conv0 = ConvBNReLU(3, c0, 3, stride=2)
        self.conv1 = nn.Sequential(nn.Conv2d(c0, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1))
        self.conv2 = ReLUConvBN(c1, c2, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        half = self.conv1(self.conv0(x))
        return half, self.conv2(half)


class AutoDeepLabCell(nn.Module):
    """One cell on the path; ``move`` is +1 (stride doubles), 0 or -1 (stride halves)."""

    def __init__(self, genotype: CellGenotype, c_prev_prev: int, c_prev: int, C: int, move: int,
                 separable_atrous: bool = False):
        super().__init__()
        if genotype.inputs != 2:
            raise NassegError(f"Auto-DeepLab cells take 2 inputs (H^(l-2), H^(l-1)), got {genotype.inputs}")
        self.genotype = genotype
        self.move = move
        self.preprocess0 = ReLUConvBN(c_prev_prev, C, 1) if c_prev_prev != C else nn.Identity()
        self.preprocess1 = ReLUConvBN(c_prev, C, 1)
        self.ops = build_edge_ops(genotype, C, move == 1, registry_op if separable_atrous else retrain_op)
        self.out_channels = len(genotype.concat) * C

    def forward(self, s0: Tensor, s1: Tensor, size: tuple[int, int], drop_prob: float = 0.0) -> Tensor:
        """``size``: the spatial size of this cell's output (used by an up move)."""
        if self.move == -1:
            s1 = F.interpolate(s1, size=size, mode="bilinear", align_corners=False)
        if s0.shape[-2:] != s1.shape[-2:]:
            s0 = F.interpolate(s0, size=s1.shape[-2:], mode="bilinear", align_corners=False)
        return run_cell(self.genotype, self.ops, [self.preprocess0(s0), self.preprocess1(s1)],
                        drop_prob if self.training else 0.0)


def lattice_cell(arch: ArchSpec) -> CellGenotype:
    """The cell of a lattice ArchSpec: ``normal``, or its only cell."""
    if "normal" in arch.cells:
        return arch.cells["normal"]
    if len(arch.cells) == 1:
        return next(iter(arch.cells.values()))
    raise NassegError(f"architecture {arch.name!r}: a lattice network repeats one cell; expected a "
                      f"'normal' cell, got {', '.join(arch.cells)}")


class AutoDeepLab(nn.Module):
    """Stem, one cell per entry of ``arch.path``, ASPP and DeepLabV3+ decoder (see module doc)."""

    def __init__(self, arch: ArchSpec, num_classes: int, filter_multiplier: int = 20, separable_atrous: bool = False):
        super().__init__()
        if not arch.path:
            raise NassegError(f"architecture {arch.name!r} has no path; an Auto-DeepLab network "
                              "needs the stride of every layer")
        if arch.path[0] not in (STEM_STRIDE, 2 * STEM_STRIDE) or not STEM_STRIDE <= min(arch.path) <= \
                max(arch.path) <= MAX_STRIDE:
            raise NassegError(f"architecture {arch.name!r}: the path must start at stride 4 or 8 and stay within "
                              f"4 (the stem's stride) and {MAX_STRIDE} (the ASPP's smallest rate, "
                              f"{min(ASPP_RATES_AT_16)} at stride 16, keeps a dilation >= 1), got {describe(list(arch.path))}")
        genotype = lattice_cell(arch)
        self.path = tuple(arch.path)
        self.drop_path_prob = 0.0
        self.stem = AutoDeepLabStem()
        self.cells = nn.ModuleList()
        c_prev_prev, c_prev, prev_stride = STEM_CHANNELS[1], STEM_CHANNELS[2], STEM_STRIDE
        for stride in self.path:
            cell = AutoDeepLabCell(genotype, c_prev_prev, c_prev, filter_multiplier * stride // 4,
                                   (stride > prev_stride) - (stride < prev_stride), separable_atrous)
            self.cells.append(cell)
            c_prev_prev, c_prev, prev_stride = c_prev, cell.out_channels, stride
        # low-level features: the last cell before the path first leaves stride 4 (else the stem)
        first_coarse = next((i for i, s in enumerate(self.path) if s > STEM_STRIDE), len(self.path))
        self.low_level_layer = first_coarse - 1
        low_channels = (self.cells[self.low_level_layer].out_channels if self.low_level_layer >= 0
                        else STEM_CHANNELS[2])
        final_stride = self.path[-1]
        self.aspp = ASPP(c_prev, [rate * 16 // final_stride for rate in ASPP_RATES_AT_16])
        self.decoder = Decoder(low_channels, 256, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        s0, s1 = self.stem(x)
        sizes = {STEM_STRIDE: tuple(s1.shape[-2:])}
        for stride in sorted(set(self.path)):
            if stride > STEM_STRIDE:
                sizes[stride] = halved(sizes[stride // 2])
        low_level = s1
        for i, (cell, stride) in enumerate(zip(self.cells, self.path)):
            s0, s1 = s1, cell(s0, s1, sizes[stride], self.drop_path_prob)
            if i == self.low_level_layer:
                low_level = s1
        logits = self.decoder(self.aspp(F.relu(s1)), low_level)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _sized(default_F: int, doc: str) -> Callable[..., AutoDeepLab]:
    def build(num_classes: int, *, F: Channels = default_F, separable_atrous: bool = False) -> AutoDeepLab:
        return AutoDeepLab(load("autodeeplab"), num_classes, F, separable_atrous)
    build.__doc__ = doc
    return build


# the paper's three sizes; its parameters and multiply-adds at 1024x2048
for _size, _F, _params, _macs in (("s", 20, "10.15", "333.25"), ("m", 32, "21.62", "460.93"),
                                  ("l", 48, "44.42", "695.03")):
    register_model(f"autodeeplab_{_size}")(_sized(_F, f"Auto-DeepLab-{_size.upper()} (F = {_F}): paper {_params}M "
                                                      f"parameters, {_macs}B multiply-adds at 1024x2048."))
