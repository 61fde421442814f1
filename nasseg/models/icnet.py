"""ICNet (Zhao et al. 2018): real-time segmentation from a cascade of three input resolutions.

- 1/2 input: PSPNet50-style trunk (deep stem, ResNet-50) up to ``conv3_1`` (``layer2[0]``, the
  block that downsamples): features at 1/16 of the full input.
- 1/4 input: ``conv3_1`` bilinearly halved (the released model's ``conv3_1_sub4``), the rest
  of ``layer2``, ``layer3``/``layer4`` dilated by 2/4 in every block (PSPNet), pyramid pooling
  with bins 1, 2, 3, 6 summed onto the features, 1x1 conv reduce: 1/32.
- full input: three stride-2 3x3 conv-BN-ReLU (32-32-64): 1/8.
- Two cascade feature fusion (CFF) units join them; a 1x1 classifier at 1/4.

Training mode returns the cascade-label-guidance logits ``[1/16, 1/8, 1/4]`` of the input size
(weights :data:`ICNET_LOSS_WEIGHTS`; :func:`upsample_logits` resizes them for a loss); eval mode
returns one map at the input size.

Registered widths: ``icnet_resnet50`` is the model the paper releases and times, the half-width
trunk (``width_mult=0.5``; "half width in the official release", 6.7M parameters in the paper;
6.71M here with 19 classes). At 1024x2048 it costs 29.2B multiply-adds, 4.1% of
``deeplabv3plus_resnet101``'s 708.9B. ``icnet_resnet50_full`` (``width_mult=1.0``) is the unpruned
full-width trunk (25.5M parameters, 88.3B multiply-adds): every trunk conv costs ~4x, 12.5%
of DeepLabV3+-R101, so it is not the "< 10%" model of the paper's comparison. There is no
``_half`` alias: the default name is the released model.
"""

from __future__ import annotations

from typing import Annotated, Sequence

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..config.types import Float
from .backbones import ConvBNAct, resnet50
from .registry import register_model

ICNET_LOSS_WEIGHTS = (0.4, 0.4, 1.0)  # for the outputs at 1/16, 1/8, 1/4 (cascade label guidance)
PYRAMID_BINS = (1, 2, 3, 6)
CFF_CHANNELS = 128


def _halve(x: Tensor) -> Tensor:
    """Bilinear resize to ceil(size / 2), like Caffe's Interp with shrink factor 2."""
    h, w = x.shape[-2:]
    return F.interpolate(x, size=((h + 1) // 2, (w + 1) // 2), mode="bilinear", align_corners=False)


def upsample_logits(outputs: Tensor | Sequence[Tensor], size: Sequence[int]) -> list[Tensor]:
    """Bilinearly resize one logits map or a list of them (ICNet training outputs) to ``size``."""
    maps = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    return [F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False) for m in maps]


class PyramidPoolingSum(nn.Module):
    """ICNet's pyramid pooling: average pool to each bin size, upsample, and add to the input."""

    def __init__(self, bins: Sequence[int] = PYRAMID_BINS):
        super().__init__()
        self.bins = tuple(bins)

    def forward(self, x: Tensor) -> Tensor:
        out = x
        for b in self.bins:
            pooled = F.adaptive_avg_pool2d(x, b)
            out = out + F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


class CascadeFeatureFusion(nn.Module):
    """CFF: coarse x2 -> 3x3 conv (dilation 2) + BN; fine -> 1x1 conv + BN; sum, ReLU.

    In training it also returns the auxiliary logits of the upsampled coarse feature.
    """

    def __init__(self, coarse_channels: int, fine_channels: int, num_classes: int, out_channels: int = CFF_CHANNELS):
        super().__init__()
        self.coarse = nn.Sequential(
            nn.Conv2d(coarse_channels, out_channels, 3, padding=2, dilation=2, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.fine = nn.Sequential(nn.Conv2d(fine_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.aux_classifier = nn.Conv2d(coarse_channels, num_classes, 1)

    def forward(self, coarse: Tensor, fine: Tensor) -> tuple[Tensor, Tensor | None]:
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        fused = F.relu(self.coarse(coarse) + self.fine(fine))
        return fused, (self.aux_classifier(coarse) if self.training else None)


class ICNet(nn.Module):
    """Image cascade network; see the module docstring for the branches and the outputs."""

    output_loss_weights = ICNET_LOSS_WEIGHTS  # read by the trainer for the training-mode outputs

    def __init__(self, num_classes: int, width_mult: float = 1.0):
        super().__init__()
        base = int(64 * width_mult)
        self.trunk = resnet50(deep_stem=True, base_width=base, replace_stride_with_dilation=(False, True, True),
                              block_dilations={"layer3": (2,) * 6, "layer4": (4,) * 3})
        conv3_channels = self.trunk.layer2[0].conv3.out_channels
        reduced = 8 * base  # conv5_4_k1: 256 channels in the half-width release
        self.pyramid = PyramidPoolingSum()
        self.reduce = ConvBNAct(self.trunk.out_channels, reduced, 1)
        self.sub1 = nn.Sequential(ConvBNAct(3, 32, 3, 2), ConvBNAct(32, 32, 3, 2), ConvBNAct(32, 64, 3, 2))
        self.cff_sub24 = CascadeFeatureFusion(reduced, conv3_channels, num_classes)
        self.cff_sub12 = CascadeFeatureFusion(CFF_CHANNELS, 64, num_classes)
        self.classifier = nn.Conv2d(CFF_CHANNELS, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        trunk = self.trunk
        conv3_1 = trunk.layer2[0](trunk.layer1(trunk.forward_stem(_halve(x))))  # 1/16
        sub4 = trunk.layer2[1:](_halve(conv3_1))
        sub4 = self.reduce(self.pyramid(trunk.layer4(trunk.layer3(sub4))))  # 1/32
        sub24, aux_16 = self.cff_sub24(sub4, conv3_1)  # 1/16
        sub12, aux_8 = self.cff_sub12(sub24, self.sub1(x))  # 1/8
        logits = self.classifier(F.interpolate(sub12, scale_factor=2, mode="bilinear", align_corners=False))  # 1/4
        if self.training:
            return [aux_16, aux_8, logits]
        return upsample_logits(logits, x.shape[-2:])[0]


@register_model("icnet_resnet50")
def icnet_resnet50(num_classes: int, *, width_mult: Annotated[Float, Field(gt=0, le=1)] = 0.5) -> ICNet:
    """ICNet as released: the half-width PSPNet50 trunk (``width_mult=0.5``)."""
    return ICNet(num_classes, width_mult)


@register_model("icnet_resnet50_full")
def icnet_resnet50_full(num_classes: int) -> ICNet:
    """ICNet on the full-width PSPNet50 trunk (``icnet_resnet50`` with ``width_mult=1.0``)."""
    return ICNet(num_classes, 1.0)
