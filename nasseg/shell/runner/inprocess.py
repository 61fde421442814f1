"""Searches without Ray: the seeds of a job one after another in this process (``--no-ray``).

For debugging (a breakpoint or a profiler sees the search directly) and for tests; writes exactly
the run dirs a Ray trial writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from nasseg.errors import NassegError
from nasseg.rundirs import (check_removable, check_resume_restart, check_run_dir, claim_run_dir, remove_run_dir,
                            run_path)
from nasseg.search import Search, SearchConfig, SearchResult, run_dir_for


def epoch_line(label: str, epochs: int, row: dict[str, Any]) -> str:
    eig = f"{row['eigenvalue']:.4g}" if row.get("eigenvalue") is not None else "-"
    return (f"[{label}] epoch {row['epoch']:3d}/{epochs}  train loss {row['train_loss']:.3f}"
            f"  val loss {row['val_loss']:.3f}  val mIoU {row['val_miou']:.3f}  eigenvalue {eig}"
            f"  skip share {row['skip_share']:.2f}  {row['epoch_seconds']:.1f}s")


def run_in_process(config: SearchConfig, seeds: Sequence[int], out: str | Path = "runs", *,
                   resume: bool = False, restart: bool = False, progress: bool = True) -> list[SearchResult]:
    check_resume_restart(resume, restart)
    run_dirs = {seed: run_dir_for(config, seed, out) for seed in seeds}
    for run_dir in run_dirs.values():  # every refusal before anything is deleted or written
        if restart:
            check_removable(run_dir, "search")
        else:
            check_run_dir(run_dir, "search")
    claim_run_dir(run_path(out, config.name), "experiment")
    results = []
    for seed, run_dir in run_dirs.items():
        if restart:
            remove_run_dir(run_dir, "search")
        search = Search(config, seed, run_dir, progress=progress)
        if resume:
            search.resume()
            print(f"resuming {run_dir} after epoch {search.epoch}")
        elif (run_dir / "checkpoints" / "last.pt").exists():
            raise NassegError(f"{run_dir} already holds a search; pass --resume to continue it, "
                              "--restart to discard it, or --out DIR to start a new one elsewhere")
        result = search.run_search(on_epoch=lambda row, seed=seed: print(
            epoch_line(f"seed {seed}", config.epochs, row), flush=True))
        print(f"[seed {seed}] {result.status}: {result.reason}; architecture of epoch {result.arch_epoch} "
              f"-> {result.run_dir / 'arch.yaml'}")
        results.append(result)
    return results
