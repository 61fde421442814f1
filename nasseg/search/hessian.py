"""The dominant eigenvalue of the Hessian of a loss w.r.t. the architecture parameters.

RobustDARTS (Zela et al. 2020) tracks it to detect degenerate searches. Their code builds the
full Hessian (one backward pass per alpha) and takes ``max(numpy.linalg.eigvals(H))``: the
largest *algebraic* eigenvalue, not the largest in magnitude. We compute the same value from
Hessian-vector products with Lanczos (full reorthogonalisation): one forward pass, one
``autograd.grad(create_graph=True)``, then one double-backward per step on that graph. Power
iteration would converge to the largest-magnitude eigenvalue instead, which differs whenever the
Hessian has a larger negative eigenvalue (alphas are not at a minimum during search).

The loss is evaluated once, in whatever mode the model is in: RobustDARTS evaluates it in train
mode (BatchNorm with batch statistics) on a validation batch, and its Hessian includes the
alpha weight decay (``+ wd * I``); add ``0.5 * wd * ||alpha||^2`` to the loss to get theirs.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

LossFn = Callable[[], torch.Tensor]


def hessian_vector_product(loss_fn: LossFn, params: Sequence[torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> H v`` for the Hessian of ``loss_fn()`` w.r.t. ``params`` (flattened, in order).

    The loss and its gradient graph are built once; every product reuses them.
    """
    params = list(params)
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    live = [(g, i) for i, g in enumerate(grads) if g is not None and g.requires_grad]
    sizes = [p.numel() for p in params]

    def hvp(vector: torch.Tensor) -> torch.Tensor:
        parts = torch.split(vector, sizes)
        out = [torch.zeros_like(p).reshape(-1) for p in params]
        if live:
            dot = sum((g * parts[i].view_as(g)).sum() for g, i in live)
            hv = torch.autograd.grad(dot, params, retain_graph=True, allow_unused=True)
            out = [h.reshape(-1) if h is not None else o for h, o in zip(hv, out)]
        return torch.cat(out).detach()

    return hvp


def dominant_eigenvalue(loss_fn: LossFn, params: Sequence[torch.Tensor], iters: int = 50, tol: float = 1e-4,
                        generator: torch.Generator | None = None,
                        start: torch.Tensor | None = None) -> tuple[float, torch.Tensor, int]:
    """(largest algebraic eigenvalue, unit eigenvector flattened over ``params``, Lanczos steps).

    Lanczos runs at most ``iters`` steps (one Hessian-vector product each, and never more than
    the dimension) and stops once the Ritz residual ``|beta_j s_j|`` is at most ``tol`` times
    the eigenvalue's magnitude. ``generator`` (a CPU generator) seeds the start vector; ``start``
    (e.g. the previous epoch's eigenvector) replaces it: the closer it is to the answer, the
    fewer steps; one CamVid epoch apart it saved 1 of 7 (docs/performance.md).
    """
    params = list(params)
    hvp = hessian_vector_product(loss_fn, params)
    reference = params[0]
    n = sum(p.numel() for p in params)
    if start is None or start.numel() != n or not torch.isfinite(start).all() or start.norm() == 0:
        start = torch.randn(n, generator=generator, dtype=torch.float64)
    start = start.detach().to(dtype=torch.float64, device="cpu")
    q = (start / start.norm()).to(device=reference.device, dtype=reference.dtype)

    basis = [q]
    diagonal: list[float] = []
    off_diagonal: list[float] = []
    for step in range(1, min(iters, n) + 1):
        w = hvp(basis[-1])
        diagonal.append(float(basis[-1] @ w))
        q_block = torch.stack(basis)
        for _ in range(2):  # full reorthogonalisation, twice for floating-point safety
            w = w - q_block.T @ (q_block @ w)
        beta = float(w.norm())
        tridiagonal = torch.diag(torch.tensor(diagonal, dtype=torch.float64))
        if off_diagonal:
            offsets = torch.tensor(off_diagonal, dtype=torch.float64)
            tridiagonal += torch.diag(offsets, 1) + torch.diag(offsets, -1)
        ritz_values, ritz_vectors = torch.linalg.eigh(tridiagonal)
        theta, s = float(ritz_values[-1]), ritz_vectors[:, -1]
        if beta * abs(float(s[-1])) <= tol * abs(theta) or step == min(iters, n) or beta == 0.0:
            break
        off_diagonal.append(beta)
        basis.append(w / beta)
    eigvec = q_block.T @ s.to(device=reference.device, dtype=reference.dtype)
    return theta, eigvec / eigvec.norm(), step


def exact_hessian(loss_fn: LossFn, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The dense n x n Hessian, one Hessian-vector product per unit vector (for tests and small spaces)."""
    params = list(params)
    hvp = hessian_vector_product(loss_fn, params)
    n = sum(p.numel() for p in params)
    eye = torch.eye(n, dtype=params[0].dtype, device=params[0].device)
    return torch.stack([hvp(eye[i]) for i in range(n)])


__all__ = ["dominant_eigenvalue", "exact_hessian", "hessian_vector_product"]
