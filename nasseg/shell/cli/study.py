"""``nasseg search STUDY.yaml``: a ``kind: study`` job (nasseg.shell.runner.study) runs like a search job,
so ``nasseg submit`` sends it to a cluster unchanged."""

from __future__ import annotations

import argparse
from pathlib import Path

from nasseg.errors import NassegError


def run_study_command(args: argparse.Namespace) -> int:
    from ..runner.study import load_study_job
    from ..runner.study_run import run_study
    from ..runner.study_table import MARKDOWN, PLOT

    if getattr(args, "no_ray", False) or args.seed is not None:
        raise NassegError(f"{args.job}: a study runs its searches and retrainings as Ray trials; --no-ray and --seed "
                          "apply to search jobs (set the study's seeds with --set search.seeds=[...] or "
                          "--set retrain_seeds=[...])")
    study = load_study_job(args.job, args.set)
    tables = run_study(study, args.out, resume=args.resume, restart=args.restart, address=args.address,
                       num_cpus=args.num_cpus)
    folder = Path(args.out) / study.name
    print((folder / MARKDOWN).read_text(), end="")
    verdict = tables.comparisons[(tables.comparisons["a"] == "searched_stop") & (tables.comparisons["b"] == "random")] \
        if len(tables.comparisons) else tables.comparisons
    if len(verdict):
        print(f"searched (stop rule) vs random: {verdict.iloc[0]['verdict']}")
    print(f"tables: {folder}/table.csv, {folder}/{MARKDOWN}; plot: {folder}/{PLOT}; report: nasseg report {folder}")
    return 0
