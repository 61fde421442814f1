"""Fewer bytes kept for backward by the supernet's candidate ops (fast path ``lean_saved``), same function
and gradients.

A search step's peak memory is what autograd keeps for backward. Some of those tensors can go:

* The inputs of convs whose weights are frozen (the architecture step): torch keeps a conv's input even
  when only its input gradient is needed, which the weight alone gives. Where neither conv of a depthwise
  + pointwise pair (``dil_conv``/``sep_conv``, ``atrous_conv``) needs a weight gradient,
  :func:`depthwise_pointwise` keeps only the inputs' sizes and layouts.
* The output of a depthwise conv that feeds a pointwise conv: kept only for the pointwise conv's weight
  gradient. Where that is needed (the weight step) :func:`depthwise_pointwise` computes it again in backward
  from the depthwise conv's input (the state's ReLU output, kept anyway): one depthwise forward more (the
  cheapest part of the op) for one tensor less per conv pair (two for a dilated conv on its sub-grids,
  whose stacked copy of the input is computed again too).

  Both work by saved-tensor hooks around torch's own conv calls (what a conv node would keep is packed as a
  size or as the call that computes it again), so backward runs torch's conv nodes, with no Python of ours
  but the unpacking.
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
from typing import Callable, Iterator, NamedTuple

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


# Below this many elements a tensor takes the native path: there the lean layers' own calls (hooks, a
# recomputed depthwise conv, the BatchNorm function) cost more than the bytes are worth. Measured on DARTS
# search steps: 1.13x the time with 4-33 thousand elements a tensor (the demo's supernet), 0.95x with 0.26-2
# million (the CIFAR search net at batch 64).
MIN_ELEMENTS = 1 << 17


def lean_applies(x: torch.Tensor, every_size: bool = False) -> bool:
    """Whether this pass builds a graph through ``x`` that the lean layers may shorten: ``x`` large enough
    (:data:`MIN_ELEMENTS`, unless ``every_size``), not under autocast (their backward would recompute in
    another precision)."""
    return (every_size or x.numel() >= MIN_ELEMENTS) and torch.is_grad_enabled() and \
        not getattr(_state, "twice", False) and fastpaths.enabled("lean_saved", x.device) and \
        not (torch.amp.is_autocast_available(x.device.type) and torch.is_autocast_enabled(x.device.type))


def _refuse_double_backward(what: str) -> None:
    if torch.is_grad_enabled():
        raise RuntimeError(f"a double backward (create_graph=True) through {what}, which keeps its output instead "
                           f"of its input: run the pass inside nasseg.lean.twice_differentiable()")


_BATCH_NORM_BACKWARD = torch.ops.aten.native_batch_norm_backward.default
_THRESHOLD_BACKWARD = torch.ops.aten.threshold_backward.default


class _BatchNormSavingOutput(torch.autograd.Function):
    """Training-mode BatchNorm without affine parameters, statistics per each of ``chunks`` equal batch chunks,
    optionally followed by a ReLU; backward from the BatchNorm's output (module doc; the ReLU's mask is where
    that output is positive). Outputs: the result, and with a ReLU the BatchNorm's output (outside the graph)."""

    @staticmethod
    def forward(ctx, x, running_mean, running_var, momentum, eps, relu, chunks):
        parts = [torch.native_batch_norm(part, None, None, running_mean, running_var, True, momentum, eps)
                 for part in x.chunk(chunks)]
        y = parts[0][0] if chunks == 1 else torch.cat([part[0] for part in parts])
        invstds = [part[2] for part in parts]
        ctx.eps, ctx.relu, ctx.chunks = eps, relu, chunks
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(y, *invstds)
        if not relu:
            return y, None
        ctx.mark_non_differentiable(y)
        return torch.relu(y), y

    @staticmethod
    def backward(ctx, grad_out, _):
        _refuse_double_backward("a non-affine BatchNorm (nasseg.lean)")
        y, *invstds = ctx.saved_tensors
        if grad_out is None:
            return (None,) * 7
        if ctx.relu:
            grad_out = _THRESHOLD_BACKWARD(grad_out, y, 0)
        zeros, ones = torch.zeros_like(invstds[0]), torch.ones_like(invstds[0])
        grads = [_BATCH_NORM_BACKWARD(grad, out, invstd, None, None, zeros, ones, True, ctx.eps,
                                      [True, False, False])[0]
                 for grad, out, invstd in zip(grad_out.chunk(ctx.chunks), y.chunk(ctx.chunks), invstds)]
        return grads[0] if ctx.chunks == 1 else torch.cat(grads), None, None, None, None, None, None


def batch_norm_keeping_output(x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                              factor: float, eps: float, relu: bool = False, chunks: int = 1
                              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``F.batch_norm(x, running_mean, running_var, None, None, True, factor, eps)`` (``relu``: then a ReLU),
    keeping only the BatchNorm's output for backward; ``chunks``: statistics per each of that many equal chunks of
    the batch, the running statistics updated by each chunk in order (one output, kept once). Returns the result
    and, with ``relu``, the BatchNorm's output outside the graph (kept anyway: a caller may compute the ReLU's
    output again from it rather than keep that too)."""
    return _BatchNormSavingOutput.apply(x, running_mean, running_var, factor, eps, relu, chunks)


def batch_norm_saving_output(module: nn.modules.batchnorm._BatchNorm, x: torch.Tensor,
                             factor: float | None = None, relu: bool = False, chunks: int = 1) -> torch.Tensor:
    """``module(x)`` (``relu``: then a ReLU) for a non-affine BatchNorm in training mode, keeping only the
    BatchNorm's output for backward: batch statistics, running statistics and batch count updated as
    ``nn.BatchNorm2d.forward`` does (``factor``: the caller's own running-average factor, its count
    already updated; ``chunks``: as one call of ``module`` per each of that many equal chunks of the batch, in
    order, the outputs concatenated)."""
    if x.numel() // x.shape[1] // chunks == 1:  # as F.batch_norm refuses it
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")
    tracked = module.track_running_stats
    if factor is None:
        if chunks > 1 and module.momentum is None:  # cumulative averaging: each chunk's update has its own factor
            return torch.cat([batch_norm_saving_output(module, part, None, relu) for part in x.chunk(chunks)])
        factor = 0.0 if module.momentum is None else module.momentum
        if tracked and module.num_batches_tracked is not None:
            module.num_batches_tracked.add_(chunks)
            factor = 1.0 / float(module.num_batches_tracked) if module.momentum is None else module.momentum
    return batch_norm_keeping_output(x, module.running_mean if tracked else None,
                                     module.running_var if tracked else None, factor, module.eps, relu, chunks)[0]


def saves_output(module: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> bool:
    """Whether ``module(x)`` may go through :func:`batch_norm_saving_output` in this pass (for a module that
    opted in: ``GroupBatchNorm2d.keeps_output``)."""
    return module.training and not module.affine and x.requires_grad and \
        lean_applies(x, getattr(module, "lean_every_size", False))


def _conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a plain bias-free conv (:func:`_plain`), without the module call's overhead."""
    return torch.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


class OneCall(NamedTuple):
    """A depthwise conv's forward in one pass as ``output(conv2d(input(x), weight, stride, padding, dilation))``:
    what :func:`depthwise_pointwise` computes again in backward. A conv module with a fast path of its own
    says whether and how its forward is one call with a method ``one_call(x)`` (an OneCall or None)."""

    input: Callable[[torch.Tensor], torch.Tensor]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    output: Callable[[torch.Tensor], torch.Tensor]

    @classmethod
    def plain(cls, conv: nn.Conv2d) -> OneCall | None:
        """``conv``'s own conv call, if it is a plain one (:func:`_plain`)."""
        return cls(_same, conv.stride, conv.padding, conv.dilation, _same) if _plain(conv) else None

    def conv(self, conv_input: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
        """The conv call itself: ``output(conv(input(x), ...))`` is the depthwise conv of x."""
        return torch.conv2d(conv_input, weight, None, self.stride, self.padding, self.dilation, groups)


def _one_call(depthwise: nn.Module, x: torch.Tensor) -> OneCall | None:
    """The depthwise conv's forward on ``x`` in this pass as :class:`OneCall`, if it is one call: a plain conv
    without a fast path of its own (layers.py), or a module whose ``one_call(x)`` says how."""
    if type(depthwise) is nn.Conv2d:
        return OneCall.plain(depthwise)
    one_call = getattr(depthwise, "one_call", None)
    return one_call(x) if one_call is not None and depthwise.bias is None else None


def _plain(conv: nn.Module) -> bool:
    """A conv whose forward is one ``torch.conv2d`` call with its attributes."""
    return isinstance(conv, nn.Conv2d) and conv.bias is None and conv.padding_mode == "zeros" and \
        not isinstance(conv.padding, str)


class StandIn(NamedTuple):
    """What is kept of a tensor whose backward reads only its size and layout (a frozen conv's input, a max
    pool's input): :meth:`empty` gives an uninitialised tensor of that size and those strides."""

    size: torch.Size
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def of(cls, t: torch.Tensor) -> StandIn:
        return cls(t.shape, t.stride(), t.dtype, t.device)

    def empty(self) -> torch.Tensor:
        return torch.empty_strided(self.size, self.stride, dtype=self.dtype, device=self.device)


class _Recompute:
    """What is kept of a depthwise conv's input and output: the tensor they are computed from (kept anyway),
    computed again in backward (the output's unpacking, which comes first, keeps the input for the conv's)."""

    def __init__(self, x: torch.Tensor, form: OneCall, weight: torch.Tensor, groups: int):
        self.x, self.version, self.form, self.weight, self.groups = x, x._version, form, weight, groups
        self.conv_input: torch.Tensor | None = None

    def input(self) -> torch.Tensor:
        if self.x._version != self.version:
            raise RuntimeError("the input of a depthwise conv (nasseg.lean) was modified in place after the forward "
                               "pass; its output is computed again from it in backward")
        conv_input, self.conv_input = self.conv_input, None
        return self.form.input(self.x) if conv_input is None else conv_input

    def output(self) -> torch.Tensor:
        self.conv_input = self.input()
        return self.form.output(self.form.conv(self.conv_input, self.weight, self.groups))


class _Kept(NamedTuple):
    """A saved tensor as the call that computes it again."""

    part: Callable[[], torch.Tensor]


def _unpack(kept):
    """A saved tensor back from what :func:`depthwise_pointwise`'s hooks packed."""
    if isinstance(kept, torch.Tensor):
        return kept
    _refuse_double_backward("a depthwise conv and its pointwise conv (nasseg.lean)")
    if isinstance(kept, StandIn):
        return kept.empty()
    return kept.part()


def depthwise_pointwise(depthwise: nn.Conv2d, pointwise: nn.Conv2d, x: torch.Tensor, every_size: bool = False
                        ) -> torch.Tensor:
    """``pointwise(depthwise(x))``, keeping less for backward (module doc) by saved-tensor hooks on torch's own
    conv nodes: where the pointwise weight needs a gradient, what the two convs would keep of the depthwise
    conv's output (and of its input, where that is not ``x`` itself) is computed again from ``x`` in
    backward; where neither weight needs one, both convs keep only the size and layout of their inputs (all
    their input gradients read of them). ``pointwise``: a 1x1 conv; ``every_size``: see :func:`lean_applies`."""
    if not lean_applies(x, every_size) or type(pointwise) is not nn.Conv2d or not _plain(pointwise):
        return pointwise(depthwise(x))
    if pointwise.weight.requires_grad:
        form = _one_call(depthwise, x)
        if form is None:
            return pointwise(depthwise(x))
        kept = _Recompute(x, form, depthwise.weight, depthwise.groups)
        conv_input = form.input(x)
        # autograd keeps the hooks with what they packed: they hold ids, not the tensors, which are alive (so
        # their ids are unique) while the block runs
        x_id, input_id = id(x), id(conv_input)
        with torch.autograd.graph.saved_tensors_hooks(
                lambda t: _Kept(kept.input) if id(t) == input_id and id(t) != x_id else t, _unpack):
            mid = form.output(form.conv(conv_input, depthwise.weight, depthwise.groups))
        mid_id = id(mid)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: _Kept(kept.output) if id(t) == mid_id else t,
                                                      _unpack):
            return _conv(pointwise, mid)
    weights = (depthwise.weight, pointwise.weight)
    if not x.requires_grad or any(w.requires_grad for w in weights):
        return pointwise(depthwise(x))
    # both weights frozen: the native convs' own input gradients (a dilated conv with stride > 1 takes its
    # sub-grid form then, layers.DilatedDepthwiseConv2d: keep autograd's)
    if not (_plain(depthwise) and (depthwise.dilation == (1, 1) or depthwise.stride == (1, 1))):
        return pointwise(depthwise(x))
    with torch.autograd.graph.saved_tensors_hooks(_pack_frozen(weights), _unpack):
        return _conv(pointwise, _conv(depthwise, x))


def _pack_frozen(weights: tuple[torch.Tensor, torch.Tensor]):
    """The pack hook of a frozen pair: its convs keep their weights, and of their inputs a stand-in."""

    def pack(t: torch.Tensor):
        if t is weights[0] or t is weights[1]:
            return t
        return StandIn.of(t)
    return pack
