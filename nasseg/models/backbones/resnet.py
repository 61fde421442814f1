"""ResNet-50/101 backbones for segmentation, with torchvision's parameter names.

Standard stem: a 7x7 conv (``conv1``/``bn1``), so torchvision ImageNet checkpoints load as they are
(``fc`` exists only when ``num_classes`` is given). Deep stem (PSPNet, DUC+HDC, ICNet): three 3x3
convs named ``conv1``/``bn1`` (3->w, stride 2), ``conv2``/``bn2`` (w->w), ``conv3``/``bn3`` (w->2w),
the names of the deep-base ResNets released with PSPNet; ``layer1`` then starts from 2w channels, so
``layer1.0.conv1`` and ``layer1.0.downsample.0`` have 2w input channels instead of w.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from torch import Tensor, nn

from ...errors import NassegError

LAYER_NAMES = ("layer1", "layer2", "layer3", "layer4")


def init_weights(module: nn.Module) -> None:
    """torchvision's initialisation: He (fan-out) for convs, BN scale 1 and shift 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def dilation_for_output_stride(output_stride: int) -> tuple[bool, bool, bool]:
    """torchvision's ``replace_stride_with_dilation`` (layer2..layer4) for an output stride."""
    choices = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}
    if output_stride not in choices:
        raise NassegError(f"output_stride must be one of 8, 16, 32, got {output_stride}")
    return choices[output_stride]


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv, as torchvision): 1x1 -> 3x3 -> 1x1 (x4)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Bottleneck ResNet returning ``{"low_level": layer1 (stride 4), "out": layer4}``.

    ``replace_stride_with_dilation`` follows torchvision: a dilated stage keeps its resolution and
    multiplies the dilation by 2; its first block still uses the previous dilation.
    ``block_dilations`` overrides the rate of every block of a stage (``{"layer3": [...]}``), for
    HDC cycles (DUC+HDC) or PSPNet-style stages where all blocks share one rate. ``base_width``
    scales every stage (64 = standard, 32 = the half-width ICNet trunk). With ``num_classes`` an
    ``fc`` classifier is added and ``"logits"`` returned too (ImageNet layout).
    """

    def __init__(self, depths: Sequence[int], *, deep_stem: bool = False, base_width: int = 64,
                 replace_stride_with_dilation: Sequence[bool] = (False, False, False),
                 block_dilations: Mapping[str, Sequence[int]] | None = None,
                 num_classes: int | None = None):
        super().__init__()
        overrides = dict(block_dilations or {})
        unknown = set(overrides) - set(LAYER_NAMES)
        if unknown:
            raise ValueError(f"block_dilations names unknown stages {sorted(unknown)}")
        self.deep_stem = deep_stem
        if deep_stem:
            self.conv1 = nn.Conv2d(3, base_width, 3, 2, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(base_width)
            self.conv2 = nn.Conv2d(base_width, base_width, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(base_width)
            self.conv3 = nn.Conv2d(base_width, 2 * base_width, 3, 1, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(2 * base_width)
            self.inplanes = 2 * base_width
        else:
            self.conv1 = nn.Conv2d(3, base_width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(base_width)
            self.inplanes = base_width
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)

        dilation, self.output_stride = 1, 4
        for index, (name, depth) in enumerate(zip(LAYER_NAMES, depths)):
            stride, previous = (1 if index == 0 else 2), dilation
            if index > 0 and replace_stride_with_dilation[index - 1]:
                dilation, stride = dilation * stride, 1
            self.output_stride *= stride
            rates = list(overrides.get(name, [previous] + [dilation] * (depth - 1)))
            if len(rates) != depth:
                raise ValueError(f"{name} has {depth} blocks but {len(rates)} dilation rates")
            setattr(self, name, self._make_layer(base_width * 2 ** index, stride, rates))
        self.low_level_channels = base_width * Bottleneck.expansion
        self.out_channels = self.inplanes
        self.fc = None if num_classes is None else nn.Linear(self.out_channels, num_classes)
        init_weights(self)

    def _make_layer(self, planes: int, stride: int, rates: Sequence[int]) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * Bottleneck.expansion))
        blocks = [Bottleneck(self.inplanes, planes, stride, rates[0], downsample)]
        self.inplanes = planes * Bottleneck.expansion
        blocks += [Bottleneck(self.inplanes, planes, 1, rate) for rate in rates[1:]]
        return nn.Sequential(*blocks)

    def forward_stem(self, x: Tensor) -> Tensor:
        """Stem and max pool: stride 4."""
        x = self.relu(self.bn1(self.conv1(x)))
        if self.deep_stem:
            x = self.relu(self.bn2(self.conv2(x)))
            x = self.relu(self.bn3(self.conv3(x)))
        return self.maxpool(x)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        low_level = self.layer1(self.forward_stem(x))
        out = self.layer4(self.layer3(self.layer2(low_level)))
        features = {"low_level": low_level, "out": out}
        if self.fc is not None:
            features["logits"] = self.fc(out.mean(dim=(2, 3)))
        return features


def resnet50(**kwargs) -> ResNet:
    return ResNet((3, 4, 6, 3), **kwargs)


def resnet101(**kwargs) -> ResNet:
    return ResNet((3, 4, 23, 3), **kwargs)
