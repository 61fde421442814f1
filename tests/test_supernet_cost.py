"""supernet_cost (what `nasseg info` reports for a space) equals the whole supernet's parameters and
multiply-adds, and oversized spaces are refused before anything is built."""

import pytest
import torch
import yaml

from nasseg import space as spaces
from nasseg.complexity import count_macs, count_params, meta_device
from nasseg.errors import SpecError
from nasseg.shell.cli.main import main
from nasseg.supernet import Supernet
from nasseg.supernet.cost import supernet_cost


@pytest.mark.parametrize("name", spaces.builtin_spaces())
def test_cost_equals_the_whole_supernet(name):
    """Every built-in space's structure, cut so that building the whole supernet stays quick: a chain
    to 5 layers (both DARTS reductions), a lattice to 4 layers of 3-node cells (every level and
    transition, states with and without an l-2 input)."""
    data = yaml.safe_load((spaces.BUILTIN_DIR / f"{name}.yaml").read_text())
    lattice = data["network"]["type"] == "lattice"
    data["network"]["layers"] = 4 if lattice else 5
    if lattice:
        data["cell"]["nodes"] = 3
    space = spaces.parse_space(data, name)
    space.cell_graph, space.network_graph
    classes = None if space.network.classes else 11
    size = (61, 83)  # odd sizes: every level rounds up
    cost = supernet_cost(space, classes, size)
    with meta_device():
        net = Supernet(space, classes).eval()
        image = torch.zeros(1, 3, *size)
    assert cost.params == count_params(net.weight_parameters())
    assert cost.alphas == {k: v.numel() for k, v in net.alphas.items()}
    assert cost.betas == (net.betas.numel() if net.betas is not None else 0)
    assert cost.macs == count_macs(lambda: net(image))


def test_darts_cifar_counts_as_the_paper():
    assert supernet_cost(spaces.load("darts_cifar"), None, (32, 32)).params == 1_930_618


@pytest.mark.parametrize("change, key", [
    (lambda d: d["cell"].update(nodes=100_000), "cell.nodes: must be <= 24"),
    (lambda d: d["network"].update(layers=100_000_000), "network.layers: must be <= 256"),
    (lambda d: d["network"].update(layers=200), "network.layers: the supernet would hold up to"),
])
def test_oversized_spaces_are_refused_before_building(tmp_path, capsys, change, key):
    data = yaml.safe_load((spaces.BUILTIN_DIR / "darts_cifar.yaml").read_text())
    change(data)
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"nasseg: error: {path}: {key}") and "\n" not in err
    with pytest.raises(SpecError):
        spaces.load(path)
