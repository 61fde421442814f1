"""Architecture gradients: DARTS first and second order (Liu et al. 2019, eq. 6-8).

First order: grad_alpha L_val(w, alpha).
Second order: with the real optimizer update w' = w - xi (momentum * buf + grad_w L_train(w) + wd w),
    grad = grad_alpha L_val(w', alpha) - xi * H v,   v = grad_w' L_val(w', alpha),
    H v ~ (grad_alpha L_train(w + R v) - grad_alpha L_train(w - R v)) / (2R),  R = 0.01 / ||v||.
All passes here leave BatchNorm running statistics untouched (only real weight steps update them),
and each freezes the parameters it needs no gradient for (see steps.py).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..layers import frozen_bn_stats
from .steps import frozen

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def first_order_grads(model, loss_fn: LossFn, x_val, y_val) -> list[torch.Tensor]:
    arch = model.arch_parameters()
    with frozen_bn_stats(model), frozen(model.weight_parameters()):
        loss = loss_fn(model, x_val, y_val)
        return list(torch.autograd.grad(loss, arch))


def second_order_grads(model, loss_fn: LossFn, x_train, y_train, x_val, y_val,
                       optimizer: torch.optim.SGD, xi: float, r: float = 1e-2) -> list[torch.Tensor]:
    """The unrolled architecture gradient with the finite-difference Hessian-vector product.

    ``optimizer`` is the weights' SGD: its momentum buffers, momentum and weight decay define the
    virtual step, exactly as the real update would apply them (DARTS architect.py).
    """
    weights = list(model.weight_parameters())
    arch = model.arch_parameters()
    group = optimizer.param_groups[0]
    momentum, weight_decay = group["momentum"], group["weight_decay"]
    with frozen_bn_stats(model):
        saved = [w.detach().clone() for w in weights]
        # virtual step w' = w - xi * (momentum * buf + grad + wd * w)
        with frozen(arch):
            grads = torch.autograd.grad(loss_fn(model, x_train, y_train), weights, allow_unused=True)
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
        radius = r / _flat(v).norm()
        arch_grads = []
        for sign in (1.0, -2.0):
            with torch.no_grad():
                for w, d in zip(weights, v):
                    w.add_(sign * radius * d)
            with frozen(weights):
                arch_grads.append(torch.autograd.grad(loss_fn(model, x_train, y_train), arch))
        with torch.no_grad():
            for w, s in zip(weights, saved):
                w.copy_(s)
        plus, minus = arch_grads
        return [g - xi * (p - m) / (2 * radius) for g, p, m in zip(d_alpha, plus, minus)]


def set_arch_grads(model, grads: Sequence[torch.Tensor]) -> None:
    for param, grad in zip(model.arch_parameters(), grads):
        param.grad = grad.detach().clone()
