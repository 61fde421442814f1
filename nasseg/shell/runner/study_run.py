"""Running a study: the searches, then every retraining, each unit a Ray Tune trial; resumable.

1. The searches: the study's search job as a Ray Tune search experiment (``run_tune_search``):
   a trial per seed with the search job's ``resources``, checkpointed every epoch; ``--resume``
   restores it (``Tuner.restore``) and the trials continue from their last epoch.
2. The candidates are read from the finished searches (the stop rule's and the last epoch's
   architecture per seed), the random architectures drawn and written to archs/, and every
   candidate x retraining seed becomes a training job in units.yaml.
3. The retrainings: one Tune trial per unit with the study's ``resources``, each the ordinary
   trainer writing retrain/<unit>/ and its checkpoints/last.pt every ``checkpoint_every``
   iterations. This phase is rebuilt from the run directories on every start: finished units
   (result.json) are not run again, unfinished ones continue from their last.pt (bitwise as if never
   stopped), and a worker that dies restarts from it too (``max_failures``).
4. The tables and the plot, recomputed from the run directories (nasseg.shell.runner.study_table).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml
from ray import tune

from nasseg.config import load_yaml
from nasseg.errors import NassegError
from nasseg.io import atomic_write_text
from nasseg.rundirs import check_resume_restart, check_run_dir, claim_run_dir, remove_run_dir, run_path
from nasseg.search.rundir import RunDir
from nasseg.train.config import parse_train_job
from nasseg.train.trainer import Trainer

from ..process import configure_process
from .experiment import TUNE_DIR, Experiment, check_out_path, dotted
from .ray_session import check_resources, ray_session, torch_threads
from .study import SEARCH_NAME, StudyConfig
from .study_table import StudyTables, write_tables
from .study_units import (RETRAIN_DIR, STUDY_FILE, read_unit, study_candidates, study_document, unit_jobs,
                          write_units)
from .tune_search import error_line, error_text, fit_quietly, make_run_config, run_tune_search


class RetrainingFailed(NassegError):
    """Some retraining runs failed for good (after ``max_failures`` restarts)."""


# what --resume --set may change: how much more to do and where it runs, never what finished units computed
RESUMABLE_CHANGES = ("random.count", "retrain_seeds", "baselines", "bootstrap", "cost_input", "resources",
                     "max_failures", "search.resources", "search.max_failures", "search.device")


def run_study(study: StudyConfig, out: str | Path = "runs", *, resume: bool = False, restart: bool = False,
              address: str | None = None, num_cpus: int | None = None,
              callbacks: Sequence[Any] = ()) -> StudyTables:
    """Run (or continue) the study into OUT/<name>/; the tables once every unit finished."""
    check_out_path(out)
    check_resume_restart(resume, restart)
    study_dir = run_path(out, study.name).resolve()
    check_run_dir(study_dir, "study")
    _check_start(study, study_dir, resume, restart)
    claim_run_dir(study_dir, "study")
    atomic_write_text(study_dir / STUDY_FILE, yaml.safe_dump(study_document(study), sort_keys=False))
    with ray_session(address, num_cpus):
        check_resources(study.search.resources, study.file, study.search.device)
        check_resources(study.job.resources, study.file, study.recipe["device"])
        run_searches(study, study_dir, resume)
        candidates = study_candidates(study, study_dir, write=True)
        jobs = unit_jobs(study, candidates)
        check_units_unchanged(study_dir, jobs)
        write_units(study_dir, jobs)
        try:
            run_retrains(study, study_dir, list(jobs), callbacks)
        except RetrainingFailed as exc:  # the others' numbers are worth a table: write it, then say so
            if not any((study_dir / RETRAIN_DIR / run / "result.json").is_file() for run in jobs):
                raise
            tables = write_tables(study_dir)
            raise NassegError(f"{exc}; {study_dir / 'table.md'} holds the {len(tables.runs)} finished runs") from None
    return write_tables(study_dir)


def _check_start(study: StudyConfig, study_dir: Path, resume: bool, restart: bool) -> None:
    """--restart discards the whole study (nasseg's own folder only); a study is never overwritten
    silently; --resume continues the same study (see RESUMABLE_CHANGES)."""
    saved = study_dir / STUDY_FILE
    if restart:
        remove_run_dir(study_dir, "study")
    elif resume:
        if not saved.is_file():
            raise NassegError(f"nothing to resume: {study_dir} holds no study; start it without --resume")
        check_resumable_changes(load_yaml(saved), study_document(study), saved)
    elif saved.is_file():
        raise NassegError(f"{study_dir} already holds a study; pass --resume to continue it, --restart to discard "
                          "it, or --out DIR to start a new one elsewhere")


def check_resumable_changes(saved: Any, current: dict[str, Any], file: Path) -> None:
    """Refuse a --resume whose settings would change what finished searches or retrainings computed."""
    before, now = dotted(saved), dotted(current)
    changed = sorted(key for key in set(before) | set(now) if before.get(key) != now.get(key)
                     and not any(key == k or key.startswith(k + ".") for k in RESUMABLE_CHANGES))
    if changed:
        shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise NassegError(f"{file}: --resume would change {shown}, which the finished searches or retrainings were "
                          f"made with; continue with the same settings (only {', '.join(RESUMABLE_CHANGES[:3])}, "
                          "... may change), or --restart the study, or give it another name")


# --- 1. the searches ---------------------------------------------------------------------------------

def run_searches(study: StudyConfig, study_dir: Path, resume: bool) -> None:
    """The search experiment OUT/<study>/search: started, continued (--resume), or skipped when
    every seed has finished."""
    search_dir = study_dir / SEARCH_NAME
    seeds = list(study.search.seeds)
    runs = [RunDir(search_dir / f"seed{seed}") for seed in seeds]
    if all(run.file("result.json").is_file() for run in runs):
        print(f"searches: all {len(seeds)} seeds finished ({search_dir})", flush=True)
        return
    restorable = resume and (tune.Tuner.can_restore(str(search_dir / TUNE_DIR))
                             or any(run.has_checkpoint() for run in runs))
    # a driver that died before any checkpoint left nothing worth keeping: start the searches over
    run_tune_search(study.search, study_dir, seeds, resume=restorable, restart=resume and not restorable)


# --- 3. the retrainings ----------------------------------------------------------------------------

def check_units_unchanged(study_dir: Path, jobs: dict[str, dict[str, Any]]) -> None:
    """A retraining run made with another job than its unit's now (a study edited between runs)
    would break "the same recipe for every candidate": refuse it."""
    for run, job in jobs.items():
        config_file = study_dir / RETRAIN_DIR / run / "config.yaml"
        if config_file.is_file():
            made = dotted(parse_train_job(load_yaml(config_file)).to_dict())
            wanted = dotted(parse_train_job(job).to_dict())
            if made != wanted:
                keys = sorted(k for k in set(made) | set(wanted) if made.get(k) != wanted.get(k))
                raise NassegError(f"{config_file.parent}: trained with other settings ({', '.join(keys[:4])}) than the "
                                  "study gives it now; --restart the study or give it another name")


class StudyTrainer(Trainer):
    def after_checkpoint(self) -> None:
        tune.report({"iteration": self.iteration, "iters": self.config.iters, "train_seconds": self.elapsed})


def retrain_trainable(trial_config: dict[str, Any]) -> None:
    """One retraining unit as a Tune trial: trains retrain/<run> from its last.pt if it has one."""
    configure_process(threads=int(trial_config["threads"]))
    study_dir, run = Path(trial_config["study"]), trial_config["run"]
    config = parse_train_job(read_unit(study_dir, run))
    run_dir = study_dir / RETRAIN_DIR / run
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    trainer = StudyTrainer(config, study_dir / RETRAIN_DIR, resume=resume, restart=run_dir.exists() and not resume,
                           progress=False)
    result = trainer.run()
    tune.report({"iteration": trainer.iteration, "iters": config.iters, "miou": result["miou"],
                 "train_seconds": result["train_seconds"]})


class RetrainLines(tune.Callback):
    """One line per checkpoint, per finished unit and per failure (Tune's own tables stay off)."""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        name = trial.config["run"]
        if "miou" in result:
            print(f"[{name}] done: val mIoU {result['miou']:.4f} ({result['iteration']} iterations, "
                  f"{result['train_seconds']:.0f} s training)", flush=True)
        else:
            print(f"[{name}] iteration {result['iteration']}/{result['iters']} "
                  f"({result['train_seconds']:.0f} s)", flush=True)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"[{trial.config['run']}] worker failed ({error_line(trial)}); restarting from its last checkpoint",
              flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"[{trial.config['run']}] failed: {error_line(trial)}", flush=True)


def run_retrains(study: StudyConfig, study_dir: Path, runs: list[str], callbacks: Sequence[Any] = ()) -> None:
    """Every unfinished retraining run as a Tune trial of a new experiment in retrain/_tune (the
    state an earlier driver left there is replaced: the run directories say what is done)."""
    folder = study_dir / RETRAIN_DIR
    pending = [run for run in runs if not (folder / run / "result.json").is_file()]
    print(f"retraining: {len(runs) - len(pending)} of {len(runs)} runs finished, {len(pending)} to go", flush=True)
    if not pending:
        return
    experiment = Experiment(folder, "study", {}, study.file, [])
    folder.mkdir(parents=True, exist_ok=True)
    remove_run_dir(experiment.tune_dir, "ray-tune")
    claim_run_dir(experiment.tune_dir, "ray-tune")
    resources = study.job.resources
    tuner = tune.Tuner(
        tune.with_resources(retrain_trainable, {"cpu": resources.cpus, "gpu": resources.gpus}),
        param_space={"study": str(study_dir), "run": tune.grid_search(pending), "threads": torch_threads(resources)},
        # one worker process trains unit after unit: starting a process (torch, nasseg) costs ~10 s
        tune_config=tune.TuneConfig(trial_dirname_creator=lambda trial: trial.config["run"], reuse_actors=True),
        run_config=make_run_config(experiment, study.job.max_failures, [RetrainLines(), *callbacks]))
    grid = fit_quietly(tuner)
    failed = [f"{result.config['run']}: {error_text(result.error)}" for result in grid if result.error]
    if failed:
        raise RetrainingFailed(f"{len(failed)} of {len(pending)} retraining runs failed ({'; '.join(failed[:3])}); "
                               "fix the cause and continue with --resume")
