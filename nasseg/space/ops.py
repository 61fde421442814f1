"""The op registry: every candidate operation a search space may name.

An op is one builder ``(C, stride, affine, **params) -> nn.Module`` mapping C channels to C
channels (stride 2 halves the resolution). Registering a builder with :func:`register_op` is all
it takes to use a new op from YAML (README.md shows one).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Annotated, Callable

from pydantic import Field
from torch import nn

from ..config.types import Float, NonNegativeFloat, PositiveInt
from ..layers import DilConv, FactorizedReduce, Identity, Noise, ReLUConvBN, SepConv, Zero
from ..registry import KeywordEntry, Registry

OpBuilder = Callable[..., nn.Module]
MAX_DILATION = 256  # conv_3x3's dilation (DeepLab's largest, at output stride 8: 36)


@dataclass(frozen=True)
class OpDef(KeywordEntry):
    """A registered op: how to build it and what the search/decoders need to know about it."""

    name: str
    build: OpBuilder  # (C, stride, affine, **params) -> module
    parameter_free: bool  # no weights (pooling, skip, none, noise): counted by the collapse plots
    bn_in_search: bool  # DARTS appends a non-affine BN to pooling ops inside the supernet
    is_zero: bool  # the `none` op: skipped in mixed ops, excluded when decoding
    doc: str
    skip = 3  # C, stride, affine


OPS: Registry[OpDef] = Registry("op")


def register_op(name: str, *, parameter_free: bool = False, bn_in_search: bool = False,
                is_zero: bool = False) -> Callable[[OpBuilder], OpBuilder]:
    """Decorator adding a builder to :data:`OPS` under ``name`` (a name registered twice is an error)."""
    return OPS.decorator(name, lambda builder: OpDef(name, builder, parameter_free, bn_in_search, is_zero,
                                                     (inspect.getdoc(builder) or "").split("\n")[0]))


# --- DARTS (Liu et al. 2019) -------------------------------------------------------------

@register_op("none", parameter_free=True, is_zero=True)
def _none(C: int, stride: int, affine: bool) -> nn.Module:
    """Zero: the edge is absent."""
    return Zero(stride)


@register_op("max_pool_3x3", parameter_free=True, bn_in_search=True)
def _max_pool_3x3(C: int, stride: int, affine: bool) -> nn.Module:
    """3x3 max pooling."""
    return nn.MaxPool2d(3, stride=stride, padding=1)


@register_op("avg_pool_3x3", parameter_free=True, bn_in_search=True)
def _avg_pool_3x3(C: int, stride: int, affine: bool) -> nn.Module:
    """3x3 average pooling (padding not counted)."""
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


@register_op("skip_connect", parameter_free=True)
def _skip_connect(C: int, stride: int, affine: bool) -> nn.Module:
    """Identity; factorized reduce when the edge has stride 2."""
    return Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine)


def _separable(kernel: int, dilation: int, doc: str) -> OpBuilder:
    """A separable conv op: SepConv (applied twice) undilated, DilConv otherwise; 'same' padding."""
    def build(C: int, stride: int, affine: bool) -> nn.Module:
        if dilation == 1:
            return SepConv(C, C, kernel, stride, kernel // 2, affine)
        return DilConv(C, C, kernel, stride, dilation * (kernel // 2), dilation, affine)
    build.__doc__ = doc
    return build


# DARTS's separable and dilated convs; Auto-DeepLab (Liu et al. 2019) calls the dilated ones atrous
for _name, _dilation, _doc in (("sep_conv", 1, "Separable {} conv, applied twice."),
                               ("dil_conv", 2, "Dilated (rate 2) separable {} conv."),
                               ("atrous_conv", 2, "Atrous (rate 2) separable {} conv.")):
    for _kernel in (3, 5):
        _size = f"{_kernel}x{_kernel}"
        register_op(f"{_name}_{_size}")(_separable(_kernel, _dilation, _doc.format(_size)))


# --- RobustDARTS (Zela et al. 2020) -------------------------------------------------------

@register_op("noise", parameter_free=True)
def _noise(C: int, stride: int, affine: bool, mean: Float = 0.0, std: NonNegativeFloat = 1.0) -> nn.Module:
    """Gaussian noise of the output's shape (space S4)."""
    return Noise(stride, mean, std)


# --- Extra ops useful in custom spaces -----------------------------------------------------

@register_op("conv_1x1")
def _conv_1x1(C: int, stride: int, affine: bool) -> nn.Module:
    """ReLU-conv1x1-BN."""
    return ReLUConvBN(C, C, 1, stride, 0, affine)


@register_op("conv_3x3")
def _conv_3x3(C: int, stride: int, affine: bool,
              dilation: Annotated[PositiveInt, Field(le=MAX_DILATION)] = 1) -> nn.Module:
    """ReLU-conv3x3-BN (optionally dilated)."""
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(C, C, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(C, affine=affine),
    )
