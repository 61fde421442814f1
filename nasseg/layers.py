"""Building blocks shared by the supernets and the networks built from decoded architectures.

They follow the DARTS reference code (quark0/darts ``operations.py``) so that parameter counts
match the paper; the only change is that :class:`FactorizedReduce` also accepts odd sizes.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv -> BN, the DARTS pre-processing and 1x1 projection block."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU -> depthwise conv (dilated) -> pointwise conv -> BN (DARTS ``dil_conv``, ADL ``atrous_conv``)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride=stride, padding=padding, dilation=dilation,
                      groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked DilConv-like blocks without dilation; the stride is applied by the first one."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel, 1, padding, 1, affine),
        )


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The ``none`` op: zeros of the output's shape (mixed ops skip it; see supernet.MixedOp)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """ReLU -> two 1x1 stride-2 convs on pixel grids offset by one -> concat -> BN.

    The second branch sees the input shifted by one pixel; padding by one on the right/bottom
    keeps odd sizes working (ceil(h/2) on both branches), identical to DARTS for even sizes.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class Noise(nn.Module):
    """RobustDARTS S4 ``noise`` op: Gaussian noise of the output's shape, independent of the input."""

    def __init__(self, stride: int, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.stride, self.mean, self.std = stride, mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return torch.randn_like(x).mul_(self.std).add_(self.mean)


class ConvBNReLU(nn.Sequential):
    """conv -> BN -> ReLU, used by stems and heads."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, dilation: int = 1):
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=dilation * (kernel // 2),
                      dilation=dilation, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


@contextlib.contextmanager
def frozen_bn_stats(*modules: nn.Module) -> Iterator[None]:
    """Forward passes keep using batch statistics but leave the running averages as they were.

    For passes that are not a real training step: architecture gradients, Hessian products, and
    the recomputed forward of an activation-checkpointed block (which must not count twice).
    """
    saved = []
    for module in (m for root in modules for m in root.modules()):
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            saved.append((module, module.running_mean.clone(), module.running_var.clone(),
                          module.num_batches_tracked.clone()))
    try:
        yield
    finally:
        with torch.no_grad():
            for module, mean, var, count in saved:
                module.running_mean.copy_(mean)
                module.running_var.copy_(var)
                module.num_batches_tracked.copy_(count)


class _CompactMaxPool(torch.autograd.Function):
    """Max pooling whose backward keeps one int8 per output (the winner's offset in its window)
    instead of PyTorch's int64 flat index and the input: 1/8 of the bytes of the indices alone.
    The backward is a scatter-add, itself differentiable (double backward for Hessian products)."""

    @staticmethod
    def forward(ctx, x, kernel: int, stride: int, padding: int):
        out, index = F.max_pool2d(x, kernel, stride, padding, return_indices=True)
        width = x.shape[-1]
        base = _window_origins(out.shape[-2:], width, stride, padding, x.device)
        relative = index - base  # = row * width + col, with row, col in [0, kernel)
        # offset = row * kernel + col = relative - row * (width - kernel); row by comparisons, as
        # int64 division / remainder are scalar loops (4.5 ms a call on a DARTS CIFAR batch)
        if width >= kernel:
            offset = relative - _window_row(relative, width, kernel) * (width - kernel)
        else:  # a column can lie past the width inside a padded window: the general formula
            offset = torch.div(relative, width, rounding_mode="floor") * kernel + relative.remainder(width)
        ctx.save_for_backward(offset.to(torch.int8))
        ctx.geometry = (x.shape, kernel, stride, padding)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (offset,) = ctx.saved_tensors
        shape, kernel, stride, padding = ctx.geometry
        offset = offset.long()
        base = _window_origins(grad_out.shape[-2:], shape[-1], stride, padding, grad_out.device)
        if shape[-1] >= kernel:
            index = base + offset + _window_row(offset, kernel, kernel) * (shape[-1] - kernel)
        else:
            index = base + torch.div(offset, kernel, rounding_mode="floor") * shape[-1] + offset.remainder(kernel)
        grad_in = grad_out.new_zeros(shape[0], shape[1], shape[2] * shape[3])
        grad_in = grad_in.scatter_add(2, index.flatten(2), grad_out.flatten(2))
        return grad_in.view(shape), None, None, None


def _window_row(flat: torch.Tensor, width: int, kernel: int) -> torch.Tensor:
    """``flat // width`` for 0 <= flat < kernel * width (width >= kernel): the row starts passed."""
    row = torch.zeros_like(flat)
    for r in range(1, kernel):
        row += flat >= r * width
    return row


def _window_origins(out_size, width: int, stride: int, padding: int, device) -> torch.Tensor:
    """Flat input index of each pooling window's top-left corner (may lie in the padding)."""
    rows = torch.arange(out_size[0], device=device) * stride - padding
    cols = torch.arange(out_size[1], device=device) * stride - padding
    return rows[:, None] * width + cols[None, :]


def _square(value: int | tuple[int, ...]) -> int | None:
    """An int, or the one value of a tuple whose entries are equal; else None."""
    if isinstance(value, int):
        return value
    return value[0] if len(set(value)) == 1 else None


class CompactMaxPool2d(nn.Module):
    """nn.MaxPool2d (square kernel <= 11, no dilation, floor mode) with the lean backward above.
    The supernet uses it for the `max_pool_3x3` candidate: same outputs and gradients."""

    def __init__(self, kernel: int, stride: int, padding: int):
        super().__init__()
        if kernel > 11:
            raise ValueError(f"CompactMaxPool2d stores window offsets in int8: kernel <= 11, got {kernel}")
        self.kernel, self.stride, self.padding = kernel, stride, padding

    @classmethod
    def replaces(cls, pool: nn.Module) -> bool:
        """Whether ``pool`` is a max pooling this class computes identically."""
        if not isinstance(pool, nn.MaxPool2d) or pool.ceil_mode or pool.return_indices:
            return False
        kernel, stride, padding, dilation = (_square(v) for v in (pool.kernel_size, pool.stride, pool.padding,
                                                                   pool.dilation))
        return None not in (kernel, stride, padding) and dilation == 1 and kernel <= 11

    @classmethod
    def from_pool(cls, pool: nn.MaxPool2d) -> "CompactMaxPool2d":
        return cls(_square(pool.kernel_size), _square(pool.stride), _square(pool.padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a torch-function mode (FrozenKinks in Hessian products) sees and may replace the pool itself
        if not torch.is_grad_enabled() or not x.requires_grad or torch._C._is_torch_function_mode_enabled():
            return F.max_pool2d(x, self.kernel, self.stride, self.padding)
        return _CompactMaxPool.apply(x, self.kernel, self.stride, self.padding)


class SubsampledPointwiseConv2d(nn.Conv2d):
    """A strided, unpadded 1x1 conv computed as "subsample, then a stride-1 1x1 conv": the same
    function and gradients with the same parameters (``weight`` / ``bias`` keep their names).

    Why it exists: in channels-last on CPU, torch 2.13's oneDNN weight-gradient kernel for strided
    1x1 convs (``jit_avx2_1x1_convolution_bwd_weights``, its reduce-to-unit-stride path) writes
    past its scratch buffer (valgrind: invalid write; glibc aborts with "corrupted double-linked
    list"). A stride-1 1x1 conv never takes that path. See docs/performance.md.
    """

    @classmethod
    def replaces(cls, conv: nn.Module) -> bool:
        """Whether ``conv`` is a strided 1x1 conv without padding that this class computes identically."""
        return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride != (1, 1)
                and conv.padding in ((0, 0), "valid") and conv.padding_mode == "zeros")

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "SubsampledPointwiseConv2d":
        new = cls(conv.in_channels, conv.out_channels, 1, stride=conv.stride, groups=conv.groups,
                  bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        new.weight = conv.weight  # the same Parameter objects: optimisers and state dicts see no change
        new.bias = conv.bias
        new.train(conv.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step_h, step_w = self.stride
        return F.conv2d(x[:, :, ::step_h, ::step_w], self.weight, self.bias, 1, 0, 1, self.groups)


def subsample_strided_pointwise_convs(module: nn.Module) -> nn.Module:
    """Swap every strided 1x1 ``nn.Conv2d`` inside ``module`` for :class:`SubsampledPointwiseConv2d`;
    returns the module (replaced if it is one)."""
    if SubsampledPointwiseConv2d.replaces(module):
        return SubsampledPointwiseConv2d.from_conv(module)
    for name, child in module.named_children():
        setattr(module, name, subsample_strided_pointwise_convs(child))
    return module


def to_channels_last(model: nn.Module) -> nn.Module:
    """``model`` in NHWC memory format (faster convolutions on CPU and GPU), with the strided 1x1
    convs that corrupt memory in channels-last on CPU swapped for their subsampled equivalent.
    Parameters stay the same objects; returns the model."""
    model = subsample_strided_pointwise_convs(model)
    return model.to(memory_format=torch.channels_last)
