"""What a report is about: a search run directory (read and checked), the experiment's trials, and
the retrainings of the run's decoded architecture.

A retraining is a finished ``nasseg train`` run directory whose job's ``model`` is the run's
arch.yaml or arch/epoch_NNN.yaml. The report is told where they are (``--retrain``); the only
place it looks by itself is ``<run_dir>/../retrain``, where ``nasseg demo`` writes its retraining.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from nasseg.errors import NassegError
from nasseg.io import read_json_object, read_text
from nasseg.search.rundir import RunDir
from nasseg.search.stop_rules import make_rule
from nasseg.config import load_yaml
from nasseg.viz.plots import load_metrics, load_result

RETRAIN_DIR = "retrain"
MAPPINGS = ("data", "early_stop", "optim", "model_args")  # config.yaml keys the report reads as mappings


def find_trials(path: str | Path) -> list[Path]:
    """Run directories (config.yaml and metrics.csv) at most two levels below ``path``, Ray Tune's
    _tune state excluded."""
    path = Path(path)
    return sorted(p.parent for p in [*path.glob("*/config.yaml"), *path.glob("*/*/config.yaml")]
                  if (p.parent / "metrics.csv").is_file() and "_tune" not in p.relative_to(path).parts)


def read_config(path: Path) -> dict[str, Any]:
    """A run's config.yaml: a mapping whose sections the report reads are mappings."""
    config = load_yaml(path)
    if not isinstance(config, dict):
        raise NassegError(f"{path}: expected a mapping of job keys, got {type(config).__name__}")
    for key in MAPPINGS:
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise NassegError(f"{path}: {key}: expected a mapping, got {config[key]!r:.40}")
    return config


@dataclass
class Retrain:
    """A finished training run (nasseg.train) of a search's arch.yaml or arch/epoch_NNN.yaml."""
    path: Path
    config: dict[str, Any]
    result: dict[str, Any]
    arch_file: Path  # the search run's file it retrained

    @property
    def epoch(self) -> int | None:
        """The search epoch of arch/epoch_NNN.yaml; None for arch.yaml (the returned epoch)."""
        stem = self.arch_file.stem
        return int(stem.split("_")[1]) if stem.startswith("epoch_") else None


@dataclass
class Run:
    """A search run directory: its job, result, metrics, events and stop rule, every file checked."""
    path: Path
    config: dict[str, Any]
    result: dict[str, Any]
    metrics: pd.DataFrame
    events: list[dict[str, Any]]
    rule: Any  # the job's stop rule (nasseg.search.stop_rules)
    retrains: list[Retrain] = field(default_factory=list)  # newest first

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.parent.name)

    @property
    def seed(self) -> int | None:
        if "seed" in self.result:
            return self.result["seed"]
        trial = self.path / "trial.json"
        if trial.is_file():
            return read_json_object(trial, "a trial's settings").get("seed")
        digits = self.path.name.removeprefix("seed")
        return int(digits) if digits.isdigit() else None

    @property
    def last_epoch(self) -> int:
        return int(self.metrics["epoch"].max())

    @property
    def arch_epoch(self) -> int:
        return int(self.result.get("arch_epoch", self.last_epoch))

    def file(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    def arch_files(self) -> set[Path]:
        return {self.file("arch.yaml").resolve(), *(f.resolve() for f in self.path.glob("arch/epoch_*.yaml"))}


def read_events(path: Path) -> list[dict[str, Any]]:
    """events.jsonl: one JSON object per line."""
    events = []
    for number, line in enumerate(read_text(path, "a search's events (JSON lines)").splitlines(), 1):
        try:
            event = json.loads(line) if line.strip() else {}
        except json.JSONDecodeError as exc:
            raise NassegError(f"{path}: line {number}: not valid JSON ({exc.msg}; a truncated or edited "
                              "file?)") from None
        if not isinstance(event, dict):
            raise NassegError(f"{path}: line {number}: expected a JSON object, got {type(event).__name__}")
        if event:
            events.append(event)
    return events


def load_run(path: str | Path) -> Run:
    """A run directory's files, read and checked; a non-run or a broken file is one NassegError line."""
    path = Path(path)
    if not path.is_dir():
        raise NassegError(f"{path}: no such directory")
    if not (path / "config.yaml").is_file():
        raise NassegError(f"{path}: not a search run directory (no config.yaml)")
    config = read_config(path / "config.yaml")
    metrics = load_metrics(path)
    events = read_events(path / "events.jsonl") if (path / "events.jsonl").is_file() else []
    try:
        rule = make_rule(config.get("early_stop"))
    except NassegError as exc:
        raise NassegError(f"{path / 'config.yaml'}: {exc}") from None
    for epoch in RunDir(path).epochs_recorded():  # every alphas/epoch_NNN.json readable: later reads cannot fail
        RunDir(path).read_arch_weights(epoch)
    return Run(path, config, load_result(path), metrics, events, rule)


def _model_files(model: str, train_dir: Path) -> list[Path]:
    """Where a training job's ``model`` path can point: itself when absolute; else relative to the
    working directory or to any folder above the training run (the directory it was started in)."""
    path = Path(model)
    if path.is_absolute():
        return [path]
    return [Path.cwd() / path, *(folder / path for folder in train_dir.resolve().parents)]


def read_training_run(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    if not path.is_dir():
        raise NassegError(f"{path}: no such directory")
    if not (path / "result.json").is_file():
        raise NassegError(f"{path}: not a finished training run (no result.json)")
    config = read_config(path / "config.yaml")
    if not isinstance(config.get("model"), str):
        raise NassegError(f"{path / 'config.yaml'}: model: expected a model name or an ArchSpec file")
    return config, read_json_object(path / "result.json", "a training run's result")


def _retrain_of(path: Path, runs: Sequence[Run]) -> tuple[Run | None, Retrain | str]:
    """The run among ``runs`` whose architecture the training run ``path`` retrained and that
    retraining; (None, the model it trained) when it is none of theirs."""
    config, result = read_training_run(path)
    for run in runs:
        ours = run.arch_files()
        target = next((f.resolve() for f in _model_files(config["model"], path)
                       if f.is_file() and f.resolve() in ours), None)
        if target is not None:
            return run, Retrain(path, config, result, target)
    return None, config["model"]


def attach_retrains(runs: Sequence[Run], given: Iterable[str | Path] = ()) -> None:
    """Give each run its retrainings, newest first: those in ``given`` (each must be one of some
    run's) and a finished one of its own in ``<run_dir>/../retrain``."""
    found: dict[Path, tuple[Run, Retrain]] = {}
    for path in map(Path, given):
        owner, retrain = _retrain_of(path, runs)
        if owner is None:
            whose = str(runs[0].path) if len(runs) == 1 else f"any of the {len(runs)} trials"
            raise NassegError(f"{path}: trained {retrain}, not the arch.yaml or an arch/epoch_NNN.yaml of {whose}")
        found[path.resolve()] = owner, retrain
    for run in runs:
        default = run.path.parent / RETRAIN_DIR
        if default.resolve() not in found and (default / "result.json").is_file():
            owner, retrain = _retrain_of(default, [run])
            if owner is not None:
                found[default.resolve()] = owner, retrain
    for run in runs:
        run.retrains = sorted((r for owner, r in found.values() if owner is run),
                              key=lambda r: (r.path / "result.json").stat().st_mtime, reverse=True)
