"""Fast path ``lean_saved`` (nasseg.lean): the candidate ops keep fewer tensors for backward and compute the
same logits, gradients and BatchNorm statistics (float64), in the weight and in the architecture step."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from nasseg import fastpaths, lean
from nasseg.layers import GroupBatchNorm2d, to_channels_last
from nasseg.lean import twice_differentiable
from nasseg.search.hessian import FrozenKinks, finite_difference_hvp
from nasseg.search.steps import fixed_structure, frozen
from nasseg.shell.bench.nets import bench_space
from nasseg.supernet import Supernet
from nasseg.supernet.depthwise import BatchedSubgridConv2d, LeanDilConv, LeanSepConv


@pytest.fixture(autouse=True)
def lean_at_every_size(monkeypatch):
    """These nets are small: the lean layers take tensors of any size here."""
    monkeypatch.setattr(lean, "MIN_ELEMENTS", 0)


def tiny(name: str, lean: bool | None = None, layout: torch.memory_format = torch.contiguous_format) -> Supernet:
    torch.manual_seed(0)
    net = Supernet(bench_space(name, width=4, layers=3), 5, lean_saved=lean).double()
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    return to_channels_last(net) if layout == torch.channels_last else net


def step_results(net: Supernet, step: str, lean: bool, x: torch.Tensor, y: torch.Tensor):
    """Logits, the step's gradients and the buffers after one forward + backward of a copy of ``net``."""
    net = copy.deepcopy(net)
    wrt, other = (net.weight_parameters(), net.arch_parameters()) if step == "weight" else \
        (net.arch_parameters(), net.weight_parameters())
    with fastpaths.overridden(lean_saved=lean), frozen(other):
        logits = net(x)
        grads = torch.autograd.grad(F.cross_entropy(logits, y), list(wrt), allow_unused=True)
    return logits.detach(), grads, [b.clone() for b in net.buffers()]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("name", ["darts", "autodeeplab"])
@pytest.mark.parametrize("step", ["weight", "arch"])
def test_lean_ops_compute_the_same_logits_gradients_and_statistics(name, step, layout):
    net = tiny(name, lean=True, layout=layout)  # the lattice takes it only when asked (supernet.lean_saved)
    assert any(isinstance(m, LeanSepConv) for m in net.modules()) and any(isinstance(m, LeanDilConv)
                                                                          for m in net.modules())
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64).contiguous(memory_format=layout)
    y = torch.randint(0, 5, (2, 16, 16))
    (logits_a, grads_a, buffers_a), (logits_b, grads_b, buffers_b) = (step_results(net, step, lean, x, y)
                                                                      for lean in (False, True))
    assert torch.equal(logits_a, logits_b)
    assert all(torch.equal(a, b) for a, b in zip(buffers_a, buffers_b))  # running statistics and counts
    assert [g is None for g in grads_a] == [g is None for g in grads_b]
    scale = max(g.abs().max() for g in grads_a if g is not None)
    assert scale > 1e-3
    for a, b in zip(grads_a, grads_b):
        if a is not None:
            torch.testing.assert_close(b, a, rtol=0, atol=1e-12 * scale)


def test_lean_ops_by_default_on_chain_networks_only():
    assert tiny("darts").lean_saved and not tiny("autodeeplab").lean_saved
    plain = tiny("darts", lean=False)
    assert plain.lean_saved is False
    assert not any(isinstance(m, (LeanSepConv, LeanDilConv)) for m in plain.modules())
    # by default only tensors of at least MIN_ELEMENTS; asked for (supernet.lean_saved: true), every size
    for net, every_size in ((tiny("darts"), False), (tiny("autodeeplab", lean=True), True)):
        ops = [m for m in net.modules() if isinstance(m, (LeanSepConv, LeanDilConv))]
        norms = [m for m in net.modules() if isinstance(m, GroupBatchNorm2d) and m.keeps_output]
        assert ops and norms
        assert all(m.every_size == every_size for m in ops) and all(m.lean_every_size == every_size for m in norms)


def pair(depthwise: torch.nn.Conv2d, channels: int):
    """A depthwise conv (the given one, double) and a 1x1 conv, in NHWC, as the candidate ops run them."""
    torch.manual_seed(1)
    pointwise = torch.nn.Conv2d(channels, channels, 1, bias=False)
    return depthwise.double().to(memory_format=torch.channels_last), \
        pointwise.double().to(memory_format=torch.channels_last)


def counting_kept(monkeypatch) -> list:
    """The parts lean.depthwise_pointwise computes again in backward, as they are packed."""
    made = []

    class Kept(lean._Kept):
        def __new__(cls, part):
            made.append(part.__name__)
            return super().__new__(cls, part)
    monkeypatch.setattr(lean, "_Kept", Kept)
    return made


@pytest.mark.parametrize("kind", ["plain", "subgrids", "strided"])
def test_weight_step_pair_computes_the_depthwise_conv_again(monkeypatch, kind):
    """In the weight step the pair keeps x and computes the depthwise output (and, for a dilated conv on its
    sub-grids, their stacked copy) again in backward: the same gradients as torch's layers, and less kept."""
    channels = 4
    if kind == "plain":
        depthwise = torch.nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False)
    else:  # stride 1: all sub-grids stacked along the batch; stride d: sub-grid (0, 0) (layers.conv_on_subsampled)
        depthwise = BatchedSubgridConv2d(channels, channels, 3, 1 if kind == "subgrids" else 2, 2, 2,
                                         groups=channels, bias=False)
    depthwise, pointwise = pair(depthwise, channels)
    x0 = torch.randn(2, channels, 16, 16, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    assert lean._one_call(depthwise, x0.requires_grad_()) is not None
    grad_out = torch.randn(2, channels, *[16 if kind == "subgrids" else 16 // depthwise.stride[0]] * 2,
                           dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    made = counting_kept(monkeypatch)
    results = []
    for on in (False, True):
        x = x0.detach().requires_grad_()
        with fastpaths.overridden(lean_saved=on):
            out = lean.depthwise_pointwise(depthwise, pointwise, x, every_size=True)
        results.append((out.detach(), *torch.autograd.grad(out, [x, depthwise.weight, pointwise.weight], grad_out)))
    assert made == (["output"] if kind == "plain" else ["input", "output"])
    assert [t.stride() for t in results[1]] == [t.stride() for t in results[0]]  # the same layouts
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-13)


def test_frozen_pair_keeps_no_tensor_and_refuses_in_place_changes():
    channels = 4
    depthwise, pointwise = pair(torch.nn.Conv2d(channels, channels, 5, 1, 2, groups=channels, bias=False), channels)
    for conv in (depthwise, pointwise):
        conv.requires_grad_(False)
    x = torch.randn(2, channels, 8, 8, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        lean_out = lean.depthwise_pointwise(depthwise, pointwise, x, every_size=True)
    assert kept == []  # the pair's own hooks packed the convs' inputs as sizes
    native_out = pointwise(depthwise(x))
    grad = torch.randn_like(native_out)
    torch.testing.assert_close(torch.autograd.grad(lean_out, x, grad)[0], torch.autograd.grad(native_out, x, grad)[0],
                               rtol=0, atol=1e-13)
    # the weight step's pair computes from x again: an in-place change of x in between is an error
    depthwise.requires_grad_(True), pointwise.requires_grad_(True)
    h = torch.relu(x)
    out = lean.depthwise_pointwise(depthwise, pointwise, h, every_size=True)
    with torch.no_grad():
        h.add_(1.0)
    with pytest.raises(RuntimeError, match="modified"):
        out.sum().backward()


def test_double_backward_needs_twice_differentiable():
    """A BatchNorm that keeps its output has no second derivative through its 1/std: a double backward
    through it fails with the remedy; inside twice_differentiable it takes torch's layers and agrees."""
    net = tiny("darts")
    x, y = torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.randint(0, 5, (2, 16, 16))
    arch = net.arch_parameters()
    vector = [torch.randn_like(p) for p in arch]

    def hvp():
        with frozen(net.weight_parameters()):
            grads = torch.autograd.grad(F.cross_entropy(net(x), y), arch, create_graph=True)
            return torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vector)), arch)

    state = copy.deepcopy(net.state_dict())
    with pytest.raises(RuntimeError, match="double backward .*twice_differentiable"):
        hvp()
    net.load_state_dict(state)
    with twice_differentiable():
        lean_off = hvp()
    net.load_state_dict(state)
    with fastpaths.overridden(lean_saved=False):
        native = hvp()
    assert all(torch.equal(a, b) for a, b in zip(lean_off, native))


def test_frozen_relu_patterns_hold_inside_sep_convs():
    """Forward-difference Hessian products impose the ReLU pattern recorded at one point on a nearby one
    (FrozenKinks, call by call): the BatchNorm + ReLU function of sep_conv splits there, so the gradient
    at a far point under the replayed pattern equals the native layers'."""
    net = tiny("darts")
    x, y = torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.randint(0, 5, (2, 16, 16))
    arch = net.arch_parameters()
    state = copy.deepcopy(net.state_dict())
    moves = [torch.randn_like(p) for p in arch]  # far enough that many ReLUs change sign
    grads = []
    for lean in (True, False):
        net.load_state_dict(state)
        kinks = FrozenKinks()
        with fastpaths.overridden(lean_saved=lean), frozen(net.weight_parameters()), fixed_structure(net):
            with kinks.recording():
                net(x)
            with torch.no_grad():
                for p, move in zip(arch, moves):
                    p.add_(move)
            with kinks.replaying():
                grads.append(torch.autograd.grad(F.cross_entropy(net(x), y), arch))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_small_tensors_take_the_native_path(monkeypatch):
    """Below MIN_ELEMENTS a tensor's bytes are worth less than the lean layers' own calls."""
    monkeypatch.setattr(lean, "MIN_ELEMENTS", 1 << 17)
    small, large = torch.zeros(2, 4, 128, 127), torch.zeros(2, 4, 128, 128)
    assert not lean.lean_applies(small) and lean.lean_applies(large)
    assert lean.lean_applies(small, every_size=True)  # supernet.lean_saved: true
    with torch.no_grad():
        assert not lean.lean_applies(large)
    with lean.twice_differentiable():
        assert not lean.lean_applies(large)
    with fastpaths.overridden(lean_saved=False):
        assert not lean.lean_applies(large)
