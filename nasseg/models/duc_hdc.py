"""DUC + HDC (Wang et al. 2018, "Understanding Convolution for Semantic Segmentation").

ResNet-101 with the deep stem (three 3x3 convs, 64-64-128), output stride 8, hybrid dilated
convolution (HDC) rates per block, and a dense upsampling convolution (DUC) head: parallel dilated
3x3 convs (rates 6, 12, 18, 24, summed) predict ``f*f*num_classes`` channels that a pixel shuffle
rearranges into an ``f``-times larger label map.

The released Cityscapes model (TuSimple-DUC, ``train_cityscapes.cfg``: ``ds_rate=8``,
``cell_width=2``, ``aspp=4``) uses ``f = 8 / 2 = 4``: DUC predicts at stride 2 and the map is then
resized to the input, which gives the ~65M parameters of that model (19 classes). ``duc_factor=8``
is the full-resolution DUC of the paper's description (d = 8); with four branches it has ~132M.
"""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor, nn

from ..config.types import Int, PositiveInt
from ..errors import NassegError
from ..space.blocks import upsample_to
from .backbones import resnet101
from .registry import register_model

# Official per-block rates (TuSimple-DUC ``get_resnet_hdc``): res4 (layer3, 23 blocks) starts at 2,
# then cycles 2-5-9-1, i.e. the [1, 2, 5, 9] cycle indexed by block with the first block at 2;
# res5 (layer4, 3 blocks) uses 5-9-17.
HDC_LAYER3_RATES = (2,) + tuple((1, 2, 5, 9)[i % 4] for i in range(1, 23))
HDC_LAYER4_RATES = (5, 9, 17)
DUC_RATES = (6, 12, 18, 24)


def hdc_max_distance(rates: Sequence[int]) -> int:
    """The paper's M_2: the largest gap between non-zero taps left for the first conv to fill.

    M_n = r_n and M_i = max(M_{i+1} - 2 r_i, M_{i+1} - 2 (M_{i+1} - r_i), r_i), from the top down.
    """
    if len(rates) < 2:
        raise ValueError(f"HDC needs a group of at least 2 dilation rates, got {list(rates)}")
    m = rates[-1]
    for r in reversed(rates[1:-1]):
        m = max(m - 2 * r, m - 2 * (m - r), r)
    return m


def hdc_gridding_ok(rates: Sequence[int], kernel_size: int = 3) -> bool:
    """Whether a group of dilated convs covers its receptive field without holes (HDC, Sec. 3.2).

    Both conditions of the paper: the rates share no common factor > 1 (otherwise the top layer
    still grids), and M_2 <= kernel_size. The M recursion alone accepts [3, 3, 3] (M_2 = 3),
    which samples only multiples of 3; the common-factor condition rejects it.
    """
    return math.gcd(*rates) == 1 and hdc_max_distance(rates) <= kernel_size


class DUCHead(nn.Module):
    """Dense upsampling convolution: summed dilated 3x3 convs to ``f*f*C`` ch, pixel shuffle."""

    def __init__(self, in_channels: int, num_classes: int, upscale: int, rates: Sequence[int] = DUC_RATES):
        super().__init__()
        out_channels = upscale * upscale * num_classes
        self.branches = nn.ModuleList(nn.Conv2d(in_channels, out_channels, 3, padding=rate, dilation=rate)
                                      for rate in rates)
        self.shuffle = nn.PixelShuffle(upscale)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(sum(branch(x) for branch in self.branches))


class DUCHDC(nn.Module):
    """ResNet-101-HDC (deep stem, output stride 8) + DUC head; logits at the input size."""

    def __init__(self, num_classes: int, duc_factor: int = 4, duc_rates: Sequence[int] = DUC_RATES):
        super().__init__()
        self.backbone = resnet101(deep_stem=True, replace_stride_with_dilation=(False, True, True),
                                  block_dilations={"layer3": HDC_LAYER3_RATES, "layer4": HDC_LAYER4_RATES})
        self.head = DUCHead(self.backbone.out_channels, num_classes, duc_factor, duc_rates)

    def forward(self, x: Tensor) -> Tensor:
        return upsample_to(self.head(self.backbone(x)["out"]), tuple(x.shape[-2:]))


@register_model("duc_hdc_resnet101")
def duc_hdc_resnet101(num_classes: int, *, duc_factor: Int = 4,
                      duc_rates: tuple[PositiveInt, ...] = DUC_RATES) -> DUCHDC:
    """DUC+HDC as released for Cityscapes (DUC to stride 2); ``duc_factor=8``: full resolution."""
    if duc_factor not in (1, 2, 4, 8):
        raise NassegError(f"duc_factor must divide the output stride 8, got {duc_factor}")
    return DUCHDC(num_classes, duc_factor, duc_rates)
