"""The dominant Hessian eigenvalue (RobustDARTS) from Hessian-vector products vs the dense Hessian."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from nasseg.search.hessian import dominant_eigenvalue, exact_hessian
from nasseg.space import load as load_space
from nasseg.supernet import Supernet

TINY_YAML = """\
name: tiny_chain
ops: [skip_connect, dil_conv_3x3, max_pool_3x3]
cell: {inputs: 2, nodes: 2}
network:
  type: chain
  C: 2
  layers: 2
  reductions: [1]
  stem: {type: conv, channels: 4}
  head: {type: classifier}
  classes: 3
"""


def tiny_problem(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_YAML)
    torch.manual_seed(0)
    supernet = Supernet(load_space(path)).double().train()  # BN uses batch statistics in both computations
    with torch.no_grad():
        for alpha in supernet.alphas.values():
            alpha.normal_(0.0, 0.5)
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    return supernet, x, y


def reference_hessian(supernet, x, y) -> torch.Tensor:
    """torch.autograd.functional.hessian of the loss as a function of the alphas alone."""
    names = [f"alphas.{kind}" for kind in supernet.alphas]

    def loss(*alphas):
        return F.cross_entropy(functional_call(supernet, dict(zip(names, alphas)), (x,)), y)

    blocks = torch.autograd.functional.hessian(loss, tuple(a.detach() for a in supernet.alphas.values()))
    return torch.cat([torch.cat(row, dim=1) for row in blocks], dim=0)


def test_eigenvalue_matches_exact(tmp_path):
    supernet, x, y = tiny_problem(tmp_path)
    params = list(supernet.alphas.values())
    assert sum(p.numel() for p in params) == 30  # 2 cell types x 5 edges x 3 ops

    def loss_fn():
        return F.cross_entropy(supernet(x), y)

    reference = reference_hessian(supernet, x, y)
    assert torch.allclose(reference, reference.T, atol=1e-10)
    assert torch.allclose(exact_hessian(loss_fn, params), reference, atol=1e-10)

    expected = float(torch.linalg.eigvalsh(reference)[-1])
    assert abs(expected) > 1e-4  # a non-trivial Hessian
    value, vector, steps = dominant_eigenvalue(loss_fn, params, generator=torch.Generator().manual_seed(0))
    assert abs(value - expected) <= 1e-3 * abs(expected)
    assert steps <= 30
    assert torch.allclose(reference @ vector, value * vector, atol=1e-3 * abs(value))


def test_largest_algebraic_not_magnitude():
    """A quadratic with eigenvalues {-5, 3, 1, 0.5, ...}: the dominant value is 3, not -5."""
    generator = torch.Generator().manual_seed(1)
    eigenvalues = torch.tensor([-5.0, 3.0, 1.0, 0.5, 0.2, 0.0, -0.1, -1.0], dtype=torch.float64)
    basis, _ = torch.linalg.qr(torch.randn(8, 8, generator=generator, dtype=torch.float64))
    matrix = basis @ torch.diag(eigenvalues) @ basis.T
    x = torch.randn(5, generator=generator, dtype=torch.float64, requires_grad=True)
    z = torch.randn(3, generator=generator, dtype=torch.float64, requires_grad=True)

    def loss_fn():
        v = torch.cat([x, z])
        return 0.5 * v @ matrix @ v + v.sum()

    value, vector, steps = dominant_eigenvalue(loss_fn, [x, z], tol=1e-10, generator=generator)
    assert abs(value - 3.0) < 1e-8
    assert steps <= 8
    assert torch.allclose(matrix @ vector, 3.0 * vector, atol=1e-6)
