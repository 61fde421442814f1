"""Datasets by name: ``DATASET[:PATH]`` specs, their metadata, and building a split.

A spec names a registered dataset and, unless it is bundled, the folder it lives in:
``cityscapes:/data/cityscapes``, ``voc:/data/VOCdevkit/VOC2012``, ``ade20k:/data/ADEChallengeData2016``,
``camvid:../shared/data/camvid``, ``folder:/data/mine``, ``list:/data/mine``, or ``camvid_demo``.
One spec string is all a job file or command line needs to say about data.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import model_validator

from nasseg.config import FieldError, describe, did_you_mean, spec
from nasseg.config.types import Str
from nasseg.data import sources as src
from nasseg.data.datasets import (CAMVID_CLASSES, CAMVID_IGNORE, CAMVID_PALETTE, CAMVID_VOID,
                                  DEMO_ROOT, LabelMap, Pair, PairDataset, PairList, read_pair_list)
from nasseg.data.transforms import Transform
from nasseg.errors import NassegError
from nasseg.registry import Registry

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is: class names (index = class id), ignore value, colours, split names."""

    name: str
    classes: tuple[str, ...]
    ignore_index: int
    palette: tuple[RGB, ...]
    splits: tuple[str, ...]
    needs_path: bool
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class DatasetLayout:
    """How to find a registered dataset on disk and turn its raw labels into class ids."""

    description: str
    scan: Callable[[Path, str], PairList]  # (root, split) -> pairs and pairing problems
    present: Callable[[Path], tuple[str, ...]]  # splits that exist under root
    classes: tuple[str, ...] = ()  # empty: read from <root>/dataset.yaml
    palette: tuple[RGB, ...] = ()
    splits: tuple[str, ...] = ()  # empty: whatever `present` finds
    ignore_index: int = 255
    label_map: LabelMap | None = None
    void_value: int | None = None
    bundled_root: Path | None = None  # set for datasets shipped with nasseg (no path in the spec)

    @property
    def needs_path(self) -> bool:
        return self.bundled_root is None


def _camvid_scan(root: Path, split: str) -> PairList:
    return read_pair_list(root, f"{split}.txt")


def _camvid_present(root: Path) -> tuple[str, ...]:
    return tuple(s for s in ("train", "val", "test") if (root / f"{s}.txt").is_file())


_CAMVID = dict(scan=_camvid_scan, present=_camvid_present, classes=CAMVID_CLASSES, palette=CAMVID_PALETTE,
               splits=("train", "val", "test"), ignore_index=CAMVID_IGNORE, void_value=CAMVID_VOID)

_BUILTIN: dict[str, DatasetLayout] = {
    "cityscapes": DatasetLayout(
        "Cityscapes fine annotations, 19 classes (labelId -> trainId, others ignored)",
        src.scan_cityscapes, src.cityscapes_splits, src.CITYSCAPES_CLASSES,
        src.CITYSCAPES_PALETTE, src.CITYSCAPES_SPLITS, label_map=src.CITYSCAPES_TRAIN_IDS),
    "voc": DatasetLayout(
        "PASCAL VOC 2012, 21 classes incl. background; train_aug = SBD trainaug (10,582 images)",
        src.scan_voc, src.voc_splits, src.VOC_CLASSES, src.VOC_PALETTE, src.VOC_SPLITS),
    "ade20k": DatasetLayout(
        "ADE20K SceneParsing (ADEChallengeData2016), 150 classes, raw 0 ('other') ignored",
        src.scan_ade20k, src.ade20k_splits, src.ADE20K_CLASSES, src.ADE20K_PALETTE,
        tuple(src.ADE20K_SPLITS), label_map=src.ade20k_label_map),
    "camvid": DatasetLayout("CamVid, 11 classes (SegNet layout: <split>.txt lists, void 11 ignored)", **_CAMVID),
    "camvid_demo": DatasetLayout("bundled CamVid subset: 48 train / 16 val images at 240x180", **_CAMVID,
                                 bundled_root=DEMO_ROOT),
    "folder": DatasetLayout("images/<split>/* + labels/<split>/*.png matched by name, dataset.yaml",
                            src.scan_folder, src.folder_splits),
    "list": DatasetLayout("<split>.txt files of '<image> <label>' lines, dataset.yaml", src.scan_list, src.list_splits),
}

DATASETS: Registry[DatasetLayout] = Registry("dataset")


def register_dataset(name: str, layout: DatasetLayout) -> DatasetLayout:
    """Make a dataset layout available under ``name`` (``DATASET[:PATH]`` in jobs and flags)."""
    return DATASETS.register(name, layout, layout.description)


for _name, _layout in _BUILTIN.items():
    register_dataset(_name, _layout)


def available_datasets() -> list[str]:
    return list(DATASETS)


def _lookup(text: str) -> tuple[str, str]:
    """Split ``NAME[:PATH]`` and check the name; returns (name, path text, '' if none)."""
    name, _, path = text.strip().partition(":")
    name = name.strip().lower()
    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise NassegError(f"unknown dataset {describe(name)}{hint}; available: {', '.join(DATASETS)}")
    return name, path.strip()


def parse_data_spec(text: str) -> tuple[str, Path | None]:
    """``"camvid:data/camvid"`` -> ``("camvid", Path("data/camvid"))``; bundled -> ``(name, None)``.
    Unknown names get a did-you-mean and the list; a missing (or, for bundled data, a superfluous) path is an error."""
    name, path = _lookup(text)
    if DATASETS[name].needs_path and not path:
        raise NassegError(f"dataset {name} needs a path: expected DATASET:PATH, e.g. {name}:/data/{name}")
    if not DATASETS[name].needs_path and path:
        raise NassegError(f"dataset {name} is bundled with nasseg and takes no path; use '{name}'")
    return name, Path(path).expanduser() if path else None


@spec
class DatasetRef:
    """The data a job reads, named the same way in every job kind: a registered ``dataset`` and,
    unless it is bundled with nasseg, its folder ``root``. ``dataset: camvid:PATH`` is shorthand
    for ``dataset: camvid`` + ``root: PATH`` (the form ``--data`` takes on the command line)."""

    dataset: Str = "camvid_demo"
    root: Str | None = None

    @model_validator(mode="before")
    @classmethod
    def _split_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("dataset"), str) and ":" in data["dataset"]:
            name, _, root = data["dataset"].partition(":")
            if data.get("root") not in (None, root.strip()):
                raise FieldError("root", f"given twice: in dataset {describe(data['dataset'])} and as root "
                                 f"{describe(data['root'])}; expected one of them")
            data = {**data, "dataset": name.strip(), "root": root.strip() or None}
        return data

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise FieldError("dataset", f"unknown dataset {describe(self.dataset)}; expected one of "
                             f"{', '.join(DATASETS)}" + did_you_mean(self.dataset, DATASETS))
        needs_path = DATASETS[self.dataset].needs_path
        if needs_path and not self.root:
            raise FieldError("root", f"missing; the {self.dataset} dataset needs its folder")
        if not needs_path and self.root:
            raise FieldError("root", f"the {self.dataset} dataset is bundled with nasseg and takes no folder; "
                             "drop root")

    @property
    def spec(self) -> str:
        """``NAME[:PATH]``, the form the readers below take."""
        return f"{self.dataset}:{self.root}" if self.root else self.dataset


@dataclass(frozen=True)
class DataSource:
    """A registered dataset bound to its folder: metadata, the splits on disk, a split's pairs."""

    spec: str
    root: Path
    info: DatasetInfo
    entry: DatasetLayout

    def require_split(self, split: str) -> None:
        if split not in self.info.splits:
            known = ", ".join(self.info.splits) or f"none found under {self.root}"
            raise NassegError(f"{self.spec}: unknown split {describe(split)}; splits: {known}")

    def scan(self, split: str) -> PairList:
        """The pairs of ``split`` and every pairing problem (unknown split name: NassegError)."""
        self.require_split(split)
        return self.entry.scan(self.root, split)

    def dataset(self, pairs: list[Pair], source: str | Path, transform: Transform | None = None,
                seed: int = 0) -> PairDataset:
        info, entry = self.info, self.entry
        return PairDataset(pairs, info.num_classes, info.ignore_index, entry.label_map, transform, seed=seed,
                           void_value=entry.void_value, classes=info.classes, palette=info.palette, source=source)


def _info(name: str, entry: DatasetLayout, root: Path | None) -> DatasetInfo:
    if entry.classes:
        return DatasetInfo(name, entry.classes, entry.ignore_index, entry.palette, entry.splits, entry.needs_path,
                           entry.description)
    assert root is not None, "folder/list datasets always come with a path"
    meta = src.read_dataset_yaml(root)
    return DatasetInfo(name, meta.classes, meta.ignore_index, meta.palette, entry.present(root), True,
                       entry.description)


def open_source(spec: str) -> DataSource:
    """Resolve a spec to its folder and metadata; a missing folder is a NassegError."""
    name, path = parse_data_spec(spec)
    entry = DATASETS[name]
    root = path if path is not None else entry.bundled_root
    assert root is not None
    if not root.is_dir():
        raise NassegError(f"{root}: dataset folder not found (from {spec.strip()!r})")
    return DataSource(spec.strip(), root, _info(name, entry, root), entry)


def dataset_info(name_or_spec: str) -> DatasetInfo:
    """Metadata of a dataset; folder/list datasets need their path (the info is in dataset.yaml)."""
    name, path = _lookup(name_or_spec)
    entry = DATASETS[name]
    if entry.classes and not path:
        return _info(name, entry, None)
    return open_source(name_or_spec).info


def build_dataset(spec: str, split: str, transform: Transform | None = None, seed: int = 0) -> PairDataset:
    """The ``split`` of the dataset ``spec`` names; the first missing/unmatched file fails here."""
    source = open_source(spec)
    found = source.scan(split)
    return source.dataset(found.require(), found.source, transform, seed)
