"""The dominant eigenvalue of the Hessian of a loss w.r.t. the architecture parameters.

RobustDARTS (Zela et al. 2020) tracks it to detect degenerate searches. Their code builds the
full Hessian (one backward pass per alpha) and takes ``max(numpy.linalg.eigvals(H))``: the
largest *algebraic* eigenvalue, not the largest in magnitude. We compute the same value from
Hessian-vector products with Lanczos (full reorthogonalisation). Power iteration would converge
to the largest-magnitude eigenvalue instead, which differs whenever the Hessian has a larger
negative eigenvalue (alphas are not at a minimum during search).

Three ways to get ``H v`` (``method``):

* ``exact``: one forward pass, one ``autograd.grad(create_graph=True)``, then one double backward
  per product on that graph. Each product costs about three plain gradient passes.
* ``forward`` / ``central``: finite differences of the alpha gradient,
  ``H v ~ (g(a + e v) - g(a)) / e`` or ``(g(a + e v) - g(a - e v)) / 2e``, each ``g`` one gradient
  pass that computes nothing but alpha gradients (the caller freezes the weights): ``forward``
  costs one pass per product plus one for ``g(a)``, about 3x cheaper than ``exact``.
  A supernet is only piecewise smooth: ReLUs and max pools switch under a perturbation, and on
  the epoch-18 CamVid supernet a plain difference quotient gave 21x (forward, e = 1e-3) and 5.7x
  (central, e = 1e-2) the autograd eigenvalue. So every gradient of the difference runs with the
  ReLU masks and max-pool choices of ``a`` frozen (:class:`FrozenKinks`): that function has
  exactly autograd's gradient and Hessian at ``a``, and the quotient converges to the exact
  product with an O(e) (``forward``) or O(e^2) error, until float32 rounding takes over (below
  e = 1e-4 on a flat CamVid loss; measured accuracies in docs/search.md). The forward passes
  must make the same calls in the same order: the search loop holds pruning and checkpointing
  fixed around them (``steps.fixed_structure``).

The loss is evaluated in whatever mode the model is in: RobustDARTS evaluates it in train mode
(BatchNorm with batch statistics) on a validation batch, and its Hessian includes the alpha
weight decay (``+ wd * I``); add ``0.5 * wd * ||alpha||^2`` to the loss to get theirs.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..layers import is_nhwc
from ..lean import relu_apart, twice_differentiable

LossFn = Callable[[], torch.Tensor]
Hvp = Callable[[torch.Tensor], torch.Tensor]
METHODS = ("exact", "forward", "central")


def hessian_vector_product(loss_fn: LossFn, params: Sequence[torch.Tensor]) -> Hvp:
    """``v -> H v`` for the Hessian of ``loss_fn()`` w.r.t. ``params`` (flattened, in order), exact.

    The loss and its gradient graph are built once; every product reuses them.
    """
    params = list(params)
    with twice_differentiable():  # the graph is differentiated twice: no lean layers in it
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


@contextlib.contextmanager
def same_random_draws(seed: int, device: torch.device):
    """Every loss evaluation inside sees the same random numbers (e.g. RobustDARTS' noise op), as
    the exact product's single forward pass does; the caller's RNG state is left untouched."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


_RELUS = {F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}
# what a torch-function mode receives for F.max_pool2d / nn.MaxPool2d without and with indices
_MAX_POOLS = {F.max_pool2d, F.max_pool2d_with_indices}


class FrozenKinks(TorchFunctionMode):
    """Record (``replay=False``) or impose (``replay=True``) the on/off pattern of every ReLU and
    the chosen element of every 2-d max pool, call by call in execution order.

    Under ``replay`` a ReLU becomes ``x * mask`` and a max pool a gather at the recorded
    indices: a function smooth in the inputs that equals the network at the recorded point with
    the same first and second autograd derivatives there. The forward passes must make the same
    calls in the same order (a fixed model and batch do).
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: list[torch.Tensor] = []
        self.replay = False
        self.position = 0

    def __enter__(self) -> "FrozenKinks":
        self._apart = relu_apart()  # every ReLU a call of its own, seen here (nasseg.lean)
        self._apart.__enter__()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._apart.__exit__(*exc)

    def recording(self) -> "FrozenKinks":
        self.records, self.replay = [], False
        return self

    def replaying(self) -> "FrozenKinks":
        self.replay, self.position = True, 0
        return self

    def _next(self, shape: torch.Size, dims: int | None = None) -> torch.Tensor:
        """The next record; it must have ``shape`` (its first ``dims`` dimensions only, if given)."""
        if self.position >= len(self.records) or self.records[self.position].shape[:dims] != shape[:dims]:
            raise RuntimeError("FrozenKinks: the replayed forward pass differs from the recorded one "
                               f"at call {self.position} (a data-dependent branch?)")
        self.position += 1
        return self.records[self.position - 1]

    def __torch_function__(self, func, types, args=(), kwargs=None) -> Any:
        kwargs = kwargs or {}
        if func in _RELUS:
            x = args[0]
            inplace = func in (F.relu_, torch.relu_, torch.Tensor.relu_) or kwargs.get("inplace") or \
                (len(args) > 1 and args[1] is True)
            if not self.replay:
                self.records.append(x > 0)
                return func(*args, **kwargs)
            mask = self._next(x.shape)
            if mask.dtype != x.dtype:  # recorded as bool; x * float mask is as fast as a ReLU, x * bool 2x slower
                mask = self.records[self.position - 1] = mask.to(x.dtype)
            return x.mul_(mask) if inplace else x * mask
        if func in _MAX_POOLS:
            if not self.replay:
                out, index = F.max_pool2d_with_indices(*args[:6], **dict(kwargs, return_indices=True))
                self.records.append(index)
            else:
                index = self._next(args[0].shape, dims=2)
                out = _gather_pooled(args[0], index)
            return (out, index) if func is F.max_pool2d_with_indices else out
        return func(*args, **kwargs)


def _gather_pooled(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) at the flat H*W positions ``index`` (N, C, h, w): a max pool whose choice is
    given. Gathers in x's own memory layout, so an NHWC tensor is not copied to NCHW first."""
    if not is_nhwc(x):
        return x.flatten(2).gather(2, index.flatten(2)).view(index.shape)
    n, c, h, w = index.shape
    nhwc = x.permute(0, 2, 3, 1).flatten(1, 2)  # (N, H*W, C), a view
    out = nhwc.gather(1, index.permute(0, 2, 3, 1).reshape(n, h * w, c))
    return out.view(n, h, w, c).permute(0, 3, 1, 2)


def finite_difference_hvp(loss_fn: LossFn, params: Sequence[torch.Tensor], epsilon: float = 1e-4,
                          central: bool = False, seed: int = 0) -> Hvp:
    """``v -> H v`` by finite differences of ``grad loss_fn()`` along ``v`` (a unit vector), step ``epsilon``.

    ``params`` are moved in place for each gradient and restored bit for bit after it.
    """
    params = list(params)
    sizes = [p.numel() for p in params]
    saved = [p.detach().clone() for p in params]
    kinks = FrozenKinks()

    def gradient(kink_mode: FrozenKinks) -> torch.Tensor:
        with same_random_draws(seed, params[0].device), kink_mode:
            grads = torch.autograd.grad(loss_fn(), params, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])

    def gradient_at(vector: torch.Tensor, step: float) -> torch.Tensor:
        with torch.no_grad():
            for p, d in zip(params, torch.split(vector, sizes)):
                p.add_(step * d.view_as(p))
        try:
            return gradient(kinks.replaying())
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)

    # the pattern is recorded in a pass shaped like the replayed ones (a checkpointed model
    # recomputes inside backward, and those calls must line up too)
    base = gradient(kinks.recording())

    def hvp(vector: torch.Tensor) -> torch.Tensor:
        if central:
            return (gradient_at(vector, epsilon) - gradient_at(vector, -epsilon)) / (2 * epsilon)
        return (gradient_at(vector, epsilon) - base) / epsilon

    return hvp


def make_hvp(loss_fn: LossFn, params: Sequence[torch.Tensor], method: str = "exact",
             epsilon: float = 1e-4, seed: int = 0) -> Hvp:
    if method == "exact":
        return hessian_vector_product(loss_fn, params)
    if method in ("forward", "central"):
        return finite_difference_hvp(loss_fn, params, epsilon, central=method == "central", seed=seed)
    raise ValueError(f"Hessian-vector product method {method!r}: expected one of {', '.join(METHODS)}")


def lanczos_top(hvp: Hvp, n: int, reference: torch.Tensor, iters: int = 50, tol: float = 1e-4,
                generator: torch.Generator | None = None, start: torch.Tensor | None = None,
                with_residual: bool = False) -> tuple[Any, ...]:
    """(largest algebraic eigenvalue, unit eigenvector, steps) of the symmetric n x n operator ``hvp``,
    and with ``with_residual`` the Ritz residual ``r`` of the returned pair as a fourth element.

    Lanczos runs at most ``iters`` steps (one product each, never more than ``n``) and stops once
    the Ritz residual ``r = |beta_j s_j|`` of the top Ritz pair is at most ``tol`` times its value,
    ARPACK's test: some eigenvalue then lies within ``r`` of it. A sharper, gap-based estimate
    ``r**2 / gap`` (Kato-Temple with the next Ritz value as the gap) is not safe here: it assumes
    the top Ritz value already approximates the top eigenvalue, and when the start vector leans
    towards the second eigenvector of a close pair, the Ritz value settles on that one first.
    On a CamVid supernet (top eigenvalues 0.0978 and 0.0885, warm start) the estimate fell below
    1 % at step 4 with the value 9.5 % low; the residual rule ran to step 10 (0.05 % low).
    ``reference`` gives the device and dtype of the vectors.

    The residual ``r = ||H v - theta v||`` (``v`` the returned vector) bounds the distance from
    ``theta`` to the nearest eigenvalue of ``hvp``; it is the error bar a report can show. It does not
    say that this eigenvalue is the largest one (only a dense check can), and with finite-difference
    products it bounds the distance to an eigenvalue of the differenced operator.
    """
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
        residual = beta * abs(float(s[-1]))
        if residual <= tol * abs(theta) or step == min(iters, n) or beta == 0.0:
            break
        off_diagonal.append(beta)
        basis.append(w / beta)
    eigvec = q_block.T @ s.to(device=reference.device, dtype=reference.dtype)
    pair = (theta, eigvec / eigvec.norm(), step)
    return (*pair, residual) if with_residual else pair


def dominant_eigenvalue(loss_fn: LossFn, params: Sequence[torch.Tensor], iters: int = 50, tol: float = 1e-4,
                        generator: torch.Generator | None = None, start: torch.Tensor | None = None,
                        method: str = "exact", epsilon: float = 1e-4, with_residual: bool = False) -> tuple[Any, ...]:
    """(largest algebraic eigenvalue, unit eigenvector flattened over ``params``, Lanczos steps), and
    with ``with_residual`` the Ritz residual bound ``||H v - theta v||`` (:func:`lanczos_top`).

    ``generator`` (a CPU generator) seeds the start vector; ``start`` (e.g. the previous epoch's
    eigenvector) replaces it. ``method`` / ``epsilon``: how ``H v`` is computed (module docstring).
    """
    params = list(params)
    hvp = make_hvp(loss_fn, params, method, epsilon)
    n = sum(p.numel() for p in params)
    return lanczos_top(hvp, n, params[0], iters, tol, generator, start, with_residual)


def exact_hessian(loss_fn: LossFn, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The dense n x n Hessian, one Hessian-vector product per unit vector (for tests and small spaces)."""
    params = list(params)
    hvp = hessian_vector_product(loss_fn, params)
    n = sum(p.numel() for p in params)
    eye = torch.eye(n, dtype=params[0].dtype, device=params[0].device)
    return torch.stack([hvp(eye[i]) for i in range(n)])

