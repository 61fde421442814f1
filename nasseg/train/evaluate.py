"""Evaluate a trained model on a whole dataset split: mIoU, accuracies, per-class IoU.

One confusion matrix is summed over every image of the split (batch size 1, so images of any
size work, with no resizing of labels) and all metrics come from it, as in the standard
Cityscapes/CamVid/PASCAL protocol; see :mod:`nasseg.train.metrics`.

``nasseg evaluate`` runs every image whole in one pass by default, as DeepLab evaluates (the
models are fully convolutional). ``--crop HxW`` tiles images (or multi-scale passes) larger than
HxW into overlapping windows of that size instead: use the training crop when the model's
global-pooling context should stay as trained, or to bound memory on huge images. A model
trained at reduced resolution (``data.size``) sees images resized to that size (``--size``)
while the labels are scored at full resolution.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..data.registry import build_dataset
from ..data.transforms import Compose, Normalize
from .inference import predict_logits
from .metrics import ConfusionMatrix

DEEPLAB_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # DeepLab's multi-scale evaluation scales


@dataclass
class EvalResult:
    """Metrics of one evaluation; ``iou``/``accuracy`` are NaN for classes they are undefined for."""

    miou: float
    pixel_accuracy: float
    mean_accuracy: float  # mean over classes with ground-truth pixels of TP / (TP + FN)
    iou: list[float]
    accuracy: list[float]
    classes: tuple[str, ...]
    confusion: np.ndarray  # int64 (C, C), rows: ground truth, columns: prediction
    images: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    @property
    def pixels(self) -> list[int]:
        """Ground-truth (non-ignored) pixels per class."""
        return [int(v) for v in self.confusion.sum(1)]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"class": list(self.classes), "iou": self.iou, "accuracy": self.accuracy,
                             "pixels": self.pixels})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary; undefined metrics (NaN) become ``None``."""
        return {"miou": _num(self.miou), "pixel_accuracy": _num(self.pixel_accuracy),
                "mean_accuracy": _num(self.mean_accuracy), "images": self.images, "seconds": round(self.seconds, 3),
                "images_per_second": _num(self.images_per_second), "settings": self.settings,
                "classes": [{"class": c, "iou": _num(i), "accuracy": _num(a), "pixels": p}
                            for c, i, a, p in zip(self.classes, self.iou, self.accuracy, self.pixels)],
                "confusion_matrix": self.confusion.tolist()}

    def format(self) -> str:
        """Human-readable per-class table (percentages) and a summary line."""
        width = max(len("class"), *(len(c) for c in self.classes))
        lines = [f"{'class':<{width}}  {'IoU %':>7}  {'acc %':>7}  {'pixels':>12}"]
        lines += [f"{c:<{width}}  {_pct(i):>7}  {_pct(a):>7}  {p:>12,}"
                  for c, i, a, p in zip(self.classes, self.iou, self.accuracy, self.pixels)]
        lines += ["-" * len(lines[0]), f"mIoU {_pct(self.miou)}  pixel accuracy {_pct(self.pixel_accuracy)}  mean "
                  f"class accuracy {_pct(self.mean_accuracy)}  ({self.images} images, {self.seconds:.1f} s, "
                  f"{self.images_per_second:.2f} images/s)"]
        return "\n".join(lines)


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.2f}"


def result_from_confusion(cm: ConfusionMatrix, classes: Sequence[str], images: int,
                          seconds: float, settings: dict[str, Any] | None = None) -> EvalResult:
    """All metrics of a summed confusion matrix (class accuracy = recall, NaN without labels)."""
    m = cm.matrix.double()
    truth = m.sum(1)
    accuracy = torch.where(truth > 0, m.diag() / truth.clamp(min=1), float("nan"))
    present = ~accuracy.isnan()
    mean_accuracy = float(accuracy[present].mean()) if present.any() else float("nan")
    return EvalResult(cm.miou(), cm.pixel_accuracy(), mean_accuracy, cm.iou().tolist(), accuracy.tolist(),
                      tuple(classes), cm.matrix.numpy().copy(), images, seconds, dict(settings or {}))


def evaluate(model: nn.Module, dataset: Dataset, *, device: str | torch.device = "cpu",
             scales: Sequence[float] = (1.0,), flip: bool = False, crop: tuple[int, int] | None = None,
             base_size: tuple[int, int] | None = None, progress: bool = True, limit: int | None = None,
             workers: int = 0) -> EvalResult:
    """Evaluate ``model`` on every image of ``dataset`` (or the first ``limit``): normalised ``(3, H, W)`` images and
    ``(H, W)`` labels, with ``num_classes``, ``ignore_index`` and (optionally) ``classes``. The time covers loading
    and inference of the whole split."""
    num_classes = int(dataset.num_classes)
    classes = tuple(getattr(dataset, "classes", None) or (str(i) for i in range(num_classes)))
    cm = ConfusionMatrix(num_classes, int(getattr(dataset, "ignore_index", 255)))
    count = len(dataset) if limit is None else min(limit, len(dataset))
    subset = dataset if count == len(dataset) else torch.utils.data.Subset(dataset, range(count))
    loader = DataLoader(subset, batch_size=1, shuffle=False, num_workers=workers)
    model = model.to(device).eval()
    start = time.perf_counter()
    for image, label in tqdm(loader, total=count, desc="evaluate", disable=not progress, unit="img", leave=False):
        probs = predict_logits(model, image.to(device), num_classes, scales=scales, flip=flip, crop=crop,
                               base_size=base_size)
        cm.update(probs.argmax(1).cpu(), label)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    settings = {"scales": list(scales), "flip": flip, "crop": list(crop) if crop else None,
                "size": list(base_size) if base_size else None}
    return result_from_confusion(cm, classes, count, seconds, settings)


def resolve_crop(option: tuple[int, int] | str | None) -> tuple[int, int] | None:
    """--crop: not given or 'none' -> whole images in one pass (as DeepLab evaluates); HxW ->
    sliding windows of that size over images larger than it."""
    return None if option in (None, "none") else option


def resolve_size(option: tuple[int, int] | str | None, train_size: Sequence[int] | None) -> tuple[int, int] | None:
    """--size: None (not given) -> the training resize (if any); 'none' -> images as stored."""
    if option is None:
        return (int(train_size[0]), int(train_size[1])) if train_size else None
    return None if option == "none" else option


def load_dataset(spec: str, split: str, mean: Sequence[float], std: Sequence[float]) -> Any:
    """The split of ``DATASET[:PATH]``, normalised with the checkpoint's mean/std."""
    return build_dataset(spec, split, transform=Compose([Normalize(mean, std)]))
