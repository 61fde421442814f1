"""``nasseg predict``: segment image files with a trained checkpoint.

For every input image ``<stem>.<ext>`` two files go to the output folder: ``<stem>.png``, a
palette-mode PNG whose pixel values are class ids (so it is both a label map and, in any viewer,
a colour mask with the checkpoint's palette), and ``<stem>_overlay.<jpg|png>`` (JPEG for JPEG
inputs, PNG otherwise), the image blended with the colour mask.

Errors: a path that does not exist, an empty folder or two inputs with the same stem fail before
any work (typos, not data problems). An image that cannot be decoded is skipped with a one-line
message and the command goes on with the rest, then exits non-zero naming the skipped count: one
corrupt file in a folder of thousands should not cost the other predictions.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from tqdm import tqdm

from ..data.datasets import _open, generated_palette  # _open decodes from memory, errors naming the file
from ..errors import NassegError
from .checkpoint import TrainedMeta
from .inference import predict_logits

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted, not recursive)."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise NassegError(f"{item}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            paths += found
        elif item.is_file():
            paths.append(item)
        else:
            raise NassegError(f"{item}: no such file or folder")
    paths = list(dict.fromkeys(paths))
    seen: dict[str, Path] = {}
    for path in paths:
        if seen.setdefault(path.stem, path) != path:
            raise NassegError(f"{seen[path.stem]} and {path} would both write {path.stem}.png; "
                              "predict them into different output folders")
    return paths


def read_image(path: Path) -> np.ndarray:
    """uint8 HxWx3 RGB, EXIF rotation applied; one-line NassegError when it cannot be decoded."""
    with _open(path, "image") as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def full_palette(palette: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """``num_classes`` RGB rows: the checkpoint's colours, then PASCAL VOC colours for any missing."""
    if num_classes > 256:
        raise NassegError(f"{num_classes} classes do not fit a palette PNG (at most 256)")
    rows = [tuple(c) for c in palette][:num_classes]
    rows += generated_palette(num_classes)[len(rows):]
    return np.asarray(rows, np.uint8).reshape(num_classes, 3)


def predict_mask(model: nn.Module, image: np.ndarray, meta: TrainedMeta, device: torch.device, *,
                 scales: Sequence[float] = (1.0,), flip: bool = False, crop: tuple[int, int] | None = None,
                 size: tuple[int, int] | None = None) -> np.ndarray:
    """Class ids (uint8 HxW) for one uint8 RGB image, normalised with the checkpoint's mean/std;
    the model sees it resized to ``size`` when given, the mask has the image's own size."""
    mean, std = np.asarray(meta.mean, np.float32), np.asarray(meta.std, np.float32)
    x = (image.astype(np.float32) / 255 - mean) / std
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(device)
    probs = predict_logits(model, x, meta.num_classes, scales=scales, flip=flip, crop=crop, base_size=size)
    return probs.argmax(1)[0].to(torch.uint8).cpu().numpy()


def mask_image(mask: np.ndarray, palette: np.ndarray) -> Image.Image:
    """Palette-mode PNG image: pixel = class id, colours = ``palette``."""
    im = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask).tobytes())
    im.putpalette(palette.reshape(-1).tolist())
    return im


def overlay(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, alpha: float) -> np.ndarray:
    blended = (1 - alpha) * image.astype(np.float32) + alpha * palette[mask].astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def predict_files(model: nn.Module, meta: TrainedMeta, paths: Sequence[Path], out_dir: Path, *,
                  device: torch.device, scales: Sequence[float] = (1.0,), flip: bool = False,
                  crop: tuple[int, int] | None = None, size: tuple[int, int] | None = None,
                  alpha: float = 0.5, progress: bool = True) -> list[str]:
    """Write mask and overlay for every path; returns one line per skipped (unreadable) image."""
    palette = full_palette(meta.palette, meta.num_classes)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file of that name, or a place nasseg may not write
        raise NassegError(f"{out_dir}: cannot create the output folder ({e.strerror}: {e.filename})") from None
    skipped: list[str] = []
    for path in tqdm(paths, desc="predict", unit="img", disable=not progress or len(paths) < 2, leave=False):
        try:
            image = read_image(path)
        except NassegError as e:
            skipped.append(str(e))
            tqdm.write(f"nasseg: skipped {e}", file=sys.stderr)
            continue
        mask = predict_mask(model, image, meta, device, scales=scales, flip=flip, crop=crop, size=size)
        mask_image(mask, palette).save(out_dir / f"{path.stem}.png")
        ext = ".jpg" if path.suffix.lower() in (".jpg", ".jpeg") else ".png"
        Image.fromarray(overlay(image, mask, palette, alpha)).save(out_dir / f"{path.stem}_overlay{ext}")
    return skipped
