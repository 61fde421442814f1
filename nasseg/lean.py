"""Fewer bytes kept for backward by the supernet's candidate ops (fast path ``lean_saved``), same function
and gradients.

A search step's peak memory is what autograd keeps for backward. Some of those tensors can go:

* The inputs of convs whose weights are frozen (the architecture step): torch keeps a conv's input even
  when only its input gradient is needed, which the weight alone gives. Where neither conv of a depthwise
  + pointwise pair (``dil_conv``/``sep_conv``, ``atrous_conv``) needs a weight gradient,
  :func:`depthwise_pointwise` keeps nothing.
* The output of a depthwise conv that feeds a pointwise conv: kept only for the pointwise conv's weight
  gradient. Where that is needed (the weight step) :func:`depthwise_pointwise` keeps the depthwise conv's
  input instead (the state's ReLU output, kept anyway) and computes the depthwise conv again in backward:
  one depthwise forward more (the cheapest part of the op) for one tensor less per conv pair.
* The input of a non-affine BatchNorm in training mode (every BatchNorm of the search ops): its
  backward needs only the normalised values, which are its output. :func:`batch_norm_saving_output`
  keeps the output, which the mixed sum keeps anyway for the architecture gradient, and runs torch's own
  backward kernel on it (``weight`` = 1/std, ``mean`` = 0, ``invstd`` = 1: the kernel's x_hat is then the
  output, and its scale the true 1/std). Inside ``sep_conv`` the ReLU after the first BatchNorm is part of
  the same function (its mask is where the BatchNorm's output is positive): the ReLU's output is then kept
  only where a weight gradient needs it.

The BatchNorm's gradient through its 1/std (a function of the input) is not a saved tensor's, so a
double backward (``create_graph=True``) cannot be taken through it: passes that differentiate twice run
inside :func:`twice_differentiable`, where these layers take the native path (and a double backward that
meets one anyway fails with a message instead of a wrong number).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch
from torch import nn

from . import fastpaths

# .twice, .relu_apart: inside twice_differentiable, relu_apart (per thread: hessian.overlap's eigenvalue)
_state = threading.local()


@contextlib.contextmanager
def _flag_set(name: str) -> Iterator[None]:
    outer = getattr(_state, name, False)
    setattr(_state, name, True)
    try:
        yield
    finally:
        setattr(_state, name, outer)


def twice_differentiable() -> contextlib.AbstractContextManager:
    """Inside the block the lean layers keep what torch keeps, so the graph can be differentiated twice."""
    return _flag_set("twice")


def relu_apart() -> contextlib.AbstractContextManager:
    """Inside the block every ReLU is a call of its own (code that records or imposes each ReLU's pattern
    call by call, search.hessian.FrozenKinks, must see them): no BatchNorm + ReLU function."""
    return _flag_set("relu_apart")


def fuses_relu() -> bool:
    """Whether a BatchNorm may take the ReLU after it into its function (not inside :func:`relu_apart`)."""
    return not getattr(_state, "relu_apart", False)


# Below this many elements a tensor takes the native path: there the lean layers' own calls (an autograd
# Function, a gradient call per conv pair) cost more than the bytes are worth. Measured on DARTS search
# steps: 1.37x the time with 4-33 thousand elements a tensor (the demo's supernet), 1.05x with 0.26-2 million
# (the CIFAR search net at batch 64).
MIN_ELEMENTS = 1 << 17


def lean_applies(x: torch.Tensor) -> bool:
    """Whether this pass builds a graph through ``x`` that the lean layers may shorten: ``x`` large enough
    (:data:`MIN_ELEMENTS`), not under autocast (their backward would recompute in another precision)."""
    return x.numel() >= MIN_ELEMENTS and torch.is_grad_enabled() and not getattr(_state, "twice", False) and \
        fastpaths.enabled("lean_saved", x.device) and \
        not (torch.amp.is_autocast_available(x.device.type) and torch.is_autocast_enabled(x.device.type))


def _refuse_double_backward(what: str) -> None:
    if torch.is_grad_enabled():
        raise RuntimeError(f"a double backward (create_graph=True) through {what}, which keeps its output instead "
                           f"of its input: run the pass inside nasseg.lean.twice_differentiable()")


class _BatchNormSavingOutput(torch.autograd.Function):
    """Training-mode BatchNorm without affine parameters, optionally followed by a ReLU; backward from the
    BatchNorm's output (module doc; the ReLU's mask is where that output is positive)."""

    @staticmethod
    def forward(ctx, x, running_mean, running_var, momentum, eps, relu):
        y, _, invstd = torch.native_batch_norm(x, None, None, running_mean, running_var, True, momentum, eps)
        ctx.eps, ctx.relu = eps, relu
        ctx.save_for_backward(y, invstd)
        return torch.relu(y) if relu else y

    @staticmethod
    def backward(ctx, grad_out):
        _refuse_double_backward("a non-affine BatchNorm (nasseg.lean)")
        y, invstd = ctx.saved_tensors
        if ctx.relu:
            grad_out = torch.ops.aten.threshold_backward(grad_out, y, 0)
        zeros, ones = torch.zeros_like(invstd), torch.ones_like(invstd)
        grad_x = torch.ops.aten.native_batch_norm_backward(grad_out, y, invstd, None, None, zeros, ones, True,
                                                           ctx.eps, [True, False, False])[0]
        return grad_x, None, None, None, None, None


def batch_norm_saving_output(module: nn.modules.batchnorm._BatchNorm, x: torch.Tensor,
                             factor: float | None = None, relu: bool = False) -> torch.Tensor:
    """``module(x)`` (``relu``: then a ReLU) for a non-affine BatchNorm in training mode, keeping only the
    BatchNorm's output for backward: batch statistics, running statistics and batch count updated as
    ``nn.BatchNorm2d.forward`` does (``factor``: the caller's own running-average factor, its count
    already updated)."""
    if x.numel() // x.shape[1] == 1:  # as F.batch_norm refuses it
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")
    tracked = module.track_running_stats
    if factor is None:
        factor = 0.0 if module.momentum is None else module.momentum
        if tracked and module.num_batches_tracked is not None:
            module.num_batches_tracked.add_(1)
            factor = 1.0 / float(module.num_batches_tracked) if module.momentum is None else module.momentum
    return _BatchNormSavingOutput.apply(x, module.running_mean if tracked else None,
                                        module.running_var if tracked else None, factor, module.eps, relu)


def saves_output(module: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> bool:
    """Whether ``module(x)`` may go through :func:`batch_norm_saving_output` in this pass (for a module that
    opted in: ``GroupBatchNorm2d.keeps_output``)."""
    return module.training and not module.affine and x.requires_grad and lean_applies(x)


class _DepthwisePointwise(torch.autograd.Function):
    """pointwise(depthwise(x)) keeping x, not depthwise(x), for the pointwise weight gradient; with both
    weights frozen (``keep_input`` False) keeping nothing: an input gradient needs only the weights."""

    @staticmethod
    def forward(ctx, depthwise, pointwise, keep_input, x, *params):
        ctx.depthwise, ctx.pointwise, ctx.keep_input = depthwise, pointwise, keep_input
        if keep_input:
            ctx.save_for_backward(x)
            # the depthwise conv takes the path it takes with a gradient (layers.py), as backward computes it
            # again; that graph is dropped at once (hooks that count saved tensors do not see it)
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
                mid = depthwise(x.detach().requires_grad_(x.requires_grad)).detach()
        else:
            mid = depthwise(x)
        ctx.sizes = x.shape, mid.shape
        return pointwise(mid)

    @staticmethod
    def backward(ctx, grad_out):
        _refuse_double_backward("a depthwise conv and its pointwise conv (nasseg.lean)")
        depthwise, pointwise = ctx.depthwise, ctx.pointwise
        wanted = ctx.needs_input_grad[3:]  # x, the pointwise weight, the depthwise parameters
        weight = pointwise.weight
        if not ctx.keep_input:  # only x needs a gradient: the two input gradients, from the weights alone
            x_size, mid_size = ctx.sizes
            grad_mid = torch.nn.grad.conv2d_input(mid_size, weight, grad_out, pointwise.stride, pointwise.padding,
                                                  pointwise.dilation, pointwise.groups)
            grad_x = torch.nn.grad.conv2d_input(x_size, depthwise.weight, grad_mid, depthwise.stride,
                                                depthwise.padding, depthwise.dilation, depthwise.groups)
            return (None, None, None, grad_x, *[None] * (len(wanted) - 1))
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(wanted[0])
            mid = depthwise(x_in)  # the depthwise graph again, the same numbers
        grad_mid, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad_out, mid.detach(), weight, None, pointwise.stride, pointwise.padding, pointwise.dilation, False,
            [0, 0], pointwise.groups, [mid.requires_grad, wanted[1], False])
        inputs = [t for t, need in zip([x_in, *depthwise.parameters()], [wanted[0], *wanted[2:]]) if need]
        grads = iter(torch.autograd.grad(mid, inputs, grad_mid) if inputs else ())
        out = [next(grads) if wanted[0] else None, grad_weight if wanted[1] else None]
        out += [next(grads) if need else None for need in wanted[2:]]
        return (None, None, None, *out)


def _plain(conv: nn.Module) -> bool:
    """A conv whose input gradient torch.nn.grad.conv2d_input computes as its own backward does."""
    return isinstance(conv, nn.Conv2d) and conv.bias is None and conv.padding_mode == "zeros" and \
        not isinstance(conv.padding, str)


def depthwise_pointwise(depthwise: nn.Conv2d, pointwise: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``pointwise(depthwise(x))``, keeping less for backward (module doc): where the pointwise weight needs
    a gradient, the depthwise output is computed again in backward instead of kept; where neither conv's
    weight needs one, nothing is kept (torch keeps each conv's input even then). ``pointwise``: a 1x1 conv."""
    if not lean_applies(x) or type(pointwise) is not nn.Conv2d or not _plain(pointwise):
        return pointwise(depthwise(x))
    params = [pointwise.weight, *depthwise.parameters()]
    if pointwise.weight.requires_grad:
        return _DepthwisePointwise.apply(depthwise, pointwise, True, x, *params)
    if not x.requires_grad or any(p.requires_grad for p in params):
        return pointwise(depthwise(x))
    # the depthwise conv's own backward, were its weight frozen: the native conv's (a dilated conv with
    # stride > 1 takes its sub-grid form then, layers.DilatedDepthwiseConv2d: keep autograd's)
    if not (_plain(depthwise) and (depthwise.dilation == (1, 1) or depthwise.stride == (1, 1))):
        return pointwise(depthwise(x))
    return _DepthwisePointwise.apply(depthwise, pointwise, False, x, *params)
