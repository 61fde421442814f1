"""Hand-written ImageNet backbones (no torchvision) with torchvision-compatible parameter names."""

from .mobilenetv2 import ConvBNAct, MobileNetV2, mobilenet_v2
from .resnet import Bottleneck, ResNet, dilation_for_output_stride, resnet50, resnet101

__all__ = ["Bottleneck", "ConvBNAct", "MobileNetV2", "ResNet", "dilation_for_output_stride", "mobilenet_v2",
           "resnet101", "resnet50"]
