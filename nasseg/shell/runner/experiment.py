"""The experiment directory shared by the driver and its trials.

    OUT/<name>/experiment.yaml   what every trial runs: the resolved job (absolute paths), kind, seeds,
                                 for HPO the objectives; rewritten by ``--resume --set``
    OUT/<name>/seed<N>/          a search trial's nasseg run dir (same layout as in-process runs)
    OUT/<name>/trial_<id>/       an HPO trial's run dir
    OUT/<name>/_tune/            Ray Tune's experiment state (Tuner.restore reads it)
    OUT/<name>/optuna.db         the Optuna study of an HPO experiment (SQLite)

Trials read the job from experiment.yaml rather than from their Tune config so that settings
changed on ``--resume`` reach trials that Tune restores with their original config.

The output folder (``--out``) is also Ray's storage: trials and Ray Train workers write their run
directories with ordinary file operations (atomic renames, appends) from whichever node they run
on, and Ray Tune / Ray Train keep their checkpoints and experiment state under the same folder
(``storage_path``). So on a cluster ``--out`` must be a POSIX folder that every node mounts at the
same path (NFS, CephFS, Lustre, ...). URIs such as ``s3://`` are refused: the run directories are
not written through pyarrow's filesystems. Nothing is written outside ``--out``: the copy a
checkpoint is reported from is staged next to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from nasseg.config import load_yaml, set_keys
from nasseg.errors import NassegError
from nasseg.io import atomic_write_text
from nasseg.search.config import SearchConfig, load_job, parse_job, resolve_space_path

EXPERIMENT_FILE = "experiment.yaml"
TUNE_DIR = "_tune"
TRIAL_FILE = "trial.json"  # in each run dir: experiment, trial id, seed, sampled overrides
PID_FILE = "worker.pid"  # in each run dir: the process running the trial (fault-injection tests, ps)
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass
class Experiment:
    path: Path
    kind: str  # search | hpo
    job: dict[str, Any]  # the resolved search job (before per-trial overrides)
    job_file: str | None
    seeds: list[int]
    hpo: dict[str, Any] = field(default_factory=dict)  # objectives, cost_input, ... (kind hpo)
    overrides: dict[str, Any] = field(default_factory=dict)  # what the job differs in from its file (--set)

    @property
    def tune_dir(self) -> Path:
        return self.path / TUNE_DIR

    def run_dir(self, seed: int, trial_id: str) -> Path:
        """seed<N> for a search (the in-process layout), trial_<id> for HPO trials."""
        return self.path / (f"seed{seed}" if self.kind == "search" else f"trial_{trial_id}")

    def save(self) -> None:
        data = {"kind": self.kind, "job_file": self.job_file, "seeds": self.seeds, "job": self.job}
        if self.hpo:
            data["hpo"] = self.hpo
        if self.overrides:
            data["overrides"] = self.overrides
        atomic_write_text(self.path / EXPERIMENT_FILE, yaml.safe_dump(data, sort_keys=False))

    def search_config(self, overrides: dict[str, Any] | None = None) -> SearchConfig:
        """The SearchConfig of one trial: the job with ``{"weights.lr": 0.01, ...}`` applied."""
        return parse_job(set_keys(self.job, overrides or {}), self.job_file)


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    file = path / EXPERIMENT_FILE
    if not file.exists():
        raise NassegError(f"{path}: not a nasseg Ray experiment (no {EXPERIMENT_FILE})")
    data = load_yaml(file)
    missing = [key for key in ("kind", "job", "seeds") if not isinstance(data, dict) or key not in data]
    if missing:
        raise NassegError(f"{file}: no {', '.join(missing)} in it; expected the experiment record nasseg "
                          "writes (kind, job, seeds)")
    return Experiment(path, data["kind"], data["job"], data.get("job_file"), list(data["seeds"]),
                      data.get("hpo") or {}, data.get("overrides") or {})


def portable_job(config: SearchConfig) -> dict[str, Any]:
    """The job as a dict that means the same in any working directory: trials run in Tune's trial
    folders, so the space file and the data root become absolute paths."""
    data = config.to_dict()
    data["space"] = str(Path(resolve_space_path(config)).resolve())
    if data["data"].get("root"):
        data["data"]["root"] = str(Path(data["data"]["root"]).expanduser().resolve())
    return data


def job_overrides(config: SearchConfig) -> dict[str, Any]:
    """The settings in which ``config`` differs from its job file as that file reads now (the
    ``--set`` values that changed something), as dotted keys; seeds and name are left out (every
    run shows its seed, the name is the experiment's folder)."""
    if not config.file:
        return {}
    ran, written = dotted(portable_job(config)), dotted(portable_job(load_job(config.file)))
    return {key: value for key, value in ran.items()
            if key not in ("seeds", "name") and (key not in written or written[key] != value)}


def dotted(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {"a.b": value}; an empty mapping inside it stays a value."""
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        nested = isinstance(value, dict) and value
        flat.update(dotted(value, f"{prefix}{key}.") if nested else {f"{prefix}{key}": value})
    return flat


def config_digest(job: dict[str, Any]) -> str:
    """Identifies the settings that shape a search, not where or with what it runs: runs with equal
    digests differ only in their seed (``nasseg results`` averages over them)."""
    data = {k: v for k, v in job.items() if k not in ("seeds", "resources", "max_failures", "device", "name")}
    if isinstance(data.get("space"), str):
        data["space"] = Path(data["space"]).stem  # a built-in name and its absolute path are the same space
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def check_out_path(out: str | Path) -> None:
    """One line for an ``--out`` that is a URI (s3://, gs://, hdfs://, file://...)."""
    text = str(out)
    if URI.match(text):
        raise NassegError(f"--out {text}: nasseg writes run directories as ordinary files and takes a folder, not "
                          "a URI; on a cluster give a folder every node mounts at the same path (NFS, a "
                          "cluster filesystem), see docs/ray.md")


@contextlib.contextmanager
def staged(file: Path) -> Iterator[Path]:
    """A temporary folder beside ``file`` holding it (a hard link, a copy where links fail), to be
    reported to Ray as a checkpoint; removed afterwards. Beside it, not in /tmp: the data stays
    on the run's storage."""
    with tempfile.TemporaryDirectory(prefix=".report-", dir=file.parent) as folder:
        target = Path(folder) / file.name
        try:
            os.link(file, target)
        except OSError:
            shutil.copy2(file, target)
        yield Path(folder)
