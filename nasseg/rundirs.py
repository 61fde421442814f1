"""Run directories that nasseg owns: plain run names, the ownership marker, the one deletion.

A command writes under its output folder only: a run lives in ``OUT/<name>`` (a search seed in
``OUT/<name>/seed<N>``), and ``name`` is a plain folder name (:func:`check_run_name`), never a
path that could point elsewhere. Each run directory nasseg creates carries a marker file,
``.nasseg-run`` (JSON: kind, created, nasseg version). nasseg deletes a directory (``--restart``,
experiment and HPO restarts, Ray Tune state it replaces) only through :func:`remove_run_dir`,
and only when it carries the marker of the same kind of run, or is a run made before markers
existed that holds nothing but nasseg's own files (a *legacy* run); anything else is refused
with one line saying why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .errors import NassegError
from .io import atomic_write_text

MARKER = ".nasseg-run"
MARKER_FORMAT = 1
MAX_NAME_LENGTH = 128
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*")
_NAME_CHAR = re.compile(r"[A-Za-z0-9_.+=-]")
# kind -> what it is, in messages
KINDS = {"train": "training run", "search": "search run", "experiment": "search experiment",
         "hpo": "HPO experiment", "ray-tune": "Ray Tune state folder", "study": "NAS study"}
# What a legacy run (no marker) may hold for nasseg to delete it: the files nasseg writes there,
# plus the '.<name>.<random>.tmp' files of interrupted atomic writes.
LEGACY_ENTRIES = {
    "train": {"config.yaml", "log.csv", "eval.csv", "tb", "checkpoints", "final.pt", "result.json",
              "ray_train"},
    "search": {"config.yaml", "space.yaml", "metrics.csv", "alphas", "arch", "arch.yaml", "checkpoints",
               "events.jsonl", "result.json", "trial.json", "worker.pid", "arch_cost.json", "report.html",
               "search.svg"},
    "experiment": {"experiment.yaml", "_tune", "index.html"},
    "hpo": {"experiment.yaml", "_tune", "optuna.db", "pareto.csv", "pareto.png", "index.html"},
}
RUN_PREFIXES = {"experiment": "seed", "hpo": "trial_"}  # the search runs an experiment holds


class RunNameError(NassegError, ValueError):
    """A run name that is not a plain folder name. A ValueError too, so schema validators
    (pydantic) report it as a validation error of the ``name`` field."""


def check_run_name(name: str) -> str:
    """``name`` unchanged if it is a plain folder name, else :class:`RunNameError` saying why.

    A run is written to ``OUT/<name>``: a name with a path separator, ``..`` or an absolute path
    would put it (and what ``--restart`` deletes) outside ``OUT``. Allowed: letters, digits and
    ``_ . + = -``, starting with a letter, digit or ``_``, at most 128 characters."""
    if not isinstance(name, str):
        raise RunNameError(f"run name must be a string, got {type(name).__name__} {name!r}")
    problem = _name_problem(name)
    if problem:
        shown = repr(name) if len(name) <= 200 else repr(name[:197]) + "..."
        raise RunNameError(f"run name {shown} {problem}; expected a plain folder name such as camvid_darts "
                           "(letters, digits, _ . + = -; no path separators, no '..'): a run is written "
                           "to OUT/<name>")
    return name


def _name_problem(name: str) -> str | None:
    if not name:
        return "is empty"
    if os.path.isabs(name) or name.startswith(("/", "\\")):
        return "is an absolute path"
    if name in (".", ".."):
        return "is OUT itself" if name == "." else "points to the folder above OUT"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if ".." in name:
        return "contains '..'"
    if len(name) > MAX_NAME_LENGTH:
        return f"is longer than {MAX_NAME_LENGTH} characters"
    if not PLAIN_NAME.fullmatch(name):
        odd = sorted({c for c in name if not _NAME_CHAR.match(c)})
        if odd:
            return f"contains {', '.join(repr(c) for c in odd)}"
        return "does not start with a letter, digit or '_'"
    return None


def run_path(out: str | Path, name: str) -> Path:
    """``OUT/<name>`` for a checked run name."""
    return Path(out) / check_run_name(name)


def check_resume_restart(resume: bool, restart: bool) -> None:
    """The one rule for every command: --resume and --restart exclude each other."""
    if resume and restart:
        raise NassegError("--resume continues an existing run and --restart discards it; pass one of them")


# --- the marker ----------------------------------------------------------------------------------

def write_marker(path: Path, kind: str) -> None:
    record = {"format": MARKER_FORMAT, "kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "nasseg": __version__}
    atomic_write_text(path / MARKER, json.dumps(record) + "\n")


def read_marker(path: Path) -> dict[str, Any] | None:
    """The marker of ``path`` (a dict with at least ``kind``), or None without a valid one."""
    file = path / MARKER
    if file.is_symlink() or not file.is_file():
        return None
    try:
        record = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("kind") in KINDS else None


def legacy_kind(path: Path) -> str | None:
    """The kind of a run made before markers, recognised by the files nasseg writes there."""
    def has(*names: str) -> bool:
        return any((path / name).exists() for name in names)

    if path.name == "_tune" and (path.parent / "experiment.yaml").is_file():
        return "ray-tune"
    if (path / "experiment.yaml").is_file():
        return "hpo" if _experiment_kind(path / "experiment.yaml") == "hpo" else "experiment"
    if (path / "config.yaml").is_file():
        if has("space.yaml", "metrics.csv", "alphas", "trial.json"):
            return "search"
        if has("log.csv", "final.pt", "checkpoints"):
            return "train"
    for kind, prefix in RUN_PREFIXES.items():
        if any(child.is_dir() and run_kind(child) == "search" for child in path.glob(f"{prefix}*")):
            return kind
    return None


def _experiment_kind(file: Path) -> str | None:
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data.get("kind") if isinstance(data, dict) else None


def run_kind(path: Path) -> str | None:
    """What nasseg made ``path`` as: the marker's kind, else a legacy run's, else None."""
    marker = read_marker(path)
    return marker["kind"] if marker else legacy_kind(path)


# --- claiming and deleting -----------------------------------------------------------------------

def _refuse(path: Path, why: str, action: str) -> NassegError:
    return NassegError(f"{path} {why}; refusing to {action} it — "
                       + ("remove it yourself or pick another --out/name" if action == "delete"
                          else "pick another --out/name"))


def _check_owned(path: Path, kind: str, action: str) -> str:
    """Raise unless the existing, non-empty directory ``path`` is a ``kind`` run of nasseg's: with
    its marker, or a legacy run holding only nasseg's files. 'marker' or 'legacy': which of them."""
    if path.is_symlink():
        raise _refuse(path, "is a symbolic link", action)
    if not path.is_dir():
        raise _refuse(path, "exists and is not a directory", action)
    marker = read_marker(path)
    found = marker["kind"] if marker else legacy_kind(path)
    if found is None:
        raise _refuse(path, f"was not created by nasseg (no {MARKER} marker)", action)
    if found != kind:
        raise _refuse(path, f"is a nasseg {KINDS.get(found, found)}, not a {KINDS.get(kind, kind)}", action)
    if marker:
        return "marker"
    foreign = foreign_entries(path, kind)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise _refuse(path, f"looks like a nasseg {KINDS.get(kind, kind)} made before run markers ({MARKER}) "
                            f"but also holds {shown}, which nasseg did not write", action)
    return "legacy"


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def claim_run_dir(path: str | Path, kind: str) -> Path:
    """Create ``path`` as a ``kind`` run directory (with the marker), or accept it when it already
    is one (marked, or a legacy run, which stays unmarked). An empty folder is taken over; any
    other existing folder is refused: nasseg does not write into folders it did not create."""
    path = Path(path)
    if (not path.exists() and not path.is_symlink()) or is_empty_dir(path):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # OUT (or a folder above it) is a file, read-only, or in /proc
            raise NassegError(f"{path}: cannot create the run directory ({e.strerror}: {e.filename}); "
                              "expected --out to be a folder nasseg may write in") from None
        write_marker(path, kind)
    else:
        _check_owned(path, kind, "write into")
    return path


def check_run_dir(path: str | Path, kind: str) -> None:
    """Raise unless ``path`` is missing, empty or a ``kind`` run of nasseg's (what claim_run_dir
    would accept), without creating anything."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not is_empty_dir(path):
        _check_owned(path, kind, "write into")


def remove_run_dir(path: str | Path, kind: str) -> None:
    """Delete the ``kind`` run directory ``path`` and everything in it, if nasseg made it.

    The only place nasseg deletes run data. Refused (NassegError, nothing deleted): a symbolic
    link, a folder without the marker that is no legacy run, a run of another kind, a legacy
    run holding files nasseg did not write. A missing or empty folder is left as it is."""
    if check_removable(path, kind):
        shutil.rmtree(path)


def check_removable(path: str | Path, kind: str) -> bool:
    """Raise what :func:`remove_run_dir` would refuse; whether there is anything to delete.
    Callers deleting several runs check them all first, so a refusal deletes none."""
    path = Path(path)
    if (not path.exists() and not path.is_symlink()) or is_empty_dir(path):
        return False
    _check_owned(path, kind, "delete")
    return True


def foreign_entries(path: Path, kind: str) -> list[str]:
    """The entries of a legacy ``kind`` run that nasseg does not write there (relative paths).
    An experiment may hold runs (an HPO experiment: its trials' search runs), each of them
    marked or itself holding only nasseg's files; Ray's own folder may hold anything."""
    if kind == "ray-tune":
        return []
    foreign = []
    for entry in sorted(path.iterdir()):
        interrupted_write = entry.name.startswith(".") and entry.name.endswith(".tmp")
        if entry.name in LEGACY_ENTRIES.get(kind, ()) or interrupted_write:
            continue
        child = _child_run_kind(entry, kind)
        if child is None:
            foreign.append(entry.name)
        elif read_marker(entry) is None:
            foreign += [f"{entry.name}/{name}" for name in foreign_entries(entry, child)]
    return foreign


def _child_run_kind(entry: Path, kind: str) -> str | None:
    """The kind of a run inside an experiment of ``kind`` (any run in a search experiment, the
    trials' search runs in an HPO experiment), else None."""
    if kind not in RUN_PREFIXES or not entry.is_dir() or entry.is_symlink():
        return None
    found = run_kind(entry)
    if kind == "hpo" and (found != "search" or not entry.name.startswith(RUN_PREFIXES[kind])):
        return None
    return found
