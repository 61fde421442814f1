"""On-disk layouts of real segmentation datasets: where each split's image/label pairs are.

Every ``scan_*(root, split)`` returns a :class:`~nasseg.data.datasets.PairList`: the complete
pairs plus one problem line per missing or unmatched file, so a dataset can stop at the first
problem while ``nasseg data check`` lists them all. Problems that make the whole split unusable
(its folder or list file missing, no images at all) raise :class:`~nasseg.errors.NassegError`
with the expected layout. Nothing here downloads anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field

from nasseg.config import FieldError, load_yaml, spec, validate
from nasseg.config.types import MAX_CLASSES, Str
from nasseg.data.datasets import PairList, generated_palette, read_pair_list
from nasseg.errors import NassegError
from nasseg.io import read_text

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# --- Cityscapes ----------------------------------------------------------------------------------

CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                      "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
                      "truck", "bus", "train", "motorcycle", "bicycle")
# labelId -> trainId (cityscapesScripts labels.py); every other labelId is ignored (255)
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                        23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156),
                      (190, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0),
                      (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
                      (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32))
CITYSCAPES_SPLITS = ("train", "val", "test")
_CS_IMAGE, _CS_LABEL = "_leftImg8bit.png", "_gtFine_labelIds.png"


def scan_cityscapes(root: Path, split: str) -> PairList:
    """``leftImg8bit/<split>/<city>/X_leftImg8bit.png`` + ``gtFine/<split>/<city>/X_gtFine_labelIds.png``.

    Only the labelIds PNGs are read (the color/instance/polygon files beside them are skipped).
    """
    image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    return match_pairs(image_dir, label_dir, _suffix_key(_CS_IMAGE), _suffix_key(_CS_LABEL),
                       _CS_LABEL, "Cityscapes: leftImg8bit/<split>/<city>/*_leftImg8bit.png "
                       "and gtFine/<split>/<city>/*_gtFine_labelIds.png")


def cityscapes_splits(root: Path) -> tuple[str, ...]:
    return tuple(s for s in CITYSCAPES_SPLITS if (root / "leftImg8bit" / s).is_dir())


# --- PASCAL VOC 2012 -----------------------------------------------------------------------------

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
VOC_PALETTE = generated_palette(len(VOC_CLASSES))  # the VOC colour map is this rule
VOC_SPLITS = ("train", "val", "trainval", "train_aug")
_VOC_LISTS = Path("ImageSets") / "Segmentation"
_SBD_HELP = ("the SBD 'train_aug' split needs ImageSets/Segmentation/train_aug.txt (one image id "
             "per line, 10,582 ids) and SegmentationClassAug/<id>.png (SBD labels converted to "
             "VOC index PNGs, as DeepLab's SBD conversion produces)")


def scan_voc(root: Path, split: str) -> PairList:
    """Ids listed in ``ImageSets/Segmentation/<split>.txt``: ``JPEGImages/<id>.jpg`` with
    ``SegmentationClass/<id>.png`` (``SegmentationClassAug`` for ``train_aug``). A list line may also be
    ``<image> <label>`` paths relative to ``root`` (as some trainaug lists are written, with or without a leading
    ``/``)."""
    list_path = root / _VOC_LISTS / f"{split}.txt"
    label_dir = root / ("SegmentationClassAug" if split == "train_aug" else "SegmentationClass")
    for needed in (list_path, label_dir):
        if not needed.exists():
            hint = _SBD_HELP if split == "train_aug" else (
                "expected VOC2012 layout: ImageSets/Segmentation/<split>.txt, JPEGImages/<id>.jpg, "
                "SegmentationClass/<id>.png")
            raise NassegError(f"{needed}: not found; {hint}")
    found = PairList(list_path)
    for n, line in enumerate(read_text(list_path, "list file (image ids)").splitlines(), start=1):
        fields = line.split()
        if len(fields) == 1:
            found.add((root / "JPEGImages" / f"{fields[0]}.jpg", label_dir / f"{fields[0]}.png"), f"{list_path}:{n}")
        elif len(fields) == 2:
            found.add((root / fields[0].lstrip("/"), root / fields[1].lstrip("/")), f"{list_path}:{n}")
        elif fields:
            found.problems.append(f"{list_path}:{n}: expected '<id>' or '<image> <label>', got {line!r}")
    if not found.pairs and not found.problems:
        raise NassegError(f"{list_path}: empty split, no image ids")
    return found


def voc_splits(root: Path) -> tuple[str, ...]:
    return tuple(s for s in VOC_SPLITS if (root / _VOC_LISTS / f"{s}.txt").is_file())


# --- ADE20K (SceneParsing, ADEChallengeData2016) -------------------------------------------------

ADE20K_CLASSES = (  # objectInfo150, first name of each entry (as mmsegmentation)
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag")
ADE20K_PALETTE = generated_palette(len(ADE20K_CLASSES))
ADE20K_SPLITS = {"train": "training", "val": "validation"}


def ade20k_label_map(raw: np.ndarray) -> np.ndarray:
    """Raw 0 ("other") is ignored (255); raw k is class k-1."""
    return np.where(raw == 0, 255, raw.astype(np.int64) - 1)


def scan_ade20k(root: Path, split: str) -> PairList:
    """``images/<training|validation>/X.jpg`` with ``annotations/<...>/X.png``."""
    folder = ADE20K_SPLITS[split]
    return match_pairs(root / "images" / folder, root / "annotations" / folder,
                       _suffix_key(".jpg"), _suffix_key(".png"), ".png",
                       "ADE20K: images/{training,validation}/*.jpg and annotations/{training,validation}/*.png")


def ade20k_splits(root: Path) -> tuple[str, ...]:
    return tuple(s for s, d in ADE20K_SPLITS.items() if (root / "images" / d).is_dir())


# --- generic: images/labels folders or list files, described by dataset.yaml ----------------------

ClassName = Annotated[Str, Field(min_length=1)]
Colour = Annotated[tuple[Annotated[int, Field(ge=0, le=255, strict=True)], ...], Field(min_length=3, max_length=3)]


@spec
class DatasetYaml:
    """The document of ``dataset.yaml`` (a folder or list dataset's classes)."""

    classes: Annotated[tuple[ClassName, ...], Field(min_length=1, max_length=MAX_CLASSES,
                                                    description="expected a non-empty list of class names")]
    ignore_index: Annotated[int, Field(ge=0, le=65535, strict=True)] = 255  # a label PNG holds 0..65535
    palette: tuple[Colour, ...] | None = None  # one [r, g, b] per class; default: generated

    def __post_init__(self) -> None:
        repeated = next((name for i, name in enumerate(self.classes) if name in self.classes[:i]), None)
        if repeated is not None:
            raise FieldError("classes", f"{repeated!r} is listed twice; expected distinct class names")
        if self.ignore_index < len(self.classes):
            raise FieldError("ignore_index", f"expected an integer outside the class ids 0..{len(self.classes) - 1}, "
                             f"got {self.ignore_index}")
        if self.palette is not None and len(self.palette) != len(self.classes):
            raise FieldError("palette", f"expected {len(self.classes)} [r, g, b] colours (0..255), one per class, "
                             f"got {len(self.palette)}")


def read_dataset_yaml(root: Path) -> DatasetYaml:
    """Read and validate ``dataset.yaml``; a palette it does not give is generated."""
    path = root / "dataset.yaml"
    if not path.exists():
        raise NassegError(f"{path}: not found; a folder/list dataset needs it, e.g. "
                          "'classes: [background, road, car]' and optionally 'ignore_index: 255'")
    doc = validate(DatasetYaml, load_yaml(path), str(path))
    return doc if doc.palette is not None else dataclasses.replace(doc, palette=generated_palette(len(doc.classes)))


def scan_folder(root: Path, split: str) -> PairList:
    """``images/<split>/**/X.<jpg|png|...>`` with ``labels/<split>/**/X.png``, matched by path."""
    return match_pairs(root / "images" / split, root / "labels" / split,
                       _suffix_key(*IMAGE_SUFFIXES), _suffix_key(".png"), ".png",
                       "folder: images/<split>/* and labels/<split>/*.png with the same names")


def folder_splits(root: Path) -> tuple[str, ...]:
    images = root / "images"
    return tuple(sorted(d.name for d in images.iterdir() if d.is_dir())) if images.is_dir() else ()


def scan_list(root: Path, split: str) -> PairList:
    """``<root>/<split>.txt`` with ``<image> <label>`` lines relative to ``root``."""
    found = read_pair_list(root, f"{split}.txt")
    if not found.pairs and not found.problems:
        raise NassegError(f"{found.source}: empty split, no '<image> <label>' lines")
    return found


def list_splits(root: Path) -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in root.glob("*.txt")))


# --- pairing by name -----------------------------------------------------------------------------

Key = Callable[[Path], str | None]  # relative path -> pairing key, None: not this kind of file


def _suffix_key(*suffixes: str) -> Key:
    """Key = relative path without one of ``suffixes`` (case-insensitive); other files skipped."""
    def key(rel: Path) -> str | None:
        text = rel.as_posix()
        return next((text[: len(text) - len(s)] for s in suffixes if text.lower().endswith(s.lower())), None)
    return key


def _index(folder: Path, key: Key, kind: str, found: PairList) -> dict[str, Path]:
    """Files under ``folder`` by key; two files with one key are a problem (keep the first)."""
    index: dict[str, Path] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        k = key(path.relative_to(folder))
        if k is not None and index.setdefault(k, path) != path:
            found.problems.append(f"{path}: {kind} has the same name as {index[k]}")
    return index


def match_pairs(image_dir: Path, label_dir: Path, image_key: Key, label_key: Key, label_suffix: str,
                layout: str) -> PairList:
    """Pair the files of two folder trees by key; unmatched files on either side are problems."""
    for folder in (image_dir, label_dir):
        if not folder.is_dir():
            raise NassegError(f"{folder}: not found; expected layout {layout}")
    found = PairList(image_dir)
    images = _index(image_dir, image_key, "image", found)
    labels = _index(label_dir, label_key, "label", found)
    if not images:
        raise NassegError(f"{image_dir}: empty split, no images; expected layout {layout}")
    for k, image in images.items():
        if k in labels:
            found.pairs.append((image, labels[k]))
        else:
            found.problems.append(f"{image}: no label (expected {label_dir / k}{label_suffix})")
    found.problems += [f"{labels[k]}: label without an image in {image_dir}"
                       for k in sorted(labels.keys() - images.keys())]
    return found
