"""One GPU check: the device checked first (one line when there is none), then each asked-for check
in turn; a check that raises is one ``error`` row and the others still run."""

from __future__ import annotations

import sys
from functools import partial
from typing import Callable

from tqdm import tqdm

from ..process import configure_process
from .compare import ERROR, FAIL, Comparison, errored
from .checks import check_bench, check_hessian, check_latency, check_nccl, check_search, check_train
from .context import CheckContext, checked_device, describe_machine
from .report import CheckResult, GpuCheckReport, write_report
from .settings import CHECKS, DESCRIPTIONS, GpuCheckSettings

CHECK_RUNS: dict[str, Callable[[CheckContext], list[Comparison]]] = {
    "search": check_search, "search_bf16": partial(check_search, amp=True), "hessian": check_hessian,
    "train": check_train, "train_amp": partial(check_train, amp=True), "latency": check_latency, "bench": check_bench,
    "nccl": check_nccl}
assert tuple(CHECK_RUNS) == CHECKS


def run_gpucheck(settings: GpuCheckSettings) -> GpuCheckReport:
    device = checked_device(settings.device)
    configure_process(settings.threads)
    report = GpuCheckReport(describe_machine(device), settings)
    ctx = CheckContext(settings, device)
    for name in (c for c in CHECKS if c in settings.checks):
        _say(settings, f"[gpucheck] {name}: {DESCRIPTIONS[name]}")
        ctx.begin()
        try:
            comparisons = CHECK_RUNS[name](ctx)
        except Exception as exc:  # a CUDA path that breaks is a finding: record it, check the rest
            comparisons = [errored(name, exc)]
        report.results.append(CheckResult(name, DESCRIPTIONS[name], comparisons, ctx.cost))
        for c in comparisons:
            _say(settings, f"  {c.status:<7} {c.quantity}" + (f"  ({c.note})" if c.status in (FAIL, ERROR) else ""))
    write_report(report, settings.out)
    return report


def _say(settings: GpuCheckSettings, text: str) -> None:
    if settings.progress:
        tqdm.write(text, file=sys.stderr)
