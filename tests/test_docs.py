"""Examples in the docs stay true: the custom space in docs/dsl.md loads, builds and runs."""

import re
from pathlib import Path

import torch
import yaml

from nasseg import space as spaces
from nasseg.supernet import Supernet

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_custom_space_in_dsl_doc(tmp_path):
    text = (DOCS / "dsl.md").read_text()
    block = re.search(r"```yaml\n(name: my_space.*?)```", text, re.S).group(1)
    path = tmp_path / "my_space.yaml"
    path.write_text(block)
    space = spaces.load(path)
    assert space.op("wide_dil").params == {"dilation": 4}
    assert space.cell_graph.edges[3, 4]["ops"] == ("none", "skip_connect", "wide_dil")
    transitions = {d["transition"] for *_, d in space.network_graph.edges(data=True)}
    assert transitions == {"same", "down"}
    net = Supernet(space)
    out = net(torch.randn(2, 3, 48, 64))
    assert out.shape == (2, 11, 48, 64)
    assert yaml.safe_load(block)["network"]["layers"] == space.network.layers
