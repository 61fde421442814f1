"""The GPU check's table: markdown (with the machine and the rules), CSV (one row per comparison)
and JSON (machine, settings, checks), written as OUT/gpucheck.md, .csv and .json."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import Any

from nasseg.io import atomic_write_text

from .compare import ERROR, FAIL, Comparison
from .context import Cost
from .settings import GpuCheckSettings

FILES = ("gpucheck.md", "gpucheck.csv", "gpucheck.json")
CSV_FIELDS = ("check", "quantity", "reference", "measured", "difference", "bound", "status", "note",
              "cpu_seconds", "device_seconds", "peak_gpu_mb")
RULES = """\
Each check runs on the CPU (the reference) and on the device from the same seed. Compared steps run in
lockstep: every device step starts from the CPU's state before that step, so a difference is that step's
own arithmetic. difference: the largest relative difference |device - cpu| / |cpu| (an update: the L2 norm
of the difference of the two updates over that of the CPU's update). bound 0: must be equal (exact); "-":
measured, no CPU value to agree with. Bounds and their measured grounds: nasseg/shell/gpucheck/tolerances.py.
Float32 checks run with TF32 off; peak GPU memory is torch.cuda.max_memory_allocated of the device side."""


@dataclass
class CheckResult:
    name: str
    description: str
    comparisons: list[Comparison]
    cost: Cost

    @property
    def failed(self) -> bool:
        return any(c.status in (FAIL, ERROR) for c in self.comparisons)


@dataclass
class GpuCheckReport:
    machine: dict[str, Any]
    settings: GpuCheckSettings
    results: list[CheckResult] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(result.failed for result in self.results)


def _number(value: float | None) -> str:
    """0 as 0 (exact), small values in two significant digits."""
    if value is None:
        return "-"
    return "0" if value == 0 else f"{value:.2g}" if value < 10 else f"{value:.3g}"


def _rows(report: GpuCheckReport) -> list[dict[str, Any]]:
    rows = []
    for result in report.results:
        cost = result.cost
        peak = None if cost.peak_gpu_bytes is None else round(cost.peak_gpu_bytes / 2**20, 1)
        for c in result.comparisons:
            rows.append({**asdict(c), "cpu_seconds": round(cost.cpu_seconds, 2),
                         "device_seconds": round(cost.device_seconds, 2), "peak_gpu_mb": peak})
    return rows


def format_markdown(report: GpuCheckReport) -> str:
    m = report.machine
    title = f"# nasseg GPU check: {m['device']} ({m['device_name']})"
    facts = ", ".join(f"{key} {m[key]}" for key in ("torch", "cuda", "cudnn", "capability", "gpu_memory_gib", "gpus",
                                                    "nasseg", "python", "cpus", "cpu_threads", "date") if key in m)
    verdict = "**some checks failed**" if report.failed else "every comparison passed (or was skipped / measured)"
    lines = [title, "", facts + ("; --quick sizes" if report.settings.quick else ""), "", verdict, "",
             "| check | compared | CPU | device | difference | bound | result | CPU s | device s | peak GPU MB |",
             "|---|---|---|---|---:|---:|---|---:|---:|---:|"]
    previous = None
    for row in _rows(report):
        first = row["check"] != previous  # a check's seconds and memory on its first row only
        previous = row["check"]
        cost = [f"{row['cpu_seconds']:.1f}", f"{row['device_seconds']:.1f}",
                "-" if row["peak_gpu_mb"] is None else f"{row['peak_gpu_mb']:.0f}"] if first else ["", "", ""]
        cells = [row["check"] if first else "", row["quantity"], _cell(row["reference"]), _cell(row["measured"]),
                 _number(row["difference"]), _number(row["bound"]), row["status"], *cost]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", RULES, "", "Checks:"]
    lines += [f"- {r.name}: {r.description}" for r in report.results]
    notes = [f"- {row['check']}, {row['quantity']}: {row['note']}" for row in _rows(report) if row["note"]]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def _cell(text: str, width: int = 60) -> str:
    text = text.replace("|", "\\|")
    return text if len(text) <= width else text[:width - 3] + "..."


def to_json(report: GpuCheckReport) -> str:
    checks = [{"name": r.name, "description": r.description, **asdict(r.cost), "failed": r.failed,
               "comparisons": [asdict(c) for c in r.comparisons]} for r in report.results]
    payload = {"machine": report.machine, "settings": asdict(report.settings), "failed": report.failed,
               "checks": checks}
    return json.dumps(payload, indent=2, default=str) + "\n"


def to_csv(report: GpuCheckReport) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_FIELDS))
    writer.writeheader()
    writer.writerows(_rows(report))
    return buffer.getvalue()


def write_report(report: GpuCheckReport, out: Path) -> list[Path]:
    texts = (format_markdown(report), to_csv(report), to_json(report))
    return [atomic_write_text(out / name, text) for name, text in zip(FILES, texts)]
