"""Will a job fit: the memory available on this machine now, the job's plan against it, the largest
batch that fits, whether a search needs activation checkpointing, and the one-line refusal ``nasseg
search`` / ``train`` give."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..search.config import SearchConfig
from ..train.config import TrainConfig
from .budget import MemoryPlan, format_bytes
from .search_step import plan_search
from .training_step import plan_training

JobConfig = SearchConfig | TrainConfig


@dataclass(frozen=True)
class Available:
    bytes: int
    source: str  # where the figure comes from, for messages


def available_memory(device: str) -> Available | None:
    """Free memory of ``device`` (``cpu``, ``cuda``, ``cuda:N``): on CUDA what the driver reports
    free, on CPU the memory the kernel can give without swapping (MemAvailable of /proc/meminfo).
    None where it is not known (a CPU job on a system without /proc)."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return Available(int(free), f"free on {device}")
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return Available(int(line.split()[1]) * 1024, "MemAvailable")
    except OSError:
        pass
    return None


def plan_job(config: JobConfig, device: str = "cpu", *, batch: int | None = None,
             checkpoint: bool | None = None) -> MemoryPlan:
    """The plan of a search or a training job (``checkpoint`` applies to searches)."""
    if isinstance(config, TrainConfig):
        return plan_training(config, device, batch=batch)
    return plan_search(config, device, batch=batch, checkpoint=checkpoint)


@dataclass(frozen=True)
class FitReport:
    plan: MemoryPlan
    available: int  # bytes one job may use
    largest_batch: int  # the largest batch that fits (0: not even one sample)
    checkpointed: MemoryPlan | None  # a search's plan with supernet.checkpoint: true, when it does not fit without

    @property
    def fits(self) -> bool:
        return self.plan.fits(self.available)


def largest_batch(config: JobConfig, device: str, plan: MemoryPlan, available: int, confirm: bool,
                  tries: int = 3) -> int:
    """The largest batch that fits ``available``: the linear estimate of ``plan``; with ``confirm``,
    traced at the estimate and corrected along the line through the last two traced points (at most
    ``tries`` more traces), the largest traced batch that fits."""
    estimate = plan.largest_batch(available)
    if not confirm:
        return estimate
    traced = [(plan.batch, plan.peak)]
    for _ in range(tries):
        if estimate < 1 or estimate in dict(traced):
            break
        traced.append((estimate, plan_job(config, device, batch=estimate, checkpoint=plan.checkpoint).peak))
        (b1, p1), (b2, p2) = traced[-2:]
        slope = max(abs(p2 - p1), 1) / max(abs(b2 - b1), 1)
        estimate = max(0, b2 + int((available - p2) // slope))
    return max((b for b, peak in traced if peak <= available), default=estimate)


def fit_report(config: JobConfig, device: str, available: int, *, confirm: bool = False,
               plan: MemoryPlan | None = None) -> FitReport:
    """The job's plan (or ``plan``) against ``available`` bytes; for a search that does not fit, also its
    plan with activation checkpointing."""
    plan = plan or plan_job(config, device)
    best = largest_batch(config, device, plan, available, confirm)
    checkpointed = None
    if isinstance(config, SearchConfig) and not plan.checkpoint and not plan.fits(available):
        checkpointed = plan_job(config, device, checkpoint=True)
    return FitReport(plan, available, best, checkpointed)


def way_out(report: FitReport) -> str:
    """What would make the job fit, in job keys."""
    ways = []
    if report.largest_batch >= 1:
        ways.append(f"data.batch_size {report.largest_batch} or lower")
    ways.append("a smaller data.crop")
    if report.plan.peak_phase == "eigenvalue":
        ways.append("a smaller hessian.batch_size (or hessian.every: 0)")
    # checkpointing is named only where it lowers the peak: on CPU the heap churn of recomputation can
    # cost more than the activations it frees in a small net
    if report.checkpointed is not None and report.checkpointed.peak < report.plan.peak:
        verdict = "fits" if report.checkpointed.fits(report.available) else "still too much"
        ways.append(f"supernet.checkpoint: true (predicted {format_bytes(report.checkpointed.peak)}: {verdict})")
    ways.append("another device")
    return ", ".join(ways[:-1]) + " or " + ways[-1]


def refusal(config: JobConfig, device: str, available: int, source: str, parallel: int = 1) -> str | None:
    """None when the job is predicted to fit ``available`` bytes with ``parallel`` runs at once;
    else one line: the prediction, the memory there is, the ways out."""
    plan = plan_job(config, device)
    if plan.peak * parallel <= available:
        return None
    report = fit_report(config, device, available // parallel, confirm=False, plan=plan)
    times = f" x {parallel} trials at once" if parallel > 1 else ""
    return (f"{config.name}: a {plan.describe()} is predicted to need {format_bytes(plan.peak)}{times} at its "
            f"peak, in the {plan.peak_phase}, but only {format_bytes(available)} is free ({source}); to fit, use "
            f"{way_out(report)}; --force runs it anyway")
