"""Datasets, validation messages and joint transforms (nasseg.data)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nasseg.data import CAMVID_CLASSES, DEMO_ROOT, ListFileDataset, camvid, demo_camvid
from nasseg.data.transforms import (IMAGENET_MEAN_U8, ColorJitter, Compose, Normalize,
                                    RandomCrop, RandomHorizontalFlip, RandomScale,
                                    train_transform)
from nasseg.errors import NassegError

SHARED_CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"
ALLOWED = set(range(11)) | {255}


# --- the bundled demo subset -------------------------------------------------------------------

@pytest.mark.parametrize("split, count", [("train", 48), ("val", 16)])
def test_demo_subset_sizes_and_label_values(split: str, count: int) -> None:
    ds = demo_camvid(split)
    assert len(ds) == count and ds.classes == CAMVID_CLASSES
    for image, label in ds:
        assert image.shape == (3, 180, 240) and image.dtype == torch.float32
        assert label.shape == (180, 240) and label.dtype == torch.int64
        assert set(label.unique().tolist()) <= ALLOWED


def test_demo_void_11_becomes_255() -> None:
    ds = demo_camvid("train")
    raw = np.array(Image.open(ds.items[0][1]))
    assert (raw == 11).any(), "first demo label should contain void pixels"
    _, label = ds[0]
    assert (label.numpy()[raw == 11] == 255).all()
    assert (label.numpy()[raw != 11] == raw[raw != 11]).all()


def test_demo_files_ship_inside_the_package() -> None:
    from importlib.resources import files

    demo = files("nasseg.data") / "demo"
    assert (demo / "train.txt").is_file() and (demo / "README.md").is_file()
    assert Path(str(demo)).resolve() == DEMO_ROOT


def test_loading_is_deterministic_per_seed_and_epoch() -> None:
    ds = demo_camvid("train", train_transform(96, color_jitter=0.3), seed=3)
    a, b = ds[5], ds[5]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    ds.set_epoch(1)
    assert not torch.equal(a[0], ds[5][0])


# --- the shared full CamVid ----------------------------------------------------------------------

def test_shared_camvid_loads() -> None:
    if not SHARED_CAMVID.is_dir():
        pytest.skip(f"{SHARED_CAMVID} not present")
    train, val = camvid(SHARED_CAMVID, "train"), camvid(SHARED_CAMVID, "val")
    assert (len(train), len(val)) == (367, 101)
    image, label = train[0]
    assert image.shape == (3, 360, 480) and label.shape == (360, 480)
    assert set(label.unique().tolist()) <= ALLOWED and (label == 255).any()
    assert val.check() == []


# --- validation: one line naming the file --------------------------------------------------------

def make_dataset(root: Path, pairs: int = 2, size: tuple[int, int] = (8, 6)) -> Path:
    """A valid mini data set: ``pairs`` RGB JPEGs (WxH ``size``) with mode-L labels in 0..2."""
    lines = []
    for i in range(pairs):
        Image.new("RGB", size, (i * 40, 20, 30)).save(root / f"im{i}.jpg")
        Image.fromarray(np.full(size[::-1], i % 3, np.uint8)).save(root / f"lb{i}.png")
        lines.append(f"im{i}.jpg lb{i}.png")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root / "list.txt"


def one_line_error(exc: pytest.ExceptionInfo[NassegError], *needles: str) -> str:
    message = str(exc.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message
    return message


def test_valid_mini_dataset_loads(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    ds = ListFileDataset(tmp_path, "list.txt", num_classes=3)
    assert ds.check() == [] and ds[1][1].unique().tolist() == [1]


@pytest.mark.parametrize("content, needle", [
    (None, "list file not found"),
    ("\n  \n", "empty split"),
    ("im0.jpg\n", "list.txt:1: expected '<image> <label>'"),
])
def test_list_file_problems(tmp_path: Path, content: str | None, needle: str) -> None:
    if content is not None:
        (tmp_path / "list.txt").write_text(content)
    with pytest.raises(NassegError) as exc:
        ListFileDataset(tmp_path, "list.txt", num_classes=3)
    one_line_error(exc, str(tmp_path / "list.txt"), needle)


@pytest.mark.parametrize("victim, kind", [("im1.jpg", "image"), ("lb0.png", "label")])
def test_missing_listed_file_fails_at_construction(tmp_path: Path, victim: str, kind: str) -> None:
    make_dataset(tmp_path)
    (tmp_path / victim).unlink()
    with pytest.raises(NassegError) as exc:
        ListFileDataset(tmp_path, "list.txt", num_classes=3)
    one_line_error(exc, str(tmp_path / victim), f"{kind} not found", "list.txt:")


def break_unreadable(root: Path) -> None:
    (root / "im1.jpg").write_bytes(b"not a jpeg at all")


def break_truncated(root: Path) -> None:
    data = (root / "im1.jpg").read_bytes()
    (root / "im1.jpg").write_bytes(data[: len(data) // 2])


def break_rgb_label(root: Path) -> None:
    Image.new("RGB", (8, 6)).save(root / "lb1.png")


def break_size(root: Path) -> None:
    Image.fromarray(np.zeros((5, 8), np.uint8)).save(root / "lb1.png")


def break_values(root: Path) -> None:
    label = np.zeros((6, 8), np.uint8)
    label[0, :3] = (12, 40, 255)
    Image.fromarray(label).save(root / "lb1.png")


@pytest.mark.parametrize("breaker, file, needles", [
    (break_unreadable, "im1.jpg", ["cannot read image"]),
    (break_truncated, "im1.jpg", ["cannot read image"]),
    (break_rgb_label, "lb1.png", ["label must be single-channel", "got mode RGB"]),
    (break_size, "lb1.png", ["label is 5x8 (HxW) but image", "im1.jpg is 6x8"]),
    (break_values, "lb1.png", ["label values 12, 40 are not class ids 0..2 or ignore 255"]),
])
def test_decode_problems_fail_at_load_and_in_check(tmp_path: Path, breaker, file: str,
                                                   needles: list[str]) -> None:
    make_dataset(tmp_path)
    breaker(tmp_path)
    ds = ListFileDataset(tmp_path, "list.txt", num_classes=3)
    ds[0]  # the intact item still loads
    with pytest.raises(NassegError) as exc:
        ds[1]
    message = one_line_error(exc, str(tmp_path / file), *needles)
    assert ds.check() == [message]


def test_check_reports_every_broken_item(tmp_path: Path) -> None:
    make_dataset(tmp_path, pairs=4)
    break_unreadable(tmp_path)
    Image.fromarray(np.full((6, 8), 9, np.uint8)).save(tmp_path / "lb3.png")
    problems = ListFileDataset(tmp_path, "list.txt", num_classes=3).check()
    assert len(problems) == 2
    assert str(tmp_path / "im1.jpg") in problems[0] and str(tmp_path / "lb3.png") in problems[1]


def test_label_map_dict_sends_unlisted_values_to_ignore(tmp_path: Path) -> None:
    make_dataset(tmp_path, pairs=3)  # labels 0, 1, 2
    ds = ListFileDataset(tmp_path, "list.txt", num_classes=2, label_map={1: 0, 2: 1})
    assert [ds[i][1].unique().tolist() for i in range(3)] == [[255], [0], [1]]
    with pytest.raises(NassegError) as exc:
        ListFileDataset(tmp_path, "list.txt", num_classes=2, label_map={1: 7})
    one_line_error(exc, "label_map sends {1: 7}")


# --- transforms ----------------------------------------------------------------------------------

def coordinate_sample(h: int = 64, w: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """An image whose red/green channels encode column/row, and the label derived from it."""
    rows, cols = np.mgrid[:h, :w]
    image = np.stack([cols * 3, rows * 3, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    return image, label_of(image)


def label_of(image: np.ndarray) -> np.ndarray:
    return image[..., 1].astype(np.int64) // 3 * 1000 + image[..., 0] // 3


@pytest.mark.parametrize("seed", range(5))
def test_crop_and_flip_apply_the_same_geometry(seed: int) -> None:
    image, label = coordinate_sample()
    t = Compose([RandomCrop(32, 48), RandomHorizontalFlip(p=0.5)])
    out_image, out_label = t(image, label, random.Random(seed))
    assert out_label.shape == (32, 48) and out_image.shape == (32, 48, 3)
    assert np.array_equal(out_label, label_of(out_image))


def test_crop_pads_label_with_ignore_and_image_with_mean() -> None:
    image, label = coordinate_sample(10, 12)
    out_image, out_label = RandomCrop(20, 24, ignore_index=255)(image, label, random.Random(0))
    assert out_label.shape == (20, 24)
    assert np.array_equal(out_label[:10, :12], label)
    assert (out_label[10:] == 255).all() and (out_label[:, 12:] == 255).all()
    assert (out_image[10:] == IMAGENET_MEAN_U8).all()


def test_random_scale_keeps_image_and_label_aligned_and_invents_no_classes() -> None:
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    label = np.random.default_rng(1).choice([0, 3, 255], (60, 80))
    out_image, out_label = RandomScale(0.5, 2.0)(image, label, random.Random(4))
    assert out_image.shape[:2] == out_label.shape != (60, 80)
    assert set(np.unique(out_label)) <= {0, 3, 255}


def test_same_seed_same_output_and_jitter_touches_image_only() -> None:
    image, label = coordinate_sample()
    t = train_transform((40, 40), color_jitter=0.4)
    a, b = t(image, label, random.Random(11)), t(image, label, random.Random(11))
    c = t(image, label, random.Random(12))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    jittered, same = ColorJitter()(image, label, random.Random(0))
    assert jittered.dtype == np.uint8 and same is label and not np.array_equal(jittered, image)


def test_normalize_maps_imagenet_mean_to_zero() -> None:
    image = np.full((2, 2, 3), IMAGENET_MEAN_U8, np.uint8)
    out, _ = Normalize()(image, np.zeros((2, 2), np.int64), random.Random(0))
    assert out.dtype == np.float32 and np.abs(out).max() < 0.01
