"""nasseg.shell.bench.straightforward, the baseline of `nasseg bench`: the papers' naive supernets compute
exactly the function of nasseg's supernets (same parameters -> same logits, weight and alpha/beta
gradients), so the benchmark compares equal work done two ways."""

import pytest
import torch
import torch.nn.functional as F

from nasseg.shell.bench import straightforward as sf
from nasseg.shell.bench.nets import bench_space
from nasseg.supernet import Supernet


def pair(space, classes, seed=0):
    """nasseg's supernet with non-trivial alphas/betas, and the straightforward one loaded from it."""
    torch.manual_seed(seed)
    ours = Supernet(space, classes)
    with torch.no_grad():
        for p in ours.arch_parameters():
            p.normal_()
    naive = sf.StraightforwardSupernet(space, classes).load_from(ours)
    return ours.train(), naive.train()


def assert_all_close(pairs, atol, rtol, what):
    """Every (name, expected, actual) within atol + rtol * |expected| (one vectorised check, which
    names the worst tensor when it fails)."""
    names = [n for n, _, _ in pairs]
    expected = torch.cat([e.detach().reshape(-1).double() for _, e, _ in pairs])
    actual = torch.cat([a.detach().reshape(-1).double() for _, e, a in pairs])
    excess = (actual - expected).abs() - (atol + rtol * expected.abs())
    if excess.max() > 0:
        sizes = [e.numel() for _, e, _ in pairs]
        worst = max(zip(names, torch.split(excess, sizes)), key=lambda item: item[1].max())[0]
        raise AssertionError(f"{what}: {int((excess > 0).sum())} values differ, worst in {worst}")


def check_same_function(space, classes, x, y):
    ours, naive = pair(space, classes)
    logits_ours, logits_naive = ours(x), naive(x)
    assert logits_ours.shape == logits_naive.shape
    torch.testing.assert_close(logits_naive, logits_ours, rtol=0, atol=1e-5)

    # every tensor of the naive net was copied; BN running statistics moved identically
    ours_sd, naive_sd = ours.state_dict(), naive.state_dict()
    names = naive.paired_names(ours)
    assert_all_close([(a, ours_sd[a].float(), naive_sd[b].float()) for a, b in names], 1e-6, 1e-5, "tensors")

    # gradients of weights and of alphas/betas, all from one loss
    loss_ours = F.cross_entropy(logits_ours, y, ignore_index=255)
    loss_naive = F.cross_entropy(logits_naive, y, ignore_index=255)
    ours_params, naive_params = dict(ours.named_parameters()), dict(naive.named_parameters())
    names = [(a, b) for a, b in names if a in ours_params]
    grads_ours = torch.autograd.grad(loss_ours, [ours_params[a] for a, _ in names], allow_unused=True)
    grads_naive = torch.autograd.grad(loss_naive, [naive_params[b] for _, b in names], allow_unused=True)
    arch = {id(p) for p in ours.arch_parameters()}
    compared, checked_arch = [], 0
    for (a, b), g_ours, g_naive in zip(names, grads_ours, grads_naive):
        if g_ours is None or g_naive is None:  # e.g. ops on an edge from a missing l-2 input
            assert g_ours is None or not g_ours.any(), a
            assert g_naive is None or not g_naive.any(), b
            continue
        compared.append((a, g_ours, g_naive))
        checked_arch += id(ours_params[a]) in arch
    assert checked_arch == len(ours.arch_parameters())
    assert len(compared) > 0.5 * len(names)
    assert_all_close(compared, 1e-4, 1e-4, "gradients")


def test_darts_cifar_net_same_function():
    space = bench_space("darts_cifar", width=8, layers=5)
    torch.manual_seed(1)
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 10, (2,))
    check_same_function(space, 10, x, y)


def test_darts_segmentation_net_same_function():
    space = bench_space("darts", width=4, layers=3)
    torch.manual_seed(2)
    x, y = torch.randn(2, 3, 33, 30), torch.randint(0, 5, (2, 33, 30))  # odd sizes down the strides
    check_same_function(space, 5, x, y)


def test_autodeeplab_lattice_same_function():
    space = bench_space("autodeeplab", width=2, layers=2)  # up, same and down moves; missing l-2 inputs
    torch.manual_seed(3)
    x, y = torch.randn(2, 3, 33, 33), torch.randint(0, 4, (2, 33, 33))
    y[0, :4] = 255  # ignored pixels
    check_same_function(space, 4, x, y)


def test_none_is_computed_and_every_op_has_its_own_relu():
    space = bench_space("darts_cifar", width=4, layers=3)
    ours, naive = pair(space, 10)
    edge_ours, edge_naive = ours.cells["L1_0"].edges[0], naive.cells["L1_0"].edges[0]
    assert len(edge_naive.ops) == len(space.op_names) == len(edge_ours.ops) + 1  # `none` kept
    assert isinstance(edge_naive.ops[space.op_names.index("none")], sf.Zero)
    relus = [m for m in edge_naive.ops[space.op_names.index("sep_conv_3x3")].modules()
             if isinstance(m, torch.nn.ReLU)]
    assert len(relus) == 2  # DARTS SepConv: ReLU-dw-pw-BN twice
    assert all(p.requires_grad for p in naive.arch_parameters())


def test_straightforward_steps_update_like_the_originals():
    """The weight step's backward also fills the alphas' grads (DARTS train_search.py); the first-order
    architecture step's backward also fills the weights' grads (DARTS architect.py)."""
    space = bench_space("darts_cifar", width=4, layers=3)
    _, naive = pair(space, 10)
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 10, (2,))
    weights = list(naive.weight_parameters())
    opt = torch.optim.SGD(weights, lr=0.1, momentum=0.9)
    arch_opt = torch.optim.Adam(naive.arch_parameters(), lr=3e-4)
    before = [w.detach().clone() for w in weights]
    loss = sf.straightforward_weight_step(naive, x, y, opt, 5.0)
    assert loss > 0
    assert any(not torch.equal(w, b) for w, b in zip(weights, before))
    assert all(a.grad is not None for a in naive.arch_parameters())
    alphas = [a.detach().clone() for a in naive.arch_parameters()]
    opt.zero_grad()
    sf.straightforward_arch_step_first(naive, x, y, arch_opt)
    assert all(not torch.equal(a, b) for a, b in zip(naive.arch_parameters(), alphas))
    assert sum(w.grad is not None for w in weights) > 0.9 * len(weights)


def test_paired_names_rejects_a_different_space():
    ours, _ = pair(bench_space("darts_cifar", width=4, layers=3), 10)
    other = sf.StraightforwardSupernet(bench_space("darts_cifar", width=6, layers=3), 10)
    with pytest.raises(ValueError, match="cannot match"):
        other.load_from(ours)
