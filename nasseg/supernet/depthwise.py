"""Dilated depthwise convolutions of the candidate ops (dil_conv, atrous_conv) with their sub-grids as one
batch (fast path ``batched_subgrids``, issue 19): the same function, gradients and parameters.

:class:`nasseg.layers.DilatedDepthwiseConv2d` computes a stride-1 conv with dilation d as undilated convs
of its d x d interleaved sub-grids, one call per strided view; each view's backward zero-fills a
full-size input gradient and adds it to the others. Here the sub-grids are stacked along the batch by one
copy, convolved by one call, and put back by one copy (their backward: two copies). Measurements:
docs/performance.md, "DARTS: where a step's time goes"; benchmarks/darts_kernels.py.

Also the candidate ops' separable and dilated convs as :class:`LeanSepConv` / :class:`LeanDilConv`, which keep
fewer tensors for backward (fast path ``lean_saved``, :mod:`nasseg.lean`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import fastpaths
from ..layers import DilatedDepthwiseConv2d, DilConv, GroupBatchNorm2d, SepConv, is_nhwc
from ..lean import OneCall, depthwise_pointwise, fuses_relu


def to_subgrids(x: torch.Tensor, d: int) -> torch.Tensor:
    """x's d x d interleaved sub-grids stacked along the batch (N, C, H, W -> d*d*N, C, H/d, W/d; one copy), in
    x's memory layout; :func:`from_subgrids` is its inverse."""
    n, c, h, w = x.shape
    if is_nhwc(x):
        grids = x.permute(0, 2, 3, 1).reshape(n, h // d, d, w // d, d, c).permute(2, 4, 0, 1, 3, 5)
        return grids.reshape(d * d * n, h // d, w // d, c).permute(0, 3, 1, 2)
    return x.reshape(n, c, h // d, d, w // d, d).permute(3, 5, 0, 1, 2, 4).reshape(d * d * n, c, h // d, w // d)


def from_subgrids(y: torch.Tensor, d: int) -> torch.Tensor:
    """The inverse of :func:`to_subgrids`: d*d*N, C, H/d, W/d -> N, C, H, W, in y's memory layout."""
    n, c, h, w = y.shape[0] // (d * d), y.shape[1], y.shape[2] * d, y.shape[3] * d
    if is_nhwc(y):
        y = y.permute(0, 2, 3, 1).reshape(d, d, n, h // d, w // d, c).permute(2, 3, 0, 4, 1, 5)
        return y.reshape(n, h, w, c).permute(0, 3, 1, 2)
    return y.reshape(d, d, n, c, h // d, w // d).permute(2, 3, 4, 0, 5, 1).reshape(n, c, h, w)


def subgrids_as_batch(x: torch.Tensor, weight: torch.Tensor, d: int, padding: int) -> torch.Tensor:
    """``conv2d(x, weight, padding=padding, dilation=d, groups=C)``, stride 1, H and W divisible by d,
    'same' padding (a multiple of d), as one undilated conv of x's d x d sub-grids stacked along the
    batch; the result in x's memory layout."""
    return from_subgrids(F.conv2d(to_subgrids(x, d), weight, None, 1, padding // d, 1, x.shape[1]), d)


class BatchedSubgridConv2d(DilatedDepthwiseConv2d):
    """DilatedDepthwiseConv2d whose stride-1 sub-grid form is one batched call (fast path ``batched_subgrids``)."""

    def batched_dilation(self, x: torch.Tensor) -> int | None:
        """The dilation d if this pass computes ``self(x)`` as :func:`subgrids_as_batch`, else None."""
        d = self._phase_plan(x)
        if d is None or self.stride[0] != 1 or self.bias is not None or \
                not fastpaths.enabled("batched_subgrids", x.device):
            return None
        return d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.batched_dilation(x)
        if d is None:
            return super().forward(x)
        return subgrids_as_batch(x, self.weight, d, self.padding[0])

    def one_call(self, x: torch.Tensor) -> OneCall | None:
        """This pass's forward on ``x`` as one conv call (for nasseg.lean): the sub-grids' conv between
        :func:`to_subgrids` and :func:`from_subgrids`, as :func:`subgrids_as_batch` computes it."""
        d = self.batched_dilation(x)
        if d is None:
            return super().one_call(x)
        q = self.padding[0] // d
        return OneCall(lambda t: to_subgrids(t, d), (1, 1), (q, q), (1, 1), lambda t: from_subgrids(t, d))


def batched_subgrid_conv(module: torch.nn.Module) -> BatchedSubgridConv2d | None:
    """A DilatedDepthwiseConv2d as a :class:`BatchedSubgridConv2d` holding the same Parameter objects
    (None for other modules)."""
    if type(module) is not DilatedDepthwiseConv2d:
        return None
    new = torch.nn.utils.skip_init(BatchedSubgridConv2d, module.in_channels, module.out_channels, module.kernel_size,
                                   stride=module.stride, padding=module.padding, dilation=module.dilation,
                                   groups=module.groups, bias=module.bias is not None,
                                   device=module.weight.device, dtype=module.weight.dtype)
    new.weight, new.bias = module.weight, module.bias
    return new.train(module.training)


class LeanDilConv(DilConv):
    """DilConv (ReLU, depthwise, pointwise, BN; the same children) whose depthwise output is not kept for
    backward where fast path ``lean_saved`` applies (:func:`nasseg.lean.depthwise_pointwise`)."""

    every_size = False  # the lean layers at every tensor size (nasseg.lean.lean_applies)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu, depthwise, pointwise, norm = self
        return norm(depthwise_pointwise(depthwise, pointwise, relu(x), self.every_size))


class LeanSepConv(SepConv):
    """SepConv (two DilConv blocks; the same children) whose first BatchNorm and the second block's ReLU
    keep only the BatchNorm's output for backward where fast path ``lean_saved`` applies, and whose
    depthwise outputs are not kept (:mod:`nasseg.lean`)."""

    every_size = False  # the lean layers at every tensor size (nasseg.lean.lean_applies)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (relu_in, depthwise_1, pointwise_1, norm_1), (relu_mid, depthwise_2, pointwise_2, norm_2) = self
        h = depthwise_pointwise(depthwise_1, pointwise_1, relu_in(x), self.every_size)
        if isinstance(norm_1, GroupBatchNorm2d) and isinstance(relu_mid, torch.nn.ReLU) and fuses_relu():
            h = norm_1.normalize(h, relu=True)
        else:
            h = relu_mid(norm_1(h))
        return norm_2(depthwise_pointwise(depthwise_2, pointwise_2, h, self.every_size))


def lean_dil_conv(module: torch.nn.Module) -> LeanDilConv | LeanSepConv | None:
    """A DilConv or SepConv as a :class:`LeanDilConv` or :class:`LeanSepConv` holding the same child modules
    (None for other modules)."""
    if type(module) is SepConv and all(type(block) is DilConv for block in module):
        new = LeanSepConv.__new__(LeanSepConv)
    elif type(module) is DilConv:
        new = LeanDilConv.__new__(LeanDilConv)
    else:
        return None
    torch.nn.Sequential.__init__(new, *module)
    return new.train(module.training)
