"""Real dataset layouts (Cityscapes, VOC, ADE20K, folder, list), the registry and `nasseg data check`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nasseg.data.check import check_dataset
from nasseg.shell.cli.data import add_data_parser
from nasseg.data.datasets import CAMVID_PALETTE, PairDataset
from nasseg.data.registry import (available_datasets, build_dataset, dataset_info,
                                  parse_data_spec)
from nasseg.data.sources import ADE20K_CLASSES, CITYSCAPES_TRAIN_IDS, VOC_PALETTE
from nasseg.errors import NassegError

SHARED_CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"
H, W = 6, 8


def save_image(path: Path, shade: int = 40, size: tuple[int, int] = (W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (shade, 20, 30)).save(path)
    return path


def save_label(path: Path, values: np.ndarray | int, mode: str = "L") -> Path:
    """A single-channel label PNG; ``values`` fills an HxW array (or is the array)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((H, W), values, np.uint8) if np.isscalar(values) else np.asarray(values, np.uint8)
    label = Image.fromarray(array)
    if mode == "P":
        label = label.convert("P")
        label.putpalette([v for rgb in VOC_PALETTE for v in rgb])
    label.save(path)
    return path


def one_line(exc: pytest.ExceptionInfo[NassegError], *needles: object) -> str:
    message = str(exc.value)
    assert "\n" not in message
    for needle in needles:
        assert str(needle) in message, message
    return message


# --- fake trees ----------------------------------------------------------------------------------

RAW_CITYSCAPES = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33,
                           0, 1, 6, 9, 10, 14, 15, 16, 18, 29, 30, 34, 255] + [7] * 16).reshape(H, W)


def make_cityscapes(root: Path) -> Path:
    for split, city, n in (("train", "aachen", 2), ("val", "lindau", 1)):
        for i in range(n):
            stem = f"{city}_{i:06d}_000019"
            save_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", 10 * i)
            save_label(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", RAW_CITYSCAPES)
            save_label(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png", 0)
    return root


def make_voc(root: Path) -> Path:
    ids = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"]}
    label = np.zeros((H, W), np.uint8)
    label[0] = 15
    label[1] = 255
    for split, names in ids.items():
        for name in names:
            save_image(root / "JPEGImages" / f"{name}.jpg")
            save_label(root / "SegmentationClass" / f"{name}.png", label, mode="P")
        lists = root / "ImageSets" / "Segmentation"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def make_ade20k(root: Path) -> Path:
    raw = np.zeros((H, W), np.uint8)
    raw[0], raw[1] = 1, 150
    for split, folder in (("train", "training"), ("val", "validation")):
        name = f"ADE_{split}_00000001"
        save_image(root / "images" / folder / f"{name}.jpg")
        save_label(root / "annotations" / folder / f"{name}.png", raw)
    return root


def make_folder(root: Path, n: int = 2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.yaml").write_text("classes: [background, road, car]\nignore_index: 255\n")
    for split in ("train", "val"):
        for i in range(n):
            save_image(root / "images" / split / f"img{i}.{'jpg' if i % 2 else 'png'}", 40 * i)
            save_label(root / "labels" / split / f"img{i}.png", i % 3)
    return root


def make_list(root: Path) -> Path:
    (root / "dataset.yaml").write_text("classes: [sky, ground]\n"
                                       "palette: [[0, 0, 255], [0, 255, 0]]\n")
    lines = []
    for i in range(3):
        save_image(root / "img" / f"{i}.jpg")
        save_label(root / "ann" / f"{i}.png", i % 2)
        lines.append(f"img/{i}.jpg ann/{i}.png")
    (root / "train.txt").write_text("\n".join(lines[:2]) + "\n")
    (root / "val.txt").write_text(lines[2] + "\n")
    return root


# --- label mappings on real pixel values ----------------------------------------------------------

def test_cityscapes_label_ids_become_train_ids(tmp_path: Path) -> None:
    ds = build_dataset(f"cityscapes:{make_cityscapes(tmp_path)}", "train")
    assert len(ds) == 2 and ds.num_classes == 19 and ds.classes[13] == "car"
    assert ds.palette[0] == (128, 64, 128) and len(ds.palette) == 19
    _, label = ds.load(0)
    expected = np.full(RAW_CITYSCAPES.shape, 255)
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        expected[RAW_CITYSCAPES == label_id] = train_id
    assert np.array_equal(label, expected)
    assert label.ravel()[:19].tolist() == list(range(19))  # 7 -> 0 ... 33 -> 18 in table order
    assert (label.ravel()[19:32] == 255).all()  # 0, 1, 6, 9, 10, 14, ... 34, 255: ignored
    assert ds.items[0][1].name.endswith("_gtFine_labelIds.png")


def test_voc_palette_png_keeps_255_as_ignore(tmp_path: Path) -> None:
    ds = build_dataset(f"voc:{make_voc(tmp_path)}", "train")
    assert Image.open(ds.items[0][1]).mode == "P"
    assert len(ds) == 2 and ds.classes[15] == "person" and ds.palette[1] == (128, 0, 0)
    _, label = ds[0]
    assert label[0].unique().tolist() == [15] and label[1].unique().tolist() == [255]
    assert label[2:].unique().tolist() == [0]


def test_voc_train_aug_reads_segmentation_class_aug(tmp_path: Path) -> None:
    make_voc(tmp_path)
    with pytest.raises(NassegError) as exc:
        build_dataset(f"voc:{tmp_path}", "train_aug")
    one_line(exc, "SegmentationClassAug", "train_aug.txt", "SBD")
    (tmp_path / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("2007_000032\n")
    save_label(tmp_path / "SegmentationClassAug" / "2007_000032.png", 7)
    ds = build_dataset(f"voc:{tmp_path}", "train_aug")
    assert ds.items[0][1].parent.name == "SegmentationClassAug" and ds[0][1].unique().tolist() == [7]


def test_ade20k_shifts_labels_and_ignores_other(tmp_path: Path) -> None:
    ds = build_dataset(f"ade20k:{make_ade20k(tmp_path)}", "val")
    assert ds.num_classes == len(ADE20K_CLASSES) == 150 and ds.classes[:3] == ("wall", "building", "sky")
    assert ds.items[0][0].parent.name == "validation"
    _, label = ds.load(0)
    assert label[0].tolist() == [0] * W and label[1].tolist() == [149] * W
    assert (label[2:] == 255).all()


def test_ade20k_value_beyond_150_names_raw_value(tmp_path: Path) -> None:
    make_ade20k(tmp_path)
    bad = save_label(tmp_path / "annotations" / "training" / "ADE_train_00000001.png", 151)
    ds = build_dataset(f"ade20k:{tmp_path}", "train")
    with pytest.raises(NassegError) as exc:
        ds.load(0)
    one_line(exc, bad, "label values 151 map to no class id 0..149")


def test_folder_pairs_by_name_with_mixed_image_formats(tmp_path: Path) -> None:
    ds = build_dataset(f"folder:{make_folder(tmp_path, n=3)}", "train")
    assert ds.classes == ("background", "road", "car") and len(ds.palette) == 3
    assert [(a.name, b.name) for a, b in ds.items] == [
        ("img0.png", "img0.png"), ("img1.jpg", "img1.png"), ("img2.png", "img2.png")]
    assert [ds[i][1].unique().tolist() for i in range(3)] == [[0], [1], [2]]


def test_list_dataset_reads_dataset_yaml(tmp_path: Path) -> None:
    ds = build_dataset(f"list:{make_list(tmp_path)}", "train", seed=1)
    assert len(ds) == 2 and ds.classes == ("sky", "ground") and ds.palette == ((0, 0, 255), (0, 255, 0))
    image, label = ds[1]
    assert image.shape == (3, H, W) and image.dtype == torch.float32 and label.unique().tolist() == [1]
    assert dataset_info(f"list:{tmp_path}").splits == ("train", "val")


# --- registry and specs --------------------------------------------------------------------------

def test_registry_names_and_specs(tmp_path: Path) -> None:
    assert {"cityscapes", "voc", "ade20k", "camvid", "camvid_demo", "folder", "list"} <= set(
        available_datasets())
    assert parse_data_spec("camvid:../shared/data/camvid") == ("camvid", Path("../shared/data/camvid"))
    assert parse_data_spec("camvid_demo") == ("camvid_demo", None)
    info = dataset_info("cityscapes")
    assert info.num_classes == 19 and info.ignore_index == 255 and info.needs_path
    assert info.splits == ("train", "val", "test")
    assert dataset_info("camvid_demo").palette == CAMVID_PALETTE and not dataset_info("camvid_demo").needs_path
    assert dataset_info("voc").palette[:3] == ((0, 0, 0), (128, 0, 0), (0, 128, 0))
    with pytest.raises(NassegError) as exc:
        dataset_info("list")  # its classes are in <root>/dataset.yaml
    one_line(exc, "expected DATASET:PATH, e.g. list:/data/list")
    demo = build_dataset("camvid_demo", "val")
    assert isinstance(demo, PairDataset) and len(demo) == 16 and demo.ignore_index == 255


@pytest.mark.parametrize("spec, needles", [
    ("cityscape:/x", ["unknown dataset 'cityscape'", "did you mean cityscapes?", "available:",
                      "camvid_demo"]),
    ("imagenet", ["unknown dataset 'imagenet'", "available: cityscapes, voc"]),
    ("cityscapes", ["expected DATASET:PATH, e.g. cityscapes:/data/cityscapes"]),
    ("camvid_demo:/data", ["takes no path"]),
])
def test_bad_specs(spec: str, needles: list[str]) -> None:
    with pytest.raises(NassegError) as exc:
        parse_data_spec(spec)
    one_line(exc, *needles)


def test_unknown_split_lists_splits(tmp_path: Path) -> None:
    make_cityscapes(tmp_path)
    with pytest.raises(NassegError) as exc:
        build_dataset(f"cityscapes:{tmp_path}", "training")
    one_line(exc, "unknown split 'training'", "splits: train, val, test")
    make_folder(tmp_path / "f")
    with pytest.raises(NassegError) as exc:
        build_dataset(f"folder:{tmp_path / 'f'}", "test")
    one_line(exc, "unknown split 'test'", "splits: train, val")


def test_missing_root_and_missing_split_folder(tmp_path: Path) -> None:
    with pytest.raises(NassegError) as exc:
        build_dataset(f"ade20k:{tmp_path / 'nope'}", "train")
    one_line(exc, tmp_path / "nope", "dataset folder not found")
    make_cityscapes(tmp_path)
    with pytest.raises(NassegError) as exc:
        build_dataset(f"cityscapes:{tmp_path}", "test")
    one_line(exc, tmp_path / "leftImg8bit" / "test", "not found", "gtFine/<split>/<city>")


# --- every error case, one line naming the file ----------------------------------------------------

def test_cityscapes_image_without_label_names_it(tmp_path: Path) -> None:
    make_cityscapes(tmp_path)
    label = next((tmp_path / "gtFine" / "train").rglob("*_000001_*labelIds.png"))
    label.unlink()
    with pytest.raises(NassegError) as exc:
        build_dataset(f"cityscapes:{tmp_path}", "train")
    one_line(exc, "aachen_000001_000019_leftImg8bit.png: no label", f"expected {label}")


def test_folder_unmatched_files_are_named(tmp_path: Path) -> None:
    make_folder(tmp_path)
    save_image(tmp_path / "images" / "train" / "lonely.jpg")
    save_label(tmp_path / "labels" / "train" / "orphan.png", 0)
    with pytest.raises(NassegError) as exc:
        build_dataset(f"folder:{tmp_path}", "train")
    one_line(exc, tmp_path / "images" / "train" / "lonely.jpg", "no label", "and 1 more problems")
    problems = check_dataset(f"folder:{tmp_path}", ["train"], progress=False).problems
    assert problems == [
        f"{tmp_path / 'images/train/lonely.jpg'}: no label (expected {tmp_path / 'labels/train/lonely.png'})",
        f"{tmp_path / 'labels/train/orphan.png'}: label without an image in {tmp_path / 'images/train'}"]


@pytest.mark.parametrize("breaker, needles", [
    (lambda r: (r / "images/train/img1.jpg").write_bytes(b"garbage, not a jpeg"),
     ["img1.jpg", "cannot read image"]),
    (lambda r: save_label(r / "labels/train/img1.png", np.zeros((H - 1, W))),
     ["img1.png: label is 5x8 (HxW) but image", "img1.jpg is 6x8"]),
    (lambda r: save_label(r / "labels/train/img1.png", 7),
     ["img1.png: label values 7 are not class ids 0..2 or ignore 255"]),
])
def test_decode_problems_name_the_file(tmp_path: Path, breaker, needles: list[str]) -> None:
    breaker(make_folder(tmp_path))
    ds = build_dataset(f"folder:{tmp_path}", "train")
    ds[0]
    with pytest.raises(NassegError) as exc:
        ds[1]
    assert ds.check() == [one_line(exc, *needles)]


def test_255_is_ignore_not_an_error(tmp_path: Path) -> None:
    make_folder(tmp_path)
    save_label(tmp_path / "labels" / "train" / "img1.png", 255)
    assert build_dataset(f"folder:{tmp_path}", "train")[1][1].unique().tolist() == [255]


@pytest.mark.parametrize("make, spec, breaker, needles", [
    (make_list, "list", lambda r: (r / "train.txt").write_text("\n"), ["train.txt: empty split"]),
    (make_voc, "voc", lambda r: (r / "ImageSets/Segmentation/train.txt").write_text(""),
     ["train.txt: empty split"]),
    (make_folder, "folder", lambda r: [p.unlink() for p in (r / "images/train").iterdir()],
     ["images/train: empty split, no images"]),
])
def test_empty_split(tmp_path: Path, make, spec: str, breaker, needles: list[str]) -> None:
    breaker(make(tmp_path))
    with pytest.raises(NassegError) as exc:
        build_dataset(f"{spec}:{tmp_path}", "train")
    one_line(exc, *needles)


@pytest.mark.parametrize("yaml_text, needles", [
    (None, ["dataset.yaml: not found", "classes:"]),
    ("classes: road\n", ["dataset.yaml: classes: expected a non-empty list"]),
    ("classes: [a, b]\nignore_index: 1\n", ["ignore_index: expected an integer outside"]),
    ("classes: [a, b]\npalette: [[1, 2, 3]]\n", ["palette: expected 2 [r, g, b] colours"]),
    ("classes: [a\n", ["dataset.yaml: line 2, column 1: invalid YAML"]),
])
def test_dataset_yaml_problems(tmp_path: Path, yaml_text: str | None, needles: list[str]) -> None:
    make_folder(tmp_path)
    if yaml_text is None:
        (tmp_path / "dataset.yaml").unlink()
    else:
        (tmp_path / "dataset.yaml").write_text(yaml_text)
    with pytest.raises(NassegError) as exc:
        dataset_info(f"folder:{tmp_path}")
    one_line(exc, *needles)


# --- check_dataset: every problem, plus statistics -------------------------------------------------

def test_check_lists_all_problems_with_file_names(tmp_path: Path) -> None:
    make_folder(tmp_path, n=6)
    train = tmp_path / "images" / "train"
    labels = tmp_path / "labels" / "train"
    save_image(train / "lonely.jpg")                           # image without label
    save_label(labels / "orphan.png", 0)                        # label without image
    (train / "img1.jpg").write_bytes(b"\x00garbage")           # unreadable image ...
    save_label(labels / "img1.png", 9)                          # ... and bad values, same item
    save_label(labels / "img2.png", np.zeros((H, W - 2)))       # size mismatch
    save_label(labels / "img4.png", 3)                          # out of range
    report = check_dataset(f"folder:{tmp_path}", progress=False)
    assert [s.split for s in report.splits] == ["train", "val"]
    train_report, val_report = report.splits
    assert train_report.items == 6 and val_report.items == 6 and val_report.problems == []
    expected = [("lonely.jpg", "no label"), ("orphan.png", "label without an image"),
                ("img1.jpg", "cannot read image"), ("img1.png", "label values 9"),
                ("img2.png", "label is 6x6 (HxW)"), ("img4.png", "label values 3")]
    assert len(report.problems) == len(expected)
    for problem, (name, what) in zip(report.problems, expected):
        assert name in problem and what in problem, problem
    # pixels of the labels that could be mapped: img0 (0), img2 (0, 6x6), img3 (0), img5 (2)
    assert train_report.class_pixels == [2 * H * W + H * (W - 2), 0, H * W]
    assert train_report.min_size == (H, W) == train_report.max_size


def test_check_counts_pixels_and_size_range(tmp_path: Path) -> None:
    make_voc(tmp_path)
    save_image(tmp_path / "JPEGImages" / "2007_000039.jpg", size=(10, 4))
    save_label(tmp_path / "SegmentationClass" / "2007_000039.png", np.zeros((4, 10)), mode="P")
    report = check_dataset(f"voc:{tmp_path}", ["train"], progress=False)
    (split,) = report.splits
    assert split.problems == [] and split.items == 2
    assert split.min_size == (4, 8) and split.max_size == (6, 10)
    assert split.class_pixels[15] == W and split.ignore_pixels == W
    assert split.class_pixels[0] == 4 * W + 40 and sum(split.class_pixels) == 6 * W + 40 - W


def test_check_missing_split_is_a_problem_and_unknown_split_an_error(tmp_path: Path) -> None:
    make_voc(tmp_path)
    report = check_dataset(f"voc:{tmp_path}", ["val", "train_aug"], progress=False)
    assert report.splits[0].problems == []
    (problem,) = report.splits[1].problems
    assert "train_aug.txt" in problem and "SegmentationClassAug" in problem
    with pytest.raises(NassegError) as exc:
        check_dataset(f"voc:{tmp_path}", ["test"], progress=False)
    one_line(exc, "unknown split 'test'", "train, val, trainval, train_aug")


# --- the CLI handler -------------------------------------------------------------------------------

def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="nasseg")
    add_data_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.run(args)


def test_cli_clean_dataset_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_cityscapes(tmp_path)
    assert run_cli("data", "check", f"cityscapes:{tmp_path}", "--quiet") == 0
    out = capsys.readouterr().out
    assert "train: 2 items, image sizes 6x8 .. 6x8 (HxW), 0 problems" in out
    assert "val: 1 items" in out and "road 35.4%" in out and "car 2.1%" in out
    assert out.rstrip().endswith("summary: 2 splits, 3 items, 0 problems")


def test_cli_problems_exit_1_one_per_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_folder(tmp_path)
    (tmp_path / "images" / "val" / "img0.png").write_bytes(b"junk")
    save_label(tmp_path / "labels" / "val" / "img1.png", 200)
    assert run_cli("data", "check", f"folder:{tmp_path}", "--split", "val", "--quiet") == 1
    lines = capsys.readouterr().out.splitlines()
    assert "img0.png: cannot read image" in lines[0] and "img1.png: label values 200" in lines[1]
    assert lines[-1] == "summary: 1 split, 2 items, 2 problems"
    assert run_cli("data", "check", f"folder:{tmp_path}", "--split", "train", "--json",
                   "--quiet") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["problem_count"] == 0 and report["splits"][0]["class_pixels"] == {
        "background": H * W, "road": H * W, "car": 0}


def test_cli_bad_spec_raises(tmp_path: Path) -> None:
    with pytest.raises(NassegError) as exc:
        run_cli("data", "check", "cityscapes", "--quiet")
    one_line(exc, "expected DATASET:PATH")


# --- the shared real CamVid ------------------------------------------------------------------------

def test_shared_camvid_val_is_clean() -> None:
    if not SHARED_CAMVID.is_dir():
        pytest.skip(f"{SHARED_CAMVID} not present")
    report = check_dataset(f"camvid:{SHARED_CAMVID}", ["val"], progress=False)
    (val,) = report.splits
    assert val.items == 101 and report.problems == []
    assert val.min_size == val.max_size == (360, 480) and all(n > 0 for n in val.class_pixels)
