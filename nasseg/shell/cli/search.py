"""``nasseg search`` (search, HPO and study jobs), ``nasseg decode`` and ``nasseg results``.

Ray is imported only when a command needs it, so ``--help`` and ``--no-ray`` stay fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from nasseg.errors import NassegError
from nasseg.config import load_yaml
from nasseg.search import decode_run, load_job

from .args import positive_int, seed_value
from .plan import add_force_argument, check_search_memory


def add_search_parsers(sub) -> None:
    search = sub.add_parser(
        "search", help="run a search job (DARTS 1st/2nd order or Auto-DeepLab) with Hessian early stopping",
        description="Run every seed of a search job file as a Ray Tune trial (embedded local Ray unless "
                    "--address / RAY_ADDRESS names a cluster; --no-ray runs the seeds one after another in "
                    "this process). Each seed writes OUT/<job name>/seed<N>/: metrics.csv, per-epoch "
                    "alphas/betas and decoded architectures, checkpoints, arch.yaml (the answer) and "
                    "result.json. A job with `kind: hpo` runs an Optuna study of searches instead, a job with "
                    "`kind: study` a NAS study (searches, random architectures, baselines, retrainings; "
                    "docs/study.md).",
        epilog="Example: nasseg search jobs/demo.yaml --set epochs=3 --set data.crop=[64,64]")
    search.add_argument("job", metavar="JOB.yaml", help="the search job file (see jobs/)")
    search.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a job key, e.g. --set weights.lr=0.01 (repeatable; value is YAML)")
    search.add_argument("--resume", action="store_true",
                        help="continue the job's experiment: unfinished and failed trials from their last "
                             "epoch (settings given by --set apply)")
    search.add_argument("--restart", action="store_true",
                        help="discard an existing run directory of the same job and seed, start over")
    search.add_argument("--out", default="runs", metavar="DIR", help="where runs are written (default: runs)")
    search.add_argument("--seed", type=seed_value, default=None, help="run only this seed")
    search.add_argument("--quiet", action="store_true", help="no progress bars")
    add_force_argument(search)
    search.add_argument("--address", default=None, metavar="ADDR",
                        help="Ray cluster to run the trials on (default: RAY_ADDRESS, else an embedded local Ray)")
    search.add_argument("--num-cpus", type=positive_int, default=None, metavar="N",
                        help="CPUs of the embedded local Ray (default: all of this machine's)")
    search.add_argument("--no-ray", action="store_true",
                        help="run the seeds one after another in this process, without Ray (debugging)")
    search.set_defaults(run=run_search_command)

    dec = sub.add_parser(
        "decode", help="write the discrete architecture (ArchSpec) of a search run",
        description="Decode a search run: by default its answer (arch.yaml: the stop rule's epoch, else "
                    "the last), or the architecture after --epoch N.")
    dec.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (OUT/<job>/seed<N>)")
    dec.add_argument("--epoch", type=int, default=None, help="decode the alphas/betas after this epoch")
    dec.add_argument("-o", "--output", default=None, metavar="ARCH.yaml", help="write here instead of stdout")
    dec.set_defaults(run=cmd_decode)


def cmd_decode(args: argparse.Namespace) -> int:
    arch = decode_run(args.run_dir, args.epoch)
    if args.output:
        arch.save(args.output)
        print(f"wrote {args.output}")
    else:
        print(arch.to_yaml(), end="")
    return 0


def run_search_command(args: argparse.Namespace) -> int:
    """A search job's seeds as Ray Tune trials (or in-process with --no-ray); ``kind: hpo`` jobs run an
    Optuna study over a search job, ``kind: study`` jobs a NAS study (nasseg.shell.runner.study)."""
    data = load_yaml(args.job)
    from ..runner.hpo import is_hpo_job
    if is_hpo_job(data):
        return _run_hpo(args)
    if isinstance(data, dict) and data.get("kind") == "study":
        return _run_study(args)
    config = load_job(args.job, args.set)
    seeds = [args.seed] if args.seed is not None else list(config.seeds)
    if not args.force:
        check_search_memory(config, args, seeds)
    if args.no_ray:
        from ..runner.inprocess import run_in_process
        run_in_process(config, seeds, args.out, resume=args.resume, restart=args.restart,
                       progress=not args.quiet)
        return 0
    if args.resume and args.seed is not None:
        raise NassegError("--resume continues the whole Ray experiment of the job; drop --seed "
                          "(or use --no-ray --resume --seed N)")
    from ..runner.tune_search import run_tune_search
    run_tune_search(config, args.out, seeds, resume=args.resume, restart=args.restart, address=args.address,
                    num_cpus=args.num_cpus)
    return 0


def _run_hpo(args: argparse.Namespace) -> int:
    from ..runner.hpo import load_hpo_job, run_hpo

    if args.no_ray or args.seed is not None:
        raise NassegError(f"{args.job}: an HPO job runs its trials on Ray; --no-ray and --seed apply to "
                          "search jobs (set the trials' seed with --set seed=N)")
    hpo = load_hpo_job(args.job, args.set)
    table = run_hpo(hpo, args.out, resume=args.resume, restart=args.restart, address=args.address,
                    num_cpus=args.num_cpus)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 40):
        print(table.drop(columns=["checkpoint"], errors="ignore").to_string(index=False))
    print(f"{(table['pareto']).sum()} trials on the Pareto front of {len(table)}; "
          f"table: {args.out}/{hpo.name}/pareto.csv, plot: {args.out}/{hpo.name}/pareto.png")
    return 0


def _run_study(args: argparse.Namespace) -> int:
    from ..runner.study import load_study_job
    from ..runner.study_run import run_study
    from ..runner.study_table import MARKDOWN, PLOT

    if args.no_ray or args.seed is not None:
        raise NassegError(f"{args.job}: a study runs its searches and retrainings as Ray trials; --no-ray and --seed "
                          "apply to search jobs (set the study's seeds with --set search.seeds=[...] or "
                          "--set retrain_seeds=[...])")
    study = load_study_job(args.job, args.set)
    tables = run_study(study, args.out, resume=args.resume, restart=args.restart, address=args.address,
                       num_cpus=args.num_cpus)
    folder = Path(args.out) / study.name
    print((folder / MARKDOWN).read_text(), end="")
    comparisons = tables.comparisons
    verdict = comparisons[(comparisons["a"] == "searched_stop") & (comparisons["b"] == "random")] \
        if len(comparisons) else comparisons
    if len(verdict):
        print(f"searched (stop rule) vs random: {verdict.iloc[0]['verdict']}")
    print(f"tables: {folder}/table.csv, {folder}/{MARKDOWN}; plot: {folder}/{PLOT}; report: nasseg report {folder}")
    return 0


def add_results_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "results", help="table of the searches of an experiment (seeds, HPO trials), mean ± std over seeds",
        description="One row per search run under EXPERIMENT_DIR (OUT/<job name>, from nasseg search with or "
                    "without Ray): overrides (what the run changed from its job file with --set, or an HPO "
                    "trial's samples), seed, status, epochs run and the returned epoch, final / best val mIoU, "
                    "the Ray nodes it ran on (Ray node ids; --csv and --json give them whole), the decoded "
                    "normal cell, the checkpoint. Then mean ± std over the seeds of each config.",
        epilog="Example: nasseg results runs/demo --sort best_val_miou")
    parser.add_argument("experiment", metavar="EXPERIMENT_DIR", help="OUT/<job name> (or one run dir)")
    parser.add_argument("--sort", default=None, metavar="COL",
                        help="sort by this column, best first (mIoU columns descending, others ascending)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="print the trial table as CSV")
    output.add_argument("--json", action="store_true", help="print {'trials': [...], 'configs': [...]} as JSON")
    parser.set_defaults(run=cmd_results)


def cmd_results(args: argparse.Namespace) -> int:
    from ..runner.results import collect_results, format_summary, short_nodes, sort_table, summarize

    table = collect_results(args.experiment)
    if args.sort:
        table = sort_table(table, args.sort)
    summary = summarize(table)
    if args.csv:
        sys.stdout.write(table.to_csv(index=False))
    elif args.json:
        print(json.dumps({"trials": json.loads(table.to_json(orient="records")),
                          "configs": json.loads(summary.to_json(orient="records"))}, indent=2))
    else:
        with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 60):
            print(short_nodes(table).drop(columns=["checkpoint"]).to_string(index=False))
            if (summary["runs"] > 1).any() or len(summary) > 1:
                print()
                print(format_summary(summary).to_string(index=False))
    return 0
