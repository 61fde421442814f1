"""The candidates of a study and their retraining units, derived from the study's folder alone.

    OUT/<study>/study.yaml         the resolved study document (search inline, paths absolute)
    OUT/<study>/search/seed<N>/    the searches (a Ray Tune search experiment)
    OUT/<study>/archs/random_NN.yaml   the architectures drawn from the space
    OUT/<study>/units.yaml         retraining run name -> its training job (what the trials read)
    OUT/<study>/retrain/<unit>_r<seed>/   one training run per candidate and retraining seed

Candidates: per search seed the architecture its stop rule returned (``searched_stop``) and, with
the ablation, the one of its last epoch (``searched_last``); the random architectures
(``random``); each baseline (its own group). Candidates with the same network (e.g. a stop rule
that never fired: both answers are the last epoch's) share their retraining runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasseg.arch import load_arch, sample_architecture
from nasseg.config import load_yaml
from nasseg.errors import NassegError
from nasseg.io import atomic_write_text, read_json_object
from nasseg.search.rundir import RunDir
from nasseg.search.stop_rules import make_rule
from nasseg.viz.plots import measured_eigenvalues

from .experiment import portable_job
from .study import SEARCH_NAME, StudyConfig, parse_study_job, train_job

STUDY_FILE, UNITS_FILE = "study.yaml", "units.yaml"
ARCHS_DIR, RETRAIN_DIR = "archs", "retrain"


@dataclass(frozen=True)
class Candidate:
    id: str  # search_s0_stop, search_s0_last, random_03, or the baseline's group name
    group: str  # searched_stop | searched_last | random | a baseline's group
    model: str  # a registered model name or an ArchSpec file (absolute)
    model_args: dict[str, Any]
    source: str  # where it comes from, in words
    search_seed: int | None = None
    unit: str = ""  # its retraining runs are <unit>_r<seed>: its own id, or an identical candidate's

    def runs(self, seeds: tuple[int, ...]) -> list[str]:
        return [f"{self.unit}_r{seed}" for seed in seeds]


@dataclass(frozen=True)
class SearchOutcome:
    """One search seed, and what its stop rule decided (replayed on the eigenvalues with the ablation)."""
    seed: int
    run_dir: Path
    epochs: int  # epochs run
    stop_epoch: int | None  # the epoch the rule fired at (None: it never did)
    return_epoch: int  # the architecture the rule returned (the last epoch's when it never fired)
    reason: str
    seconds: float  # the whole search
    seconds_to_stop: float  # the epochs a search that stops would have run
    status: str


def study_document(study: StudyConfig) -> dict[str, Any]:
    """The study as it runs, as a study document that means the same in any folder: the search
    inline (its own stop rule, not the ablation's), every path absolute."""
    job = study.job
    return {"kind": "study", "name": study.name, "search": {**portable_job(study.search), "early_stop": study.rule},
            "recipe": study.recipe, "ablation": job.ablation, "random": dataclasses.asdict(job.random),
            "arch_args": dict(job.arch_args),
            "baselines": [{"model": b.model, "model_args": dict(b.model_args), "name": b.group}
                          for b in study.baselines],
            "retrain_seeds": list(job.retrain_seeds), "resources": dataclasses.asdict(job.resources),
            "max_failures": job.max_failures, "cost_input": list(job.cost_input) if job.cost_input else None,
            "bootstrap": dataclasses.asdict(job.bootstrap)}


def load_study(path: str | Path) -> StudyConfig:
    file = Path(path) / STUDY_FILE
    if not file.is_file():
        raise NassegError(f"{path}: not a nasseg study (no {STUDY_FILE})")
    return parse_study_job(load_yaml(file), str(file))


# --- the searches ---------------------------------------------------------------------------------

def replay_stop_rule(run: RunDir, rule_section: dict[str, Any]) -> tuple[int | None, int | None, str]:
    """(epoch the rule fires at, epoch it returns, why) on the run's eigenvalues, as the search loop
    checks it after every measured epoch; (None, None, last reason) when it never fires."""
    epochs, values = measured_eigenvalues(run.read_metrics(("epoch", "eigenvalue")))
    rule, reason = make_rule(rule_section), "no eigenvalue measured"
    for j in range(1, len(values) + 1):
        decision = rule.check(values[:j], epochs[0])
        reason = decision.reason
        if decision.stop:
            return epochs[j - 1], decision.return_epoch, reason
    return None, None, reason


def search_outcome(study: StudyConfig, seed: int, search_dir: Path) -> SearchOutcome:
    run = RunDir(search_dir / f"seed{seed}")
    if not run.file("result.json").is_file():
        raise NassegError(f"{run.path}: the search of seed {seed} has not finished (no result.json); "
                          "continue the study with --resume")
    result = read_json_object(run.file("result.json"), "a search's result")
    if result.get("status") not in ("finished", "stopped"):
        raise NassegError(f"{run.path}: the search of seed {seed} ended {result.get('status')!r} "
                          f"({result.get('reason', '')}); fix the cause and continue with --resume --set ...")
    metrics = run.read_metrics(("epoch", "epoch_seconds"))
    epochs = int(result["epochs_run"])
    if study.job.ablation:
        stop_epoch, return_epoch, reason = replay_stop_rule(run, study.rule)
    else:  # the search applied its rule itself
        stopped = result["status"] == "stopped"
        stop_epoch, return_epoch, reason = (epochs if stopped else None), int(result["arch_epoch"]), result["reason"]
    seconds = float(metrics["epoch_seconds"].sum())
    until = metrics["epoch"] <= (stop_epoch or epochs)
    return SearchOutcome(seed, run.path, epochs, stop_epoch, return_epoch or epochs, reason, seconds,
                         float(metrics.loc[until, "epoch_seconds"].sum()), result["status"])


def search_outcomes(study: StudyConfig, study_dir: Path) -> list[SearchOutcome]:
    return [search_outcome(study, seed, study_dir / SEARCH_NAME) for seed in study.search.seeds]


def searched_candidates(study: StudyConfig, outcomes: list[SearchOutcome]) -> list[Candidate]:
    args = dict(study.job.arch_args)
    found = []
    for o in outcomes:
        fired = f"the stop rule fired at epoch {o.stop_epoch}" if o.stop_epoch else "the stop rule never fired"
        picks = [("stop", o.return_epoch, fired), *([("last", o.epochs, "the last")] if study.job.ablation else [])]
        found += [Candidate(f"search_s{o.seed}_{kind}", f"searched_{kind}",
                            str(RunDir(o.run_dir).epoch_file("arch", epoch, ".yaml")), args,
                            f"search seed {o.seed}, epoch {epoch} ({why})", o.seed)
                  for kind, epoch, why in picks]
    return found


# --- random architectures and baselines --------------------------------------------------------------

def random_candidates(study: StudyConfig, study_dir: Path, write: bool = False) -> list[Candidate]:
    """The study's random architectures: architecture i drawn from the search's space with the
    generator seeded by [random.seed, i] (so raising random.count keeps the earlier ones); with
    ``write`` their files are (re)written under archs/."""
    from nasseg import space as spaces

    random = study.job.random
    space = spaces.load(study.search.space) if write else None
    found = []
    for i in range(random.count):
        name = f"random_{i:02d}"
        path = study_dir / ARCHS_DIR / f"{name}.yaml"
        if space is not None:
            sample_architecture(space, [random.seed, i], name,
                                meta={"sampled_from": space.name, "seed": [random.seed, i]}).save(path)
        found.append(Candidate(name, "random", str(path.resolve()), dict(study.job.arch_args),
                               f"drawn uniformly from {Path(study.search.space).stem}, seed [{random.seed}, {i}]"))
    return found


def network_key(candidate: Candidate) -> str:
    """Equal for candidates that train the same network: the same cells and path (an ArchSpec's name
    and provenance aside) or the same registered model, with the same keywords."""
    if candidate.model.endswith((".yaml", ".yml")):
        data = load_arch(candidate.model).to_dict()
        what: Any = {"cells": data["cells"], "path": data.get("path")}
    else:
        what = candidate.model
    text = json.dumps([what, candidate.model_args], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def study_candidates(study: StudyConfig, study_dir: Path, write: bool = False) -> list[Candidate]:
    """Every candidate of a study whose searches have finished, with its retraining unit: the first
    candidate with the same network names it."""
    outcomes = search_outcomes(study, study_dir)
    baselines = [Candidate(b.group, b.group, b.model, dict(b.model_args), f"registered model {b.model}")
                 for b in study.baselines]
    units: dict[str, str] = {}
    return [dataclasses.replace(c, unit=units.setdefault(network_key(c), c.id))
            for c in [*searched_candidates(study, outcomes), *random_candidates(study, study_dir, write), *baselines]]


def unit_jobs(study: StudyConfig, candidates: list[Candidate]) -> dict[str, dict[str, Any]]:
    """Retraining run name -> its training job: the recipe, the candidate's model, the seed."""
    jobs = {}
    for c in candidates:
        for seed, run in zip(study.retrain_seeds, c.runs(study.retrain_seeds)):
            if run not in jobs:
                jobs[run] = train_job(study.recipe, c.model, c.model_args, run, seed).to_dict()
    return jobs


def write_units(study_dir: Path, jobs: dict[str, dict[str, Any]]) -> None:
    import yaml

    atomic_write_text(study_dir / UNITS_FILE, yaml.safe_dump(jobs, sort_keys=False))


def read_unit(study_dir: Path, run: str) -> dict[str, Any]:
    jobs = load_yaml(study_dir / UNITS_FILE)
    if not isinstance(jobs, dict) or not isinstance(jobs.get(run), dict):
        raise NassegError(f"{study_dir / UNITS_FILE}: no training job for {run!r}")
    return jobs[run]
