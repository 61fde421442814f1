"""The bad inputs of issue 18 that passed a reader before it was fixed, one family per test: each is
now one line naming the file or the flag, the value and what was expected (exit status 2), never a
traceback, a crash deep in torch, a huge allocation or a silently wrong run. The families as a whole
are fuzzed by tests/test_fuzz_inputs.py."""

from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from nasseg import models
from nasseg.arch import parse_arch
from nasseg.data.registry import open_source
from nasseg.errors import NassegError, SpecError
from nasseg.extras import MissingExtra
from nasseg.io import atomic_write_text
from nasseg.registry import Registry
from nasseg.search.config import parse_job
from nasseg.search.data import build_search_data, check_search_data
from nasseg.shell.cli.main import main
from nasseg.space import parse_space
from nasseg.train.checkpoint import build_model, meta_from_payload
from nasseg.train.config import parse_train_job
from nasseg.train.losses import as_outputs

REPO = Path(__file__).resolve().parents[1]
SPACE = {
    "ops": ["none", "skip_connect", "sep_conv_3x3"],
    "cell": {"nodes": 2},
    "network": {"type": "chain", "C": 4, "layers": 3, "reductions": [1],
                "stem": {"type": "three_conv", "channels": [8, 8, 8]}, "head": {"type": "aspp", "rates": [48]},
                "classes": 11},
}
ARCH = yaml.safe_load((REPO / "nasseg" / "archs" / "darts_v2.yaml").read_text())


def error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nasseg: error: "), lines
    return lines[0]


def refused(read, *needles: str) -> str:
    with pytest.raises(NassegError) as exc:
        read()
    message = str(exc.value)
    assert "\n" not in message and all(n in message for n in needles), message
    return message


def with_value(doc: dict, dotted: str, value: object) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = dotted.split(".")
    target = doc
    for key in parents:
        target = target[key]
    target[last] = value
    return doc


# --- numbers: finite, in range, sized for a machine ------------------------------------------------

@pytest.mark.parametrize("key, value, needle", [
    ("weights.lr", float("inf"), "weights.lr: expected a finite number, got inf"),
    ("arch.lr", float("nan"), "arch.lr: expected a finite number, got nan"),
    ("alpha_limit", float("inf"), "alpha_limit: expected a finite number"),
    ("resources.gpus", float("inf"), "resources.gpus: expected a finite number"),
    ("arch.betas", [1.0, 0.5], "arch.betas[0]: must be < 1, got 1.0"),
    ("data.size", [99999, 99999], "data.size: 99999x99999 is 9,999,800,001 pixels; expected [H, W] of at most"),
    ("data.batch_size", 1, "data.batch_size: must be >= 2, got 1 (batch normalisation needs 2 images)"),
    ("seeds", [0, 0], "seeds: seed 0 is listed twice"),
    ("seeds", [2**40], "seeds[0]: must be <= 4294967295"),
    ("early_stop", {"rule": []}, "early_stop.rule: expected one of paper, released, none, got []"),
])
def test_search_job_values(key: str, value: object, needle: str) -> None:
    job = with_value({"space": "darts", "data": {}, "arch": {}, "weights": {}, "resources": {}}, key, value)
    refused(lambda: parse_job(job, "job.yaml"), "job.yaml: " + needle)


@pytest.mark.parametrize("key, value, needle", [
    ("network.head.channels", 10**12, "network.head.channels: must be <= 4096"),
    ("network.head.rates", [1e300], "network.head.rates[0]: must be <= 4096"),
    ("network.stem.strides", [8, 1, 1], "network.stem.strides[0]: must be <= 4"),
    ("network.classes", 10**9, "network.classes: must be <= 10000"),
    ("network.type", [], "network.type: expected one of chain, lattice, got []"),
    ("network.head.type", ["aspp"], "network.head.type: got ['aspp']; expected one of"),
    ("ops", ["none", {"name": "n", "op": "noise", "mean": float("inf")}], "ops[1].mean: expected a finite number"),
    ("ops", ["none", {"name": "d", "op": "conv_3x3", "dilation": 10**9}], "ops[1].dilation: must be <= 256"),
    ("ops", ["none", "a" * 10**5], "ops[1]: unknown op 'aaaa"),
])
def test_space_values(key: str, value: object, needle: str) -> None:
    message = refused(lambda: parse_space(with_value(SPACE, key, value), "space.yaml"), "space.yaml: " + needle)
    assert len(message) < 600


@pytest.mark.parametrize("key, value, needle", [
    ("cells.normal.concat", [], "cells.normal.concat: empty"),
    ("cells.normal.concat", [2, 2], "cells.normal.concat[1]: node 2 is listed twice"),
    ("path", [4] * 5000, "path: 5000 entries; expected at most 256"),
    ("cells.normal.nodes.2", [5], "cells.normal.nodes.2[0]: expected [op, input node], got 5"),
])
def test_architecture_values(key: str, value: object, needle: str) -> None:
    doc = copy.deepcopy(ARCH)
    if key == "cells.normal.nodes.2":
        doc["cells"]["normal"]["nodes"][2] = value
    else:
        doc = with_value(doc, key, value)
    refused(lambda: parse_arch(doc, "arch.yaml"), "arch.yaml: " + needle)


def test_a_network_too_large_to_allocate_is_refused_before_it_is_built() -> None:
    refused(lambda: models.build("autodeeplab_s", 11, F=4000), "would hold", "weights", "nasseg builds at most")


def test_an_autodeeplab_path_beyond_stride_64_is_refused() -> None:
    doc = yaml.safe_load((REPO / "nasseg" / "archs" / "autodeeplab.yaml").read_text())
    doc["path"] = [4, 8, 16, 32, 64, 128]
    refused(lambda: models.build(parse_arch(doc, "a.yaml"), 11), "stay within 4", "and 64")


def test_a_classification_network_is_refused_for_segmentation_training() -> None:
    refused(lambda: as_outputs(torch.zeros(2, 11)), "classification network")


def test_training_jobs_name_the_model_key_and_the_architecture_file(tmp_path: Path) -> None:
    refused(lambda: parse_train_job({"model": "nope"}, "t.yaml"), "t.yaml: model: unknown model 'nope'")
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    refused(lambda: parse_train_job({"model": str(space)}, "t.yaml"),
            f"t.yaml: model: {space}: a search space, not an ArchSpec")


# --- values that fit the schema, not the data --------------------------------------------------------

@pytest.mark.parametrize("changes, needle", [
    ({"data": {"batch_size": 3}}, "data.batch_size: 3 is larger than each half of the 4 training images"),
    ({"data": {"val_batch_size": 1000}}, "data.val_batch_size: 1000 is larger than the val split"),
    ({"hessian": {"batch_size": 100}}, "hessian.batch_size: 100 is larger than half B (2 images)"),
    ({"data": {"limit": 100000}}, "data.limit: 100000 is more than the 48 images of the train split"),
    ({"data": {"crop": [4, 4]}}, "data.crop: [4, 4] is smaller than the supernet's largest stride 16"),
])
def test_search_values_are_checked_against_the_data_and_the_supernet(changes: dict, needle: str) -> None:
    job = {"space": "darts", "data": {"size": [32, 48], "crop": [32, 32], "limit": 4, "batch_size": 2,
                                      "val_batch_size": 2}}
    for section, values in changes.items():
        job[section] = {**job.get(section, {}), **values}
    config = parse_job(job, "job.yaml")
    refused(lambda: check_search_data(config, build_search_data(config.data, 0), 16), "job.yaml: " + needle)


# --- files ---------------------------------------------------------------------------------------

def test_a_fifo_is_refused_without_reading_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "space.yaml"
    os.mkfifo(fifo)
    assert "not a regular file (a FIFO, socket or device)" in error_line(capsys, ["info", str(fifo)])


def test_outputs_that_cannot_be_written_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(lambda: atomic_write_text(tmp_path, "x"), f"{tmp_path}: is a directory")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    refused(lambda: atomic_write_text(blocker / "out.yaml", "x"), "cannot write here")
    assert "cannot create the run directory" in error_line(capsys, [
        "train", "icnet_resnet50", "--data", "camvid_demo", "--out", str(blocker), "--quiet", "--force"])


def test_dataset_yaml_is_read_strictly(tmp_path: Path) -> None:
    for text, needle in [("classes: [a, a]\n", "classes: 'a' is listed twice"),
                         ("classes: [a]\ncolours: 1\n", "colours: unknown key"),
                         ("classes: [a]\nclasses: [b]\n", "duplicate key 'classes'"),
                         ("classes: [a]\nignore_index: -1\n", "ignore_index: must be >= 0")]:
        (tmp_path / "dataset.yaml").write_text(text)
        refused(lambda: open_source(f"folder:{tmp_path}"), f"{tmp_path / 'dataset.yaml'}: ", needle)


def test_checkpoint_records_are_validated() -> None:
    payload = {"model": {"name": "icnet_resnet50", "arch": None, "args": {}, "num_classes": 2},
               "data": {"dataset": "x", "classes": ["a", "b"], "ignore_index": 255, "mean": [0.5] * 3,
                        "std": [0.5] * 3, "crop": [8, 8], "palette": [[0, 0, 0], [1, 1, 1]], "size": None},
               "iteration": 1, "iters": 1}
    meta_from_payload(payload, "ok.pt")
    for key, value, needle in [("model.num_classes", -3, "model.num_classes: must be >= 1"),
                               ("data.std", [0, 0, 0], "data.std[0]: must be > 0"),
                               ("data.size", [10**6, 10**6], "data.size: 1000000x1000000 is"),
                               ("data.palette", [[0, 0, 0]], "data.palette holds 1 entries for model.num_classes 2")]:
        refused(lambda: meta_from_payload(with_value(payload, key, value), "x.pt"), "x.pt: " + needle)
    arch = with_value(with_value(payload, "model.name", None), "model.arch", "a: &a [x]\nb: [*a, *a\n")
    refused(lambda: build_model(meta_from_payload(arch, "x.pt"), "x.pt"), "x.pt (its model.arch): ", "invalid YAML")


# --- errors raised in worker processes, unhashable names, flags ----------------------------------

def test_nassegs_errors_survive_pickling_as_ray_and_dataloader_workers_send_them() -> None:
    spec = pickle.loads(pickle.dumps(SpecError("job.yaml", "data.crop", "too small")))
    assert (str(spec), spec.key) == ("job.yaml: data.crop: too small", "data.crop")
    assert "pip install 'nasseg[export]'" in str(pickle.loads(pickle.dumps(MissingExtra("f", "export", "r"))))


def test_a_list_or_mapping_is_no_registry_name() -> None:
    registry = Registry("thing")
    assert [] not in registry and {} not in registry


@pytest.mark.parametrize("argv, needle", [
    (["search", "jobs/demo.yaml", "--no-ray", "--seed", "-1"], "--seed: expected a seed"),
    (["evaluate", "x.pt", "--data", "camvid_demo", "--scales", "nan"], "--scales: expected scales above 0"),
    (["evaluate", "x.pt", "--data", "camvid_demo", "--workers", "-1"], "--workers: expected an integer >= 0"),
    (["info", "darts", "--classes", "1000000000"], "--classes: expected at most 10,000 classes"),
    (["info", "darts", "--input", "99999x99999"], "--input: '99999x99999' is 9,999,800,001 pixels"),
])
def test_flags_out_of_range_are_usage_errors(argv: list[str], needle: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and needle in capsys.readouterr().err


@pytest.mark.parametrize("flags, needle", [
    (["--threads", "100000"], "--threads 1..256"), (["--device", "gpu"], "--device gpu: expected cpu, cuda"),
    (["--adl-crops", "abc"], "--adl-crops: expected sizes 16..1024"), (["--seed", "-1"], "--seed must be"),
    (["--epoch-steps", "-1"], "--epoch-steps must be >= 0"),
])
def test_bench_flags_are_checked_before_any_suite_runs(flags: list[str], needle: str, capsys) -> None:
    assert needle in error_line(capsys, ["bench", "--quick", "--memory", "off", *flags])


def test_bench_outputs_are_checked_before_any_suite_runs(tmp_path: Path, capsys) -> None:
    assert "is a directory" in error_line(capsys, ["bench", "--quick", "--csv", str(tmp_path)])


def test_info_of_a_space_at_one_pixel_counts_instead_of_crashing(tmp_path: Path, capsys) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    assert main(["info", str(space), "--input", "1x1", "--json"]) == 0
    assert '"macs"' in capsys.readouterr().out

