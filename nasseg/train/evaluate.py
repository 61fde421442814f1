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

import argparse
import json
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

from ..errors import NassegError
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
        """One row per class: class, iou, accuracy, pixels."""
        return pd.DataFrame({"class": list(self.classes), "iou": self.iou,
                             "accuracy": self.accuracy, "pixels": self.pixels})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary; undefined metrics (NaN) become ``None``."""
        return {"miou": _num(self.miou), "pixel_accuracy": _num(self.pixel_accuracy),
                "mean_accuracy": _num(self.mean_accuracy), "images": self.images,
                "seconds": round(self.seconds, 3),
                "images_per_second": _num(self.images_per_second), "settings": self.settings,
                "classes": [{"class": c, "iou": _num(i), "accuracy": _num(a), "pixels": p}
                            for c, i, a, p in zip(self.classes, self.iou, self.accuracy,
                                                  self.pixels)],
                "confusion_matrix": self.confusion.tolist()}

    def format(self) -> str:
        """Human-readable per-class table (percentages) and a summary line."""
        width = max(len("class"), *(len(c) for c in self.classes))
        lines = [f"{'class':<{width}}  {'IoU %':>7}  {'acc %':>7}  {'pixels':>12}"]
        lines += [f"{c:<{width}}  {_pct(i):>7}  {_pct(a):>7}  {p:>12,}"
                  for c, i, a, p in zip(self.classes, self.iou, self.accuracy, self.pixels)]
        lines.append("-" * len(lines[0]))
        lines.append(f"mIoU {_pct(self.miou)}  pixel accuracy {_pct(self.pixel_accuracy)}  "
                     f"mean class accuracy {_pct(self.mean_accuracy)}  ({self.images} images, "
                     f"{self.seconds:.1f} s, {self.images_per_second:.2f} images/s)")
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
    return EvalResult(miou=cm.miou(), pixel_accuracy=cm.pixel_accuracy(),
                      mean_accuracy=mean_accuracy, iou=cm.iou().tolist(),
                      accuracy=accuracy.tolist(), classes=tuple(classes),
                      confusion=cm.matrix.numpy().copy(), images=images, seconds=seconds,
                      settings=dict(settings or {}))


def evaluate(model: nn.Module, dataset: Dataset, *, device: str | torch.device = "cpu",
             scales: Sequence[float] = (1.0,), flip: bool = False,
             crop: tuple[int, int] | None = None, base_size: tuple[int, int] | None = None,
             progress: bool = True, limit: int | None = None, workers: int = 0) -> EvalResult:
    """Evaluate ``model`` on every image of ``dataset`` (or the first ``limit``).

    ``dataset`` yields normalised ``(3, H, W)`` images and ``(H, W)`` labels and has
    ``num_classes``, ``ignore_index`` and (optionally) ``classes``. The time covers loading and
    inference of the whole split.
    """
    from tqdm import tqdm

    num_classes = int(dataset.num_classes)
    classes = tuple(getattr(dataset, "classes", None) or (str(i) for i in range(num_classes)))
    cm = ConfusionMatrix(num_classes, int(getattr(dataset, "ignore_index", 255)))
    count = len(dataset) if limit is None else min(limit, len(dataset))
    subset = dataset if count == len(dataset) else torch.utils.data.Subset(dataset, range(count))
    loader = DataLoader(subset, batch_size=1, shuffle=False, num_workers=workers)
    model = model.to(device).eval()
    start = time.perf_counter()
    for image, label in tqdm(loader, total=count, desc="evaluate", disable=not progress,
                             unit="img", leave=False):
        probs = predict_logits(model, image.to(device), num_classes, scales=scales, flip=flip,
                               crop=crop, base_size=base_size)
        cm.update(probs.argmax(1).cpu(), label)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    settings = {"scales": list(scales), "flip": flip, "crop": list(crop) if crop else None,
                "size": list(base_size) if base_size else None}
    return result_from_confusion(cm, classes, count, seconds, settings)


# --- nasseg evaluate ----------------------------------------------------------------------------

def parse_scales(text: str) -> tuple[float, ...]:
    """'0.75,1,1.25' -> (0.75, 1.0, 1.25); every scale must be positive."""
    try:
        scales = tuple(float(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected scales such as 0.75,1,1.25, got {text!r}") from None
    if not scales or min(scales) <= 0:
        raise argparse.ArgumentTypeError(f"scales must be positive, got {text!r}")
    return scales


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_crop(text: str) -> tuple[int, int] | str:
    """'HxW' -> (h, w); 'none' -> 'none' (whole image in one pass)."""
    from ..cli import parse_size

    return "none" if text.lower() == "none" else parse_size(text)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; asking for an absent CUDA is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NassegError(f"--device {name}: CUDA is not available on this machine (use cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise NassegError(f"--device {name}: expected auto, cpu, cuda or cuda:N") from None


def resolve_crop(option: tuple[int, int] | str | None) -> tuple[int, int] | None:
    """--crop: not given or 'none' -> whole images in one pass (as DeepLab evaluates); HxW ->
    sliding windows of that size over images larger than it."""
    return None if option in (None, "none") else option


def resolve_size(option: tuple[int, int] | str | None, train_size: Sequence[int] | None
                 ) -> tuple[int, int] | None:
    """--size: None (not given) -> the training resize (if any); 'none' -> images as stored."""
    if option is None:
        return (int(train_size[0]), int(train_size[1])) if train_size else None
    return None if option == "none" else option


def load_dataset(spec: str, split: str, mean: Sequence[float], std: Sequence[float]) -> Any:
    """The split of ``DATASET[:PATH]``, normalised with the checkpoint's mean/std."""
    from ..data.registry import build_dataset
    from ..data.transforms import Compose, Normalize

    return build_dataset(spec, split, transform=Compose([Normalize(mean, std)]))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .checkpoint import load_trained

    device = resolve_device(args.device)
    model, meta = load_trained(args.checkpoint, device)
    dataset = load_dataset(args.data, args.split, meta.mean, meta.std)
    if dataset.num_classes != meta.num_classes:
        raise NassegError(f"{args.checkpoint}: the model predicts {meta.num_classes} classes but "
                          f"dataset {args.data} ({args.split}) has {dataset.num_classes}")
    scales = DEEPLAB_SCALES if args.multi_scale else args.scales
    crop = resolve_crop(args.crop)
    size = resolve_size(args.size, meta.size)
    result = evaluate(model, dataset, device=device, scales=scales, flip=args.flip, crop=crop,
                      base_size=size, progress=not args.json, limit=args.limit, workers=args.workers)
    result.settings.update(checkpoint=str(args.checkpoint), model=meta.label, data=args.data,
                           split=args.split)
    if args.output:
        from ..io import atomic_write_text
        atomic_write_text(args.output, json.dumps(result.to_dict(), indent=2) + "\n")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"{meta.label} on {args.data} ({args.split}), input "
              f"{'x'.join(map(str, size)) if size else 'as stored'}, scales {', '.join(map(str, scales))}"
              f"{', flip' if args.flip else ''}, crop {'x'.join(map(str, crop)) if crop else 'none'}")
        print(result.format())
        if args.output:
            print(f"wrote {args.output}")
    return 0


def add_inference_arguments(p: argparse.ArgumentParser) -> None:
    """Test-time options shared by ``nasseg evaluate`` and ``nasseg predict``."""
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--multi-scale", action="store_true",
                       help="average over DeepLab's scales 0.5,0.75,1,1.25,1.5,1.75")
    scale.add_argument("--scales", type=parse_scales, default=(1.0,), metavar="S1,S2,...",
                       help="average over these image scales (default: 1)")
    p.add_argument("--flip", action="store_true", help="also average over horizontally flipped inputs")
    p.add_argument("--crop", type=parse_crop, default=None, metavar="HxW|none",
                   help="sliding windows of HxW over images (or scaled images) larger than it, e.g. "
                        "the training crop (default: none, every image whole in one pass)")
    p.add_argument("--size", type=parse_crop, default=None, metavar="HxW|none",
                   help="resize images to HxW for the model (scale 1); predictions keep the image's "
                        "full resolution (default: the size the checkpoint was trained at, if any; "
                        "none: as they are)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate", help="mIoU, pixel accuracy and per-class IoU of a trained model on a split",
        description="Evaluate a training checkpoint on every image of a dataset split, one image at "
                    "a time, from one confusion matrix summed over the split at the labels' full "
                    "resolution. A model trained at reduced resolution (data.size) sees images resized "
                    "to that size unless --size says otherwise.",
        epilog="Example: nasseg evaluate runs/train/final.pt --data camvid:data/camvid --multi-scale "
               "--flip -o results.json")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint file or training run directory")
    p.add_argument("--data", required=True, metavar="DATASET[:PATH]",
                   help="the dataset, e.g. camvid_demo or cityscapes:PATH (see nasseg data)")
    p.add_argument("--split", default="val", help="split to evaluate (default: val)")
    add_inference_arguments(p)
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="only the first N images")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="data loading processes (default: 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("-o", "--output", default=None, metavar="RESULTS.json",
                   help="also write the JSON results here")
    p.set_defaults(run=cmd_evaluate)
    return p
