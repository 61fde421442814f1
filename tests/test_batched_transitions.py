"""Fast path ``batched_transitions``: a lattice state's cell evaluated once for all its transitions
(stacked along the batch, BatchNorm per transition; the edges from the l-2 input once, broadcast into
the stacked sums) is the per-transition evaluation, in float64: logits, weight and
alpha/beta gradients, BatchNorm running statistics (momentum 0.1 and cumulative); train and eval mode,
with and without checkpointing, NCHW and channels-last."""

import pytest
import torch
from conftest import assert_same_pass, ready_for_a_pass
import torch.nn.functional as F
from torch import nn

from nasseg import fastpaths
from nasseg.layers import GroupBatchNorm2d, batch_norm_groups
from nasseg.shell.bench.nets import bench_space
from nasseg.supernet import Supernet


def run(net, x, y, batched, train):
    net.train(train)
    with fastpaths.overridden(batched_transitions=batched):
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        grads = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)
    return logits.detach(), grads, {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("checkpoint,channels_last,momentum", [(False, False, 0.1), (True, True, None)])
def test_batched_state_is_the_per_transition_evaluation(checkpoint, channels_last, momentum):
    torch.manual_seed(0)
    space = bench_space("autodeeplab", width=2, layers=3)
    net = Supernet(space, 4, checkpoint_cells=checkpoint).double()
    assert any(net.graph.in_degree(node) == 3 and net.graph.nodes[node]["prev_prev"] for node in net.graph.nodes)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = momentum
    net, x, y = ready_for_a_pass(net, channels_last, 17)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    for train in (True, False):
        results = []
        for batched in (False, True):
            net.load_state_dict(start)
            results.append(run(net, x, y, batched, train))
        # running statistics moved as by one update per transition, in order
        assert_same_pass(net, *results, start, train)


@pytest.mark.parametrize("momentum", [0.1, None])  # None: cumulative averages, the update order counts
def test_group_batch_norm_is_one_batch_norm_per_group(momentum):
    torch.manual_seed(1)
    reference = nn.BatchNorm2d(3, momentum=momentum).double()
    grouped = GroupBatchNorm2d(3, momentum=momentum).double()
    x = torch.randn(6, 3, 4, 5, dtype=torch.float64)
    expected = torch.cat([reference(chunk) for chunk in x.chunk(3)])
    with batch_norm_groups(2, 3):
        actual = grouped(x)
    torch.testing.assert_close(actual, expected)
    torch.testing.assert_close(grouped.state_dict(), reference.state_dict())
    # one group standing for 3 equal ones: its output, and running statistics moved 3 times
    expected = torch.cat([reference(x[:2]) for _ in range(3)])
    with batch_norm_groups(2, 3):
        actual = grouped(x[:2])
    torch.testing.assert_close(actual.repeat(3, 1, 1, 1), expected)
    torch.testing.assert_close(grouped.state_dict(), reference.state_dict(), rtol=1e-13, atol=1e-15)
