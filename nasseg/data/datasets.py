"""Segmentation datasets read from ``<image> <label>`` list files, plus CamVid and the demo set.

Items are decoded with PIL into numpy arrays (image ``uint8`` HxWx3 RGB, label ``int64`` HxW with
void/unmapped values already set to ``ignore_index``), passed through a joint transform from
:mod:`nasseg.data.transforms`, and returned as tensors: image ``float32`` CxHxW, label ``int64``
HxW.

Reproducibility: the random draws of item ``i`` come from ``random.Random`` seeded with
``(seed, epoch, i)``, so augmentation does not depend on worker count or loading order and a
resumed run sees the same samples. Call :meth:`ListFileDataset.set_epoch` before iterating each
epoch (with ``persistent_workers=False`` so workers pick the new epoch up); shuffle with a seeded
``torch.Generator`` in the ``DataLoader``.

Bad data raises :class:`~nasseg.errors.NassegError` with one line naming the file: cheap
problems (missing list file, empty split, missing listed files) when the dataset is built,
decode-time problems (unreadable file, size mismatch, out-of-range label values) when an item is
loaded; :meth:`ListFileDataset.check` loads every item and returns all problems.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from nasseg.data.transforms import Transform, eval_transform
from nasseg.errors import NassegError

CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree",
                  "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist")
CAMVID_VOID = 11  # value of unlabelled pixels in CamVid label PNGs
CAMVID_IGNORE = 255  # what void becomes after loading
DEMO_ROOT = Path(__file__).resolve().parent / "demo"  # the bundled CamVid subset

LabelMap = Mapping[int, int] | Callable[[np.ndarray], np.ndarray]
LABEL_MODES = ("L", "P", "I", "I;16")  # single-channel PIL modes whose pixels are class ids


class ListFileDataset(Dataset):
    """Image/label pairs listed one per line as ``<image> <label>`` (paths relative to ``root``).

    ``label_map`` turns raw label values into class ids: ``None`` keeps them (``void_value``, if
    given, becomes ``ignore_index``); a dict maps listed values and sends every other value to
    ``ignore_index``; a callable maps the whole raw array. After mapping, every value must be in
    ``0..num_classes-1`` or equal ``ignore_index``. ``transform`` defaults to
    :func:`~nasseg.data.transforms.eval_transform` (normalise only).
    """

    def __init__(self, root: str | Path, list_file: str | Path, num_classes: int,
                 ignore_index: int = 255, label_map: LabelMap | None = None,
                 transform: Transform | None = None, *, void_value: int | None = None,
                 classes: Sequence[str] | None = None, seed: int = 0):
        self.root = Path(root)
        self.list_file = self.root / list_file
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.label_map = label_map
        self.void_value = void_value
        self.transform = transform if transform is not None else eval_transform()
        self.classes = tuple(classes) if classes is not None else None
        self.seed = seed
        self.epoch = 0
        if self.classes is not None and len(self.classes) != num_classes:
            raise NassegError(f"{self.list_file}: {len(self.classes)} class names given "
                              f"for num_classes={num_classes}")
        if isinstance(label_map, Mapping):
            bad = {k: v for k, v in label_map.items() if not self._valid_id(v)}
            if bad:
                raise NassegError(f"{self.list_file}: label_map sends {bad} outside "
                                  f"0..{num_classes - 1} and ignore {ignore_index}")
        self.items = self._read_list()

    def _valid_id(self, value: int) -> bool:
        return 0 <= value < self.num_classes or value == self.ignore_index

    def _read_list(self) -> list[tuple[Path, Path]]:
        """Parse the list file and check that every listed file exists."""
        if not self.list_file.is_file():
            raise NassegError(f"{self.list_file}: list file not found")
        items, missing = [], []
        for n, line in enumerate(self.list_file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2:
                raise NassegError(f"{self.list_file}:{n}: expected '<image> <label>', got {line!r}")
            pair = (self.root / fields[0], self.root / fields[1])
            missing += [f"{p}: {kind} not found (listed in {self.list_file}:{n})"
                        for kind, p in zip(("image", "label"), pair) if not p.is_file()]
            items.append(pair)
        if not items:
            raise NassegError(f"{self.list_file}: empty split, no '<image> <label>' lines")
        if missing:
            more = f" (and {len(missing) - 1} more missing files)" if len(missing) > 1 else ""
            raise NassegError(missing[0] + more)
        return items

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (same epoch -> same samples)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.load(index)
        rng = random.Random(f"{self.seed}:{self.epoch}:{index}")
        image, label = self.transform(image, label, rng)
        image = np.array(image.transpose(2, 0, 1), np.float32, order="C")
        return torch.from_numpy(image), torch.from_numpy(np.array(label, np.int64, order="C"))

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode and validate item ``index`` without transforms: uint8 HxWx3, int64 HxW."""
        image_path, label_path = self.items[index]
        with _open(image_path, "image") as im:
            image = np.asarray(im.convert("RGB"))
        with _open(label_path, "label") as lb:
            if lb.mode not in LABEL_MODES:
                raise NassegError(f"{label_path}: label must be single-channel "
                                  f"(mode {', '.join(LABEL_MODES)}), got mode {lb.mode}")
            raw = np.asarray(lb)
        if raw.shape != image.shape[:2]:
            raise NassegError(f"{label_path}: label is {raw.shape[0]}x{raw.shape[1]} (HxW) but "
                              f"image {image_path} is {image.shape[0]}x{image.shape[1]}")
        label = self._map_label(raw)
        valid = ((label >= 0) & (label < self.num_classes)) | (label == self.ignore_index)
        if not valid.all():
            bad = np.unique(label[~valid])
            shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
            void = f", void {self.void_value}" if self.void_value is not None else ""
            raise NassegError(f"{label_path}: label values {shown} are not class ids "
                              f"0..{self.num_classes - 1}{void} or ignore {self.ignore_index}")
        return image, label

    def _map_label(self, raw: np.ndarray) -> np.ndarray:
        if isinstance(self.label_map, Mapping):
            lut = np.full(max(int(raw.max()), *self.label_map) + 1, self.ignore_index, np.int64)
            lut[list(self.label_map)] = list(self.label_map.values())
            return lut[raw]
        if self.label_map is not None:
            return np.asarray(self.label_map(raw), np.int64)
        label = raw.astype(np.int64)
        if self.void_value is not None:
            label[raw == self.void_value] = self.ignore_index
        return label

    def check(self) -> list[str]:
        """Load every item and return one line per broken item (empty list: all good)."""
        problems = []
        for i in range(len(self)):
            try:
                self.load(i)
            except NassegError as e:
                problems.append(str(e))
        return problems


def _open(path: Path, kind: str) -> Image.Image:
    """Read and fully decode an image file, turning failures into one-line NassegErrors."""
    try:
        data = path.read_bytes()  # decode from memory: no file handle outlives a failed load
    except FileNotFoundError:
        raise NassegError(f"{path}: {kind} not found") from None
    except OSError as e:
        raise NassegError(f"{path}: cannot read {kind} ({e.strerror})") from None
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except UnidentifiedImageError:
        raise NassegError(f"{path}: cannot read {kind} (not an image format PIL knows)") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise NassegError(f"{path}: cannot read {kind} ({reason})") from None
    return im


def camvid(root: str | Path, split: str, transform: Transform | None = None,
           seed: int = 0) -> ListFileDataset:
    """CamVid (11 classes, SegNet layout): ``<root>/<split>.txt``; void 11 becomes 255."""
    return ListFileDataset(root, f"{split}.txt", len(CAMVID_CLASSES), CAMVID_IGNORE,
                           transform=transform, void_value=CAMVID_VOID,
                           classes=CAMVID_CLASSES, seed=seed)


def demo_camvid(split: str, transform: Transform | None = None, seed: int = 0) -> ListFileDataset:
    """The bundled CamVid subset (48 train / 16 val images at 240x180), see demo/README.md."""
    return camvid(DEMO_ROOT, split, transform, seed)
