"""Supernets built from the compiled spaces: shapes, parameter split, gradient flow on real data."""

import copy

import pytest
import torch

from nasseg import space as spaces
from nasseg.data import demo_camvid
from nasseg.layers import to_channels_last
from nasseg.supernet import Supernet, build


def camvid_batch(n=2, crop=None):
    data = demo_camvid("train")
    images, labels = zip(*(data[i] for i in range(n)))
    x, y = torch.stack(images), torch.stack(labels)
    if crop:
        x, y = x[..., : crop[0], : crop[1]], y[..., : crop[0], : crop[1]]
    return x, y


def check_gradients_reach_every_arch_parameter(net, x, y):
    net.zero_grad()
    logits = net(x)
    assert logits.shape == (x.shape[0], net.num_classes, *x.shape[-2:])
    loss = torch.nn.functional.cross_entropy(logits, y, ignore_index=255)
    loss.backward()
    for name, param in net.alphas.items():
        assert param.grad is not None and torch.all(param.grad != 0), f"alphas[{name}] lacks gradient"
    if net.betas is not None:
        assert torch.all(net.betas.grad != 0), "a beta on a reachable path got no gradient"
    weights = list(net.weight_parameters())
    assert sum(p.grad is not None for p in weights) > 0.9 * len(weights)


def test_parameter_split_is_a_partition():
    net = build("autodeeplab", 19)
    arch = {id(p) for p in net.arch_parameters()}
    weights = {id(p) for p in net.weight_parameters()}
    assert arch.isdisjoint(weights) and arch | weights == {id(p) for p in net.parameters()}
    assert len(arch) == 2  # alphas (one shared cell type) and betas
    # listed once: a copy lists its own parameters, and channels-last keeps the parameter objects
    twin = copy.deepcopy(net)
    assert [id(p) for p in twin.weight_parameters()] == \
        [id(p) for p in twin.parameters() if id(p) not in {id(a) for a in twin.arch_parameters()}]
    assert not weights & {id(p) for p in twin.weight_parameters()}
    assert {id(p) for p in to_channels_last(net).weight_parameters()} == weights == \
        {id(p) for p in net.parameters()} - arch


def test_darts_segmentation_supernet_on_camvid():
    torch.manual_seed(0)
    x, y = camvid_batch(2)
    assert x.shape[-2:] == (180, 240)  # odd sizes down the strides: 45x60 -> 23x30 -> 12x15
    check_gradients_reach_every_arch_parameter(build("darts"), x, y)


def test_autodeeplab_supernet_on_camvid():
    torch.manual_seed(0)
    x, y = camvid_batch(2, crop=(72, 88))
    check_gradients_reach_every_arch_parameter(build("autodeeplab", 11), x, y)


def test_transition_weights_are_softmax_over_outgoing():
    net = build("autodeeplab", 19)
    weights = net.transition_weights()
    for source, targets in net.beta_groups:
        total = sum(weights[(source, t)] for t in targets)
        assert torch.isclose(total, torch.tensor(1.0))
    assert len(net.beta_groups[0][1]) == 2  # the stem goes to stride 4 or 8


@pytest.mark.parametrize("name", ["robustdarts_s2", "robustdarts_s3", "robustdarts_s4"])
def test_robustdarts_spaces_run(name):
    torch.manual_seed(0)
    net = build(name)
    assert net.alphas["normal"].numel() == 14 * len(net.space.ops)
    x, y = camvid_batch(2, crop=(64, 64))
    check_gradients_reach_every_arch_parameter(net, x, y)


def test_darts_cifar_supernet_classifies():
    net = build("darts_cifar")
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert net.space.cell_types == ("normal", "reduce")
    assert isinstance(net, Supernet) and net.space is not None
    # the reduction cells' input edges stride by 2: the cell after them works at half resolution
    assert net.graph.nodes[(3, 1)]["stride"] == 2 * net.graph.nodes[(2, 0)]["stride"]
