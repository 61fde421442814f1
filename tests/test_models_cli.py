"""`nasseg info` on models (and --latency); every registered model trained one step on CamVid."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from nasseg import arch as archs
from nasseg.shell.cli.main import main
from nasseg.complexity import count_params
from nasseg.data import demo_camvid
from nasseg.models import available_models, build
from nasseg.models.darts_net import DARTS_AUX_WEIGHT
from nasseg.models.icnet import ICNET_LOSS_WEIGHTS, upsample_logits

IGNORE = 255
CAMVID_CLASSES = 11


def info_json(capsys, *argv: str) -> dict:
    assert main(["info", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# --- nasseg info ---------------------------------------------------------------------------

def test_info_latency_of_a_model(capsys):
    report = info_json(capsys, "icnet_resnet50", "--input", "256x512", "--classes", "19",
                       "--latency")
    assert report["kind"] == "model" and report["input"] == "256x512"
    assert report["params"] == count_params(build("icnet_resnet50", 19).parameters())
    assert report["latency_ms"] > 0
    assert report["latency_device"] in ("cpu", "cuda")


def test_info_of_a_model_name_without_latency(capsys):
    report = info_json(capsys, "deeplabv3plus_mobilenetv2", "--input", "64x64", "--classes", "11")
    assert report["classes"] == 11 and report["macs"] > 0 and "latency_ms" not in report
    assert report["params"] == count_params(build("deeplabv3plus_mobilenetv2", 11).parameters())


def test_info_of_an_arch_file(tmp_path, capsys):
    path = archs.load("darts_v2").save(tmp_path / "found.yaml")
    report = info_json(capsys, str(path), "--input", "65x129", "--classes", "11")
    assert report["kind"] == "model" and report["name"] == str(path)
    assert report["params"] == count_params(build(str(path), 11).parameters())
    assert report["macs"] > 0

    assert main(["info", str(path), "--input", "64x64", "--classes", "11", "--latency"]) == 0
    text = capsys.readouterr().out
    assert "multiply-adds" in text and "latency (ms, median)" in text


def test_latency_of_a_search_space_is_a_user_error(capsys):
    assert main(["info", "darts", "--latency"]) == 2
    assert "--latency times a model or an ArchSpec" in capsys.readouterr().err


def test_icnet_is_faster_than_deeplabv3plus_resnet101_on_this_machine(capsys):
    """Side by side in one process (the ratio, ~10x on CPU, is what is robust to machine load)."""
    args = ("--input", "128x256", "--classes", "19", "--latency")
    icnet = info_json(capsys, "icnet_resnet50", *args)
    deeplab = info_json(capsys, "deeplabv3plus_resnet101", *args)
    assert icnet["latency_device"] == deeplab["latency_device"]
    assert icnet["macs"] < 0.10 * deeplab["macs"]
    assert icnet["latency_ms"] < deeplab["latency_ms"]


# --- every model: one training step on a CamVid batch --------------------------------------

# Narrower versions of the networks built from an ArchSpec (the baselines run at full width).
SMALL = {
    "autodeeplab_s": {"F": 8},
    "autodeeplab_m": {"F": 8},
    "autodeeplab_l": {"F": 8},
    "darts_v2_seg": {"C": 8, "layers": 6},
    "darts_v2_cifar": {"auxiliary": True},  # full size (3.3M), with the auxiliary head
}


@pytest.fixture(scope="module")
def camvid_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two bundled CamVid train images (180x240), top-left 90x120 crop: images and labels."""
    data = demo_camvid("train")
    items = [data[i] for i in range(2)]
    images = torch.stack([image for image, _ in items])[:, :, :90, :120]
    labels = torch.stack([label for _, label in items])[:, :90, :120]
    assert images.dtype == torch.float32 and labels.dtype == torch.long
    return images, labels


def segmentation_loss(outputs, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy; for ICNet's training outputs, the cascade loss on upsampled maps."""
    if isinstance(outputs, torch.Tensor):
        return F.cross_entropy(outputs, labels, ignore_index=IGNORE)
    maps = upsample_logits(outputs, labels.shape[-2:])
    assert len(maps) == len(ICNET_LOSS_WEIGHTS)
    return sum(w * F.cross_entropy(m, labels, ignore_index=IGNORE)
               for w, m in zip(ICNET_LOSS_WEIGHTS, maps))


def check_gradients(model: torch.nn.Module) -> None:
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for _, p in params)


def test_the_small_settings_name_registered_models():
    assert set(SMALL) <= set(available_models())


@pytest.mark.parametrize("name", available_models())
def test_every_model_trains_on_a_camvid_batch(name, camvid_batch):
    torch.manual_seed(0)
    images, labels = camvid_batch
    if name.endswith("_cifar"):
        check_classifier(name, images, labels)
        return
    model = build(name, CAMVID_CLASSES, **SMALL.get(name, {}))
    if hasattr(model, "drop_path_prob"):
        model.drop_path_prob = 0.1
    model.train()
    outputs = model(images)
    if isinstance(outputs, torch.Tensor):
        assert outputs.shape == (2, CAMVID_CLASSES, 90, 120)
    else:  # ICNet: the cascade at 1/16, 1/8, 1/4 of the input
        assert name.startswith("icnet") and len(outputs) == 3
    loss = segmentation_loss(outputs, labels)
    assert torch.isfinite(loss)
    loss.backward()
    check_gradients(model)
    model.eval()
    with torch.no_grad():
        assert model(images).shape == (2, CAMVID_CLASSES, 90, 120)


def check_classifier(name: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """A CIFAR network: 32x32 crops, target = the most frequent labelled class of each crop."""
    crops, crop_labels = images[:, :, :32, :32], labels[:, :32, :32]
    targets = torch.tensor([
        Counter(v for v in row.flatten().tolist() if v != IGNORE).most_common(1)[0][0]
        for row in crop_labels
    ])
    model = build(name, CAMVID_CLASSES, **SMALL.get(name, {}))
    model.drop_path_prob = 0.1
    model.train()
    outputs = model(crops)
    aux, logits = outputs if isinstance(outputs, (list, tuple)) else (None, outputs)
    assert logits.shape == (2, CAMVID_CLASSES)
    loss = F.cross_entropy(logits, targets)
    if aux is not None:
        loss = loss + DARTS_AUX_WEIGHT * F.cross_entropy(aux, targets)
    loss.backward()
    check_gradients(model)
    model.eval()
    with torch.no_grad():
        assert model(crops).shape == (2, CAMVID_CLASSES)


def test_info_uses_the_models_own_defaults(capsys):
    """darts_v2_cifar is a 10-class CIFAR network: info describes it at 32x32 unless told otherwise."""
    assert main(["info", "darts_v2_cifar", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["input"], report["classes"], report["params"]) == ("32x32", 10, 3349342)
