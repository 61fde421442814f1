"""The bench's results as a table (with settings, legend and notes), CSV, JSON and a bar chart."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from nasseg.errors import NassegError

from .settings import Row, Settings


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def format_table(rows: Sequence[Row], settings: Settings) -> str:
    header = ("suite", "config", "metric", "value", "baseline", "ratio", "compared", "target", "met")
    lines = []
    for r in rows:
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        target = f"<= {r.target:.2g}" if r.target is not None else ""
        lines.append((r.suite, r.config, f"{r.metric} ({r.unit})", _fmt(r.value, r.unit), _fmt(r.baseline, r.unit),
                      "-" if r.ratio is None else f"{r.ratio:.3f}", r.compare, target, met))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    out = [describe_settings(settings), "  ".join(h.ljust(w) for h, w in zip(header, widths)),
           "  ".join("-" * w for w in widths),
           *("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in lines), LEGEND]
    notes = [f"  {r.suite} {r.config}, {r.metric}: {r.note}" for r in rows if r.note]
    return "\n".join(out + (["notes:", *notes] if notes else []))


LEGEND = """\
ratio = value / baseline; met = ratio <= target. step time: one search step (first-order architecture
step + weight step; 'order': second-order architecture step), median. peak memory: peak RSS (CPU) or
max_memory_allocated (CUDA) of the first step above the memory after building model and data, in a fresh
process. saved for backward: bytes autograd keeps in the weight step's forward (parameters excluded).
peers: the original codes' side-by-side scripts (their own timing and peak RSS growth over 2 steps)."""

# rows whose ratio only restates another one (parts of a step, throughput = inverse time): not plotted
NOT_PLOTTED = ("weight step time", "arch step time", "achieved GFLOP/s")


def describe_settings(s: Settings) -> str:
    device = s.device
    if device.startswith("cuda") and torch.cuda.is_available():
        device += f" ({torch.cuda.get_device_name(torch.device(device))})"
    return (f"nasseg bench: device {device}, {s.threads} thread(s) of {os.cpu_count()} CPUs, torch "
            f"{torch.__version__}, {s.repeats} timed steps after {s.warmup} warm-up (median), memory "
            f"{s.memory}{', quick sizes' if s.quick else ''}")


def write_csv(rows: Sequence[Row], path: str) -> None:
    fields = list(rows[0].to_dict()) if rows else ["suite"]
    with _open_out(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(row.to_dict() for row in rows)


def write_json(rows: Sequence[Row], settings: Settings, path: str) -> None:
    payload = {"settings": {**dataclasses.asdict(settings), "cpus": os.cpu_count(), "torch": torch.__version__},
               "rows": [r.to_dict() for r in rows]}
    with _open_out(path) as handle:
        json.dump(payload, handle, indent=2, default=list)
        handle.write("\n")


@contextlib.contextmanager
def _open_out(path: str) -> Iterator[Any]:
    if path == "-":
        yield sys.stdout
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        yield handle


def plot_ratios(rows: Sequence[Row], path: str) -> None:
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.ratio is not None and r.metric not in NOT_PLOTTED]
    if not shown:
        raise NassegError("nothing to plot: no ratio was measured")
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(shown) + 1.2))
    labels = [f"{r.suite}: {r.config}\n{r.metric} ({r.compare})" for r in shown]
    colors = ["tab:gray" if r.met is None else ("tab:green" if r.met else "tab:red") for r in shown]
    y = list(range(len(shown)))[::-1]
    ax.barh(y, [r.ratio for r in shown], color=colors)
    for yi, r in zip(y, shown):
        if r.target is not None:
            ax.plot([r.target, r.target], [yi - 0.4, yi + 0.4], color="black", lw=2)
        ax.text(r.ratio, yi, f" {r.ratio:.3f}", va="center", fontsize=7)
    ax.axvline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("ratio (black tick: target, at most)")
    ax.set_title("nasseg bench")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)

