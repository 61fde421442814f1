"""Activation checkpointing (``supernet.checkpoint``, nasseg.supernet.recompute) computes what the
unchecked supernet computes, in the cases its custom autograd Function has to handle itself: random
ops, double backward, frozen parameters, eval mode, autocast settings; and
``supernet.checkpoint_max_stride`` recomputes only the finer states."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nasseg.layers import running_stats_untouched
from nasseg.lean import twice_differentiable
from nasseg.search.steps import frozen
from nasseg.shell.bench.nets import bench_space
from nasseg.supernet import Supernet
from nasseg.supernet.recompute import recompute_in_backward, region_members


def tiny(name: str, classes: int = 5) -> Supernet:
    torch.manual_seed(0)
    net = Supernet(bench_space(name, width=4, layers=3), classes).double()
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    return net


def both(net: Supernet, fn):
    """fn() with checkpointing off, then on, from the same parameters, buffers and random state."""
    start = {k: v.clone() for k, v in net.state_dict().items()}
    out = []
    for checkpointing in (False, True):
        net.load_state_dict(start)
        net.checkpoint_cells = checkpointing
        torch.manual_seed(7)
        result = fn()
        out.append((result, torch.get_rng_state(), {k: v.clone() for k, v in net.state_dict().items()}))
    return out


def assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            torch.testing.assert_close(y, x, rtol=1e-10, atol=1e-12)


def test_a_random_op_draws_the_same_numbers_when_recomputed():
    """RobustDARTS' `noise` op draws per forward: the recomputed state must see the first forward's draws,
    and the caller's generator must end where it would without checkpointing."""
    net = tiny("robustdarts_s4")
    assert net.draws_random
    x, y = torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.randint(0, 5, (2, 16, 16))

    def grads():
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        return logits.detach(), torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)

    (plain, rng_a, state_a), (ckpt, rng_b, state_b) = both(net, grads)
    assert torch.equal(plain[0], ckpt[0])
    assert_same(plain[1], ckpt[1])
    assert torch.equal(rng_a, rng_b)
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


@pytest.mark.parametrize("name", ["darts", "autodeeplab"])
def test_double_backward_goes_through_recomputed_states(name):
    """Exact Hessian-vector products (``hessian.method: exact``) differentiate the gradient again."""
    net = tiny(name)
    x, y = torch.randn(2, 3, 17, 17, dtype=torch.float64), torch.randint(0, 5, (2, 17, 17))
    arch = net.arch_parameters()
    vector = [torch.randn_like(p) for p in arch]

    def hvp():
        with frozen(net.weight_parameters()), twice_differentiable():
            grads = torch.autograd.grad(F.cross_entropy(net(x), y), arch, create_graph=True)
            dot = sum((g * v).sum() for g, v in zip(grads, vector))
            return [g.detach() for g in grads] + list(torch.autograd.grad(dot, arch))

    (plain, _, _), (ckpt, _, _) = both(net, hvp)
    assert_same(plain, ckpt)
    assert any(h.abs().max() > 1e-6 for h in plain[len(arch):])  # a real second-order term


@pytest.mark.parametrize("train", [True, False])
def test_weight_step_and_eval_mode_gradients(train):
    """Only the parameters that need a gradient are inputs of the recomputed region (the weight step
    freezes the alphas); in eval mode BatchNorm normalises with its running statistics both times."""
    net = tiny("autodeeplab").train(train)
    x, y = torch.randn(2, 3, 17, 17, dtype=torch.float64), torch.randint(0, 5, (2, 17, 17))
    weights = list(net.weight_parameters())

    def weight_grads():
        with frozen(net.arch_parameters()):
            return torch.autograd.grad(F.cross_entropy(net(x), y), weights, allow_unused=True)

    (plain, _, state_a), (ckpt, _, state_b) = both(net, weight_grads)
    assert_same(plain, ckpt)
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_region_inputs_parameters_and_running_statistics():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 2, 3, padding=1).double()
    bn = torch.nn.BatchNorm2d(2).double()
    block = torch.nn.Sequential(conv, bn)
    params, batch_norms = region_members([block])
    assert batch_norms == [bn] and {id(p) for p in params} == {id(p) for p in block.parameters()}
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)

    def run(x, scale):
        return (scale * block(x)).tanh()

    expected_out = run(x, scale)
    expected = torch.autograd.grad(expected_out.sum(), [x, scale, conv.weight, conv.bias, bn.weight])
    stats = bn.running_mean.clone(), bn.num_batches_tracked.clone()
    out = recompute_in_backward(run, [x, scale], params, batch_norms)
    # the first forward moved the running statistics once more, the recomputation does not
    assert bn.num_batches_tracked == stats[1] + 1
    after_forward = bn.running_mean.clone()
    got = torch.autograd.grad(out.sum(), [x, scale, conv.weight, conv.bias, bn.weight])
    assert torch.equal(bn.running_mean, after_forward) and bn.num_batches_tracked == stats[1] + 1
    assert bn.track_running_stats
    torch.testing.assert_close(out, expected_out)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)
    with running_stats_untouched([bn]):
        bn(x)
    assert torch.equal(bn.running_mean, after_forward) and bn.track_running_stats


def test_the_recomputation_runs_under_the_first_forwards_autocast():
    """A region run under CPU autocast (bfloat16) is recomputed under it, even when backward is called
    outside it, and its BatchNorms make the same (mixed-precision) call: the gradients are those of the
    unchecked bfloat16 forward."""
    net = tiny("darts").float()
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 5, (2, 16, 16))
    weights = list(net.weight_parameters())

    def grads():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(net(x).float(), y)
        return torch.autograd.grad(loss, weights, allow_unused=True)

    (plain, _, _), (ckpt, _, _) = both(net, grads)
    # bfloat16 sums in another order differ by an ulp (1/64 at 2-4); recomputed without autocast the
    # region fails (bfloat16 inputs, float32 weights), with BatchNorms called without their running
    # statistics it differs by up to 3.5 on this net
    worst = max((b - a).abs().max().item() for a, b in zip(plain, ckpt, strict=True) if a is not None)
    assert worst <= 0.05, worst


def test_checkpoint_max_stride_recomputes_only_the_fine_states(monkeypatch):
    """supernet.checkpoint_max_stride: the states at coarser strides keep their activations; the gradients
    are the unchecked ones either way."""
    import nasseg.supernet.network as network

    net = tiny("autodeeplab")
    x, y = torch.randn(2, 3, 17, 17, dtype=torch.float64), torch.randint(0, 5, (2, 17, 17))
    recomputed = []
    real = network.recompute_in_backward

    def counted(*args, **kwargs):
        recomputed.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(network, "recompute_in_backward", counted)

    def grads():
        net.checkpoint_max_stride = 8 if net.checkpoint_cells else None
        return torch.autograd.grad(F.cross_entropy(net(x), y), list(net.parameters()), allow_unused=True)

    (plain, _, state_a), (limited, _, state_b) = both(net, grads)
    assert_same(plain, limited)
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    strides = [net.graph.nodes[node]["stride"] for node in net.graph.nodes if node[0] > 0]
    assert len(recomputed) == sum(stride <= 8 for stride in strides) < len(strides)


def test_checkpoint_max_stride_needs_checkpointing():
    from nasseg.errors import SpecError
    from nasseg.search.config import parse_job

    job = {"name": "j", "space": "autodeeplab", "algorithm": "autodeeplab", "data": {"dataset": "camvid_demo"}}
    limited = parse_job({**job, "supernet": {"checkpoint": True, "checkpoint_max_stride": 16}})
    assert limited.supernet.checkpoint_max_stride == 16
    with pytest.raises(SpecError, match="checkpoint_max_stride.*supernet.checkpoint: true"):
        parse_job({**job, "supernet": {"checkpoint_max_stride": 16}})
