"""Hyper-parameter search over a search job: Optuna TPE through Ray Tune, ASHA stopping weak trials.

A ``kind: hpo`` job (e.g. jobs/demo_hpo.yaml) names a base search job, a ``space`` of dotted job keys
-> distributions ({loguniform | uniform | randint: [low, high]} or {choice: [...]}), and one or more
``objectives``. Every trial runs the same trainable as ``nasseg search`` (checkpointed, restartable).
ASHA judges trials on the first objective at rungs of ``grace_period * reduction_factor**k`` epochs;
with several objectives the others only shape the Pareto front, which is computed over the trials
that ran all their epochs (a pruned trial's numbers are from an earlier epoch). The Optuna study
lives in OUT/<name>/optuna.db (SQLite), so it outlives the driver and ``--resume`` continues it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

import numpy as np
import pandas as pd

from pydantic import Discriminator, Field, Tag

from nasseg.config import FieldError, describe, load_document, load_yaml, relative_to_file, set_keys, spec, validate
from nasseg.config.types import Bool, Float, Int, PositiveFloat, PositiveInt, RunName, Seed, Size, Str
from nasseg.errors import NassegError, SpecError
from nasseg.io import atomic_write_text
from nasseg.rundirs import check_resume_restart, check_run_dir, claim_run_dir, remove_run_dir, run_path
from nasseg.search.config import SearchConfig, parse_job
from nasseg.search.rundir import RunDir

from .experiment import Experiment, check_out_path, portable_job

OBJECTIVE_MODES = {"val_miou": "max", "val_pixel_acc": "max", "val_loss": "min", "train_loss": "min",
                   "macs": "min", "params": "min", "latency_ms": "min"}
FIXED_KEYS = ("name", "seeds", "epochs", "resources", "max_failures", "device")  # set by the HPO job itself
Metric = Literal[tuple(OBJECTIVE_MODES)]
Mode = Literal["max", "min"]


@spec
class LogUniform:
    loguniform: tuple[PositiveFloat, PositiveFloat]


@spec
class Uniform:
    uniform: tuple[Float, Float]


Int64 = Annotated[Int, Field(ge=-2**63, lt=2**63)]  # what Ray's randint (numpy) draws from


@spec
class RandInt:
    randint: tuple[Int64, Int64]  # inclusive


@spec
class Choice:
    choice: Annotated[list[Int | Float | Str | Bool], Field(min_length=1)]


DISTRIBUTIONS = {"loguniform": LogUniform, "uniform": Uniform, "randint": RandInt, "choice": Choice}


def _distribution_tag(value: Any) -> str | None:
    kinds = [k for k in DISTRIBUTIONS if k in value] if isinstance(value, dict) else []
    return kinds[0] if len(kinds) == 1 and len(value) == 1 else None


Distribution = Annotated[Annotated[LogUniform, Tag("loguniform")] | Annotated[Uniform, Tag("uniform")] |
                         Annotated[RandInt, Tag("randint")] | Annotated[Choice, Tag("choice")],
                         Discriminator(_distribution_tag, custom_error_type="nasseg_distribution",
                                       custom_error_message="expected one of {loguniform: [low, high]}, "
                                       "{uniform: [low, high]}, {randint: [low, high]}, {choice: [...]}")]


@spec
class AshaConfig:
    grace_period: PositiveInt = 1
    reduction_factor: Annotated[Float, Field(gt=1)] = 2.0


@spec
class HpoJob:
    """The document of a ``kind: hpo`` job (see the module docstring)."""

    kind: Literal["hpo"]
    search: Str | dict[Str, Any]  # the base search job: a path (relative to this file) or a mapping
    space: Annotated[dict[Str, Distribution], Field(min_length=1)]
    name: RunName = "hpo"  # default: the job file's name
    epochs: Annotated[PositiveInt, Field(le=100_000)] = 10  # per trial: replaces the base job's; ASHA's max_t
    seed: Seed = 0  # the search seed of every trial; also seeds the TPE sampler
    trials: Annotated[PositiveInt, Field(le=100_000)] = 10
    objectives: Annotated[list[Metric | Annotated[dict[Metric, Mode], Field(min_length=1)]], Field(min_length=1)] = \
        dataclasses.field(default_factory=lambda: [{"val_miou": "max"}])
    asha: AshaConfig = AshaConfig()
    max_concurrent: PositiveInt | None = None
    cost_input: Size | None = None  # input size for macs / params / latency_ms (default data.size or crop)

    def __post_init__(self) -> None:
        for key, dist in self.space.items():
            if key.split(".")[0] in FIXED_KEYS:
                raise FieldError(f"space.{key}", f"set by the HPO job itself ({', '.join(FIXED_KEYS)}), not searchable")
            low_high = next((getattr(dist, k) for k in ("loguniform", "uniform", "randint") if hasattr(dist, k)), None)
            if low_high and not low_high[0] < low_high[1]:
                raise FieldError(f"space.{key}", f"expected [low, high] with low < high, got {list(low_high)}")
        metrics = [m for item in self.objectives for m in ([item] if isinstance(item, str) else item)]
        if len(set(metrics)) != len(metrics):
            raise FieldError("objectives", "expected distinct metrics, e.g. [val_miou: max, macs: min]")
        if self.asha.grace_period > self.epochs:
            raise FieldError("asha.grace_period", f"{self.asha.grace_period} is more than the {self.epochs} epochs of "
                             "a trial; expected at most epochs (ASHA judges a trial after grace_period epochs)")


@dataclass(frozen=True)
class HpoConfig:
    name: str
    job: HpoJob  # as written: epochs, seed, trials, asha, max_concurrent, cost_input
    search: SearchConfig  # the base job (epochs and seed of the HPO job applied)
    space: dict[str, tuple[str, list[Any]]]  # "weights.lr" -> ("loguniform", [1e-3, 1e-1])
    objectives: tuple[tuple[str, str], ...]  # (metric, "max" | "min")
    file: str | None

    @property
    def trials(self) -> int:
        return self.job.trials

    @property
    def cost_metrics(self) -> list[str]:
        return [m for m, _ in self.objectives if m in ("macs", "params", "latency_ms")]


def is_hpo_job(data: Any) -> bool:
    return isinstance(data, dict) and data.get("kind") == "hpo"


def load_hpo_job(path: str | Path, overrides: list[str] | None = None) -> HpoConfig:
    return parse_hpo_job(load_document(path, overrides), str(path))


def parse_hpo_job(data: Any, file: str | None = None) -> HpoConfig:
    if isinstance(data, dict):
        data = {"name": Path(file).stem if file else "hpo", **data}
    job = validate(HpoJob, data, file)
    base_data, base_file = _base_job(job.search, file)
    base_data = {**base_data, "name": job.name, "epochs": job.epochs, "seeds": [job.seed]}
    try:
        search = parse_job(base_data, base_file)
    except SpecError as exc:  # an inline base job: its keys below 'search'; a base job file: that file
        if exc.file == file:
            raise SpecError(file, ".".join(k for k in ("search", exc.key) if k), exc.message) from None
        raise SpecError(file, "search", str(exc)) from None
    space = {key: (kind, list(getattr(dist, kind))) for key, dist in job.space.items()
             for kind in DISTRIBUTIONS if hasattr(dist, kind)}
    for key, (_, values) in space.items():  # both ends of a range, every choice: a bad key fails now, not in trial 7
        for sample in values:
            try:
                parse_job(set_keys(base_data, {key: sample}), base_file)
            except SpecError as exc:
                raise SpecError(file, f"space.{key}", f"{describe(sample)} is not a valid value: {exc}") from None
    objectives = tuple(pair for item in job.objectives
                       for pair in ({item: OBJECTIVE_MODES[item]} if isinstance(item, str) else item).items())
    return HpoConfig(job.name, job, search, space, objectives, file)


def _base_job(value: str | dict[str, Any], file: str | None) -> tuple[dict[str, Any], str | None]:
    """The base search job: a file (relative to the HPO file) or an inline mapping."""
    if isinstance(value, dict):
        return dict(value), file
    path = relative_to_file(value, file)
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise SpecError(path, None, "expected a mapping (a search job)")
    return data, path


# --- running -------------------------------------------------------------------------------------

def tune_domain(kind: str, values: list[Any]):
    from ray import tune

    if kind == "randint":
        return tune.randint(values[0], values[1] + 1)  # inclusive [low, high] in the job file
    return tune.choice(values) if kind == "choice" else getattr(tune, kind)(*values)  # loguniform, uniform


def new_tuner(hpo: HpoConfig, experiment: Experiment, callbacks: Sequence[Any]):
    """Optuna suggests each trial's overrides; ASHA stops trials that trail on the first objective."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from .tune_search import make_run_config, trainable_with_resources

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{experiment.path / 'optuna.db'}")
    metrics, modes = zip(*hpo.objectives)
    several = len(metrics) > 1
    searcher = OptunaSearch(metric=list(metrics) if several else metrics[0], mode=list(modes) if several else modes[0],
                            sampler=optuna.samplers.TPESampler(seed=hpo.job.seed), storage=storage,
                            study_name=hpo.name)
    metric, mode = hpo.objectives[0]
    scheduler = ASHAScheduler(time_attr="epoch", metric=metric, mode=mode, max_t=hpo.job.epochs,
                              grace_period=hpo.job.asha.grace_period, reduction_factor=hpo.job.asha.reduction_factor,
                              stop_last_trials=False)  # let the last epoch reach Search._finish
    return tune.Tuner(
        trainable_with_resources(hpo.search),
        param_space={"experiment": str(experiment.path), "seed": hpo.job.seed,
                     "params": {k: tune_domain(*v) for k, v in hpo.space.items()}},
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                    num_samples=hpo.trials, max_concurrent_trials=hpo.job.max_concurrent,
                                    trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}"),
        run_config=make_run_config(experiment, hpo.search.max_failures, callbacks))


def run_hpo(hpo: HpoConfig, out: str | Path = "runs", *, resume: bool = False, restart: bool = False,
            address: str | None = None, num_cpus: int | None = None,
            callbacks: Sequence[Any] = ()) -> pd.DataFrame:
    """Run (or continue) the study; returns the trial table with a ``pareto`` column."""
    from ray import tune

    from .ray_session import check_resources, ray_session
    from .tune_search import EpochLines, check_fresh, collect_outcomes, fit_quietly, restored_tuner

    check_out_path(out)
    check_resume_restart(resume, restart)
    path = run_path(out, hpo.name).resolve()
    check_run_dir(path, "hpo")
    cost_input = hpo.job.cost_input
    experiment = Experiment(path, "hpo", portable_job(hpo.search), hpo.file, [hpo.job.seed],
                            {"objectives": [list(o) for o in hpo.objectives], "cost_metrics": hpo.cost_metrics,
                             "cost_input": list(cost_input) if cost_input else None})
    with ray_session(address, num_cpus):
        check_resources(hpo.search.resources, hpo.file, hpo.search.device)
        if resume:
            if not tune.Tuner.can_restore(str(experiment.tune_dir)):
                raise NassegError(f"nothing to resume: {path} holds no Ray Tune experiment; start it without --resume")
            tuner = restored_tuner(path, hpo.search)
        else:
            if restart:  # the study, its trials and Tune's state: the whole experiment starts over
                remove_run_dir(path, "hpo")
            else:
                check_fresh(path, sorted(path.glob("trial_*")), restart)
            claim_run_dir(path, "hpo")
            experiment.save()
            claim_run_dir(experiment.tune_dir, "ray-tune")
            lines = EpochLines(path, hpo.job.epochs, kind="hpo", max_failures=hpo.search.max_failures)
            tuner = new_tuner(hpo, experiment, [lines, *callbacks])
        collect_outcomes(fit_quietly(tuner), experiment, raise_on_error=False)  # a diverged trial is a data point
    return write_pareto(path, hpo.objectives)


# --- the Pareto front ----------------------------------------------------------------------------

def pareto_mask(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Rows not dominated by any other row (>= on every objective, > on one), per objective mode."""
    signed = values * np.array([1.0 if m == "max" else -1.0 for m in modes])
    mask = np.ones(len(signed), dtype=bool)
    for i, row in enumerate(signed):
        dominated = np.all(signed >= row, axis=1) & np.any(signed > row, axis=1)
        mask[i] = not dominated.any()
    return mask


def write_pareto(experiment_path: str | Path, objectives: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """pareto.csv (every trial: its overrides, status and the objective values of its last epoch;
    ``pareto`` marks the front) and pareto.png in the experiment dir."""
    from .record import read_optional
    from .results import collect_results
    from .trainable import COST_FILE, COST_METRICS

    def last_value(run_dir: Path, metric: str) -> Any:
        if metric in COST_METRICS:
            costs = read_optional(run_dir / COST_FILE, "architecture costs per epoch")
            return costs[max(costs, key=int)].get(metric) if costs else None
        return RunDir(run_dir).read_metrics([metric])[metric].iloc[-1]

    experiment_path = Path(experiment_path)
    metrics = [m for m, _ in objectives]
    table = collect_results(experiment_path)
    for metric in metrics:
        table[metric] = [last_value(experiment_path / run, metric) for run in table["run"]]
    complete = table["status"].isin(["finished", "stopped"]) & table[metrics].notna().all(axis=1)
    table["pareto"] = False
    if complete.any():
        table.loc[complete, "pareto"] = pareto_mask(table.loc[complete, metrics].to_numpy(float),
                                                    [mode for _, mode in objectives])
    first, mode = objectives[0]
    table = table.sort_values(["pareto", first], ascending=[False, mode == "min"]).reset_index(drop=True)
    columns = ["run", "overrides", "status", "epochs", *metrics, "pareto", "genotype", "checkpoint"]
    table = table[[c for c in dict.fromkeys(columns) if c in table]]
    atomic_write_text(experiment_path / "pareto.csv", table.to_csv(index=False))
    plot_pareto(table, objectives, experiment_path / "pareto.png")
    return table


def plot_pareto(table: pd.DataFrame, objectives: Sequence[tuple[str, str]], path: Path) -> None:
    from matplotlib.figure import Figure  # outside pyplot: no backend to switch, nothing to close

    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    pruned = ~table["status"].isin(["finished", "stopped"])
    if len(objectives) >= 2:
        (x, x_mode), (y, y_mode) = objectives[:2]
        ax.scatter(table.loc[~pruned, x], table.loc[~pruned, y], c="tab:blue", label="ran all epochs")
        ax.scatter(table.loc[pruned, x], table.loc[pruned, y], c="lightgray", label="stopped early (ASHA)")
        front = table[table["pareto"]].sort_values(x)
        ax.plot(front[x], front[y], "o-", c="tab:red", label="Pareto front")
        ax.set_xlabel(f"{x} ({x_mode})")
        ax.set_ylabel(f"{y} ({y_mode})")
        ax.legend(fontsize=8)
    else:
        metric, mode = objectives[0]
        order = table.sort_values(metric, ascending=mode == "min").reset_index(drop=True)
        colors = ["tab:red" if p else ("lightgray" if s not in ("finished", "stopped") else "tab:blue")
                  for p, s in zip(order["pareto"], order["status"])]
        ax.bar(range(len(order)), order[metric], color=colors)
        ax.set_xticks(range(len(order)), order["run"].str.replace("trial_", ""), rotation=60, fontsize=7)
        ax.set_ylabel(f"{metric} ({mode}); red: best, gray: stopped early")
    ax.set_title(f"{path.parent.name}: {len(table)} trials")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
