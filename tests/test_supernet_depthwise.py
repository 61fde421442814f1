"""Fast path batched_subgrids (nasseg/supernet/depthwise.py) computes what the sub-grid views do, in
float64: single convs, and a whole DARTS supernet's logits, weight and alpha gradients."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from nasseg import fastpaths
from nasseg.layers import create_conv2d, to_channels_last
from nasseg.supernet import build, depthwise
from nasseg.supernet.depthwise import BatchedSubgridConv2d, batched_subgrid_conv

LAYOUTS = (torch.contiguous_format, torch.channels_last)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernel", [3, 5])
def test_a_dilated_conv_matches_the_sub_grid_views_and_the_native_conv(layout, kernel):
    torch.manual_seed(0)
    views = create_conv2d(6, 6, kernel, 1, 2 * (kernel // 2), 2, groups=6).double()
    batched = batched_subgrid_conv(views)
    assert type(batched) is BatchedSubgridConv2d and batched.weight is views.weight
    assert batched_subgrid_conv(create_conv2d(6, 6, 3, 1, 1, groups=6)) is None
    x = torch.randn(3, 6, 12, 10, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    results = []
    for module, switches in ((batched, {"batched_subgrids": True}), (views, {}),
                             (views, {"subgrid_dilated_conv": False})):
        with fastpaths.overridden(**switches), \
                mock.patch.object(depthwise, "subgrids_as_batch", wraps=depthwise.subgrids_as_batch) as probe:
            out = module(x)
            results.append([out, *torch.autograd.grad(out, [x, module.weight], torch.cos(out))])
        assert probe.called == (module is batched)
    assert results[0][0].is_contiguous(memory_format=layout)
    for ours in results[1:]:
        for a, b in zip(results[0], ours):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def darts_supernet(layout):
    """A small float64 DARTS supernet in training mode, in ``layout``."""
    from nasseg.shell.bench.nets import bench_space

    torch.manual_seed(0)
    model = build(bench_space("darts_cifar", 4, 3, 5), 5).double().train()
    return to_channels_last(model) if layout == torch.channels_last else model


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_darts_supernet_computes_the_same_logits_and_gradients(layout):
    model = darts_supernet(layout)
    assert any(type(m) is BatchedSubgridConv2d for m in model.modules())
    x = torch.randn(2, 3, 20, 20, dtype=torch.float64).contiguous(memory_format=layout)
    y = torch.randint(0, 5, (2,))
    weights, alphas = list(model.weight_parameters()), list(model.arch_parameters())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    results = {}
    for on in (True, False):
        model.load_state_dict(state)  # the same BatchNorm running statistics for both passes
        with fastpaths.overridden(batched_subgrids=on), \
                mock.patch.object(depthwise, "subgrids_as_batch", wraps=depthwise.subgrids_as_batch) as probe:
            logits = model(x)
            grads = torch.autograd.grad(F.cross_entropy(logits, y), weights + alphas)
        assert probe.called == on
        results[on] = [logits, *grads, *model.state_dict().values()]
    for a, b in zip(results[True], results[False]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_shared_pools_give_the_same_logits_gradients_and_running_statistics(layout):
    from nasseg.layers import CompactMaxPool2d

    model = darts_supernet(layout)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64).contiguous(memory_format=layout)
    y = torch.randint(0, 5, (2,))
    params = list(model.weight_parameters()) + list(model.arch_parameters())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    results = {}
    for on in (True, False):
        model.load_state_dict(state)
        pools = []
        hooks = [m.register_forward_hook(lambda *_: pools.append(1)) for m in model.modules()
                 if isinstance(m, CompactMaxPool2d)]
        with fastpaths.overridden(shared_pools=on):
            logits = model(x)
            grads = torch.autograd.grad(F.cross_entropy(logits, y), params)
            model.eval()
            evaluated = model(x)  # eval mode: running statistics, no sharing
            model.train()
        for hook in hooks:
            hook.remove()
        results[on] = [logits, *grads, evaluated, *model.state_dict().values()], len(pools)
    assert results[True][1] == 3 * 5 + 3 * 14 and results[False][1] == 2 * 3 * 14  # 3 cells; eval: not shared
    for a, b in zip(results[True][0], results[False][0]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_shared_pools_leave_out_the_statistics_calls_when_statistics_are_frozen():
    """An edge that reads a shared pool calls its own BatchNorm only to move its running statistics; with
    them frozen (architecture steps, Hessian products) the call is left out, and nothing else changes."""
    from nasseg.layers import GroupBatchNorm2d, frozen_bn_stats

    model = darts_supernet(torch.contiguous_format)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in model.modules()
             if isinstance(m, GroupBatchNorm2d)]
    counted = {}
    for frozen in (False, True):
        model.load_state_dict(state)
        calls.clear()
        with frozen_bn_stats(model) if frozen else torch.enable_grad():
            counted[frozen] = model(x), len(calls)
    for hook in hooks:
        hook.remove()
    assert torch.equal(counted[True][0], counted[False][0])
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # frozen: untouched
    # each cell's 14 edges read 5 states: the shared pools' BatchNorms (2 a state) are called once, not per edge
    assert counted[False][1] - counted[True][1] == 3 * 2 * (14 - 5)


def test_frozen_statistics_nest():
    """A block that freezes running statistics inside another (a Hessian product inside an architecture step)
    leaves them frozen when it ends; the outer block restores momentum and batch count."""
    from nasseg.layers import GroupBatchNorm2d, frozen_bn_stats, stats_frozen

    model = darts_supernet(torch.contiguous_format)
    norms = [m for m in model.modules() if isinstance(m, GroupBatchNorm2d)]
    before = [(m.momentum, m.num_batches_tracked) for m in norms]
    with frozen_bn_stats(model):
        with frozen_bn_stats(model):
            assert all(stats_frozen(m) and m.momentum == 0 for m in norms)
        assert all(stats_frozen(m) and m.momentum == 0 for m in norms)
    assert not any(stats_frozen(m) for m in norms)
    assert [(m.momentum, m.num_batches_tracked) for m in norms] == before
