"""The DSL: built-in spaces, compiled graphs, validation messages, op registration."""

import copy
import json
import subprocess
import sys

import pytest
import torch
import yaml

from nasseg import space as spaces
from nasseg.shell.cli.main import main
from nasseg.errors import SpecError
from nasseg.space.ops import OPS, register_op
from nasseg.supernet import Supernet


def darts_cifar_dict():
    return yaml.safe_load((spaces.BUILTIN_DIR / "darts_cifar.yaml").read_text())


def write(tmp_path, data, name="space.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def error_of(tmp_path, data) -> str:
    path = write(tmp_path, data)
    with pytest.raises(SpecError) as info:
        spaces.load(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_builtin_spaces_load():
    assert spaces.builtin_spaces() == ["autodeeplab", "darts", "darts_cifar", "robustdarts_s2",
                                       "robustdarts_s3", "robustdarts_s4"]
    for name in spaces.builtin_spaces():
        spaces.load(name)
    assert spaces.load("robustdarts_s4").op_names == ("noise", "sep_conv_3x3")
    assert spaces.load("robustdarts_s3").cell.decode_exclude == ("none",)


def test_darts_cifar_info_matches_paper(capsys):
    assert main(["info", "search_spaces/darts_cifar.yaml", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params"] == 1930618  # REFERENCE.md: DARTS CIFAR search network
    assert report["arch_params"] == 224  # 2 x 14 x 8
    assert report["alphas"] == {"normal": 112, "reduce": 112}


def test_darts_cell_graph():
    graph = spaces.load("darts_cifar").cell_graph
    assert graph.number_of_edges() == 14
    assert [graph.in_degree(n) for n in range(2, 6)] == [2, 3, 4, 5]
    assert graph.graph["outputs"] == (2, 3, 4, 5)
    # alphas rows follow the DARTS order: node 2 from 0,1; node 3 from 0,1,2; ...
    order = sorted(graph.edges, key=lambda e: graph.edges[e]["index"])
    assert order[:5] == [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]


def test_darts_chain_reductions_and_strides():
    graph = spaces.load("darts_cifar").network_graph
    cells = sorted(n for n in graph if n[0] > 0)
    assert [graph.nodes[n]["cell_type"] for n in cells] == \
        ["normal", "normal", "reduce", "normal", "normal", "reduce", "normal", "normal"]
    assert [graph.nodes[n]["channels"] for n in cells] == [64, 64, 128, 128, 128, 256, 256, 256]
    assert graph.nodes[(4, 1)]["prev_prev"] == (2, 0)


def test_autodeeplab_lattice_has_only_reachable_states():
    space = spaces.load("autodeeplab")
    graph = space.network_graph
    levels = {layer: sorted(n[1] for n in graph if n[0] == layer) for layer in range(13)}
    assert levels[0] == [0] and levels[1] == [0, 1] and levels[2] == [0, 1, 2]
    assert all(levels[layer] == [0, 1, 2, 3] for layer in range(3, 13))
    # a state at stride s has B * F * s / 4 channels
    assert graph.nodes[(12, 3)]["channels"] == 5 * 8 * 32 // 4
    # no layer l-2 state at stride 16 exists for layer 2, so that cell has no H^{l-2}
    assert graph.nodes[(2, 2)]["prev_prev"] is None and graph.nodes[(3, 1)]["prev_prev"] == (1, 1)
    net = Supernet(space, 19)
    assert net.betas.numel() == 105  # one softmax per state over its outgoing transitions
    assert net.alphas["normal"].numel() == 20 * 8


def test_transitions_subset_restricts_the_lattice(tmp_path):
    data = yaml.safe_load((spaces.BUILTIN_DIR / "autodeeplab.yaml").read_text())
    data["network"]["transitions"] = ["same", "down"]
    data["network"]["layers"] = 3
    graph = spaces.load(write(tmp_path, data)).network_graph
    assert {d["transition"] for *_, d in graph.edges(data=True)} == {"same", "down"}


# --- validation: one line naming the file, the key path and what was expected ---------------

def test_unknown_op_suggests(tmp_path):
    data = darts_cifar_dict()
    data["ops"][4] = "sep_conv_3x4"
    message = error_of(tmp_path, data)
    assert "ops[4]: unknown op 'sep_conv_3x4'" in message and "did you mean 'sep_conv_3x3'" in message


def test_unknown_key_suggests(tmp_path):
    data = darts_cifar_dict()
    data["cell"]["nodez"] = data["cell"].pop("nodes")
    message = error_of(tmp_path, data)
    assert "cell: nodes: missing" in message or "cell.nodes: missing; expected an integer" in message
    data = darts_cifar_dict()
    data["network"]["layres"] = 3
    message = error_of(tmp_path, data)
    assert "network.layres: unknown key" in message and "did you mean 'layers'" in message


def test_wrong_type(tmp_path):
    data = darts_cifar_dict()
    data["network"]["C"] = "sixteen"
    assert "network.C: expected an integer >= 1 and <= 4096, got 'sixteen'" in error_of(tmp_path, data)
    data = darts_cifar_dict()
    data["cell"]["nodes"] = True
    assert "cell.nodes: expected an integer >= 1 and <= 24, got True" in error_of(tmp_path, data)


def explicit_edges(pairs):
    return [{"from": s, "to": t} for s, t in pairs]


def test_cycle(tmp_path):
    data = darts_cifar_dict()
    data["cell"]["nodes"] = 2
    data["cell"]["edges"] = explicit_edges([(0, 2), (1, 2), (3, 2), (2, 3)])
    message = error_of(tmp_path, data)
    assert "cell.edges: the edges form a cycle (2 -> 3 -> 2)" in message


def test_node_without_input(tmp_path):
    data = darts_cifar_dict()
    data["cell"]["nodes"] = 3
    data["cell"]["edges"] = explicit_edges([(0, 2), (1, 2), (0, 3), (2, 3)])
    message = error_of(tmp_path, data)
    assert "cell.edges: intermediate node 4 has no input edge" in message


def test_output_not_a_node(tmp_path):
    data = darts_cifar_dict()
    data["cell"]["outputs"] = [2, 3, 7]
    message = error_of(tmp_path, data)
    assert "cell.outputs[2]: 7 is not an intermediate node; expected one of 2..5" in message


def test_strides_not_doubling(tmp_path):
    data = yaml.safe_load((spaces.BUILTIN_DIR / "autodeeplab.yaml").read_text())
    data["network"]["strides"] = [4, 8, 24, 32]
    message = error_of(tmp_path, data)
    assert "network.strides: [4, 8, 24, 32] is not a doubling sequence" in message


def test_layers_below_one(tmp_path):
    data = darts_cifar_dict()
    data["network"]["layers"] = 0
    assert "network.layers: must be >= 1, got 0" in error_of(tmp_path, data)


def test_empty_op_set(tmp_path):
    data = darts_cifar_dict()
    data["ops"] = []
    assert "ops: empty; expected a list of op names" in error_of(tmp_path, data)
    data = darts_cifar_dict()
    data["cell"]["edges"] = [{"from": 0, "to": 2, "ops": []}, {"from": 1, "to": 2}] + \
        explicit_edges([(s, t) for t in (3, 4, 5) for s in range(t)])
    assert "cell.edges[0].ops: empty; expected a list of op names" in error_of(tmp_path, data)


def test_bad_yaml_and_missing_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("ops: [none,\n  cell: {")
    with pytest.raises(SpecError, match="invalid YAML"):
        spaces.load(path)
    with pytest.raises(SpecError, match="file not found"):
        spaces.load(tmp_path / "absent.yaml")


def test_cli_error_is_one_line_without_traceback(tmp_path):
    data = darts_cifar_dict()
    data["ops"][1] = "max_pool_3x33"
    path = write(tmp_path, data, "broken.yaml")
    result = subprocess.run([sys.executable, "-m", "nasseg", "info", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0] == (f"nasseg: error: {path}: ops[1]: unknown op 'max_pool_3x33'; registered ops: "
                        + ", ".join(sorted(OPS)) + " (did you mean 'max_pool_3x3'?)")


# --- extending: a new op is one registration ------------------------------------------------

def test_registered_op_usable_from_yaml(tmp_path):
    @register_op("test_scaled_identity", parameter_free=True)
    def scaled_identity(C, stride, affine, scale: float = 2.0):
        """x * scale (test op)."""
        return ScaledIdentity(scale)

    try:
        data = darts_cifar_dict()
        data["ops"] = ["sep_conv_3x3", {"name": "double", "op": "test_scaled_identity", "scale": 2.0}]
        data["network"]["reductions"] = []
        data["network"]["layers"] = 1
        data["cell"]["decode"] = {"k": 2}
        space = spaces.load(write(tmp_path, data))
        assert space.op("double").params == {"scale": 2.0}
        net = Supernet(space)
        assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)
        data["ops"][1]["scal"] = 1.0
        assert "ops[1].scal: unknown parameter; op 'test_scaled_identity' takes scale" in error_of(tmp_path, data)
    finally:
        OPS.unregister("test_scaled_identity")


class ScaledIdentity(torch.nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale
