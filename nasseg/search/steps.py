"""The weight step of a search, and the rule every gradient pass here follows: compute only the
gradients the step needs.

A parameter that requires grad makes autograd keep, in the forward pass, what its gradient
needs: the weight step of DARTS' own code (``loss.backward()`` with the alphas requiring grad)
keeps every candidate op's output for d/d alpha, and an architecture step keeps every conv
input for d/d weight. Freezing the parameters a pass does not update drops those tensors and
that work; the gradients that are computed are the same.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def frozen(params: Iterable[nn.Parameter]) -> Iterator[None]:
    """``requires_grad=False`` on ``params`` inside the block (restored after, also on errors)."""
    params = [p for p in params if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextlib.contextmanager
def fixed_structure(model) -> Iterator[None]:
    """Inside the block every forward pass makes the same calls in the same order, whatever the
    alphas: the ops kept by ``prune_below`` are those of the alphas on entry, and activation
    checkpointing is off. Finite differences under hessian.FrozenKinks need both: the pattern is
    replayed call by call, and CUDA runs backward (so the recomputation) on another thread,
    where the mode does not apply."""
    if not hasattr(model, "checkpoint_cells"):
        yield
        return
    checkpointing, pinned = model.checkpoint_cells, model.pinned_active
    with torch.no_grad():
        model.pinned_active = model.active_ops({t: model.edge_weights(t) for t in model.alphas})
    model.checkpoint_cells = False
    try:
        yield
    finally:
        model.checkpoint_cells, model.pinned_active = checkpointing, pinned


def weight_step(model, criterion: Criterion, x: torch.Tensor, y: torch.Tensor,
                optimizer: torch.optim.Optimizer, grad_clip: float | None) -> tuple[float, torch.Tensor]:
    """One SGD step of the supernet weights on (x, y), the alphas/betas held fixed; (loss, logits)."""
    weights = list(model.weight_parameters())
    optimizer.zero_grad(set_to_none=True)
    with frozen(model.arch_parameters()):
        logits = model(x)
        loss = criterion(logits, y)
        loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(weights, grad_clip)
    optimizer.step()
    return loss.item(), logits.detach()

