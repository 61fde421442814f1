"""The seeds of a search job as the trials of one Ray Tune experiment (OUT/<job name>/).

Each seed is a trial with the job's ``resources`` (several run at once when they fit), checkpointed
every epoch; ``max_failures`` restarts a trial whose worker died from its last epoch, and
``--resume`` restores the whole experiment after the driver died (``Tuner.restore``). Trials
write the same run dirs as in-process searches (OUT/<job>/seed<N>), so decode/show/report and
``nasseg results`` treat both alike.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Sequence

from ray import tune

from nasseg.errors import NassegError
from nasseg.io import atomic_write_text
from nasseg.rundirs import (check_removable, check_resume_restart, check_run_dir, claim_run_dir, remove_run_dir,
                            run_path)
from nasseg.search.config import SearchConfig
from nasseg.search.rundir import RunDir
from .experiment import TUNE_DIR, Experiment, check_out_path, job_overrides, load_experiment, portable_job
from .inprocess import epoch_line
from .ray_session import check_resources, largest_node, ray_session
from .record import node_alive, node_label, placements, read_optional, read_record
from .trainable import COST_METRICS, check_same_search, search_trainable


class EpochLines(tune.Callback):
    """Prints one line per reported epoch and one summary line per trial, in the format of the
    in-process ``nasseg search`` (Tune's own progress tables stay off), and one line per failure
    and per restart, naming the Ray node the trial lost and the one it continues on."""

    def __init__(self, experiment_path: str | Path, epochs: int, kind: str = "search",
                 max_failures: int | None = None):
        self.experiment_path = str(experiment_path)
        self.epochs = epochs
        self.kind = kind
        self.max_failures = max_failures
        self.restarting: dict[str, tuple[Any, int]] = {}  # failed trials: id -> (trial, starts recorded then)
        self.next_poll = 0.0

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Tuner.restore unpickles the callbacks of the first run, maybe made by an older nasseg."""
        self.__dict__.update({"max_failures": None, **state, "restarting": {}, "next_poll": 0.0})

    def label(self, trial: Any) -> str:
        return f"seed {trial.config['seed']}" if self.kind == "search" else f"trial {trial.trial_id}"

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        params = trial.config.get("params")
        if params and trial.trial_id not in self.restarting:  # an HPO trial: show what Optuna sampled
            print(f"[{self.label(trial)}] " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                       for k, v in sorted(params.items())), flush=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.announce_restart(trial)
        extra = "".join(f"  {k} {result[k]:.4g}" for k in COST_METRICS if k in result)
        print(epoch_line(self.label(trial), self.epochs, result) + extra, flush=True)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        epoch = (trial.last_result or {}).get("epoch")
        where = f"epoch {epoch}" if epoch and trial.checkpoint else "the start"
        starts = placements(read_record(self.run_dir(trial)))
        node = starts[-1] if starts else {}
        lost = node.get("node_id") and not node_alive(node["node_id"])
        cause = f"node {node_label(node)} lost" if lost else f"worker failed ({error_line(trial).split('. ')[0]})"
        limit = f" of at most {self.max_failures}" if self.max_failures is not None else ""
        # what it needs on one node that no node but the lost one has ('2 CPUs')
        needs = trial.placement_group_factory.required_resources
        largest = largest_node(excluding=node["node_id"] if lost else None)
        missing = " and ".join(f"{needs[k]:g} {k}s" for k in ("CPU", "GPU") if needs.get(k, 0.0) > largest[k])
        waits = f"; it waits for a node with {missing} to join: no node left has them" if missing else ""
        print(f"[{self.label(trial)}] {cause}; restarting from {where} (restart {trial.num_failures}{limit}){waits}",
              flush=True)
        self.restarting[trial.trial_id] = (trial, len(starts))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """A restarted trial records its new node when it starts: say where it went, without
        waiting for its next epoch (polled at most once a second)."""
        if self.restarting and time.monotonic() >= self.next_poll:
            self.next_poll = time.monotonic() + 1.0
            for trial, _ in list(self.restarting.values()):
                self.announce_restart(trial)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial stopped by the scheduler (ASHA) never reached Search._finish: its result.json says
        'pruned' at its last epoch, or 'finished' when ASHA's last rung fell on its final epoch (it ran
        them all; its numbers are final)."""
        run = self.run_dir(trial)
        result = read_optional(run.file("result.json"), "a search's result (result.json)")
        if not result:
            last = trial.last_result or {}
            epoch = int(last.get("epoch", 0))
            planned = load_experiment(self.experiment_path).search_config(trial.config.get("params")).epochs
            status, reason = (("finished", f"ran all {planned} epochs") if epoch >= planned else
                              ("pruned", f"stopped by the scheduler after epoch {epoch}"))
            result = {"status": status, "reason": reason, "epochs_run": epoch, "arch_epoch": epoch,
                      "seed": int(trial.config["seed"]), "final_val_miou": last.get("val_miou")}
            if epoch and run.epoch_file("arch", epoch, ".yaml").exists():
                atomic_write_text(run.file("arch.yaml"), run.epoch_file("arch", epoch, ".yaml").read_text())
            run.write_result(result)
        print(f"[{self.label(trial)}] {result['status']}: {result['reason']}; architecture of epoch "
              f"{result['arch_epoch']} -> {run.path}/arch.yaml", flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.restarting.pop(trial.trial_id, None)
        print(f"[{self.label(trial)}] failed: {error_line(trial)} (traceback: {Path(trial.path) / 'error.txt'})",
              flush=True)

    def run_dir(self, trial: Any) -> RunDir:
        return RunDir(load_experiment(self.experiment_path).run_dir(int(trial.config["seed"]), trial.trial_id))

    def announce_restart(self, trial: Any) -> None:
        if trial.trial_id not in self.restarting:
            return
        _, seen = self.restarting[trial.trial_id]
        starts = placements(read_record(self.run_dir(trial)))
        if len(starts) > seen:
            del self.restarting[trial.trial_id]
            start = starts[-1]
            where = f"epoch {start['from_epoch']}" if start.get("from_epoch") else "the start"
            print(f"[{self.label(trial)}] restarted from {where} on node {node_label(start)}", flush=True)


def error_text(error: BaseException | str | None) -> str:
    """One line for a trial's error: the exception line at the end of Ray's wrapped traceback,
    without the module path of the exception class."""
    if error is None:
        return "unknown error"
    text = str(getattr(error, "cause", None) or error)
    if "ActorDiedError" in text or "actor died" in text.lower() or "RayActorError" in type(error).__name__:
        return "its worker process died"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return re.sub(r"^[\w.]+\.(\w+): ", "", lines[-1]) if lines else "unknown error"


def error_line(trial: Any) -> str:
    """The error of a trial that just failed, from the driver's copy of its error file (Tune syncs
    it to storage later, so trial.get_error() may not see it yet)."""
    path = Path(trial.error_file) if trial.error_file else None
    if path and path.exists():
        return error_text(path.read_text().split("Failure #")[-1].split("\n", 1)[-1])
    return error_text(trial.get_error())


def fit_quietly(tuner: tune.Tuner) -> tune.ResultGrid:
    """``tuner.fit()`` without Tune's log of every trial failure with its full traceback: EpochLines
    prints one line and the traceback stays in the trial's error.txt (OUT/<name>/_tune/<trial>/error.txt)."""
    logger = logging.getLogger("ray.tune")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return tuner.fit()
    finally:
        logger.setLevel(level)


def make_run_config(experiment: Experiment, max_failures: int, callbacks: Sequence[Any]) -> tune.RunConfig:
    """Storage in OUT/<name>/_tune. Keeping one checkpoint per trial also makes Tune snapshot the
    experiment after every trial checkpoint, so Tuner.restore continues from the last epoch."""
    return tune.RunConfig(name=experiment.tune_dir.name, storage_path=str(experiment.path),
                          failure_config=tune.FailureConfig(max_failures=max_failures),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                          verbose=0, callbacks=list(callbacks))


def trainable_with_resources(config: SearchConfig):
    return tune.with_resources(search_trainable, {"cpu": config.resources.cpus, "gpu": config.resources.gpus})


def check_fresh(experiment_path: Path, run_dirs: Sequence[Path], restart: bool) -> None:
    """Refuse to overwrite an experiment unless --restart; --restart discards exactly what would be
    rerun (the seeds' run dirs and Tune's state), all or nothing."""
    existing = [p for p in run_dirs if (p / "checkpoints" / "last.pt").exists()]
    tune_dir = experiment_path / TUNE_DIR
    if restart:
        doomed = [*[(path, "search") for path in run_dirs], (tune_dir, "ray-tune")]
        for path, kind in doomed:
            check_removable(path, kind)
        for path, kind in doomed:
            remove_run_dir(path, kind)
        return
    if existing or tune_dir.exists():
        where = existing[0] if existing else experiment_path
        raise NassegError(f"{where} already holds a search; pass --resume to continue it, --restart to "
                          "discard it, or --out DIR to start a new one elsewhere")


def restored_tuner(experiment_path: Path, config: SearchConfig) -> tune.Tuner:
    """``Tuner.restore`` of an experiment whose driver stopped; errored trials run again from their
    last checkpoint (with settings changed by ``--set``, which trials read from experiment.yaml).
    The callbacks are Tune's pickled ones from the first run."""
    experiment = load_experiment(experiment_path)
    if experiment.kind != "hpo":
        experiment.job = portable_job(config)  # --resume --set: new settings for the remaining epochs
        experiment.overrides = job_overrides(config)
        experiment.save()
    print(f"resuming {experiment_path}: unfinished and failed trials continue from their last epoch", flush=True)
    return tune.Tuner.restore(str(experiment.tune_dir), trainable=trainable_with_resources(config),
                              resume_errored=True)


def check_resumable(experiment: Experiment, seeds: Sequence[int]) -> None:
    """``--resume`` without Tune state (a run made with --no-ray, or a driver that died before Tune
    saved anything): new trials continue from the run dirs' checkpoints/last.pt."""
    found = [s for s in seeds if RunDir(experiment.run_dir(s, "")).has_checkpoint()]
    if not found:
        raise NassegError(f"nothing to resume: {experiment.path} holds neither a Ray Tune experiment nor "
                          "seed checkpoints; start it without --resume")
    for seed in found:  # an unreadable or foreign checkpoint fails here, before any trial starts
        run = RunDir(experiment.run_dir(seed, ""))
        check_same_search(run, run.load_checkpoint()["config"], experiment.search_config())
    remove_run_dir(experiment.tune_dir, "ray-tune")  # a snapshot-less leftover that Tuner.restore cannot read
    print(f"resuming {experiment.path}: seeds {', '.join(map(str, found))} continue from their "
          "checkpoints/last.pt", flush=True)


def run_tune_search(config: SearchConfig, out: str | Path = "runs", seeds: Sequence[int] | None = None, *,
                    resume: bool = False, restart: bool = False, address: str | None = None,
                    num_cpus: int | None = None, callbacks: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Run the seeds of a job as parallel Tune trials; the results (result.json + run_dir) per seed."""
    check_out_path(out)
    check_resume_restart(resume, restart)
    experiment_path = run_path(out, config.name).resolve()
    seeds = list(seeds if seeds is not None else config.seeds)
    experiment = Experiment(experiment_path, "search", portable_job(config), config.file, seeds,
                            overrides=job_overrides(config))
    check_run_dir(experiment_path, "experiment")
    restore = resume and tune.Tuner.can_restore(str(experiment.tune_dir))
    if resume and not restore:
        check_resumable(experiment, seeds)
    with ray_session(address, num_cpus):
        check_resources(config.resources, config.file, config.device)
        if restore:
            tuner = restored_tuner(experiment_path, config)
        else:
            if not resume:
                check_fresh(experiment_path, [experiment.run_dir(s, "") for s in seeds], restart)
            claim_run_dir(experiment_path, "experiment")
            experiment.save()
            claim_run_dir(experiment.tune_dir, "ray-tune")
            lines = EpochLines(experiment.path, config.epochs, max_failures=config.max_failures)
            tuner = tune.Tuner(  # one trial per seed, named like its run dir (seed<N>)
                trainable_with_resources(config),
                param_space={"experiment": str(experiment.path), "seed": tune.grid_search(seeds),
                             "resume_run_dir": resume},
                tune_config=tune.TuneConfig(trial_dirname_creator=lambda trial: f"seed{trial.config['seed']}"),
                run_config=make_run_config(experiment, config.max_failures, [lines, *callbacks]))
        return collect_outcomes(fit_quietly(tuner), load_experiment(experiment_path))


def collect_outcomes(grid: tune.ResultGrid, experiment: Experiment,
                     raise_on_error: bool = True) -> list[dict[str, Any]]:
    """One dict per trial (result.json + run_dir); raises if a trial failed for good, after the
    others finished. Tune trial dirs are named like the run dirs (seed<N>, trial_<id>)."""
    outcomes, failed = [], []
    for result in grid:
        run = RunDir(experiment.path / Path(result.path).name)
        data = read_optional(run.file("result.json"), "a search's result")
        outcomes.append({**data, "seed": int(result.config["seed"]), "run_dir": str(run.path),
                         "error": bool(result.error)})
        if result.error:
            failed.append(f"{run.path.name}: {error_text(result.error)}")
    if failed and raise_on_error:
        raise NassegError(f"{len(failed)} of {len(outcomes)} trials failed ({'; '.join(failed)}); fix the cause "
                          f"and continue with --resume (optionally --set ...)")
    return outcomes
