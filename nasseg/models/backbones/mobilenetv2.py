"""MobileNetV2 backbone (Sandler et al. 2018) with torchvision's parameter names (``features.N``).

Only ``features.0`` .. ``features.17`` are built: the final 1x1 conv to 1280 channels
(``features.18``) and the classifier serve ImageNet classification, and DeepLabV3+ takes the
320-channel output of the last inverted residual instead (as the reference implementations do).
Loading a torchvision checkpoint therefore reports those keys as unexpected.
"""

from __future__ import annotations

from torch import Tensor, nn

from .resnet import dilation_for_output_stride, init_weights

# (expansion t, output channels c, repeats n, first stride s), Table 2 of the paper.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
LOW_LEVEL_INDEX = 3  # features.3 ends the stride-4 stage (24 channels)


class ConvBNAct(nn.Sequential):
    """Conv -> BatchNorm -> activation, laid out as torchvision's Conv2dNormActivation (keys .0/.1).

    Padding is ``dilation * (kernel_size // 2)``, so a stride-1 conv keeps the spatial size.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, groups: int = 1, activation: type[nn.Module] = nn.ReLU):
        padding = dilation * (kernel_size // 2)
        super().__init__(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False),
                         nn.BatchNorm2d(out_channels), activation(inplace=True))


class InvertedResidual(nn.Module):
    """Expand 1x1 (ReLU6) -> depthwise 3x3 (ReLU6) -> linear 1x1, residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dilation: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, activation=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, dilation, groups=hidden, activation=nn.ReLU6),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 features returning ``{"low_level": stride 4 (24 ch), "out": 320 ch}``.

    For output stride 8 or 16 the strides past that point become 1 and the depthwise convs are
    dilated instead (DeepLabV3+); the first block of such a stage keeps the previous dilation.
    """

    def __init__(self, output_stride: int = 32):
        super().__init__()
        dilation_for_output_stride(output_stride)  # refuses any output stride but 8, 16 and 32
        layers: list[nn.Module] = [ConvBNAct(3, 32, 3, 2, activation=nn.ReLU6)]
        in_channels, current_stride, dilation = 32, 2, 1
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            previous = dilation
            if s > 1 and current_stride == output_stride:
                stride, dilation = 1, dilation * s
            else:
                stride, current_stride = s, current_stride * s
            for i in range(n):
                layers.append(InvertedResidual(in_channels, c, stride if i == 0 else 1,
                                               previous if i == 0 else dilation, t))
                in_channels = c
        self.features = nn.Sequential(*layers)
        self.output_stride = current_stride
        self.low_level_channels = INVERTED_RESIDUAL_SETTING[1][1]
        self.out_channels = in_channels
        init_weights(self)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        low_level = self.features[: LOW_LEVEL_INDEX + 1](x)
        return {"low_level": low_level, "out": self.features[LOW_LEVEL_INDEX + 1:](low_level)}


mobilenet_v2 = MobileNetV2  # torchvision's name (width 1.0)
