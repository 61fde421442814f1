"""``nasseg demo``: the whole pipeline on the bundled CamVid subset, in a few minutes on a laptop.

search (DARTS + Hessian eigenvalue, a Ray Tune trial on an embedded local Ray) -> decode ->
drawings -> a short retrain of the decoded cells -> evaluation on the val images -> HTML report.
Everything lands in ``OUT/demo/`` (the search run in ``seed0/``, the retrain in ``retrain/``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from nasseg.errors import NassegError

DEMO_JOB = Path(__file__).resolve().parents[1] / "jobs" / "demo.yaml"  # nasseg/jobs: package data
# The retrain: small enough for a minute of CPU, big enough to learn the frequent classes.
RETRAIN = {"data": {"dataset": "camvid_demo", "size": [120, 160], "crop": [96, 128], "batch_size": 4},
           "model_args": {"C": 12, "layers": 5}, "iters": 120, "checkpoint_every": 40, "log_every": 10,
           "optim": {"lr": 0.02, "warmup_iters": 10}}


def _step(number: int, text: str) -> float:
    print(f"[{number}/5] {text}", flush=True)
    return time.perf_counter()


def run_demo(out: str | Path = "runs", *, progress: bool = True, address: str | None = None) -> Path:
    """Run the pipeline; returns the report's path."""
    from .runner.tune_search import run_tune_search
    from nasseg.search import load_job
    from nasseg.train.config import parse_train_job
    from nasseg.train.trainer import Trainer
    from nasseg.viz.draw import show
    from .report import write_report

    started = time.perf_counter()
    # Two CPUs when there are: one torch thread trains while another computes the previous epoch's
    # eigenvalue (hessian.overlap; same numbers). Not two torch threads on one op: a Ray worker runs
    # niced beside Ray's own processes, and two OpenMP threads then spin-wait on each other (measured:
    # >4 min without finishing epoch 1, vs 36 s), and the demo's small ops gain nothing from them.
    cpus = 2 if (os.cpu_count() or 1) >= 2 else 1
    config = load_job(DEMO_JOB, [f"resources.cpus={cpus}", f"hessian.overlap={str(cpus == 2).lower()}"])
    _step(1, f"search: DARTS on the bundled CamVid subset, {config.epochs} epochs, a Ray Tune trial "
             f"with {cpus} CPU(s)")
    outcome = run_tune_search(config, out, restart=True, address=address)[0]
    run_dir = Path(outcome["run_dir"])
    print(f"      {outcome['status']}: {outcome['reason']}; architecture of epoch {outcome['arch_epoch']}")

    _step(2, "decode and draw the architecture")
    arch = run_dir / "arch.yaml"
    drawing = show(str(run_dir), run_dir / "search.svg")
    print(f"      {arch}\n      {drawing}")

    _step(3, f"retrain the decoded cells for {RETRAIN['iters']} iterations")
    job = parse_train_job({**RETRAIN, "name": "retrain", "model": str(arch)})
    trainer = Trainer(job, run_dir.parent, restart=True, progress=progress)
    result = trainer.run()
    if result is None:
        raise NassegError("the demo retrain stopped before its last iteration")

    _step(4, "evaluate on the 16 val images")
    print("\n".join("      " + line for line in trainer.final_eval.format().splitlines()))

    _step(5, "write the report")
    report = write_report(run_dir, retrains=[trainer.run_dir])
    print(f"done in {time.perf_counter() - started:.0f} s. Open the report: {report}")
    return report
