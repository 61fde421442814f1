"""One ``nasseg bench`` run: each asked-for suite in turn, every row they measured."""

from __future__ import annotations

from typing import Callable

from tqdm import tqdm

from ..process import configure_process
from .hessian import hessian
from .measure import Bench
from .peers import peers
from .plan import plan_accuracy
from .ray_trials import ray_speedup
from .settings import SUITES, Row, Settings
from .supernets import autodeeplab, checkpoint, darts, order

SUITE_RUNS: dict[str, Callable[[Bench], list[Row]]] = {
    "darts": darts, "autodeeplab": autodeeplab, "order": order, "checkpoint": checkpoint, "hessian": hessian,
    "ray": ray_speedup, "peers": peers, "plan": plan_accuracy}
assert tuple(SUITE_RUNS) == SUITES


def run_bench(settings: Settings) -> list[Row]:
    configure_process(settings.threads)  # as nasseg's search and training processes are
    bench = Bench(settings)
    rows: list[Row] = []
    for suite in tqdm(settings.suites, disable=not settings.progress, desc="bench", unit="suite"):
        rows += SUITE_RUNS[suite](bench)
    return rows
