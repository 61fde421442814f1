"""Segmentation datasets from (image, label) path pairs: explicit pairs, ``<image> <label>`` list
files, CamVid and the bundled demo set (Cityscapes, VOC, ADE20K and generic folders are in
:mod:`nasseg.data.sources`, all by name in :mod:`nasseg.data.registry`).

Items are decoded with PIL into numpy arrays (image ``uint8`` HxWx3 RGB, label ``int64`` HxW with
void/unmapped values already set to ``ignore_index``), passed through a joint transform from
:mod:`nasseg.data.transforms`, and returned as tensors: image ``float32`` CxHxW, label ``int64``
HxW.

Reproducibility: the random draws of item ``i`` come from ``random.Random`` seeded with
``(seed, epoch, i)``, so augmentation does not depend on worker count or loading order and a
resumed run sees the same samples. Call :meth:`PairDataset.set_epoch` before iterating each
epoch (with ``persistent_workers=False`` so workers pick the new epoch up); shuffle with a seeded
``torch.Generator`` in the ``DataLoader``.

Bad data raises :class:`~nasseg.errors.NassegError` with one line naming the file: cheap
problems (missing list file, empty split, missing listed files) when the dataset is built,
decode-time problems (unreadable file, size mismatch, out-of-range label values) when an item is
loaded; :meth:`PairDataset.check` loads every item and returns all problems.
"""

from __future__ import annotations

import io
import random
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from nasseg.data.transforms import Transform, eval_transform
from nasseg.errors import NassegError
from nasseg.io import read_bytes, read_text

CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree",
                  "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist")
CAMVID_VOID = 11  # value of unlabelled pixels in CamVid label PNGs
CAMVID_IGNORE = 255  # what void becomes after loading
DEMO_ROOT = Path(__file__).resolve().parent / "demo"  # the bundled CamVid subset

LabelMap = Mapping[int, int] | Callable[[np.ndarray], np.ndarray]
LABEL_MODES = ("L", "P", "I", "I;16")  # single-channel PIL modes whose pixels are class ids
# The largest image or label nasseg decodes: 8192 x 8192 pixels (aerial tiles of 6000 x 6000 fit;
# such a label alone is 512 MB as int64). A compressed PNG can claim far more pixels than its
# size suggests (a 388 KB file can decode to 400 million): larger files are refused, naming the
# file, before they are decoded. Raise it here for bigger images, memory permitting.
MAX_IMAGE_PIXELS = 8192 * 8192


Pair = tuple[Path, Path]  # (image, label)


def generated_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """``n`` distinct colours by the PASCAL VOC bit-interleaving rule, so any class count gets a
    deterministic palette (its first 21 entries are the VOC palette)."""
    def channel(i: int, k: int) -> int:  # bits k, k + 3, k + 6, ... of i, the first one the highest
        return sum(((i >> (3 * j + k)) & 1) << (7 - j) for j in range(8))

    return tuple((channel(i, 0), channel(i, 1), channel(i, 2)) for i in range(n))


CAMVID_PALETTE = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
                  (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
                  (0, 128, 192))  # the SegNet tutorial colours


@dataclass
class PairList:
    """The image/label pairs found for one split, and every pairing problem met finding them.

    Kept separate from the dataset so ``nasseg data check`` can report all missing or unmatched
    files while building a dataset stops at the first (:meth:`require`).
    """

    source: Path  # the list file or folder the pairs come from, named in messages
    pairs: list[Pair] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, pair: Pair, where: str) -> None:
        """Keep ``pair`` if both files exist, else record each missing one (listed at ``where``)."""
        missing = [f"{p}: {kind} not found (listed in {where})" for kind, p in zip(("image", "label"), pair)
                   if not p.is_file()]
        self.problems += missing
        if not missing:
            self.pairs.append(pair)

    def require(self) -> list[Pair]:
        """The pairs, or a one-line NassegError on the first problem (count of the others)."""
        if self.problems:
            more = len(self.problems) - 1
            tail = f" (and {more} more problems; `nasseg data check` lists them all)"
            raise NassegError(self.problems[0] + (tail if more else ""))
        return self.pairs


def read_pair_list(root: str | Path, list_file: str | Path) -> PairList:
    """Parse ``<image> <label>`` lines (paths relative to ``root``); missing files are problems."""
    root = Path(root)
    path = root / list_file
    if not path.is_file():
        raise NassegError(f"{path}: list file not found")
    found = PairList(path)
    for n, line in enumerate(read_text(path, "list file ('<image> <label>' lines)").splitlines(), start=1):
        fields = line.split()
        if len(fields) == 2:
            found.add((root / fields[0], root / fields[1]), f"{path}:{n}")
        elif fields:
            found.problems.append(f"{path}:{n}: expected '<image> <label>', got {line!r}")
    return found


class PairDataset(Dataset):
    """Segmentation samples from explicit ``(image, label)`` path pairs.

    ``label_map`` turns raw label values into class ids: ``None`` keeps them (``void_value``, if
    given, becomes ``ignore_index``); a dict maps listed values and sends every other value to
    ``ignore_index``; a callable maps the whole raw array. After mapping, every value must be in
    ``0..num_classes-1`` or equal ``ignore_index``. ``transform`` defaults to
    :func:`~nasseg.data.transforms.eval_transform` (normalise only). ``palette`` (one RGB per
    class, for drawing predictions) defaults to :func:`generated_palette`. ``source`` names where
    the pairs came from in messages.
    """

    def __init__(self, pairs: Sequence[Pair], num_classes: int, ignore_index: int = 255,
                 label_map: LabelMap | None = None, transform: Transform | None = None, *,
                 void_value: int | None = None, classes: Sequence[str] | None = None,
                 palette: Sequence[tuple[int, int, int]] | None = None, seed: int = 0, source: str | Path = "dataset"):
        self.source, self.num_classes, self.ignore_index = source, num_classes, ignore_index
        self.label_map, self.void_value = label_map, void_value
        self.seed, self.epoch = seed, 0
        self.transform = transform if transform is not None else eval_transform()
        self.classes = tuple(classes) if classes is not None else None
        self.palette = tuple(map(tuple, palette)) if palette is not None else generated_palette(num_classes)
        if self.classes is not None and len(self.classes) != num_classes:
            raise NassegError(f"{source}: {len(self.classes)} class names given for num_classes={num_classes}")
        if len(self.palette) != num_classes:
            raise NassegError(f"{source}: palette has {len(self.palette)} colours for num_classes={num_classes}")
        if isinstance(label_map, Mapping):
            bad = {k: v for k, v in label_map.items() if not (0 <= v < num_classes or v == ignore_index)}
            if bad:
                raise NassegError(f"{source}: label_map sends {bad} outside 0..{num_classes - 1} and ignore "
                                  f"{ignore_index}")
        self.items = [(Path(image), Path(label)) for image, label in pairs]
        if not self.items:
            raise NassegError(f"{source}: empty split, no image/label pairs")

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
        image, raw = self.read_image(index), self.read_raw_label(index)
        self.check_size(index, image, raw)
        return image, self.map_label(index, raw)

    def read_image(self, index: int) -> np.ndarray:
        with _open(self.items[index][0], "image") as im:
            return np.asarray(im.convert("RGB"))

    def read_raw_label(self, index: int) -> np.ndarray:
        """The label file of item ``index`` as stored (before mapping); must be single-channel."""
        with _open(self.items[index][1], "label") as lb:
            if lb.mode not in LABEL_MODES:
                raise NassegError(f"{self.items[index][1]}: label must be single-channel "
                                  f"(mode {', '.join(LABEL_MODES)}), got mode {lb.mode}")
            return np.asarray(lb)

    def check_size(self, index: int, image: np.ndarray, raw: np.ndarray) -> None:
        if raw.shape != image.shape[:2]:
            image_path, label_path = self.items[index]
            raise NassegError(f"{label_path}: label is {raw.shape[0]}x{raw.shape[1]} (HxW) but "
                              f"image {image_path} is {image.shape[0]}x{image.shape[1]}")

    def map_label(self, index: int, raw: np.ndarray) -> np.ndarray:
        """Raw label values -> class ids; raw values that land on no class are an error."""
        label = self._map_label(raw)
        valid = ((label >= 0) & (label < self.num_classes)) | (label == self.ignore_index)
        if valid.all():
            return label
        mapped = callable(self.label_map) and not isinstance(self.label_map, Mapping)
        bad = np.unique((raw if mapped else label)[~valid])
        shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
        void = f", void {self.void_value}" if self.void_value is not None else ""
        what = "map to no class id" if mapped else "are not class ids"
        raise NassegError(f"{self.items[index][1]}: label values {shown} {what} "
                          f"0..{self.num_classes - 1}{void} or ignore {self.ignore_index}")

    def _map_label(self, raw: np.ndarray) -> np.ndarray:
        if isinstance(self.label_map, Mapping):
            size = max(int(raw.max(initial=0)), *self.label_map) + 1
            lut = np.full(size, self.ignore_index, np.int64)
            lut[list(self.label_map)] = list(self.label_map.values())
            return lut[raw]
        if self.label_map is not None:
            return np.asarray(self.label_map(raw), np.int64)
        label = raw.astype(np.int64)
        if self.void_value is not None:
            label[raw == self.void_value] = self.ignore_index
        return label

    def inspect(self, index: int) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
        """Decode item ``index`` reporting every problem instead of the first: the image (None if unreadable), the
        mapped label (None if unreadable or holding values outside the classes) and the problems, one line each."""
        problems: list[str] = []

        def attempt(step: Callable[..., Any], *args: Any) -> Any:
            try:
                return step(index, *args)
            except NassegError as e:
                problems.append(str(e))
                return None

        image, raw = attempt(self.read_image), attempt(self.read_raw_label)
        if image is not None and raw is not None:
            attempt(self.check_size, image, raw)
        label = attempt(self.map_label, raw) if raw is not None else None
        return image, label, problems

    def check(self) -> list[str]:
        """Load every item and return one line per problem (empty list: all good)."""
        return [p for i in range(len(self)) for p in self.inspect(i)[2]]


class ListFileDataset(PairDataset):
    """Image/label pairs listed one per line as ``<image> <label>`` (paths relative to ``root``).

    Missing list file, malformed lines, missing listed files and an empty list fail here, at
    construction; other arguments as :class:`PairDataset`.
    """

    def __init__(self, root: str | Path, list_file: str | Path, num_classes: int, *args: Any, **kwargs: Any):
        self.root = Path(root)
        found = read_pair_list(root, list_file)
        super().__init__(found.require(), num_classes, *args, source=found.source, **kwargs)


def _open(path: Path, kind: str) -> Image.Image:
    """Read and fully decode an image file, turning failures into one-line NassegErrors."""
    data = read_bytes(path, kind)  # decode from memory: no file handle outlives a failed load
    try:
        with warnings.catch_warnings():  # PIL warns about large images; the size is checked below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
        width, height = im.size
        if width * height > MAX_IMAGE_PIXELS:
            raise _too_large(path, kind, width * height, f"{width}x{height} = ")
        im.load()
    except Image.DecompressionBombError as e:  # over PIL's own limit (above nasseg's), found in the header
        found = re.search(r"\((\d+) pixels\)", str(e))
        raise _too_large(path, kind, int(found.group(1)) if found else MAX_IMAGE_PIXELS + 1, "") from None
    except UnidentifiedImageError:
        raise NassegError(f"{path}: cannot read {kind} (not an image format PIL knows)") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise NassegError(f"{path}: cannot read {kind} ({reason})") from None
    return im


def _too_large(path: Path, kind: str, pixels: int, shape: str) -> NassegError:
    """The refusal of an image over MAX_IMAGE_PIXELS (``shape``: 'WxH = ' when known)."""
    return NassegError(f"{path}: {kind} of {shape}{pixels:,} pixels, over nasseg's limit of {MAX_IMAGE_PIXELS:,}; "
                       "not decoded (a decompression bomb? for real images this large raise "
                       "nasseg.data.datasets.MAX_IMAGE_PIXELS)")


def camvid(root: str | Path, split: str, transform: Transform | None = None, seed: int = 0) -> ListFileDataset:
    """CamVid (11 classes, SegNet layout): ``<root>/<split>.txt``; void 11 becomes 255."""
    return ListFileDataset(root, f"{split}.txt", len(CAMVID_CLASSES), CAMVID_IGNORE, transform=transform,
                           void_value=CAMVID_VOID, classes=CAMVID_CLASSES, palette=CAMVID_PALETTE, seed=seed)


def demo_camvid(split: str, transform: Transform | None = None, seed: int = 0) -> ListFileDataset:
    """The bundled CamVid subset (48 train / 16 val images at 240x180), see demo/README.md."""
    return camvid(DEMO_ROOT, split, transform, seed)
