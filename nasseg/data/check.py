"""``nasseg data check``: read every item of a dataset and list every problem at once.

Training stops at the first bad file; before a long run users want the whole list (missing,
unmatched or unreadable files, size mismatches, label values outside the classes) plus what the
data looks like: pixels per class (a class absent from a split is worth knowing) and the image
size range (the largest crop that needs no padding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from nasseg.data.registry import DataSource, DatasetInfo, open_source
from nasseg.errors import NassegError


@dataclass
class SplitReport:
    """One split: complete pairs read, problems, pixels per class, image size range (HxW)."""

    split: str
    class_pixels: list[int]
    items: int = 0
    problems: list[str] = field(default_factory=list)
    ignore_pixels: int = 0
    min_size: tuple[int, int] | None = None
    max_size: tuple[int, int] | None = None

    def add(self, image: np.ndarray | None, label: np.ndarray | None, ignore_index: int) -> None:
        """Count one decoded item (either part may be None when unreadable)."""
        if image is not None:
            size = image.shape[:2]
            self.min_size = size if self.min_size is None else tuple(map(min, self.min_size, size))
            self.max_size = size if self.max_size is None else tuple(map(max, self.max_size, size))
        if label is not None:
            n = len(self.class_pixels)
            counts = np.bincount(label[(label >= 0) & (label < n)], minlength=n)
            self.class_pixels = [a + int(b) for a, b in zip(self.class_pixels, counts)]
            self.ignore_pixels += int((label == ignore_index).sum())


@dataclass
class CheckReport:
    spec: str
    info: DatasetInfo
    splits: list[SplitReport]

    @property
    def problems(self) -> list[str]:
        return [p for s in self.splits for p in s.problems]

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.spec, "classes": list(self.info.classes), "ignore_index": self.info.ignore_index,
                "problem_count": len(self.problems),
                "splits": [{"split": s.split, "items": s.items, "problems": s.problems,
                            "class_pixels": dict(zip(self.info.classes, s.class_pixels)),
                            "ignore_pixels": s.ignore_pixels, "min_size": list(s.min_size) if s.min_size else None,
                            "max_size": list(s.max_size) if s.max_size else None} for s in self.splits]}


def check_dataset(spec: str, splits: Sequence[str] | None = None, progress: bool = True) -> CheckReport:
    """Scan ``splits`` (default: every split on disk) of ``spec``, collecting every problem.

    A bad spec, missing folder or unknown split name raises NassegError (nothing to check);
    everything about the data itself, even a split that cannot be read at all, is a problem.
    """
    source = open_source(spec)
    names = list(splits) if splits else [s for s in source.entry.present(source.root) if s in source.info.splits]
    if not names:
        raise NassegError(f"{source.spec}: no splits found under {source.root} (expected "
                          f"{', '.join(source.info.splits) or 'some'}; {source.entry.description})")
    for name in names:
        source.require_split(name)
    return CheckReport(source.spec, source.info, [_check_split(source, s, progress) for s in names])


def _check_split(source: DataSource, split: str, progress: bool) -> SplitReport:
    report = SplitReport(split, [0] * source.info.num_classes)
    try:
        found = source.scan(split)
        report.problems += found.problems
        if not found.pairs and found.problems:
            return report  # nothing complete to read; the problems say why
        dataset = source.dataset(found.pairs, found.source)
    except NassegError as e:
        report.problems.append(str(e))
        return report
    report.items = len(dataset)
    for i in tqdm(range(len(dataset)), desc=f"checking {split}", unit="item", leave=False, disable=not progress):
        image, label, problems = dataset.inspect(i)
        report.problems += problems
        report.add(image, label, source.info.ignore_index)
    return report


def format_check(report: CheckReport) -> str:
    """Problems first, one per line, then per split: items, sizes, class pixel shares; summary."""
    info = report.info
    lines = [*report.problems, f"{report.spec}: {info.num_classes} classes, ignore {info.ignore_index}"]
    for s in report.splits:
        sizes = (f"image sizes {s.min_size[0]}x{s.min_size[1]} .. {s.max_size[0]}x{s.max_size[1]} (HxW)"
                 if s.min_size and s.max_size else "no readable images")
        lines.append(f"{s.split}: {s.items} items, {sizes}, {len(s.problems)} problems")
        total = sum(s.class_pixels) + s.ignore_pixels
        if total:
            shares = [f"{name} {100 * n / total:.1f}%" for name, n in zip(info.classes, s.class_pixels)]
            lines += _wrap("  pixels: ", [*shares, f"(ignore {100 * s.ignore_pixels / total:.1f}%)"])
            absent = [name for name, n in zip(info.classes, s.class_pixels) if n == 0]
            if absent:
                lines += _wrap("  no pixels: ", absent)
    count = len(report.splits)
    lines.append(f"summary: {count} split{'s' * (count != 1)}, {sum(s.items for s in report.splits)} items, "
                 f"{len(report.problems)} problems")
    return "\n".join(lines)


def _wrap(prefix: str, entries: list[str], width: int = 100) -> list[str]:
    """Comma-separated ``entries`` over lines of at most ``width``, never splitting an entry."""
    rows: list[list[str]] = [[]]
    for entry in entries:
        if rows[-1] and len(prefix) + len(", ".join([*rows[-1], entry])) > width:
            rows.append([])
        rows[-1].append(entry)
    texts = [", ".join(row) for row in rows]
    return [(prefix if i == 0 else " " * 4) + text + ("," if i < len(texts) - 1 else "")
            for i, text in enumerate(texts)]
