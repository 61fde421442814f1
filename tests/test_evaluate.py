"""Evaluation, test-time inference (sliding window, flip, multi-scale) and `predict`."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from nasseg.data import CAMVID_CLASSES, demo_camvid
from nasseg.data.datasets import CAMVID_PALETTE
from nasseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from nasseg.errors import NassegError
from nasseg.models import build
from nasseg.train.checkpoint import load_trained, save_checkpoint
from nasseg.shell.cli.inference import add_evaluate_parser, add_predict_parser
from nasseg.train.evaluate import DEEPLAB_SCALES, evaluate, result_from_confusion
from nasseg.train.inference import _window_starts, predict_logits, sliding_window_logits
from nasseg.train.metrics import ConfusionMatrix

CAMVID_PALETTE = [list(c) for c in CAMVID_PALETTE]


def make_checkpoint(path: Path, name: str = "deeplabv3plus_mobilenetv2", num_classes: int = 11,
                    crop: tuple[int, int] = (180, 240), **args) -> Path:
    """A checkpoint of a fresh model whose classifier is re-drawn with std 1, so that its
    predictions vary from pixel to pixel (a fresh head predicts nearly one class everywhere)."""
    torch.manual_seed(0)
    model = build(name, num_classes, **args)
    head = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels == num_classes]
    nn.init.normal_(head[-1].weight, std=1.0)
    return save_checkpoint(path, {
        "model": {"name": name, "arch": None, "args": args, "num_classes": num_classes},
        "data": {"dataset": "camvid_demo", "classes": list(CAMVID_CLASSES[:num_classes]),
                 "ignore_index": 255, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                 "crop": list(crop), "palette": CAMVID_PALETTE[:num_classes]},
        "state_dict": model.state_dict(), "iteration": 1, "iters": 1})


def run_cli(add_parser, argv: list[str], capsys) -> tuple[int, str, str]:
    """Run one sub-command the way nasseg.cli.main does (NassegError -> one line, status 2)."""
    parser = argparse.ArgumentParser(prog="nasseg")
    add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    try:
        code = args.run(args)
    except NassegError as e:
        print(f"nasseg: error: {e}", file=__import__("sys").stderr)
        code = 2
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "final.pt")


# --- metrics -----------------------------------------------------------------------------------

def test_confusion_matrix_and_metrics_against_a_hand_computed_example() -> None:
    target = torch.tensor([[[0, 0, 1, 1, 255],
                            [0, 1, 1, 255, 0]]])
    pred = torch.tensor([[[0, 1, 1, 1, 2],
                          [2, 1, 0, 0, 0]]])
    # (truth, prediction) of the 8 labelled pixels (the two 255 pixels are skipped):
    # (0,0) (0,1) (1,1) (1,1) | (0,2) (1,1) (1,0) (0,0)
    # row 0: (0,0)x2 (0,1)x1 (0,2)x1; row 1: (1,0)x1 (1,1)x3; class 2 only predicted; 3 absent.
    expected = [[2, 1, 1, 0],
                [1, 3, 0, 0],
                [0, 0, 0, 0],
                [0, 0, 0, 0]]
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(pred, target)
    assert cm.matrix.tolist() == expected
    logits = torch.nn.functional.one_hot(pred, 4).permute(0, 3, 1, 2).float()
    from_logits = ConfusionMatrix(4, 255)
    from_logits.update(logits, target)
    assert from_logits.matrix.tolist() == expected

    # IoU_c = TP / (row sum + column sum - TP):
    # 0: 2 / (4 + 3 - 2) = 0.4;  1: 3 / (4 + 4 - 3) = 0.6;  2: 0 / (0 + 1 - 0) = 0 (counted);
    # 3: 0 / 0 -> NaN (not counted).  mIoU = (0.4 + 0.6 + 0) / 3 = 1/3.
    iou = cm.iou().tolist()
    assert iou[:3] == pytest.approx([0.4, 0.6, 0.0]) and math.isnan(iou[3])
    assert cm.miou() == pytest.approx(1 / 3)
    # pixel accuracy = (2 + 3) / 8; class accuracy = TP / row sum: 0: 2/4, 1: 3/4, 2 and 3 have
    # no labelled pixels (NaN), mean = (0.5 + 0.75) / 2.
    result = result_from_confusion(cm, ["a", "b", "c", "d"], images=1, seconds=0.5)
    assert result.pixel_accuracy == pytest.approx(5 / 8)
    assert result.accuracy[:2] == pytest.approx([0.5, 0.75]) and all(map(math.isnan, result.accuracy[2:]))
    assert result.mean_accuracy == pytest.approx(0.625)
    assert result.pixels == [4, 4, 0, 0]

    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))  # NaN -> null
    assert data["miou"] == pytest.approx(1 / 3) and data["classes"][3]["iou"] is None
    assert data["confusion_matrix"] == expected and data["images_per_second"] == 2.0
    table = result.table()
    assert list(table.columns) == ["class", "iou", "accuracy", "pixels"] and len(table) == 4
    text = result.format()
    assert "33.33" in text and "62.50" in text and text.splitlines()[4].split()[1:3] == ["-", "-"]


# --- inference ---------------------------------------------------------------------------------

def pointwise_model(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv2d(3, classes, 1).eval()


@pytest.mark.parametrize("size", [(50, 70), (20, 70), (64, 33), (32, 32)])
def test_sliding_window_equals_one_pass_for_a_pointwise_model(size) -> None:
    model, image = pointwise_model(), torch.randn(2, 3, *size)
    tiled = sliding_window_logits(model, image, 4, crop=(32, 32))
    with torch.no_grad():
        assert torch.allclose(tiled, model(image), atol=1e-6)


@pytest.mark.parametrize("size,window,stride", [(100, 64, 43), (64, 64, 43), (65, 64, 43), (7, 3, 2)])
def test_windows_cover_the_image_and_end_at_its_border(size, window, stride) -> None:
    starts = _window_starts(size, window, stride)
    assert starts[0] == 0 and starts[-1] == size - window
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))  # no gaps


def test_sliding_window_on_a_real_model_feeds_crop_sized_windows() -> None:
    model = build("deeplabv3plus_mobilenetv2", 11).eval()
    shapes = []
    model.register_forward_hook(lambda m, inputs, out: shapes.append(tuple(inputs[0].shape)))
    out = sliding_window_logits(model, torch.randn(1, 3, 100, 150), 11, crop=(64, 64))
    assert out.shape == (1, 11, 100, 150) and torch.isfinite(out).all()
    # rows start at 0, 36 (stride 43); columns at 0, 43, 86 -> 6 windows, all 64x64
    assert shapes == [(1, 3, 64, 64)] * 6


def test_flip_averaging_is_flip_equivariant() -> None:
    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, 3, padding=1).eval()  # its kernel is not mirror-symmetric
    image = torch.randn(1, 3, 12, 17)
    probs = predict_logits(model, image, 4, flip=True)
    mirrored = predict_logits(model, image.flip(-1), 4, flip=True)
    assert torch.allclose(mirrored, probs.flip(-1), atol=1e-6)
    with torch.no_grad():
        plain = model(image).softmax(1)
        both = (plain + model(image.flip(-1)).flip(-1).softmax(1)) / 2
    assert not torch.allclose(probs, plain, atol=1e-4) and torch.allclose(probs, both, atol=1e-6)
    pointwise = pointwise_model()
    with torch.no_grad():
        assert torch.allclose(predict_logits(pointwise, image, 4, flip=True),
                              pointwise(image).softmax(1), atol=1e-6)


def test_multi_scale_returns_probabilities_at_the_input_size() -> None:
    model = build("deeplabv3plus_mobilenetv2", 11).eval()
    image = torch.randn(1, 3, 45, 61)
    probs = predict_logits(model, image, 11, scales=(0.5, 1.0, 1.5), flip=True, crop=(48, 48))
    assert probs.shape == (1, 11, 45, 61)
    assert torch.allclose(probs.sum(1), torch.ones(1, 45, 61), atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(predict_logits(model, image, 11), model(image).softmax(1), atol=1e-6)


# --- evaluate ----------------------------------------------------------------------------------

def test_evaluate_on_the_demo_val_set_matches_a_simple_loop(checkpoint) -> None:
    model, meta = load_trained(checkpoint)
    dataset = demo_camvid("val")
    result = evaluate(model, dataset, progress=False)
    assert result.images == len(dataset) == 16 and result.seconds > 0

    # independent: numpy confusion matrix from per-image argmax of the plain model
    matrix = np.zeros((11, 11), np.int64)
    with torch.no_grad():
        for i in range(len(dataset)):
            image, label = dataset[i]
            pred = model(image[None]).argmax(1)[0].numpy()
            keep = label.numpy() != 255
            np.add.at(matrix, (label.numpy()[keep], pred[keep]), 1)
    assert (result.confusion == matrix).all()
    tp, truth, predicted = np.diag(matrix), matrix.sum(1), matrix.sum(0)
    union = truth + predicted - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    assert np.allclose(result.iou, iou, equal_nan=True)
    assert result.miou == pytest.approx(np.nanmean(iou))
    assert result.pixel_accuracy == pytest.approx(tp.sum() / matrix.sum())
    assert result.mean_accuracy == pytest.approx(np.mean(tp[truth > 0] / truth[truth > 0]))
    assert (predicted > 0).sum() >= 2 and 0 < result.miou < 1  # not a one-class prediction


def test_evaluate_command_json_and_output_file(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "results.json"
    code, stdout, _ = run_cli(add_evaluate_parser, ["evaluate", str(checkpoint), "--data", "camvid_demo",
                              "--limit", "3", "--json", "-o", str(out), "--device", "cpu",
                              "--workers", "0"], capsys)
    assert code == 0
    printed = json.loads(stdout)
    assert printed == json.loads(out.read_text())
    assert printed["images"] == 3 and len(printed["classes"]) == 11
    assert printed["settings"]["crop"] is None and printed["settings"]["split"] == "val"
    model, _ = load_trained(checkpoint)
    expected = evaluate(model, demo_camvid("val"), limit=3, progress=False)
    assert printed["miou"] == pytest.approx(expected.miou)

    code, stdout, _ = run_cli(add_evaluate_parser, ["evaluate", str(checkpoint), "--data", "camvid_demo",
                              "--limit", "1", "--multi-scale", "--flip", "--workers", "0", "--crop", "180x240"], capsys)
    assert code == 0 and "scales 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, flip, crop 180x240" in stdout
    assert "mIoU" in stdout and "Bicyclist" in stdout
    assert DEEPLAB_SCALES == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def test_evaluate_command_rejects_a_class_count_mismatch(tmp_path, capsys) -> None:
    five = make_checkpoint(tmp_path / "five.pt", num_classes=5)
    code, _, err = run_cli(add_evaluate_parser, ["evaluate", str(five), "--data", "camvid_demo"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "predicts 5 classes but dataset camvid_demo (val) has 11" in err


# --- predict -----------------------------------------------------------------------------------

def write_images(folder: Path) -> dict[str, tuple[int, int]]:
    """Two demo photos (JPEG, and a resized PNG); returns stem -> (width, height)."""
    folder.mkdir()
    photos = sorted((Path(demo_camvid("val").root) / "val").glob("*.jpg"))[:2]
    Image.open(photos[0]).save(folder / "street.jpg")
    Image.open(photos[1]).resize((100, 70)).save(folder / "small.png")
    (folder / "notes.txt").write_text("not an image, ignored in folders")
    return {"street": Image.open(photos[0]).size, "small": (100, 70)}


def test_predict_writes_palette_masks_and_overlays(checkpoint, tmp_path, capsys) -> None:
    sizes = write_images(tmp_path / "in")
    code, stdout, _ = run_cli(add_predict_parser, ["predict", str(checkpoint), str(tmp_path / "in"),
                              "-o", str(tmp_path / "out"), "--flip", "--device", "cpu", "--quiet"], capsys)
    assert code == 0 and "of 2 images" in stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "small.png", "small_overlay.png", "street.png", "street_overlay.jpg"]
    model, meta = load_trained(checkpoint)
    for stem, size in sizes.items():
        mask = Image.open(tmp_path / "out" / f"{stem}.png")
        assert mask.mode == "P" and mask.size == size
        assert np.asarray(mask.getpalette()[:33]).reshape(11, 3).tolist() == CAMVID_PALETTE
        assert Image.open(next((tmp_path / "out").glob(f"{stem}_overlay.*"))).size == size
        assert np.asarray(mask).max() < 11
    # the mask is the flip-averaged argmax of the model on the mean/std-normalised image
    rgb = np.asarray(Image.open(tmp_path / "in" / "small.png").convert("RGB"), np.float32) / 255
    x = (rgb - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
    expected = predict_logits(model, x[None], 11, flip=True).argmax(1)[0].numpy()
    assert (np.asarray(Image.open(tmp_path / "out" / "small.png")) == expected).all()


def test_predict_skips_unreadable_images_and_fails_at_the_end(checkpoint, tmp_path, capsys) -> None:
    write_images(tmp_path / "in")
    bad = tmp_path / "broken.jpg"
    bad.write_text("this is text")
    code, _, err = run_cli(add_predict_parser, ["predict", str(checkpoint), str(bad),
                           str(tmp_path / "in" / "small.png"), "-o", str(tmp_path / "out"),
                           "--device", "cpu"], capsys)
    assert code == 2 and f"{bad}: cannot read image" in err
    assert err.strip().splitlines()[-1].startswith("nasseg: error: 1 of 2 images could not be read")
    assert (tmp_path / "out" / "small.png").is_file()  # the good image was still predicted


@pytest.mark.parametrize("inputs,needle", [
    (["missing.jpg"], "missing.jpg: no such file or folder"),
    (["empty"], "no image files"),
    (["in/small.png", "other/small.jpg"], "would both write small.png"),
])
def test_predict_input_errors_fail_before_any_work(checkpoint, tmp_path, capsys, inputs, needle) -> None:
    write_images(tmp_path / "in")
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "small.jpg").write_bytes((tmp_path / "in" / "street.jpg").read_bytes())
    code, _, err = run_cli(add_predict_parser, ["predict", str(checkpoint),
                           *[str(tmp_path / i) for i in inputs], "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and needle in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_base_size_feeds_the_model_reduced_resolution_and_scores_full_resolution():
    """A model trained at data.size sees that size; the probabilities come back at label size."""
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return torch.zeros(x.shape[0], 3, *x.shape[-2:])

    from nasseg.train.inference import predict_logits
    probs = predict_logits(Recorder(), torch.zeros(1, 3, 36, 48), 3, scales=(1.0, 0.5), base_size=(18, 24))
    assert seen == [(18, 24), (9, 12)] and probs.shape == (1, 3, 36, 48)
