"""DeepLabV3+ (Chen et al. 2018): atrous encoder with ASPP and a light decoder on stride-4 features.

Registered as ``deeplabv3plus_resnet50``, ``deeplabv3plus_resnet101`` and
``deeplabv3plus_mobilenetv2``; keyword ``output_stride`` 16 (default) or 8. The backbone is
``model.backbone`` with torchvision parameter names, so ImageNet weights load with
``load_pretrained(model.backbone, path)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config.types import Int
from ..errors import NassegError
from .backbones import ConvBNAct, dilation_for_output_stride, mobilenet_v2, resnet50, resnet101
from .registry import register_model

# Atrous rates of the three 3x3 ASPP branches: 6/12/18 at output stride 16, doubled at 8.
ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global average pool, 1x1 conv + BN + ReLU, broadcast back."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = ConvBNAct(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(self.conv(self.pool(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1 + three atrous 3x3 + image pooling, concat, 1x1 to 256.

    Dropout 0.1 after the projection, as in the reference PyTorch implementation.
    """

    def __init__(self, in_channels: int, rates: Sequence[int], out_channels: int = 256, dropout: float = 0.1):
        super().__init__()
        self.branches = nn.ModuleList([ConvBNAct(in_channels, out_channels, 1)]
                                      + [ConvBNAct(in_channels, out_channels, 3, dilation=rate) for rate in rates]
                                      + [ImagePooling(in_channels, out_channels)])
        self.project = nn.Sequential(ConvBNAct(out_channels * len(self.branches), out_channels, 1), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class Decoder(nn.Module):
    """DeepLabV3+ decoder: low-level 1x1 to 48 ch, concat with the upsampled encoder output,
    two 3x3 convs of 256, 1x1 classifier."""

    def __init__(self, low_level_channels: int, encoder_channels: int, num_classes: int):
        super().__init__()
        self.low_level = ConvBNAct(low_level_channels, 48, 1)
        self.fuse = nn.Sequential(ConvBNAct(48 + encoder_channels, 256, 3), ConvBNAct(256, 256, 3))
        self.classifier = nn.Conv2d(256, num_classes, 1)

    def forward(self, encoded: Tensor, low_level: Tensor) -> Tensor:
        low_level = self.low_level(low_level)
        encoded = F.interpolate(encoded, size=low_level.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([encoded, low_level], dim=1)))


class DeepLabV3Plus(nn.Module):
    """Backbone (``{"low_level", "out"}`` features) + ASPP + decoder; logits at the input size."""

    def __init__(self, backbone: nn.Module, num_classes: int, output_stride: int):
        super().__init__()
        self.backbone = backbone
        self.aspp = ASPP(backbone.out_channels, ASPP_RATES[output_stride])
        self.decoder = Decoder(backbone.low_level_channels, 256, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(x)
        logits = self.decoder(self.aspp(features["out"]), features["low_level"])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _check_output_stride(output_stride: int) -> None:
    if output_stride not in ASPP_RATES:
        raise NassegError(f"DeepLabV3+ output_stride must be 8 or 16, got {output_stride}")


@register_model("deeplabv3plus_resnet50")
def deeplabv3plus_resnet50(num_classes: int, *, output_stride: Int = 16) -> DeepLabV3Plus:
    """DeepLabV3+ on a dilated ResNet-50."""
    _check_output_stride(output_stride)
    backbone = resnet50(replace_stride_with_dilation=dilation_for_output_stride(output_stride))
    return DeepLabV3Plus(backbone, num_classes, output_stride)


@register_model("deeplabv3plus_resnet101")
def deeplabv3plus_resnet101(num_classes: int, *, output_stride: Int = 16) -> DeepLabV3Plus:
    """DeepLabV3+ on a dilated ResNet-101 (the paper's VOC 78-79 mIoU baseline)."""
    _check_output_stride(output_stride)
    backbone = resnet101(replace_stride_with_dilation=dilation_for_output_stride(output_stride))
    return DeepLabV3Plus(backbone, num_classes, output_stride)


@register_model("deeplabv3plus_mobilenetv2")
def deeplabv3plus_mobilenetv2(num_classes: int, *, output_stride: Int = 16) -> DeepLabV3Plus:
    """DeepLabV3+ on a dilated MobileNetV2 (the same ASPP as the ResNet variants)."""
    _check_output_stride(output_stride)
    return DeepLabV3Plus(mobilenet_v2(output_stride=output_stride), num_classes, output_stride)
