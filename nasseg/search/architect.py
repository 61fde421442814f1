"""Architecture gradients: DARTS first and second order (Liu et al. 2019, eq. 6-8).

First order: grad_alpha L_val(w, alpha).
Second order: with the real optimizer update w' = w - xi (momentum * buf + grad_w L_train(w) + wd w),
    grad = grad_alpha L_val(w', alpha) - xi * H v,   v = grad_w' L_val(w', alpha),
    H v ~ (grad_alpha L_train(w + R v) - grad_alpha L_train(w - R v)) / (2R),  R = 0.01 / ||v||.
All passes here leave BatchNorm running statistics untouched (only real weight steps update them),
and each freezes the parameters it needs no gradient for (see steps.py).

``difference="forward"`` replaces the central difference by
    H v ~ (grad_alpha L_train(w + R v) - grad_alpha L_train(w)) / R,
taking grad_alpha L_train(w) from the unrolled step's pass (which then also computes alpha
gradients) and running the w + R v pass with the ReLU / max-pool pattern of w frozen
(hessian.FrozenKinks): one training pass fewer, and the quotient tends to the exact mixed
derivative instead of jumping with every ReLU that switches between w - Rv and w + Rv.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
from torch import nn

from ..layers import frozen_bn_stats
from .hessian import FrozenKinks, same_random_draws
from .steps import fixed_structure, frozen

DIFFERENCES = ("central", "forward")

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def first_order_grads(model, loss_fn: LossFn, x_val, y_val) -> list[torch.Tensor]:
    arch = model.arch_parameters()
    with frozen_bn_stats(model), frozen(model.weight_parameters()):
        loss = loss_fn(model, x_val, y_val)
        return list(torch.autograd.grad(loss, arch))


def second_order_grads(model, loss_fn: LossFn, x_train, y_train, x_val, y_val,
                       optimizer: torch.optim.SGD, xi: float, r: float = 1e-2,
                       difference: str = "central") -> list[torch.Tensor]:
    """The unrolled architecture gradient with the finite-difference Hessian-vector product.

    ``optimizer`` is the weights' SGD: its momentum buffers, momentum and weight decay define the
    virtual step, exactly as the real update would apply them (DARTS architect.py).
    ``difference``: ``central`` (DARTS) or ``forward`` (module docstring).
    """
    if difference not in DIFFERENCES:
        raise ValueError(f"difference {difference!r}: expected one of {', '.join(DIFFERENCES)}")
    weights = list(model.weight_parameters())
    arch = model.arch_parameters()
    group = optimizer.param_groups[0]
    momentum, weight_decay = group["momentum"], group["weight_decay"]
    forward = difference == "forward"
    kinks = FrozenKinks()
    # forward: the w and w + Rv passes see the same random draws (a noise op), drawn from the global stream
    seed = int(torch.randint(2**62, (1,))) if forward else 0

    def pattern(mode: FrozenKinks) -> contextlib.AbstractContextManager:
        """forward: record (at w) or replay (at w + Rv) the kinks, with the same random draws."""
        if not forward:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(same_random_draws(seed, x_train.device))
        stack.enter_context(mode)
        return stack

    with frozen_bn_stats(model), (fixed_structure(model) if forward else contextlib.nullcontext()):
        saved = [w.detach().clone() for w in weights]
        # virtual step w' = w - xi * (momentum * buf + grad + wd * w)
        with pattern(kinks.recording()), (contextlib.nullcontext() if forward else frozen(arch)):
            outs = torch.autograd.grad(loss_fn(model, x_train, y_train), (arch if forward else []) + weights,
                                       allow_unused=True)
        at_w, grads = (outs[: len(arch)], outs[len(arch):]) if forward else (None, outs)
        with torch.no_grad():
            for w, g in zip(weights, grads):
                step = (g if g is not None else torch.zeros_like(w)) + weight_decay * w
                buf = optimizer.state.get(w, {}).get("momentum_buffer")
                if buf is not None:
                    step = step + momentum * buf
                w.sub_(xi * step)
        # gradient of the validation loss at w'
        val_loss = loss_fn(model, x_val, y_val)
        outs = torch.autograd.grad(val_loss, arch + weights, allow_unused=True)
        d_alpha = [g if g is not None else torch.zeros_like(a) for g, a in zip(outs[: len(arch)], arch)]
        v = [g if g is not None else torch.zeros_like(w) for g, w in zip(outs[len(arch):], weights)]
        with torch.no_grad():
            for w, s in zip(weights, saved):
                w.copy_(s)
        # finite-difference Hessian-vector product at w (not w')
        radius = r / torch.cat([d.reshape(-1) for d in v]).norm()
        arch_grads = []
        for sign in ((1.0,) if forward else (1.0, -2.0)):
            with torch.no_grad():
                for w, d in zip(weights, v):
                    w.add_(sign * radius * d)
            with frozen(weights), pattern(kinks.replaying()):
                arch_grads.append(torch.autograd.grad(loss_fn(model, x_train, y_train), arch))
        with torch.no_grad():
            for w, s in zip(weights, saved):
                w.copy_(s)
        if forward:
            return [g - xi * (p - b) / radius for g, p, b in zip(d_alpha, arch_grads[0], at_w)]
        plus, minus = arch_grads
        return [g - xi * (p - m) / (2 * radius) for g, p, m in zip(d_alpha, plus, minus)]


def set_arch_grads(model, grads: Sequence[torch.Tensor]) -> None:
    for param, grad in zip(model.arch_parameters(), grads):
        param.grad = grad.detach().clone()
