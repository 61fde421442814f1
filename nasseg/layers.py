"""Building blocks shared by the supernets and the networks built from decoded architectures.

They follow the DARTS reference code (quark0/darts ``operations.py``) so that parameter counts
match the paper; the only change is that :class:`FactorizedReduce` also accepts odd sizes.
Convolutions are built by :func:`create_conv2d`, which picks the class with the right fast path;
each fast path is named and switched in :mod:`nasseg.fastpaths`.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import has_torch_function

from . import fastpaths
from .lean import OneCall, StandIn, batch_norm_keeping_output, batch_norm_saving_output, lean_applies
from .lean import saves_output as lean_saves_output


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv -> BN, the DARTS pre-processing and 1x1 projection block."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            create_conv2d(c_in, c_out, kernel, stride, padding),
            nn.BatchNorm2d(c_out, affine=affine),
        )


def is_nhwc(x: torch.Tensor) -> bool:
    """Whether ``x`` is a 4-d tensor laid out channels-last (and not also plain contiguous)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def conv_on_subsampled(x: torch.Tensor, step_h: int, step_w: int, weight: torch.Tensor,
                       bias: torch.Tensor | None, padding: int, groups: int) -> torch.Tensor:
    """A stride-1 conv of ``x[:, :, ::step_h, ::step_w]``, in ``x``'s memory layout: torch does not
    read an odd-sized subsampled NHWC view as channels-last and would return NCHW, and every op
    after it would then mix layouts."""
    out = F.conv2d(x[:, :, ::step_h, ::step_w], weight, bias, 1, padding, 1, groups)
    return out.contiguous(memory_format=torch.channels_last) if is_nhwc(x) else out


class DilatedDepthwiseConv2d(nn.Conv2d):
    """A dilated depthwise conv (``groups`` = channels) that, where fast path ``subgrid_dilated_conv``
    is on, computes its dilated form (dilation d, stride 1 or d) as undilated convs on the d x d
    interleaved sub-grids of the input ("space to batch", as TensorFlow's ``atrous_conv2d``): the
    same function with the same parameters.

    Output pixel ``(d i + a, d j + b)`` reads only input pixels of sub-grid ``(a, b)``, so an
    undilated conv with padding ``p / d`` on each sub-grid (a strided view: autograd keeps views, no
    copies) gives that output sub-grid; with stride d only sub-grid (0, 0) is read. Other shapes and
    passes that need no gradient of this conv take the native conv (its forward is faster).
    """

    def _phase_plan(self, x: torch.Tensor) -> int | None:
        """The dilation d if the sub-grid form applies to ``x`` in this pass, else None."""
        d, kernel, stride = self.dilation[0], self.kernel_size[0], self.stride[0]
        if x.dim() != 4 or d == 1 or not torch.is_grad_enabled() or \
                not fastpaths.enabled("subgrid_dilated_conv", x.device):
            return None
        # measured gains: with stride d in both gradients, with stride 1 in the weight gradient only
        if not (self.weight.requires_grad or (stride == d and x.requires_grad)):
            return None
        padding = None if isinstance(self.padding, str) else self.padding[0]
        if (padding is None or padding % d or self.padding != (padding, padding) or self.dilation != (d, d)
                or self.kernel_size != (kernel, kernel) or self.stride != (stride, stride) or stride not in (1, d)
                or self.padding_mode != "zeros" or not self.groups == self.in_channels == self.out_channels):
            return None
        for size in x.shape[-2:]:
            native = (size + 2 * padding - d * (kernel - 1) - 1) // stride + 1
            grid = -(-size // d) if stride == d else size // d  # rows of sub-grid (0, 0)
            if grid + 2 * (padding // d) - kernel + 1 != (native if stride == d else grid):
                return None  # not the native output size (stride 1: padding other than "same")
            if stride == 1 and (size % d or grid < kernel):  # unequal sub-grids; or smaller than the
                return None  # kernel, where the native conv was as fast (64 x 64 x 8 x 8, 5x5)
        return d

    def one_call(self, x: torch.Tensor) -> OneCall | None:
        """This pass's forward on ``x`` as one conv call (for nasseg.lean): the native conv, or with stride d
        the conv of sub-grid (0, 0); None where it takes the views of all sub-grids."""
        d = self._phase_plan(x)
        if d is None:
            return OneCall.plain(self)
        if self.stride[0] != d or self.bias is not None:
            return None
        q, nhwc = self.padding[0] // d, is_nhwc(x)
        return OneCall(lambda t: t[:, :, ::d, ::d], (1, 1), (q, q), (1, 1),
                       lambda t: t.contiguous(memory_format=torch.channels_last) if nhwc else t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self._phase_plan(x)
        if d is None:
            return super().forward(x)
        q = self.padding[0] // d
        if self.stride[0] == d:
            return conv_on_subsampled(x, d, d, self.weight, self.bias, q, self.groups)
        rows = [[F.conv2d(x[:, :, a::d, b::d], self.weight, self.bias, 1, q, 1, self.groups) for b in range(d)]
                for a in range(d)]
        n, c, height, width = x.shape
        if is_nhwc(x):
            # interleave in NHWC memory: (N, H/d, d, W/d, d, C) is (N, H, W, C)
            nhwc = torch.stack([torch.stack([y.permute(0, 2, 3, 1) for y in row], dim=3) for row in rows], dim=2)
            return nhwc.view(n, height, width, c).permute(0, 3, 1, 2)
        return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=3).view(n, c, height, width)


class DilConv(nn.Sequential):
    """ReLU -> depthwise conv (dilated) -> pointwise conv -> BN (DARTS ``dil_conv``, ADL ``atrous_conv``)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            create_conv2d(c_in, c_in, kernel, stride, padding, dilation, groups=c_in),
            create_conv2d(c_in, c_out, 1),
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
        self.conv_1 = create_conv2d(c_in, c_out // 2, 1, stride=2)
        self.conv_2 = create_conv2d(c_in, c_out // 2, 1, stride=2)
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
            create_conv2d(c_in, c_out, kernel, stride, dilation * (kernel // 2), dilation),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


def all_modules(roots: Iterable[nn.Module]) -> list[nn.Module]:
    """``roots`` and all their submodules, walked without ``Module.modules()``'s recursive generators and
    name strings (a lattice has tens of thousands of submodules)."""
    found, stack = [], list(roots)
    while stack:
        module = stack.pop()
        found.append(module)
        stack.extend(child for child in module._modules.values() if child is not None)
    return found


def batch_norms_of(root: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorms of ``root`` and its submodules. A module that keeps them (``Supernet.batch_norms``)
    gives its own list: a lattice has thousands, and walking them took 0.25 s a pass."""
    own = getattr(root, "batch_norms", None)
    if callable(own):
        return own()
    return [m for m in all_modules([root]) if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def running_stats_untouched(batch_norms: Iterable[nn.modules.batchnorm._BatchNorm]) -> Iterator[None]:
    """Training-mode ``batch_norms`` run as before (same kernel, same arguments: under bfloat16 autocast a
    BatchNorm without running statistics takes another path) but leave their running statistics and
    batch count alone: momentum 0 keeps them (r * 1 + batch * 0 = r), and their counts add up in a
    scratch tensor. Attributes are set directly, not through ``nn.Module.__setattr__`` (thousands a pass).
    Inside, :func:`stats_frozen` is true for them: a call made only to move the running statistics can be left out."""
    switched = [m for m in batch_norms if m.training and m.track_running_stats]
    scratch = torch.zeros((), dtype=torch.long, device=switched[0].num_batches_tracked.device) if switched else None
    kept = [(m.__dict__["momentum"], m._buffers["num_batches_tracked"], stats_frozen(m)) for m in switched]
    for module in switched:
        module.__dict__["momentum"] = 0.0
        module._buffers["num_batches_tracked"] = scratch
        module.__dict__["stats_frozen"] = True
    try:
        yield
    finally:
        for module, (momentum, count, frozen) in zip(switched, kept):
            module.__dict__["momentum"] = momentum
            module._buffers["num_batches_tracked"] = count
            if not frozen:  # (a block inside another leaves them frozen)
                del module.__dict__["stats_frozen"]


def stats_frozen(module: nn.modules.batchnorm._BatchNorm) -> bool:
    """Whether ``module`` is inside :func:`running_stats_untouched` (its running statistics and count stay)."""
    return module.__dict__.get("stats_frozen", False)


@contextlib.contextmanager
def frozen_bn_stats(*modules: nn.Module) -> Iterator[None]:
    """Forward passes keep using batch statistics but leave the running averages as they were.

    For passes that are not a real training step: architecture gradients, Hessian products, and
    the recomputed forward of an activation-checkpointed block (which must not count twice).
    (No copies of the buffers are made: :func:`running_stats_untouched`. Do not copy or save the
    modules inside the block: they would carry momentum 0 and the scratch count.)
    """
    with running_stats_untouched(bn for root in modules for bn in batch_norms_of(root)):
        yield


# .value: (size, count), set by batch_norm_groups; per thread (hessian.overlap's eigenvalue has its own)
_bn_groups = threading.local()


@contextlib.contextmanager
def batch_norm_groups(size: int, count: int) -> Iterator[None]:
    """Inside the block, a :class:`GroupBatchNorm2d` that takes batch statistics (training mode) is fed
    ``count`` inputs of ``size`` samples stacked, or one input of ``size`` samples standing for ``count``
    equal ones, and gives what one call per input would (fast path ``batched_transitions``):
    statistics per group of ``size`` samples, running statistics updated ``count`` times, in order."""
    outer = getattr(_bn_groups, "value", None)
    _bn_groups.value = (size, count)
    try:
        yield
    finally:
        _bn_groups.value = outer


class GroupBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d (same parameters and buffers), batch statistics per group under :func:`batch_norm_groups`.
    ``keeps_output`` (set by the supernet's lean ops): without affine parameters, keep the output for
    backward instead of the input (:mod:`nasseg.lean`; ``lean_every_size``: at every tensor size)."""

    keeps_output = False
    lean_every_size = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.keeps_output and lean_saves_output(self, x):
            return self._normalize(x, self._saving_output)
        if getattr(_bn_groups, "value", None) is None:  # (a chain supernet's every call: no extra Python)
            return super().forward(x)
        return self._normalize(x, self._native)

    def normalize(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        """``self(x)``, then (``relu``) a ReLU: with fast path ``lean_saved`` one function keeping only the
        BatchNorm's output for backward (nasseg.lean)."""
        if self.keeps_output and lean_saves_output(self, x):
            return self._normalize(x, functools.partial(self._saving_output, relu=relu))
        out = self(x)
        return F.relu(out) if relu else out

    def _saving_output(self, part: torch.Tensor, factor: float | None = None, chunks: int = 1,
                       relu: bool = False) -> torch.Tensor:
        # the chunks' statistics in one function, which keeps one output (not each chunk's and their concatenation)
        return batch_norm_saving_output(self, part, factor, relu, chunks)

    def _native(self, part: torch.Tensor, factor: float | None = None, chunks: int = 1) -> torch.Tensor:
        if chunks > 1:
            return torch.cat([self._native(chunk) for chunk in part.chunk(chunks)])
        if factor is None:
            return super().forward(part)
        return F.batch_norm(part, self.running_mean, self.running_var, self.weight, self.bias, True, factor, self.eps)

    def _normalize(self, x: torch.Tensor, norm: Callable[..., torch.Tensor]) -> torch.Tensor:
        """``norm(part)``: nn.BatchNorm2d's forward of ``part``; ``norm(part, factor)``: training mode with
        running-average factor ``factor``, the batch count already updated; ``norm(part, None, chunks)``: one
        forward per each of ``chunks`` equal chunks of the batch, in order, the outputs concatenated."""
        groups = getattr(_bn_groups, "value", None)
        if groups is None or not (self.training or self.running_mean is None):
            return norm(x)
        size, count = groups
        if x.shape[0] == size * count:
            return norm(x, None, count)
        if self.running_mean is None:
            return norm(x)
        # x stands for `count` equal groups: one update with the momentum of `count` updates
        # (1 - (1 - m)^count; cumulative averaging: count / batches seen)
        self.num_batches_tracked.add_(count)
        factor = count / float(self.num_batches_tracked) if self.momentum is None else \
            1 - (1 - self.momentum) ** count
        return norm(x, factor)


def side_by_side_batch_norm(y: torch.Tensor, norms: list[nn.BatchNorm2d], keep_output: bool = False,
                            relu: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What each of ``norms`` gives on its own block of ``y``'s channels (``len(norms)`` equal blocks, in order),
    in one batch-norm call per statistics group: the same outputs, running statistics and batch counts as one
    call of each (training or eval mode, under :func:`batch_norm_groups` as :class:`GroupBatchNorm2d`), then
    (``relu``) a ReLU. The norms must agree in mode, eps, affine, tracking and a momentum that is not None
    (cumulative averaging is not supported). The norms' own ``keeps_output`` is not looked at; ``keep_output``:
    non-affine norms in training mode keep their output for backward instead of their input, in one function
    for all statistics groups and the ReLU, where fast path ``lean_saved`` applies
    (:func:`nasseg.lean.batch_norm_keeping_output`). Returns the result and, where the output was kept before a
    ReLU, that output outside the graph (else None)."""
    first = norms[0]

    def side_by_side(name: str) -> torch.Tensor | None:
        return None if getattr(first, name) is None else torch.cat([getattr(norm, name) for norm in norms])

    weight, bias = side_by_side("weight"), side_by_side("bias")
    mean, var = side_by_side("running_mean"), side_by_side("running_var")
    if not first.training and mean is not None:  # eval mode: the running statistics, nothing updated
        out = F.batch_norm(y, mean, var, weight, bias, False, 0.0, first.eps)
        return (F.relu(out) if relu else out), None
    groups = getattr(_bn_groups, "value", None) if isinstance(first, GroupBatchNorm2d) else None
    parts, factor, counted = [y], first.momentum, 1
    if groups is not None:
        size, count = groups
        if y.shape[0] == size * count:  # statistics per group, running statistics updated once per group in order
            parts, counted = list(y.chunk(count)), count
        elif mean is not None:  # y stands for `count` equal groups: one update with the momentum of `count`
            factor, counted = 1 - (1 - first.momentum) ** count, count
    if keep_output and not first.affine and y.requires_grad and y.numel() // y.shape[1] > len(parts) and \
            lean_applies(y, every_size=True):
        out, normed = batch_norm_keeping_output(y, mean, var, factor, first.eps, relu, len(parts))
    else:
        out = [F.batch_norm(part, mean, var, weight, bias, True, factor, first.eps) for part in parts]
        out, normed = out[0] if len(out) == 1 else torch.cat(out), None
        out = F.relu(out) if relu else out
    if mean is not None:
        for norm in norms:
            norm.num_batches_tracked.add_(counted)
        if factor:  # (momentum 0, as in frozen_bn_stats: the statistics stayed what they were)
            with torch.no_grad():
                torch._foreach_copy_([n.running_mean for n in norms] + [n.running_var for n in norms],
                                     list(mean.chunk(len(norms))) + list(var.chunk(len(norms))))
    return out, normed


def group_batch_norm(module: nn.Module) -> GroupBatchNorm2d | None:
    """An nn.BatchNorm2d as a :class:`GroupBatchNorm2d` with the same state (None for other modules)."""
    if type(module) is not nn.BatchNorm2d:
        return None
    state = module.state_dict()
    new = GroupBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
    new.to(next(iter(state.values())).device if state else None).load_state_dict(state)
    return new.train(module.training)


class _CompactMaxPool(torch.autograd.Function):
    """Max pooling whose backward keeps one int8 per output (the winner's offset in its window)
    instead of PyTorch's int64 flat index: 1/8 of the bytes of the indices. The backward rebuilds the
    indices and runs torch's own max-pool backward kernel on them (itself differentiable: double
    backward for Hessian products), with a stand-in of the input's size and layout, all the kernel reads
    of it."""

    @staticmethod
    def forward(ctx, x, kernel: int, stride: int, padding: int):
        out, index = F.max_pool2d(x, kernel, stride, padding, return_indices=True)
        width = x.shape[-1]
        relative = index - _window_origins(tuple(out.shape[-2:]), width, stride, padding, x.device)
        # relative = row * width + col with row, col in [0, kernel): offset = row * kernel + col by a table
        # lookup, one pass (integer division is a scalar loop on the CPU: 4.5 ms a call on a DARTS batch)
        if width >= kernel:
            offset = _offset_of_relative(kernel, width, x.device).take(relative)
        else:  # a column can lie past the width inside a padded window: the general formula
            offset = (torch.div(relative, width, rounding_mode="floor") * kernel +
                      relative.remainder(width)).to(torch.int8)
        ctx.save_for_backward(offset)
        ctx.geometry = (StandIn.of(x), kernel, stride, padding)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (offset,) = ctx.saved_tensors
        x, kernel, stride, padding = ctx.geometry
        width, offset = x.size[-1], offset.long()
        if width >= kernel:
            relative = _relative_of_offset(kernel, width, grad_out.device).take(offset)
        else:
            relative = torch.div(offset, kernel, rounding_mode="floor") * width + offset.remainder(kernel)
        index = relative + _window_origins(tuple(grad_out.shape[-2:]), width, stride, padding, grad_out.device)
        return (_MAX_POOL_BACKWARD(grad_out, x.empty(), [kernel, kernel], [stride, stride], [padding, padding],
                                   [1, 1], False, index), None, None, None)


_MAX_POOL_BACKWARD = torch.ops.aten.max_pool2d_with_indices_backward.default


@functools.lru_cache(maxsize=64)
def _offset_of_relative(kernel: int, width: int, device: torch.device) -> torch.Tensor:
    """int8 table: a window's relative flat index row * width + col (width >= kernel) -> row * kernel + col."""
    relative = torch.arange((kernel - 1) * width + kernel, device=device)
    return (relative // width * kernel + relative % width).to(torch.int8)


@functools.lru_cache(maxsize=64)
def _relative_of_offset(kernel: int, width: int, device: torch.device) -> torch.Tensor:
    """The inverse table: row * kernel + col -> row * width + col."""
    offset = torch.arange(kernel * kernel, device=device)
    return offset // kernel * width + offset % kernel


@functools.lru_cache(maxsize=16)  # one entry per pooled size of a search: a few
def _window_origins(out_size: tuple[int, int], width: int, stride: int, padding: int,
                    device: torch.device) -> torch.Tensor:
    """Flat input index of each pooling window's top-left corner (may lie in the padding)."""
    rows = torch.arange(out_size[0], device=device) * stride - padding
    cols = torch.arange(out_size[1], device=device) * stride - padding
    return rows[:, None] * width + cols[None, :]


def forget_index_tables() -> None:
    """Drop the compact max pool's cached index tables; they are made again at first use. A memory plan
    traces what a fresh process allocates, tables included, whatever was traced before it."""
    for table in (_offset_of_relative, _relative_of_offset, _window_origins):
        table.cache_clear()


def _square(value: int | tuple[int, ...]) -> int | None:
    """An int, or the one value of a tuple whose entries are equal; else None."""
    if isinstance(value, int):
        return value
    return value[0] if len(set(value)) == 1 else None


class CompactMaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d (square kernel <= 11, no dilation, floor mode) with the lean backward above where
    fast path ``compact_max_pool`` is on: the same outputs and gradients. The supernet uses it for its
    candidate ops' max pools (:func:`compact_max_pool`)."""

    def __init__(self, kernel: int, stride: int, padding: int):
        if kernel > 11:
            raise ValueError(f"CompactMaxPool2d stores window offsets in int8: kernel <= 11, got {kernel}")
        super().__init__(kernel, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # under a torch-function mode (FrozenKinks in Hessian products) the pool is a plain function
        # call, which the mode sees and may replace
        if not (torch.is_grad_enabled() and x.requires_grad and fastpaths.enabled("compact_max_pool", x.device)) \
                or has_torch_function((x,)):
            return super().forward(x)
        return _CompactMaxPool.apply(x, self.kernel_size, self.stride, self.padding)


def compact_max_pool(module: nn.Module) -> CompactMaxPool2d | None:
    """``module`` as a :class:`CompactMaxPool2d`, if it is an nn.MaxPool2d that one computes identically."""
    if type(module) is not nn.MaxPool2d or module.ceil_mode or module.return_indices:
        return None
    kernel, stride, padding, dilation = (_square(v) for v in (module.kernel_size, module.stride, module.padding,
                                                               module.dilation))
    if None in (kernel, stride, padding) or dilation != 1 or kernel > 11:
        return None
    return CompactMaxPool2d(kernel, stride, padding)


class SubsampledPointwiseConv2d(nn.Conv2d):
    """A strided, unpadded 1x1 conv that, where fast path ``subsampled_pointwise_conv`` is on, runs as
    "subsample, then a stride-1 1x1 conv": the same function and gradients with the same parameters.
    A stride-1 1x1 conv never takes the oneDNN path that path avoids (see :mod:`nasseg.fastpaths`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not fastpaths.enabled("subsampled_pointwise_conv", x.device):
            return super().forward(x)
        return conv_on_subsampled(x, *self.stride, self.weight, self.bias, 0, self.groups)


def _fast_class(conv: nn.Conv2d) -> type[nn.Conv2d]:
    """The class with a fast path for a conv of this shape (each decides per call whether to take
    it), else nn.Conv2d."""
    if conv.padding_mode != "zeros":
        return nn.Conv2d
    if conv.groups == conv.in_channels == conv.out_channels and conv.dilation != (1, 1):
        return DilatedDepthwiseConv2d
    if conv.kernel_size == (1, 1) and conv.stride != (1, 1) and conv.padding in ((0, 0), "valid"):
        return SubsampledPointwiseConv2d
    return nn.Conv2d


def fast_conv2d(module: nn.Module) -> nn.Conv2d | None:
    """A plain nn.Conv2d rebuilt as the class with its fast path, holding the same Parameter objects
    (optimisers and state dicts see no change); None if it has none."""
    cls = _fast_class(module) if type(module) is nn.Conv2d else nn.Conv2d
    if cls is nn.Conv2d:
        return None
    new = torch.nn.utils.skip_init(cls, module.in_channels, module.out_channels, module.kernel_size,
                                   stride=module.stride, padding=module.padding, dilation=module.dilation,
                                   groups=module.groups, bias=module.bias is not None,
                                   device=module.weight.device, dtype=module.weight.dtype)  # no init draws
    new.weight, new.bias = module.weight, module.bias
    return new.train(module.training)


def create_conv2d(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int | str = 0,
                  dilation: int = 1, groups: int = 1, bias: bool = False) -> nn.Conv2d:
    """A 2-d conv (nn.Conv2d's arguments, no bias by default) of the class with its fast path, if it
    has one; its parameters are named as nn.Conv2d's, so state dicts do not depend on the class."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups, bias)
    return fast_conv2d(conv) or conv


def replace_modules(root: nn.Module, replacement: Callable[[nn.Module], nn.Module | None]) -> nn.Module:
    """Every submodule of ``root`` (``root`` included) for which ``replacement`` gives a module
    replaced by that module, under the same name; returns ``root`` or its replacement. For modules
    built elsewhere (baselines, user-registered ops) that should take a fast path."""
    new = replacement(root)
    if new is not None:
        return new
    for name, child in root.named_children():
        setattr(root, name, replace_modules(child, replacement))
    return root


def to_channels_last(model: nn.Module) -> nn.Module:
    """``model`` in NHWC memory format (faster convolutions on CPU and GPU), its plain convs rebuilt
    with their fast paths (:func:`fast_conv2d`; strided 1x1 convs corrupt memory in channels-last on
    CPU without theirs). Parameters stay the same objects; returns the model."""
    return replace_modules(model, fast_conv2d).to(memory_format=torch.channels_last)
