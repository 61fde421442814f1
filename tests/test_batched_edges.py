"""Fast path ``batched_edges``: the conv candidates of the edges that read one state, run side by side (one
call per layer, grouped convs, one BatchNorm call with each edge's statistics), are the per-edge evaluation in
float64: logits, weight and alpha/beta gradients, BatchNorm running statistics and batch counts; train and eval
mode, lattice (with and without batched transitions, checkpointing) and chain, pruned ops, NCHW and
channels-last. And the path runs: it makes fewer convolution calls."""

import contextlib

import pytest
import torch
from conftest import assert_same_pass, ready_for_a_pass
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from nasseg import fastpaths
from nasseg.layers import GroupBatchNorm2d, batch_norm_groups, frozen_bn_stats, side_by_side_batch_norm
from nasseg.lean import twice_differentiable
from nasseg.search.hessian import FrozenKinks
from nasseg.search.steps import fixed_structure, frozen
from nasseg.shell.bench.nets import bench_space
from nasseg.supernet import Supernet
from nasseg.supernet import edge_batch
from nasseg.supernet.edge_batch import MAX_ELEMENTS


class ConvCalls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func.overloadpacket is torch.ops.aten.convolution
        return func(*args, **(kwargs or {}))


def run(net, x, y, batched, train, frozen_weights=False, **paths):
    """(logits, gradients, state dict after) of a pass, and its convolution calls (counted in training mode only:
    the dispatch mode slows every call). ``frozen_weights``: as the architecture step, gradients of the alphas
    and betas only (None for the weights)."""
    net.train(train)
    calls = ConvCalls() if train else contextlib.nullcontext()
    with fastpaths.overridden(batched_edges=batched, **paths), calls, \
            frozen(net.weight_parameters()) if frozen_weights else contextlib.nullcontext():
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        wrt = [p for p in net.parameters() if p.requires_grad]
        found = dict(zip(map(id, wrt), torch.autograd.grad(loss, wrt, allow_unused=True)))
    grads = [found.get(id(p)) for p in net.parameters()]
    return logits.detach(), grads, {k: v.clone() for k, v in net.state_dict().items()}, calls.count if train else 0


CASES = [  # space, batched transitions, checkpointing, channels-last, prune_below (lean layers: the chain in NCHW),
    # frozen weights (the architecture step), side by side keeping less (fast path lean_saved: these nets' tensors
    # are below edge_batch.LEAN_MIN_ELEMENTS, which is lowered to 0 for it)
    ("autodeeplab", True, False, False, 0.0, False, False),
    ("autodeeplab", True, False, False, 0.0, False, True),
    ("autodeeplab", False, True, True, 0.0, False, True),
    ("autodeeplab", True, False, True, 0.12, False, True),
    ("autodeeplab", True, False, True, 0.0, True, True),
    ("autodeeplab", True, False, True, 0.0, True, False),
    ("darts_cifar", None, False, True, 0.0, False, True),
    ("darts_cifar", None, False, False, 0.0, False, False),  # a chain's default lean layers: native at these sizes
]


@pytest.mark.parametrize("space_name,transitions,checkpoint,channels_last,prune,frozen_weights,lean_side_by_side",
                         CASES)
def test_edges_side_by_side_are_the_per_edge_evaluation(space_name, transitions, checkpoint, channels_last, prune,
                                                         frozen_weights, lean_side_by_side, monkeypatch):
    if lean_side_by_side:
        monkeypatch.setattr(edge_batch, "LEAN_MIN_ELEMENTS", 0)
    torch.manual_seed(0)
    space = bench_space(space_name, width=2, layers=3)
    lean = None if space_name == "darts_cifar" and not channels_last else False
    net = Supernet(space, 4, checkpoint_cells=checkpoint, prune_below=prune, lean_saved=lean).double()
    net, x, y = ready_for_a_pass(net, channels_last, 16)
    if space_name == "darts_cifar":
        y = torch.randint(0, 4, (2,))
    paths = {} if transitions is None else {"batched_transitions": transitions}
    start = {k: v.clone() for k, v in net.state_dict().items()}
    for train in (True, False):
        results = []
        for batched in (False, True):
            net.load_state_dict(start)
            results.append(run(net, x, y, batched, train, frozen_weights, **paths))
        (*first, calls_a), (*second, calls_b) = results
        assert not train or calls_b < 0.8 * calls_a  # the path ran
        # each edge's running statistics and batch count moved as by its own call
        assert_same_pass(net, first, second, start, train, logits_tol=(1e-9, 1e-10), grad_tol=(1e-9, 1e-10))


def test_large_states_take_the_per_edge_calls():
    from nasseg.supernet.mixed import SearchCell
    cell = SearchCell(bench_space("autodeeplab", width=2, layers=3), 16, reduction=False).train()
    small, large = (torch.randn(n, 16, 16, 16) for n in (MAX_ELEMENTS // 4096 - 1, MAX_ELEMENTS // 4096))
    weights = [torch.softmax(torch.randn(len(edge.positions) + 1), 0) for edge in cell.edges]
    found = {}
    for name, x in (("small", small), ("large", large)):
        with fastpaths.overridden(batched_edges=True):
            found[name] = cell.edge_batches.outputs(0, x, lambda x=x: F.relu(x), weights, None)
    assert found["large"] == {}
    # the 5 edges leaving cell input 0, 4 conv candidates each: (sep_conv, atrous_conv) x (3x3, 5x5)
    assert len(found["small"]) == 5 and all(len(part.positions) == 4 for part in found["small"].values())
    # pruned: atrous_conv_5x5 (position 7) everywhere, sep_conv_3x3 (4) on one edge: left out of the groups
    active = [[position != 7 and (index != 0 or position != 4) for position in range(8)] for index in range(20)]
    with fastpaths.overridden(batched_edges=True):
        pruned = cell.edge_batches.outputs(0, small, lambda: F.relu(small), weights, active)
    assert {index: set(part.positions) for index, part in pruned.items()} == \
        {0: {5, 6}, **{index: {4, 5, 6} for index in pruned if index != 0}}


@pytest.mark.parametrize("groups", [None, (2, 3), (6, 3)])  # none; 3 groups of 2 stacked; 1 group standing for 3
@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("keep_output,relu", [(False, False), (True, False), (False, True), (True, True)])
def test_side_by_side_batch_norm_is_each_norm_on_its_channels(groups, frozen, keep_output, relu):
    torch.manual_seed(1)
    norms = [GroupBatchNorm2d(3, affine=False).double() for _ in range(3)]
    for norm in norms:
        norm.running_mean.normal_(), norm.running_var.uniform_(0.5, 2)
    reference = [GroupBatchNorm2d(3, affine=False).double() for _ in norms]
    for ref, norm in zip(reference, norms):
        ref.load_state_dict(norm.state_dict())
    initial = [norm.running_mean.clone() for norm in norms]
    x = torch.randn(6, 9, 4, 5, dtype=torch.float64, requires_grad=True)
    size, count = groups if groups else (6, 1)
    with (batch_norm_groups(size, count) if groups else torch.enable_grad()), \
            frozen_bn_stats(*norms, *reference) if frozen else torch.enable_grad():
        normed_expected = torch.cat([ref(part) for ref, part in zip(reference, x.chunk(3, 1))], 1)
        expected = F.relu(normed_expected) if relu else normed_expected
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.data_ptr()) or t, lambda t: t):
            actual, normed = side_by_side_batch_norm(x, norms, keep_output=keep_output, relu=relu)
    # keeping its output, one function for all statistics groups and the ReLU keeps that output, not the input
    # (nor the ReLU's output: the caller is given the BatchNorm's to compute it again from)
    assert (x.data_ptr() in saved) != keep_output
    assert (normed is not None) == (keep_output and relu)
    if keep_output:
        assert (normed if relu else actual).data_ptr() in saved and (not relu or actual.data_ptr() not in saved)
        if relu:
            torch.testing.assert_close(normed, normed_expected, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-13)
    g = torch.randn_like(expected)
    torch.testing.assert_close(torch.autograd.grad(actual, x, g)[0], torch.autograd.grad(expected, x, g)[0])
    for ref, norm, before in zip(reference, norms, initial):
        torch.testing.assert_close(norm.state_dict(), ref.state_dict(), rtol=1e-13, atol=1e-15)
        assert torch.equal(norm.running_mean, before) == frozen  # frozen: left alone; else moved
    if not frozen:
        assert all(int(norm.num_batches_tracked) == count for norm in norms)
    for norm in norms + reference:
        norm.eval()
    evaluated = torch.cat([ref(part) for ref, part in zip(reference, x.chunk(3, 1))], 1)
    torch.testing.assert_close(side_by_side_batch_norm(x, norms, keep_output=keep_output, relu=relu)[0],
                               F.relu(evaluated) if relu else evaluated)


def test_only_the_supernets_conv_candidates_run_side_by_side():
    from nasseg.layers import DilConv, SepConv
    from nasseg.supernet.edge_batch import conv_blocks
    op = DilConv(4, 4, 3, 1, 2, 2, affine=False)
    assert conv_blocks(op) is None  # its leading ReLU not stripped: it does not read the shared relu(x)
    op[0] = nn.Identity()
    assert conv_blocks(op) == [op]
    op[3].momentum = None
    assert conv_blocks(op) is None  # cumulative averages: not supported side by side
    sep = SepConv(4, 4, 3, 1, 1, affine=False)
    sep[0][0] = nn.Identity()
    assert conv_blocks(sep) == [sep[0], sep[1]]
    everywhere = Supernet(bench_space("darts_cifar", width=2, layers=3), 4, lean_saved=True)
    assert not any(cell.edge_batches.groups for cell in everywhere.cells.values())  # lean at every size: their own
    for lean in (None, False):  # lean from lean.MIN_ELEMENTS up (a chain's default), or not lean
        net = Supernet(bench_space("darts_cifar", width=2, layers=3), 4, lean_saved=lean)
        assert all(cell.edge_batches.groups for cell in net.cells.values())


def test_double_backward_through_edges_side_by_side():
    """Hessian-vector products over all parameters (double backward): the first depthwise conv's saved input,
    repeated again in backward, keeps its place in the graph, so the second derivative of its weight gradient
    reaches the input (and the alphas before it) as with per-edge convs. Inside twice_differentiable, as every
    pass that differentiates twice: the side-by-side BatchNorms then keep their input (the output-keeping one
    refuses a double backward)."""
    torch.manual_seed(3)
    net = Supernet(bench_space("autodeeplab", width=2, layers=3), 4).double().train()
    # 32x32: at 16x16 the coarsest states are 1x1, where a BatchNorm over 2 values magnifies the rounding of
    # the summation order in second derivatives to 1e-8
    x, y = torch.randn(2, 3, 32, 32, dtype=torch.float64), torch.randint(0, 4, (2, 32, 32))
    params = list(net.parameters())
    v = [torch.randn_like(p) for p in params]
    products = []
    for batched in (False, True):
        with fastpaths.overridden(batched_edges=batched), frozen_bn_stats(net), twice_differentiable():
            grads = torch.autograd.grad(F.cross_entropy(net(x), y), params, create_graph=True, allow_unused=True)
            dot = sum((g * u).sum() for g, u in zip(grads, v) if g is not None)
            products.append(torch.autograd.grad(dot, params, allow_unused=True))
    products = [[torch.zeros_like(p) if g is None else g for p, g in zip(params, run)] for run in products]
    for a, b in zip(*products):
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-10)
    assert any(p.abs().max() > 1e-3 for p in products[0])


def test_supernet_lean_saved_false_keeps_the_side_by_side_layers_native(monkeypatch):
    """supernet.lean_saved: false means no lean layers anywhere, the side-by-side ones included; null leaves
    them to fast path lean_saved."""
    import nasseg.layers
    monkeypatch.setattr(edge_batch, "LEAN_MIN_ELEMENTS", 0)
    kept = []
    keeping = nasseg.layers.batch_norm_keeping_output
    monkeypatch.setattr(nasseg.layers, "batch_norm_keeping_output", lambda *a, **k: kept.append(1) or keeping(*a, **k))
    counts = {}
    for setting in (None, False):
        torch.manual_seed(0)
        net = Supernet(bench_space("autodeeplab", width=2, layers=3), 4, lean_saved=setting)
        net, x, y = ready_for_a_pass(net.double(), True, 16)
        kept.clear()
        F.cross_entropy(net(x), y).backward()
        counts[setting] = len(kept)
    assert counts[None] > 0 and counts[False] == 0


def test_frozen_relu_patterns_hold_in_edges_side_by_side(monkeypatch):
    """Forward-difference Hessian products impose the ReLU pattern recorded at one point on a nearby one
    (FrozenKinks, call by call): side by side, keeping less, the ReLU between a sep_conv's blocks stays a call of
    its own there, so the gradient at a far point under the replayed pattern equals the per-edge evaluation's."""
    monkeypatch.setattr(edge_batch, "LEAN_MIN_ELEMENTS", 0)
    torch.manual_seed(5)
    net = Supernet(bench_space("autodeeplab", width=2, layers=3), 4).double()
    net, x, y = ready_for_a_pass(net, True, 16)
    arch = net.arch_parameters()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    moves = [torch.randn_like(p) for p in arch]  # far enough that many ReLUs change sign
    grads, calls = [], []
    for batched in (False, True):
        net.load_state_dict(state)
        kinks = FrozenKinks()
        with fastpaths.overridden(batched_edges=batched), frozen(net.weight_parameters()), fixed_structure(net), \
                frozen_bn_stats(net):
            with kinks.recording():
                net(x)
            calls.append(len(kinks.records))
            with torch.no_grad():
                for p, move in zip(arch, moves):
                    p.add_(move)
            with kinks.replaying():
                grads.append(torch.autograd.grad(F.cross_entropy(net(x), y), arch))
    assert calls[1] < calls[0]  # side by side: one ReLU call for k edges
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_grouped_pointwise_is_the_grouped_conv(layout):
    from nasseg.supernet.edge_batch import grouped_pointwise
    torch.manual_seed(4)
    x = torch.randn(3, 20, 6, 5, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    weight = torch.randn(15, 4, 1, 1, dtype=torch.float64, requires_grad=True)  # 5 groups, 4 -> 3 channels each
    g = torch.randn(3, 15, 6, 5, dtype=torch.float64)
    expected, actual = F.conv2d(x, weight, groups=5), grouped_pointwise(x, weight, 5)
    torch.testing.assert_close(actual, expected, rtol=1e-13, atol=1e-13)
    assert actual.is_contiguous(memory_format=layout)
    for a, b in zip(torch.autograd.grad(actual, (x, weight), g), torch.autograd.grad(expected, (x, weight), g)):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
