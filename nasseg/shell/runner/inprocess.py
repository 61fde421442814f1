"""Searches without Ray: the seeds of a job one after another in this process (``--no-ray``).

For debugging (a breakpoint or a profiler sees the search directly) and for tests; writes exactly
the run dirs a Ray trial writes and computes the same numbers (same torch thread count).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Sequence

from nasseg.errors import NassegError
from nasseg.rundirs import (check_removable, check_resume_restart, check_run_dir, claim_run_dir, remove_run_dir,
                            run_path)
from nasseg.search import Search, SearchConfig, SearchResult, run_dir_for

from .experiment import check_out_path, config_digest, job_overrides
from .ray_session import torch_threads
from .record import RunRecord


def epoch_line(label: str, epochs: int, row: dict[str, Any]) -> str:
    eig = f"{row['eigenvalue']:.4g}" if row.get("eigenvalue") is not None else "-"
    return (f"[{label}] epoch {row['epoch']:3d}/{epochs}  train loss {row['train_loss']:.3f}"
            f"  val loss {row['val_loss']:.3f}  val mIoU {row['val_miou']:.3f}  eigenvalue {eig}"
            f"  skip share {row['skip_share']:.2f}  {row['epoch_seconds']:.1f}s")


def run_in_process(config: SearchConfig, seeds: Sequence[int], out: str | Path = "runs", *,
                   resume: bool = False, restart: bool = False, progress: bool = True) -> list[SearchResult]:
    """The seeds one after another, each with ``resources.cpus`` torch threads as in a Ray trial
    (the thread count changes the order of floating-point sums, so the numbers too)."""
    check_out_path(out)
    check_resume_restart(resume, restart)
    run_dirs = {seed: run_dir_for(config, seed, out) for seed in seeds}
    for run_dir in run_dirs.values():  # every refusal before anything is deleted or written
        if restart:
            check_removable(run_dir, "search")
        else:
            check_run_dir(run_dir, "search")
    claim_run_dir(run_path(out, config.name), "experiment")
    identity = {"experiment": config.name, "trial_id": None, "overrides": job_overrides(config),
                "job_digest": config_digest(config.to_dict())}
    threads = torch_threads(config.resources, config.hessian.overlap)
    results = []
    with torch_thread_count(threads):
        for seed, run_dir in run_dirs.items():
            if restart:
                remove_run_dir(run_dir, "search")
            results.append(run_seed(config, seed, run_dir, resume, progress, {**identity, "seed": seed}, threads))
    return results


def run_seed(config: SearchConfig, seed: int, run_dir: Path, resume: bool, progress: bool,
             identity: dict[str, Any], threads: int) -> SearchResult:
    """One seed, its start recorded in trial.json as a Ray trial's is (without a node id)."""
    search = Search(config, seed, run_dir, progress=progress)
    if resume:
        search.resume()
        print(f"resuming {run_dir} after epoch {search.epoch}")
    elif (run_dir / "checkpoints" / "last.pt").exists():
        raise NassegError(f"{run_dir} already holds a search; pass --resume to continue it, "
                          "--restart to discard it, or --out DIR to start a new one elsewhere")
    search.run.claim()
    record = RunRecord(search.run)
    record.start(identity, search.epoch, threads)

    def on_epoch(row: dict[str, Any]) -> None:
        record.epoch_done(row["epoch"])
        print(epoch_line(f"seed {seed}", config.epochs, row), flush=True)

    result = search.run_search(on_epoch=on_epoch)
    print(f"[seed {seed}] {result.status}: {result.reason}; architecture of epoch {result.arch_epoch} "
          f"-> {result.run_dir / 'arch.yaml'}")
    return result


@contextlib.contextmanager
def torch_thread_count(threads: int) -> Iterator[None]:
    """torch's intra-op threads for a while (a notebook or a test gets its own count back)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
