"""Random architectures (nasseg.arch.sample): uniform over the valid architectures of a space (checked
against a brute-force enumeration with a chi-square test), reproducible, and buildable."""

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch
import yaml

from nasseg import space as spaces
from nasseg.arch import count_architectures, sample_architecture
from nasseg.arch.sample import count_genotypes, count_paths, draw_below, sample_cell
from nasseg.models import build

# Edges with different usable ops, one edge that can never be kept (only `none`), k = 2: a node's
# edge sets are not equally likely (node 3: {0,1} and {1,2} leave 3 op choices each, {0,2} one),
# which a sampler drawing the set first and the ops second would get wrong.
SMALL = {
    "name": "small",
    "ops": ["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"],
    "cell": {"inputs": 2, "nodes": 3, "decode": {"k": 2},
             "edges": [{"from": 0, "to": 2, "ops": ["none", "skip_connect", "sep_conv_3x3"]},
                       {"from": 1, "to": 2, "ops": ["max_pool_3x3"]},
                       {"from": 0, "to": 3, "ops": ["none", "skip_connect"]},
                       {"from": 1, "to": 3, "ops": ["skip_connect", "sep_conv_3x3", "max_pool_3x3"]},
                       {"from": 2, "to": 3, "ops": ["sep_conv_3x3", "none"]},
                       {"from": 2, "to": 4, "ops": ["none"]},
                       {"from": 3, "to": 4, "ops": ["none", "skip_connect"]},
                       {"from": 1, "to": 4, "ops": ["sep_conv_3x3", "max_pool_3x3"]}]},
    "network": {"type": "lattice", "F": 2, "layers": 3, "strides": [4, 8, 16], "transitions": ["down", "same", "up"],
                "stem": {"type": "three_conv", "channels": [8, 8, 8]}, "head": {"type": "aspp", "rates": [24]},
                "classes": 11},
}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("sample") / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    return spaces.load(path)


def brute_force(space):
    """Every valid architecture, enumerated from the space's definition alone: per node every set of
    min(k, usable) distinct inputs whose edges have an op outside `exclude`, every op per kept edge;
    every path of levels from the stem that moves at most one level per layer."""
    k = space.cell.decode_k
    per_node = []
    for node in space.cell.intermediate:
        edges = {e.source: [op for op in e.ops if op not in space.cell.decode_exclude]
                 for e in space.cell.edges if e.target == node}
        usable = sorted(s for s, ops in edges.items() if ops)
        options = []
        for subset in itertools.combinations(usable, min(k, len(usable))):
            for ops in itertools.product(*(edges[s] for s in subset)):
                options.append(frozenset(zip(ops, subset)))
        per_node.append(options)
    genotypes = [tuple(choice) for choice in itertools.product(*per_node)]
    net = space.network
    paths = [tuple(net.strides[level] for level in levels)
             for levels in itertools.product(range(len(net.strides)), repeat=net.layers)
             if abs(levels[0]) <= 1 and all(abs(a - b) <= 1 for a, b in zip(levels, levels[1:]))]
    return {(g, p) for g in genotypes for p in paths}


def key(arch):
    """An architecture as a hashable value: each node's set of (op, input), and the path."""
    cell = arch.cells["normal"]
    return tuple(frozenset(cell.nodes[n]) for n in sorted(cell.nodes)), arch.path


def test_counts_match_the_enumeration(small):
    everything = brute_force(small)
    # node 2: 2 x 1 op choices; node 3: 1x3 + 1x1 + 3x1 = 7; node 4: edges 3->4 and 1->4 only (2->4 has
    # nothing outside `none`), 1 x 2 = 2
    assert count_genotypes(small.cell_graph) == 2 * 7 * 2 == 28
    assert count_paths(small.network_graph) == 12 and count_architectures(small) == len(everything) == 28 * 12
    # DARTS: nodes with 2, 3, 4, 5 inputs, 7 ops outside `none`, normal and reduce cells
    darts = spaces.load("darts")
    assert count_architectures(darts) == math.prod(math.comb(n, 2) * 49 for n in (2, 3, 4, 5)) ** 2


def test_uniform_over_every_valid_architecture(small):
    """Pearson's chi-square over all 336 architectures, 50 draws each expected: the statistic stays
    below the 0.999 quantile of chi-square(335) (Wilson-Hilferty; the draws are seeded, so the test is
    deterministic), and node 3's edge sets come with their genotype shares, not uniformly."""
    everything = brute_force(small)
    rng = np.random.default_rng(12345)
    draws = 50 * len(everything)
    counts = Counter(key(sample_architecture(small, rng)) for _ in range(draws))
    assert set(counts) == everything  # every draw valid, every valid architecture drawn
    expected = draws / len(everything)
    statistic = sum((counts[a] - expected) ** 2 / expected for a in everything)
    df = len(everything) - 1
    z = 3.0902  # the standard normal's 0.999 quantile
    critical = df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
    assert statistic < critical, (statistic, critical)
    # node 3 keeps {0, 2} in 1 of its 7 genotypes; drawing its edge set uniformly would give 1/3
    share = sum(c for a, c in counts.items() if {s for _, s in a[0][1]} == {0, 2}) / draws
    assert abs(share - 1 / 7) < 0.01, share


def test_same_seed_same_architecture(small):
    darts = spaces.load("darts")
    first = [sample_architecture(darts, [7, i]).to_yaml() for i in range(3)]
    assert first == [sample_architecture(darts, [7, i]).to_yaml() for i in range(3)]
    assert len(set(first)) == 3
    assert sample_architecture(darts, 7).to_yaml() != sample_architecture(darts, 8).to_yaml()
    # the raw PCG64 stream alone decides a draw (numpy keeps bit streams stable across releases): pinned values,
    # so that a change of the sampler, which would change every study's random architectures, shows here
    rng = np.random.default_rng(0)
    assert [draw_below(1000, rng) for _ in range(5)] == [271, 617, 24, 533, 971]
    assert sample_architecture(darts, [0, 0]).cells["normal"].edges() == [
        (0, 2, "sep_conv_5x5"), (1, 2, "avg_pool_3x3"), (0, 3, "dil_conv_5x5"), (2, 3, "avg_pool_3x3"),
        (1, 4, "skip_connect"), (3, 4, "sep_conv_5x5"), (2, 5, "sep_conv_3x3"), (3, 5, "sep_conv_3x3")]
    assert key(sample_architecture(small, 3)) == key(sample_architecture(small, np.random.default_rng(3)))
    cell = sample_cell(darts.cell_graph, 0)
    assert cell.nodes == sample_cell(darts.cell_graph, 0).nodes


def test_draw_below_is_exact():
    rng = np.random.default_rng(1)
    values = [draw_below(3, rng) for _ in range(3000)]
    assert set(values) == {0, 1, 2} and all(abs(values.count(v) - 1000) < 100 for v in range(3))
    assert draw_below(1, rng) == 0
    with pytest.raises(ValueError):
        draw_below(0, rng)


def test_sampled_architectures_build_and_run():
    darts = spaces.load("darts")
    arch = sample_architecture(darts, 0, name="r0", meta={"seed": 0})
    assert set(arch.cells) == {"normal", "reduce"} and arch.path is None and arch.meta == {"seed": 0}
    for cell in arch.cells.values():  # k = 2 distinct inputs per node, never `none`
        for node, kept in cell.nodes.items():
            assert len({source for _, source in kept}) == 2 and all(op != "none" for op, _ in kept)
    with torch.no_grad():
        out = build(arch, 11, C=4, layers=3).eval()(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 11, 32, 32)
    lattice = sample_architecture(spaces.load("autodeeplab"), 5)
    assert len(lattice.path) == 12 and lattice.path[0] in (4, 8)
    assert all(b in (a // 2, a, 2 * a) for a, b in zip(lattice.path, lattice.path[1:]))
