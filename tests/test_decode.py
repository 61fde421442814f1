"""Decoding alphas/betas into ArchSpecs: the DARTS cell rule and the Viterbi network path."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import nasseg.arch
from nasseg.arch.decode import beta_groups, decode, decode_cell, decode_from_arrays, decode_path
from nasseg.arch.spec import check_path
from nasseg.errors import NassegError
from nasseg.space import load as load_space
from nasseg.supernet import Supernet

LATTICE_YAML = """\
name: tiny_lattice
ops: [none, skip_connect, avg_pool_3x3]
cell: {{inputs: 2, nodes: 2, decode: {{k: 1}}}}
network:
  type: lattice
  F: 2
  layers: {layers}
  strides: {strides}
  stem: {{type: three_conv, channels: [4, 4, 4], strides: [2, 1, 2]}}
  head: {{type: classifier}}
  classes: 3
"""


def genotype_logits(space, cell, rng: np.random.Generator) -> np.ndarray:
    """Pre-softmax alphas (edges x ops) that a correct decoder maps back to ``cell``.

    Kept edges: the kept op at logit 5 (first listed edge) or 4 (second), ``none`` at 6 so that it
    is the edge's largest weight, the other ops small noise. Dropped edges: ``none`` at 10, which
    makes them the strongest edges of all if ``none`` were not excluded, the other ops noise.
    """
    ops = list(space.op_names)
    graph = space.cell_graph
    logits = rng.normal(0.0, 0.3, size=(graph.number_of_edges(), len(ops)))
    for source, node, index in graph.edges(data="index"):
        logits[index, ops.index("none")] = 10.0
    for node, kept in cell.nodes.items():
        for rank, (op, source) in enumerate(kept):
            index = graph.edges[source, node]["index"]
            logits[index, ops.index("none")] = 6.0
            logits[index, ops.index(op)] = 5.0 - rank
    return logits


def test_darts_v2_round_trip():
    space = load_space("darts_cifar")
    assert space.op_names == ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                              "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
    darts_v2 = nasseg.arch.load("darts_v2")
    for seed in range(3):
        rng = np.random.default_rng(seed)
        alphas = {kind: genotype_logits(space, darts_v2.cells[kind], rng) for kind in ("normal", "reduce")}
        assert alphas["normal"].shape == (14, 8)
        arch = decode_from_arrays(space, alphas)
        assert arch.cells == darts_v2.cells
        assert arch.path is None and arch.space == "darts_cifar"


def test_decode_supernet_matches_arrays():
    space = load_space("darts_cifar")
    supernet = Supernet(space)
    rng = np.random.default_rng(0)
    darts_v2 = nasseg.arch.load("darts_v2")
    with torch.no_grad():
        for kind in ("normal", "reduce"):
            logits = genotype_logits(space, darts_v2.cells[kind], rng)
            supernet.alphas[kind].copy_(torch.from_numpy(logits.reshape(-1)))
    assert decode(supernet).cells == darts_v2.cells


def test_none_wins_without_exclusion():
    """The same logits with an empty exclude list keep `none` everywhere: exclusion does the work."""
    space = load_space("darts_cifar")
    graph = space.cell_graph.copy()
    graph.graph["decode_exclude"] = ()
    logits = genotype_logits(space, nasseg.arch.load("darts_v2").cells["normal"], np.random.default_rng(0))
    cell = decode_cell(graph, [torch.softmax(torch.from_numpy(row), 0) for row in logits])
    assert all(op == "none" for kept in cell.nodes.values() for op, _ in kept)


def test_ties_are_deterministic():
    space = load_space("darts_cifar")
    cell = decode_cell(space.cell_graph, [np.full(8, 1 / 8)] * 14)
    # every edge ties: the two lowest sources, and the first op after `none`
    assert cell.nodes == {n: (("max_pool_3x3", 0), ("max_pool_3x3", 1)) for n in (2, 3, 4, 5)}


def test_op_aliases_decode_to_registry_keys(tmp_path):
    path = tmp_path / "alias.yaml"
    path.write_text("""\
name: alias
ops: [none, {name: conv_a, op: sep_conv_3x3}, skip_connect]
cell: {inputs: 2, nodes: 2}
network: {type: chain, C: 2, layers: 1, stem: {type: conv, channels: 4}, head: {type: classifier}, classes: 2}
""")
    space = load_space(path)
    logits = np.zeros((5, 3))
    logits[:, 1] = 1.0
    arch = decode_from_arrays(space, {"normal": logits})
    assert {op for _, _, op in arch.cells["normal"].edges()} == {"sep_conv_3x3"}


def test_autodeeplab_cell():
    space = load_space("autodeeplab")
    cell = nasseg.arch.load("autodeeplab").cells["normal"]
    for seed in range(3):
        logits = genotype_logits(space, cell, np.random.default_rng(seed))
        assert logits.shape == (20, 8)  # 2+3+4+5+6 edges, 5 blocks with k = 2
        graph = space.cell_graph
        weights = [torch.softmax(torch.from_numpy(row), 0) for row in logits]
        assert decode_cell(graph, weights) == cell


def path_score(graph, weights, nodes) -> float:
    return sum(math.log(weights[(a, b)]) if (a, b) in weights else 0.0 for a, b in zip(nodes, nodes[1:]))


def brute_force(graph, weights) -> tuple[float, list[int]]:
    """Best log-product over every level sequence the lattice allows, by enumeration."""
    best = (-math.inf, [])
    for levels in itertools.product(range(len(graph.graph["strides"])), repeat=graph.graph["layers"]):
        nodes = [(0, 0)] + [(layer + 1, level) for layer, level in enumerate(levels)]
        if all(graph.has_edge(a, b) for a, b in zip(nodes, nodes[1:])):
            score = path_score(graph, weights, nodes)
            if score > best[0]:
                best = (score, [graph.nodes[n]["stride"] for n in nodes[1:]])
    return best


@pytest.mark.parametrize("strides", [[4, 8, 16], [4, 8, 16, 32]])
def test_viterbi_matches_bruteforce(tmp_path, strides):
    path = tmp_path / "lattice.yaml"
    path.write_text(LATTICE_YAML.format(layers=5, strides=strides))
    space = load_space(path)
    supernet = Supernet(space)
    graph = space.network_graph
    assert supernet.beta_groups == beta_groups(graph)
    for seed in range(8):
        betas = 2 * torch.randn(supernet.betas.numel(), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            supernet.betas.copy_(betas)
            weights = {key: float(w) for key, w in supernet.transition_weights().items()}
        best_score, best_path = brute_force(graph, weights)
        found = decode_path(graph, weights)
        nodes = [(0, 0)] + [(layer + 1, strides.index(s)) for layer, s in enumerate(found)]
        assert path_score(graph, weights, nodes) == pytest.approx(best_score, abs=1e-9)
        assert found == best_path
        assert list(decode(supernet).path) == best_path
        alphas = {"normal": supernet.alphas["normal"].detach().numpy()}
        assert list(decode_from_arrays(space, alphas, betas.numpy()).path) == best_path


def test_autodeeplab_path():
    space = load_space("autodeeplab")
    graph = space.network_graph
    groups = beta_groups(graph)
    alphas = {"normal": np.zeros(20 * 8)}
    rng = np.random.default_rng(0)
    for _ in range(5):
        arch = decode_from_arrays(space, alphas, rng.normal(size=sum(len(t) for _, t in groups)))
        assert len(arch.path) == 12 and arch.path[0] in (4, 8)
        check_path(list(arch.path))

    # betas favouring the published path decode to it
    target = nasseg.arch.load("autodeeplab").path
    levels = [0] + [[4, 8, 16, 32].index(s) for s in target]
    on_path = {((layer, a), (layer + 1, b)) for layer, (a, b) in enumerate(zip(levels, levels[1:]))}
    betas = np.concatenate([[3.0 if (source, t) in on_path else 0.0 for t in targets]
                            for source, targets in groups])
    assert decode_from_arrays(space, alphas, betas).path == target


def test_bad_arrays():
    with pytest.raises(NassegError, match="112 values"):
        decode_from_arrays("darts_cifar", {"normal": np.zeros(100), "reduce": np.zeros(112)})
    with pytest.raises(NassegError, match="cell types"):
        decode_from_arrays("darts_cifar", {"normal": np.zeros(112)})
    with pytest.raises(NassegError, match="betas are needed"):
        decode_from_arrays("autodeeplab", {"normal": np.zeros(160)})
