"""The supernet's memory/time options compute what they promise: the same function with less kept
for backward (shared ReLU, frozen parameters, activation checkpointing), and pruning that really
skips ops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from nasseg import fastpaths, lean
from nasseg.search.config import parse_job
from nasseg.errors import SpecError
from nasseg.search.hessian import dominant_eigenvalue
from nasseg.search.steps import frozen, weight_step
from nasseg.space import load as load_space
from nasseg.supernet import Supernet, build
from nasseg.supernet.mixed import MixedOp

REPO = Path(__file__).resolve().parents[1]
CASES = [("darts", 10, 24), ("autodeeplab", 5, 33)]


def saved_bytes(fn) -> int:
    """Bytes of the distinct tensors autograd keeps for backward while ``fn()`` runs."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


def small(name, classes, seed=0, tmp_path=None):
    """The built-in space; Auto-DeepLab's lattice cut to 4 layers (every transition kind still there)."""
    torch.manual_seed(seed)
    if name == "autodeeplab":
        space = yaml.safe_load((REPO / "search_spaces" / "autodeeplab.yaml").read_text())
        space["name"] = "lattice_4"
        space["network"].update(layers=4)
        path = tmp_path / "lattice_4.yaml"
        path.write_text(yaml.safe_dump(space))
        return Supernet(load_space(path), classes).double().train()
    return build(name, classes).double().train()


@pytest.mark.parametrize("name,classes,size", CASES)
def test_checkpoint_mode_gives_the_same_outputs_gradients_and_bn_statistics(name, classes, size, tmp_path):
    net = small(name, classes, tmp_path=tmp_path)
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    y = torch.randint(0, classes, (2, size, size))
    start = {k: v.clone() for k, v in net.state_dict().items()}
    results = []
    for checkpointing in (False, True):
        net.load_state_dict(start)
        net.checkpoint_cells = checkpointing
        kept, logits = saved_bytes(lambda: net(x))
        grads = torch.autograd.grad(F.cross_entropy(logits, y), list(net.parameters()), allow_unused=True)
        results.append((logits.detach(), grads, {k: v.clone() for k, v in net.state_dict().items()}, kept))
    (out_a, grads_a, state_a, kept_a), (out_b, grads_b, state_b, kept_b) = results
    assert torch.equal(out_a, out_b)
    for a, b in zip(grads_a, grads_b):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    # the recomputation in backward did not move the running statistics a second time
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert kept_b * 2.5 < kept_a, (kept_a, kept_b)  # (tensors below lean.MIN_ELEMENTS: no lean layers)


def test_the_leading_relu_is_shared_per_state():
    net = build("darts", 10)
    edge = next(m for m in net.modules() if isinstance(m, MixedOp))
    # sep 3/5 and dil 3/5 read relu(x); pools and skip read x; none is not built at all
    assert sum(edge.reads_relu) == 4 and len(edge.ops) == 7
    assert not any(isinstance(m, torch.nn.ReLU) for op in edge.ops for m in list(op.modules())[:2])


@pytest.mark.parametrize("name,classes,size", CASES)
def test_each_step_keeps_only_what_its_gradients_need(name, classes, size, tmp_path, monkeypatch):
    monkeypatch.setattr(lean, "MIN_ELEMENTS", 0)  # these tensors are small: lean layers at every size
    net = small(name, classes, tmp_path=tmp_path)
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    y = torch.randint(0, classes, (2, size, size))

    def kept(lean):
        with fastpaths.overridden(lean_saved=lean):
            everything, _ = saved_bytes(lambda: net(x))
            with frozen(net.arch_parameters()):
                weights_only, _ = saved_bytes(lambda: net(x))
            with frozen(net.weight_parameters()):
                arch_only, logits = saved_bytes(lambda: net(x))
                arch_grads = torch.autograd.grad(F.cross_entropy(logits, y), net.arch_parameters())
        return everything, weights_only, arch_only, arch_grads

    everything, weights_only, arch_only, arch_grads = kept(lean=False)
    assert all(p.requires_grad for p in net.parameters())  # restored
    # (the weight step drops every op output kept for d/d alpha; the alpha step keeps conv inputs
    # anyway: PyTorch saves them whether or not the conv weight needs a gradient)
    assert weights_only < 0.95 * everything and arch_only < everything, (everything, weights_only, arch_only)
    # the same gradients as the full backward
    full = torch.autograd.grad(F.cross_entropy(net(x), y), net.arch_parameters())
    for a, b in zip(arch_grads, full):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)
    # fast path lean_saved (chain networks): no depthwise outputs, BatchNorms keep their outputs, frozen
    # convs keep nothing
    _, lean_weights, lean_arch, lean_grads = kept(lean=True)
    if net.lean_saved:
        assert lean_weights < 0.7 * weights_only and lean_arch < 0.6 * arch_only, \
            (weights_only, lean_weights, arch_only, lean_arch)
    else:
        assert (lean_weights, lean_arch) == (weights_only, arch_only)
    for a, b in zip(lean_grads, full):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)


def test_weight_step_matches_a_full_backward_step():
    net_a, net_b = small("darts", 10), small("darts", 10)
    x = torch.randn(2, 3, 24, 24, dtype=torch.float64)
    y = torch.randint(0, 10, (2, 24, 24))
    opt_a = torch.optim.SGD(net_a.weight_parameters(), lr=0.1, momentum=0.9)
    opt_b = torch.optim.SGD(net_b.weight_parameters(), lr=0.1, momentum=0.9)
    weight_step(net_a, F.cross_entropy, x, y, opt_a, grad_clip=5.0)
    opt_b.zero_grad()
    F.cross_entropy(net_b(x), y).backward()  # DARTS' own weight step: the alphas get gradients too
    torch.nn.utils.clip_grad_norm_(list(net_b.weight_parameters()), 5.0)
    opt_b.step()
    for (name, a), b in zip(net_a.named_parameters(), net_b.parameters()):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-13), name
    assert all(p.grad is None for p in net_a.arch_parameters())


def test_pruned_ops_are_not_computed():
    net = small("darts", 10)
    with torch.no_grad():
        for alpha in net.alphas.values():
            alpha.view(-1, 8)[:, 7] = -20.0  # dil_conv_5x5 weight ~ 3e-10 on every edge
    x = torch.randn(2, 3, 24, 24, dtype=torch.float64)
    calls = []
    dil5 = [edge.ops[edge.positions.index(7)] for edge in net.modules() if isinstance(edge, MixedOp)]
    hooks = [op.register_forward_hook(lambda *_: calls.append(1)) for op in dil5]
    # the modules' calls are counted: with batched_edges the candidates run side by side, not through their
    # modules (test_batched_edges checks that pruned ops are left out there)
    with fastpaths.overridden(batched_edges=False):
        full = net(x)
        assert len(calls) == len(dil5)
        calls.clear()
        net.prune_below = 0.01
        pruned = net(x)
    assert not calls
    for hook in hooks:
        hook.remove()
    assert torch.allclose(full, pruned, atol=1e-4)  # what was skipped weighed ~3e-10 (BN amplifies it)


def test_prune_threshold_is_checked_against_the_space():
    job = {"name": "j", "space": "darts", "supernet": {"prune_below": 0.2}}
    with pytest.raises(SpecError, match=r"prune_below.*below 1/8"):
        parse_job(job)
    assert parse_job({**job, "supernet": {"prune_below": 0.05, "checkpoint": True}}).supernet.checkpoint


def test_warm_started_lanczos_needs_fewer_steps():
    """The previous epoch's eigenvector as start vector: the same eigenvalue in fewer products."""
    generator = torch.Generator().manual_seed(3)
    n = 40
    basis, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    spectrum = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    spectrum[-1] = 2.0
    before = basis @ torch.diag(spectrum) @ basis.T
    noise = torch.randn(n, n, generator=generator, dtype=torch.float64)
    after = before + 0.01 * (noise + noise.T)  # the Hessian one epoch later
    v = torch.randn(n, generator=generator, dtype=torch.float64, requires_grad=True)

    def loss_of(matrix):
        return lambda: 0.5 * v @ matrix @ v

    _, previous, _ = dominant_eigenvalue(loss_of(before), [v], tol=1e-6, generator=generator)
    cold, _, cold_steps = dominant_eigenvalue(loss_of(after), [v], tol=1e-6, generator=generator)
    warm, _, warm_steps = dominant_eigenvalue(loss_of(after), [v], tol=1e-6, start=previous)
    exact = float(torch.linalg.eigvalsh(after)[-1])
    assert abs(cold - exact) <= 1e-6 * exact and abs(warm - exact) <= 1e-6 * exact  # the promised tolerance
    assert warm_steps < cold_steps, (warm_steps, cold_steps)


@pytest.mark.parametrize("stride,size", [(1, (9, 7)), (2, (9, 7)), (2, (8, 8)), (1, (2, 2)), (2, (1, 1)), (1, (3, 1))])
def test_compact_max_pool_is_max_pool_with_int8_indices(stride, size):
    from nasseg.layers import CompactMaxPool2d

    torch.manual_seed(0)
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 3, *F.max_pool2d(x, 3, stride, 1).shape[-2:], dtype=torch.float64, requires_grad=True)
    with fastpaths.overridden(compact_max_pool=True):  # off by default on the CPU
        kept, out = saved_bytes(lambda: CompactMaxPool2d(3, stride, 1)(x))
    kept_native, reference = saved_bytes(lambda: F.max_pool2d(x, 3, stride, 1))
    assert torch.equal(out, reference) and kept * 8 <= kept_native - x.numel() * 8
    ours, = torch.autograd.grad(out, x, grad, create_graph=True)
    native, = torch.autograd.grad(reference, x, grad, create_graph=True)
    assert torch.equal(ours, native)
    probe = torch.randn_like(ours)  # double backward (Hessian-vector products go through it)
    assert torch.equal(torch.autograd.grad((ours * probe).sum(), grad)[0],
                       torch.autograd.grad((native * probe).sum(), grad)[0])


@pytest.mark.parametrize("stride", [1, 2])
def test_compact_max_pool_gradient_keeps_channels_last(stride):
    """float32 NHWC, as the supernet runs on the CPU: the gradient is torch's bit for bit and keeps the layout
    (the network's next ops would otherwise mix layouts)."""
    from nasseg.layers import CompactMaxPool2d

    torch.manual_seed(0)
    x = torch.randn(4, 8, 12, 10).contiguous(memory_format=torch.channels_last).requires_grad_()
    with fastpaths.overridden(compact_max_pool=True):  # off by default on the CPU
        out, reference = CompactMaxPool2d(3, stride, 1)(x), F.max_pool2d(x, 3, stride, 1)
    assert out.grad_fn.name() != reference.grad_fn.name()  # its own backward
    grad = torch.randn_like(reference)
    ours, = torch.autograd.grad(out, x, grad)
    native, = torch.autograd.grad(reference, x, grad)
    assert torch.equal(ours, native) and ours.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("size", [(8, 8), (9, 7)])
def test_subsampled_pointwise_conv_is_the_strided_conv(size):
    from nasseg.layers import SubsampledPointwiseConv2d, fast_conv2d

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(5, 6, 1, stride=2, bias=True).double()
    twin = fast_conv2d(conv)
    assert type(twin) is SubsampledPointwiseConv2d and twin.weight is conv.weight and twin.bias is conv.bias
    x = torch.randn(2, 5, *size, dtype=torch.float64, requires_grad=True)
    ours, reference = twin(x), F.conv2d(x, conv.weight, conv.bias, stride=2)
    assert torch.equal(ours, reference)
    grad = torch.randn_like(ours)
    assert all(torch.equal(a, b) for a, b in zip(torch.autograd.grad(ours, [x, conv.weight], grad),
                                                 torch.autograd.grad(reference, [x, conv.weight], grad)))


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (17, 17)])
def test_subsampled_pointwise_conv_keeps_channels_last(size):
    """An NHWC input gives an NHWC output also at odd sizes, where torch's conv of the subsampled
    view would return NCHW and leave the ops after it mixing layouts."""
    from nasseg.layers import SubsampledPointwiseConv2d

    conv = SubsampledPointwiseConv2d(3, 4, 1, stride=2, bias=False).double()
    x = torch.randn(2, 3, *size, dtype=torch.float64).to(memory_format=torch.channels_last)
    out = conv(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, F.conv2d(x, conv.weight, None, stride=2), rtol=0, atol=1e-12)


# (kernel, stride, padding, dilation, size, sub-grid form expected)
DILATED = [(3, 1, 2, 2, (8, 12), True), (5, 1, 4, 2, (16, 10), True), (3, 1, 3, 3, (12, 12), True),
           (3, 2, 2, 2, (7, 9), True), (5, 2, 4, 2, (8, 8), True),
           (3, 1, 2, 2, (9, 9), False),    # odd size: unequal sub-grids
           (5, 1, 4, 2, (6, 6), False),    # sub-grids smaller than the kernel
           (3, 1, 1, 2, (8, 8), False),    # not "same" padding
           (3, 1, 1, 1, (8, 8), False)]    # undilated


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("kernel,stride,padding,dilation,size,phased", DILATED)
def test_dilated_depthwise_conv_is_the_native_conv(kernel, stride, padding, dilation, size, phased, layout):
    """The sub-grid form of a dilated depthwise conv gives the native conv's output, gradients and
    second derivatives (the exact Hessian method differentiates through it), and keeps NHWC."""
    from nasseg.layers import DilatedDepthwiseConv2d

    torch.manual_seed(0)
    conv = DilatedDepthwiseConv2d(4, 4, kernel, stride=stride, padding=padding, dilation=dilation, groups=4,
                                  bias=False).double()
    x = torch.randn(2, 4, *size, dtype=torch.float64)
    if layout == "nhwc":
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    assert (conv._phase_plan(x) is not None) == phased
    ours = conv(x)
    reference = F.conv2d(x, conv.weight, None, stride, padding, dilation, 4)
    assert ours.shape == reference.shape and torch.allclose(ours, reference, rtol=0, atol=1e-12)
    assert ours.is_contiguous(memory_format=torch.channels_last) == (layout == "nhwc")
    grad = torch.randn_like(ours)
    for a, b in zip(torch.autograd.grad(ours, [x, conv.weight], grad),
                    torch.autograd.grad(reference, [x, conv.weight], grad)):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    # d/dweight of a function of the input gradient: a second derivative through the conv
    second = []
    for out in (conv(x), F.conv2d(x, conv.weight, None, stride, padding, dilation, 4)):
        grad_x, = torch.autograd.grad((out ** 2).sum(), x, create_graph=True)
        second.append(torch.autograd.grad((grad_x * grad_x).sum(), conv.weight)[0])
    assert torch.allclose(*second, rtol=1e-10, atol=1e-10)


def test_dilated_depthwise_conv_takes_the_native_path_without_its_gradients():
    """No gradient of the conv in the pass (frozen weights, stride 1; no_grad): the native conv,
    whose forward is faster."""
    from nasseg.layers import DilatedDepthwiseConv2d

    conv = DilatedDepthwiseConv2d(4, 4, 3, padding=2, dilation=2, groups=4, bias=False)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    assert conv._phase_plan(x) == 2
    with torch.no_grad():
        assert conv._phase_plan(x) is None
    conv.weight.requires_grad_(False)
    assert conv._phase_plan(x) is None  # stride 1: only the weight gradient gains
    strided = DilatedDepthwiseConv2d(4, 4, 3, stride=2, padding=2, dilation=2, groups=4, bias=False)
    strided.weight.requires_grad_(False)
    assert strided._phase_plan(x) == 2  # stride d: the input gradient gains too


@pytest.mark.parametrize("name,classes,size", CASES)
def test_channels_last_supernet_computes_the_same_step(name, classes, size, tmp_path):
    """supernet.channels_last: same parameters (objects and state-dict names), no plain strided 1x1
    conv left (they corrupt memory in NHWC on CPU), and the same step: in float64 the same loss and
    gradients as NCHW to rounding; in float32 (oneDNN's NHWC kernels) the loss to 1e-5 and gradients
    within float32 rounding as these nets amplify it (a dozen BatchNorms on batches of 2; one input
    can flip a ReLU or max-pool choice in one layout only, so the median over inputs is checked; every
    input's loss to 1e-4)."""
    from nasseg.layers import SubsampledPointwiseConv2d, to_channels_last

    exact = small(name, classes, tmp_path=tmp_path)
    nhwc_64 = to_channels_last(small(name, classes, tmp_path=tmp_path))
    nhwc = small(name, classes, tmp_path=tmp_path).float()
    before = {key: id(p) for key, p in nhwc.named_parameters()}
    nhwc = to_channels_last(nhwc)
    assert {key: id(p) for key, p in nhwc.named_parameters()} == before
    assert list(nhwc.state_dict()) == list(exact.state_dict())
    assert any(isinstance(m, SubsampledPointwiseConv2d) for m in nhwc.modules())
    assert not any(type(m) is torch.nn.Conv2d and m.stride != (1, 1) and m.kernel_size == (1, 1)
                   for m in nhwc.modules())
    errors, loss_errors = [], []
    for draw in range(3):
        torch.manual_seed(draw)
        x = torch.randn(2, 3, size, size, dtype=torch.float64)
        y = torch.randint(0, classes, (2, size, size))
        results = []
        for model in (exact, nhwc_64, nhwc):
            loss = F.cross_entropy(model(x.to(next(model.parameters()).dtype)), y)
            grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
            results.append((loss.item(), torch.cat([g.double().flatten() for g in grads if g is not None])))
        (loss_64, grad_64), (loss_nhwc_64, grad_nhwc_64), (loss_nhwc, grad_nhwc) = results
        assert abs(loss_nhwc_64 - loss_64) < 1e-12 * loss_64 and abs(loss_nhwc - loss_64) < 1e-4 * loss_64
        assert float((grad_nhwc_64 - grad_64).norm() / grad_64.norm()) < 1e-9
        errors.append(float((grad_nhwc - grad_64).norm() / grad_64.norm()))
        loss_errors.append(abs(loss_nhwc - loss_64) / loss_64)
    assert sorted(errors)[1] < 0.02, errors
    assert sorted(loss_errors)[1] < 1e-5, loss_errors  # (the first draw's: 1.1-2e-5, by the summation order)


def test_channels_last_factorized_reduce_does_not_corrupt_the_heap():
    """Regression: in channels-last on CPU, torch 2.13's oneDNN weight gradient of a strided 1x1 conv
    with few input channels writes past its buffer (glibc then aborts, often only later). With fast
    path subsampled_pointwise_conv on (its default there) the same loop runs clean under glibc's
    strict heap checks."""
    code = """
import torch
from nasseg.layers import FactorizedReduce, to_channels_last
torch.set_num_threads(1)
for c_in, c_out in [(2, 2), (3, 4), (4, 4), (5, 8), (6, 16)]:
    op = to_channels_last(FactorizedReduce(c_in, c_out))
    for _ in range(10):
        x = torch.randn(2, c_in, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
        op(x).sum().backward()
print("clean")
"""
    env = {**os.environ, "MALLOC_CHECK_": "3", "MALLOC_PERTURB_": "165"}
    env.pop("NASSEG_FASTPATHS", None)  # the workaround at its default
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stderr[-2000:]
