"""`nasseg export`: ONNX files that onnxruntime runs with PyTorch's results."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from nasseg.errors import NassegError
from nasseg.models import build
from nasseg.train import export as export_mod
from nasseg.shell.cli.inference import add_export_parser
from nasseg.train.export import export_onnx
from test_evaluate import make_checkpoint, run_cli

SIZE = (64, 96)


def fresh(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(name, 11)


# ICNet's pyramid pooling has no legacy (TorchScript) ONNX form: auto falls back to dynamo (~10 s).
@pytest.mark.parametrize("name,exporter", [("deeplabv3plus_mobilenetv2", "legacy"),
                                           ("icnet_resnet50", "dynamo"),
                                           ("darts_v2_seg", "legacy")])
def test_onnx_matches_pytorch(tmp_path, name, exporter) -> None:
    report = export_onnx(fresh(name), tmp_path / "m.onnx", SIZE)
    assert report.exporter == exporter and report.checked_shapes == [(1, 3, *SIZE)]
    assert report.max_abs_diff <= 1e-5 * max(1.0, report.max_abs_logit)
    assert report.argmax_agreement >= 0.999
    assert report.file_bytes == (tmp_path / "m.onnx").stat().st_size > 1e6
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # one file, no temp/external data


def test_dynamic_export_runs_at_another_size(tmp_path) -> None:
    report = export_onnx(fresh("deeplabv3plus_mobilenetv2"), tmp_path / "d.onnx", SIZE, dynamic=True)
    assert report.checked_shapes == [(1, 3, 64, 96), (2, 3, 96, 112)]
    assert report.max_abs_diff <= 1e-5 * max(1.0, report.max_abs_logit)


@pytest.mark.slow
def test_dynamic_icnet_is_refused_with_both_exporters_reasons(tmp_path) -> None:
    with pytest.raises(NassegError, match="legacy: .*adaptive_avg_pool2d.*; dynamo: onnxruntime "
                                          "fails on input 2x3x96x112"):
        export_onnx(fresh("icnet_resnet50"), tmp_path / "i.onnx", SIZE, dynamic=True)
    assert list(tmp_path.iterdir()) == []


def test_a_diff_above_tolerance_fails_and_writes_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(export_mod, "compare", lambda model, path, shapes: (0.5, 2.0, 0.9))
    with pytest.raises(NassegError, match=r"legacy: max \|diff\| 5.00e-01 exceeds 0.0001"):
        export_onnx(fresh("darts_v2_seg"), tmp_path / "x.onnx", SIZE, exporter="legacy")
    assert list(tmp_path.iterdir()) == []


def test_export_command_defaults_to_the_training_crop_and_stores_metadata(tmp_path, capsys) -> None:
    checkpoint = make_checkpoint(tmp_path / "final.pt", crop=(48, 64))
    out = tmp_path / "model.onnx"
    code, stdout, _ = run_cli(add_export_parser, ["export", str(checkpoint), "-o", str(out)], capsys)
    assert code == 0 and "input 1x3x48x64" in stdout and "max |diff|" in stdout
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["nasseg.classes"])[0] == "Sky" and meta["nasseg.input"] == "48x64"
    model = onnx.load(str(out))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert model.graph.input[0].name == "image" and dims == [1, 3, 48, 64]

    code, _, err = run_cli(add_export_parser, ["export", str(tmp_path / "nope.pt"), "-o", str(out)],
                           capsys)
    assert code == 2 and "nope.pt: checkpoint not found" in err
