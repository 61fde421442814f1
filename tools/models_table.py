"""Write docs/models.md: every registered model's size, cost and CPU latency next to the papers.

    .venv/bin/python tools/models_table.py                 # all models, 2 threads -> docs/models.md
    .venv/bin/python tools/models_table.py --threads 1     # on a machine busy with other jobs
    .venv/bin/python tools/models_table.py --no-latency    # counts only (seconds, not minutes)

Parameters and multiply-adds are counted on the ``meta`` device at 1024x2048 (19 classes; the
CIFAR network at 32x32 with 10 classes), so they are exact and machine-independent. Latency is
the median of a few eval-mode forward passes of one 1x3x512x1024 image on this machine's CPU under
``torch.inference_mode`` (``nasseg.complexity.median_latency``, one warm-up pass); large models
get fewer repeats to keep the run under ten minutes. The load average at measurement time is
written into the document: latency on a shared machine is only as good as the machine was idle.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nasseg.complexity import count_macs, count_params, median_latency, meta_device  # noqa: E402
from nasseg.models import available_models, build  # noqa: E402

MACS_SIZE = (1024, 2048)
LATENCY_SIZE = (512, 1024)
CIFAR_SIZE = (32, 32)
SEG_CLASSES = 19
CIFAR_CLASSES = 10
BIG_MACS = 100e9  # at LATENCY_SIZE: models above this get --big-repeats timed passes

# The papers' figures (REFERENCE.md): params, multiply-adds at 1024x2048 (None: not given), source.
PAPER = {
    "autodeeplab_s": (10.15e6, 333.25e9, "Auto-DeepLab, Table 3 (Cityscapes)"),
    "autodeeplab_m": (21.62e6, 460.93e9, "Auto-DeepLab, Table 3"),
    "autodeeplab_l": (44.42e6, 695.03e9, "Auto-DeepLab, Table 3"),
    "duc_hdc_resnet101": (65e6, None, "DUC+HDC, official Cityscapes model (~65M)"),
    "icnet_resnet50": (6.7e6, None, "ICNet release; 33 ms at 1024x2048 on a TitanX"),
    "darts_v2_cifar": (3.3e6, None, "DARTS, CIFAR-10 (32x32, 10 classes)"),
}
# Rows for networks we do not build, as a point of reference.
REFERENCE_ROWS = [
    ("DeepLabV3+ (Xception-71)", 43.48e6, 1551.05e9, "Auto-DeepLab, Table 3 (not built here)"),
]


@dataclass
class Row:
    name: str
    classes: int
    params: int
    macs: int
    macs_size: tuple[int, int]
    latency_ms: float | None = None
    latency_size: tuple[int, int] | None = None
    repeats: int = 0


# Table order: the hand-designed baselines, then the networks built from an ArchSpec, then the rest.
ORDER = ["deeplabv3plus_resnet50", "deeplabv3plus_resnet101", "deeplabv3plus_mobilenetv2",
         "duc_hdc_resnet101", "icnet_resnet50", "icnet_resnet50_full", "darts_v2_cifar",
         "darts_v2_seg", "autodeeplab_s", "autodeeplab_m", "autodeeplab_l"]


def ordered(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def is_cifar(name: str) -> bool:
    return name.endswith("_cifar")


def count(name: str, size: tuple[int, int], classes: int, **kwargs) -> tuple[int, int]:
    with meta_device():
        model = build(name, classes, **kwargs).eval()
        image = torch.empty(1, 3, *size)
        return count_params(model.parameters()), count_macs(lambda: model(image))


def measure(names: list[str], latency: bool, repeats: int, big_repeats: int) -> list[Row]:
    rows = []
    for name in names:
        classes = CIFAR_CLASSES if is_cifar(name) else SEG_CLASSES
        size = CIFAR_SIZE if is_cifar(name) else MACS_SIZE
        params, macs = count(name, size, classes)
        row = Row(name, classes, params, macs, size)
        if latency:
            lat_size = CIFAR_SIZE if is_cifar(name) else LATENCY_SIZE
            scale = lat_size[0] * lat_size[1] / (size[0] * size[1])
            row.repeats = big_repeats if macs * scale > BIG_MACS else repeats
            torch.manual_seed(0)
            model = build(name, classes)
            start = time.perf_counter()
            row.latency_ms = median_latency(model, lat_size, repeats=row.repeats) * 1e3
            row.latency_size = lat_size
            print(f"  {name}: {row.latency_ms:.0f} ms median of {row.repeats} "
                  f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
            del model
        rows.append(row)
    return rows


# --- formatting ----------------------------------------------------------------------------

def millions(n: float) -> str:
    return f"{n / 1e6:.2f}M"


def billions(n: float) -> str:
    return f"{n / 1e9:.2f}B"


def vs(ours: float, paper: float | None) -> str:
    return "" if paper is None else f" ({(ours - paper) / paper:+.2%})"


def size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| model | params | paper params | MACs at 1024x2048 | paper MACs | "
        "CPU latency at 512x1024 | paper source |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        paper_params, paper_macs, source = PAPER.get(r.name, (None, None, ""))
        macs = billions(r.macs) + vs(r.macs, paper_macs)
        if r.macs_size != MACS_SIZE:
            macs += f" at {size_text(r.macs_size)}"
        if r.latency_ms is None:
            latency = "not measured"
        else:
            latency = f"{r.latency_ms:,.0f} ms" if r.latency_ms >= 10 else f"{r.latency_ms:.1f} ms"
            if r.latency_size != LATENCY_SIZE:
                latency += f" at {size_text(r.latency_size)}"
            latency += f" (n={r.repeats})"
        lines.append(
            f"| `{r.name}` | {millions(r.params)}{vs(r.params, paper_params)} | "
            f"{millions(paper_params) if paper_params else '-'} | {macs} | "
            f"{billions(paper_macs) if paper_macs else '-'} | {latency} | {source} |"
        )
    for label, paper_params, paper_macs, source in REFERENCE_ROWS:
        lines.append(f"| {label} | - | {millions(paper_params)} | - | {billions(paper_macs)} | - | "
                     f"{source} |")
    return lines


def deviations(rows: list[Row]) -> list[str]:
    by_name = {r.name: r for r in rows}
    out = ["## Known deviations from the papers", ""]

    adl = [n for n in ("autodeeplab_s", "autodeeplab_m", "autodeeplab_l") if n in by_name]
    if adl:
        crop = {n: count(n, (1025, 2049), SEG_CLASSES)[1] for n in adl}
        at_1024 = ", ".join(f"{n[-1].upper()} {(by_name[n].macs - PAPER[n][1]) / PAPER[n][1]:+.1%}"
                            for n in adl)
        at_1025 = ", ".join(f"{n[-1].upper()} {(crop[n] - PAPER[n][1]) / PAPER[n][1]:+.1%}"
                            for n in adl)
        out += [
            "**Auto-DeepLab-S/M/L, multiply-adds.** Parameters match the paper to within 0.05% "
            "(S: 10,147,427 against 10.15M), which pins the architecture down: the cell's "
            "`atrous_conv` ops are *full* 3x3/5x5 convolutions with dilation 2, as in the official "
            "`nas_cell.py`, not the separable ones of the search space (separable ones give 5.56M "
            "at F = 20). Multiply-adds at 1024x2048 are below the paper's: "
            f"{at_1024}. At TF DeepLab's 1025x2049 evaluation crop they are {at_1025}, all "
            "within the issue's 5% (`tests/test_models_arch.py` asserts this; the 1024x2048 check "
            "for M and L is a strict xfail that records the gap). No weights lie behind the gap, "
            "and our count is never above the paper's, so the likely cause is a counting "
            "convention: the 1025x2049 crop (+0.9-1.4%) and TensorFlow running dilated convs via "
            "space-to-batch on inputs padded to a multiple of the rate (+2.3-2.8%): both add "
            "multiply-adds that a count of the TF graph includes and ours does not.",
            "",
        ]

    if "duc_hdc_resnet101" in by_name:
        full_params, full_macs = count("duc_hdc_resnet101", MACS_SIZE, SEG_CLASSES, duc_factor=8)
        r = by_name["duc_hdc_resnet101"]
        out += [
            "**DUC+HDC, the released configuration.** `duc_hdc_resnet101` follows the released "
            "Cityscapes model (TuSimple-DUC `train_cityscapes.cfg`: `ds_rate=8`, `cell_width=2`, "
            "four DUC branches at rates 6/12/18/24): the DUC head predicts "
            "`4*4*classes` channels, pixel-shuffles them to stride 2 and the map is resized to the "
            f"input. That is the model with ~65M parameters ({millions(r.params)} here). The "
            "paper's description, a DUC at full resolution (d = 8), is available as "
            f"`duc_factor=8`: {millions(full_params)} parameters, {billions(full_macs)} "
            "multiply-adds at 1024x2048, twice the ~65M of the official model. The HDC rates are "
            "the "
            "official per-block ones (layer3: 2, then the 1-2-5-9 cycle; layer4: 5-9-17).",
            "",
        ]

    if "icnet_resnet50" in by_name:
        r = by_name["icnet_resnet50"]
        ratio = ""
        if "deeplabv3plus_resnet101" in by_name:
            ref = by_name["deeplabv3plus_resnet101"].macs
            ratio = f"; {r.macs / ref:.1%} of `deeplabv3plus_resnet101`'s multiply-adds"
            if "icnet_resnet50_full" in by_name:
                ratio += f", against {by_name['icnet_resnet50_full'].macs / ref:.1%} at full width"
        out += [
            "**ICNet, half width.** The official ICNet release runs the PSPNet50 trunk at half "
            "width, and its 6.7M parameters are those of that model. `icnet_resnet50` is that "
            f"released configuration (`width_mult=0.5`, {millions(r.params)} parameters"
            f"{ratio}). `icnet_resnet50_full` is the full-width trunk, for comparison; it "
            "misses the issue's bound of 10% of DeepLabV3+-R101's multiply-adds. The paper's "
            "33 ms is for a TitanX GPU at 1024x2048 and is not comparable with the CPU column.",
            "",
        ]

    out += [
        "**DARTS_V2.** `darts_v2_cifar` (C = 36, 20 cells, no auxiliary head) has exactly the "
        "3,349,342 parameters of the reference implementation (quark0/darts), which the paper "
        "rounds to 3.3M; its multiply-adds and latency are given at CIFAR's 32x32. `darts_v2_seg` "
        "(the DARTS_V2 cells in a DeepLabV3+-style segmentation network) has no paper figure.",
        "",
        "**DeepLabV3+.** REFERENCE.md gives no size or cost for the ResNet and MobileNetV2 "
        "variants built here; the Xception-71 row (not built: no Xception backbone in this "
        "package) is the Auto-DeepLab paper's reference point.",
        "",
    ]
    return out


def render(rows: list[Row], threads: int, load_before: tuple[float, ...] | None,
           load_after: tuple[float, ...] | None, seconds: float) -> str:
    today = datetime.date.today().isoformat()
    cpu = platform.processor() or platform.machine()
    lines = [
        "# Models",
        "",
        "<!-- Generated by tools/models_table.py; edit the script, not this file. -->",
        "",
        "Every registered model (`nasseg.models.available_models()`), built with 19 classes "
        "(Cityscapes) unless noted. Parameters and multiply-adds (MACs) are counted on the "
        "`meta` device at 1024x2048, the resolution of the papers' tables; MACs are "
        "`torch.utils.flop_counter` FLOPs of convolutions and matrix products, halved "
        "(batch norm, activations, pooling and resizing are not counted). In brackets: the "
        "difference from the paper's figure. Regenerate with "
        "`.venv/bin/python tools/models_table.py`; one model's figures: "
        "`nasseg info MODEL --input 1024x2048 --classes 19 [--latency]`.",
        "",
    ]
    lines += table(rows)
    lines += [""]
    if load_before is not None:
        busy = max(load_before[0], load_after[0]) > 0.5 * (os.cpu_count() or 1)
        lines += [
            f"CPU latency: median of n eval-mode forward passes (after one warm-up pass) of one "
            f"1x3x512x1024 image under `torch.inference_mode`, `torch.set_num_threads({threads})`, "
            f"on this machine ({os.cpu_count()} cores, {cpu}, torch {torch.__version__}), "
            f"measured on {today} in {seconds / 60:.1f} minutes. Load average (1/5/15 min) "
            f"when measuring started: {'/'.join(f'{x:.2f}' for x in load_before)}; when it ended: "
            f"{'/'.join(f'{x:.2f}' for x in load_after)}.",
            "",
            ("**Caveat: the machine was not idle.** " if busy else "**Caveat.** ")
            + "With a load average near the core count, other "
            "processes take CPU time from the timed passes, so the absolute numbers are noisy "
            "and pessimistic; the ratios between models measured in the same run are the "
            "meaningful part. Asking for more threads than there are free cores makes it much "
            "worse: torch's OpenMP workers wait on each other at every op. On this 2-core "
            "machine, with two other jobs running, ICNet at 256x512 took 76 ms with one thread "
            "and 2.75 s with two, which is why a busy machine should be measured with "
            "`--threads 1`.",
            "",
        ]
    lines += deviations(rows)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "models.md")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per model (default 5)")
    parser.add_argument("--big-repeats", type=int, default=3,
                        help=f"timed passes for models above {BIG_MACS / 1e9:.0f}B MACs at "
                             "512x1024 "
                             "(default 3)")
    parser.add_argument("--no-latency", action="store_true", help="count only, skip the timing")
    parser.add_argument("--models", nargs="*", default=None, help="a subset (default: all)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    names = ordered(args.models or available_models())
    start = time.perf_counter()
    load_before = None if args.no_latency else os.getloadavg()
    rows = measure(names, not args.no_latency, args.repeats, args.big_repeats)
    load_after = None if args.no_latency else os.getloadavg()
    text = render(rows, args.threads, load_before, load_after, time.perf_counter() - start)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
