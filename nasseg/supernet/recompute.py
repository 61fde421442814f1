"""Activation checkpointing of one supernet state, lean enough for the lattice's tiny calls.

``supernet.checkpoint`` keeps, of each state, only its inputs; backward runs the state's forward again
and differentiates that. torch.utils.checkpoint (non-reentrant) does this with saved-tensor hooks: its
first forward builds the autograd graph and then drops what it saved, and every saved tensor passes
through Python hooks three times (pack, recomputed pack, unpack). An Auto-DeepLab state at batch 2 saves
thousands of small tensors, so those hooks and the discarded graph cost about as much as the
recomputation. :func:`recompute_in_backward` is the reentrant design instead: a custom autograd Function
whose forward runs without building a graph and saves only the state's inputs, and whose backward
recomputes with grad and differentiates the region with ``torch.autograd.grad``. The region's
parameters that need a gradient are explicit inputs of the Function, so ``autograd.grad(inputs=...)``
from outside reaches them (which torch's reentrant checkpoint refuses). A backward that builds a graph
itself (``create_graph=True``, double backward) recomputes from views of the saved inputs, attached to
them, so the gradient stays differentiable in them.

The recomputation must compute what the first forward did: the random generator's state is restored when
the region draws random numbers, autocast is entered as it was, and training-mode BatchNorms make the
same call without moving their running statistics a second time.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers import all_modules, running_stats_untouched


def region_members(roots: Sequence[nn.Module]) -> tuple[list[nn.Parameter], list[_BatchNorm]]:
    """The parameters and the BatchNorms of ``roots`` and all their submodules (:func:`all_modules`)."""
    modules = all_modules(roots)
    params = [p for module in modules for p in module._parameters.values() if p is not None]
    return params, [m for m in modules if isinstance(m, _BatchNorm)]


class _Recomputed(torch.autograd.Function):
    """Inputs: the region's function and settings, then its tensors (``count`` of them, saved), then the
    parameters that need a gradient (not saved: the modules hold them)."""

    @staticmethod
    def forward(ctx, run, batch_norms, settings, count, *tensors):
        ctx.run, ctx.batch_norms, ctx.settings, ctx.count = run, batch_norms, settings, count
        ctx.params = tensors[count:]
        ctx.save_for_backward(*tensors[:count])
        return run(*tensors[:count])  # grad mode is off here: no graph is built

    @staticmethod
    def backward(ctx, grad_output):
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad[4:]
        differentiable = torch.is_grad_enabled()  # backward(create_graph=True): keep the graph to the inputs
        # the region's gradient stops at its inputs: detached copies, or (to stay differentiable in
        # them) views of them, nodes of their own, so that autograd.grad does not also follow one input
        # back through the graph into another (a state's history reaches the alphas)
        inputs = [t.view_as(t) for t in saved] if differentiable else \
            [t.detach().requires_grad_(need) for t, need in zip(saved, needs)]
        with torch.enable_grad(), ctx.settings.restored(), running_stats_untouched(ctx.batch_norms):
            output = ctx.run(*inputs)
        wrt = [t for t, need in zip(inputs, needs) if need] + list(ctx.params)
        grads = iter(torch.autograd.grad(output, wrt, grad_output, allow_unused=True,
                                         create_graph=differentiable) if wrt else ())
        return (None, None, None, None, *[next(grads) if need else None for need in needs[:ctx.count]],
                *[next(grads) for _ in ctx.params])


class _Settings:
    """What the recomputation must see as the first forward did: autocast and (for regions that draw
    random numbers) the random generator's state, both of the inputs' device."""

    def __init__(self, device: torch.device, random: bool):
        self.device, self.device_type = device, device.type
        # (meta tensors, for the memory planner, have no autocast)
        self.has_autocast = torch.amp.is_autocast_available(self.device_type)
        self.autocast = self.has_autocast and torch.is_autocast_enabled(self.device_type)
        self.autocast_dtype = torch.get_autocast_dtype(self.device_type) if self.has_autocast else None
        self.rng = None
        if random:
            self.rng = torch.get_rng_state() if device.type == "cpu" else \
                (torch.get_rng_state(), torch.cuda.get_rng_state(device))

    @contextlib.contextmanager
    def restored(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            if self.has_autocast:  # on or off as in the first forward, whatever the backward's caller set
                stack.enter_context(torch.autocast(self.device_type, dtype=self.autocast_dtype, enabled=self.autocast))
            if self.rng is not None:  # drawn again from the same state; the caller's generators move on as before
                devices = [] if self.device_type == "cpu" else [self.device]
                stack.enter_context(torch.random.fork_rng(devices=devices, device_type=self.device_type))
                if self.device_type == "cpu":
                    torch.set_rng_state(self.rng)
                else:
                    torch.set_rng_state(self.rng[0])
                    torch.cuda.set_rng_state(self.rng[1], self.device)
            yield


def recompute_in_backward(run: Callable[..., torch.Tensor], tensors: Sequence[torch.Tensor],
                          params: Sequence[nn.Parameter], batch_norms: Sequence[_BatchNorm],
                          random: bool = False) -> torch.Tensor:
    """``run(*tensors)``, keeping only ``tensors`` for backward, which runs it again (see the module's doc).

    ``params`` and ``batch_norms``: those of the modules ``run`` calls (:func:`region_members`); the
    parameters that need a gradient get it, the BatchNorms' running statistics move only in the first
    forward. ``random``: ``run`` draws random numbers, so the recomputation restores the generator's
    state first."""
    settings = _Settings(tensors[0].device, random)
    return _Recomputed.apply(run, batch_norms, settings, len(tensors), *tensors,
                             *[p for p in params if p.requires_grad])
