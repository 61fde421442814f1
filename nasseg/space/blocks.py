"""Stems and heads a network spec may name (``network.stem.type``, ``network.head.type``).

Like ops, each is registered once and then usable from YAML. A stem maps the RGB image to the
first network state; a head maps each final state to logits, which are upsampled to the input
size (segmentation) and summed over the final states (the Auto-DeepLab multi-head rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pydantic import Field

from ..config.types import Channels, PositiveFloat, PositiveInt
from ..layers import ConvBNReLU
from ..registry import KeywordEntry, Registry

MAX_STEM_STRIDE = 4  # per stem conv; the published stems use 1 and 2
MAX_RATE = 4096  # an atrous rate at stride 1 (Auto-DeepLab's search head: 96; DeepLabV3 at stride 16: 288)
Widths = Annotated[tuple[Channels, ...], Field(min_length=1, max_length=16)]  # per stem conv
Strides = Annotated[tuple[Annotated[PositiveInt, Field(le=MAX_STEM_STRIDE)], ...], Field(min_length=1, max_length=16)]
Rates = Annotated[tuple[Annotated[PositiveFloat, Field(le=MAX_RATE)], ...], Field(min_length=1, max_length=16)]


@dataclass(frozen=True)
class StemDef(KeywordEntry):
    name: str
    build: Callable[..., nn.Module]  # (**params) -> module
    shape: Callable[..., tuple[int, int]]  # (**params) -> (out_channels, stride)
    doc: str


@dataclass(frozen=True)
class HeadDef(KeywordEntry):
    name: str
    build: Callable[..., nn.Module]  # (in_channels, stride, classes, **params) -> module
    segmentation: bool  # output is a dense map upsampled to the input size
    doc: str
    skip = 3


STEMS: Registry[StemDef] = Registry("stem")
HEADS: Registry[HeadDef] = Registry("head")


# --- stems ---------------------------------------------------------------------------------

def _conv_stem(channels: Channels = 48) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))


STEMS.register("conv", StemDef("conv", _conv_stem, lambda channels=48: (channels, 1),
                              "DARTS CIFAR stem: conv3x3 + BN at full resolution"))


def _three_conv_stem(channels: Widths = (64, 64, 128), strides: Strides = (2, 1, 2)) -> nn.Module:
    return nn.Sequential(*(ConvBNReLU(c_in, c_out, 3, stride)
                           for c_in, c_out, stride in zip((3, *channels), channels, strides)))


def _three_conv_shape(channels: Sequence[int] = (64, 64, 128), strides: Sequence[int] = (2, 1, 2)) -> tuple[int, int]:
    if len(channels) != len(strides):
        raise ValueError(f"channels and strides need the same length, got {len(channels)} and {len(strides)}")
    return channels[-1], math.prod(strides)


STEMS.register("three_conv", StemDef("three_conv", _three_conv_stem, _three_conv_shape,
                                    "Auto-DeepLab stem: three 3x3 conv-BN-ReLU, strides 2,1,2 (stride 4)"))


# --- heads ---------------------------------------------------------------------------------

class ClassifierHead(nn.Module):
    """Global average pooling + linear layer (DARTS CIFAR)."""

    def __init__(self, in_channels: int, stride: int, classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(x).flatten(1))


class ASPPHead(nn.Module):
    """ASPP: 1x1 conv, 3x3 atrous convs, image pooling; concat -> 1x1 -> classifier.

    ``rates`` are given at stride 1 and divided by the feature's stride, so ``[96]`` is the
    Auto-DeepLab search head (rate 96/s) and ``[96, 192, 288]`` is DeepLabV3's 6/12/18 at stride 16.
    ``channels`` defaults to the input width, as in the Auto-DeepLab search code.
    """

    def __init__(self, in_channels: int, stride: int, classes: int, rates: Rates = (96,),
                 channels: Channels | None = None):
        super().__init__()
        width = channels or in_channels
        self.dilations = [max(1, round(r / stride)) for r in rates]
        self.branches = nn.ModuleList([ConvBNReLU(in_channels, width, 1)] +
                                      [ConvBNReLU(in_channels, width, 3, dilation=d) for d in self.dilations])
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNReLU(in_channels, width, 1))
        self.project = ConvBNReLU(width * (len(self.branches) + 1), width, 1)
        self.classifier = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(x).expand(-1, -1, x.shape[2], x.shape[3])
        features = torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1)
        return self.classifier(self.project(features))


HEADS.register("classifier", HeadDef("classifier", ClassifierHead, False, ClassifierHead.__doc__.split("\n")[0]))
HEADS.register("aspp", HeadDef("aspp", ASPPHead, True, ASPPHead.__doc__.split("\n")[0]))


def upsample_to(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
