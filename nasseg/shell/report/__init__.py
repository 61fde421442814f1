"""``nasseg report``: one self-contained HTML page per search run, and an index per experiment.

Everything is embedded (plots as base64 PNG, graphviz drawings as inline SVG, CSS inline; no
scripts, no network), so a report can be mailed or opened anywhere; only the links to the run's
files (arch.yaml, checkpoints, ...) are relative paths, valid next to the run directory.

:mod:`.runs` reads a run, an experiment's trials and the retrainings, :mod:`.collect` gathers what a
page shows, :mod:`.render` writes it through the templates.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable

from nasseg.errors import NassegError
from nasseg.io import atomic_write_text

from .collect import SECTIONS, collect_experiment, collect_run
from .figures import plot_retrain_curves
from .render import render_experiment, render_run
from .runs import RETRAIN_DIR, Run, attach_retrains, find_trials, load_run
from .study import collect_study, study_retrains

REPORT_FILE, INDEX_FILE = "report.html", "index.html"


def _write_run_report(run: Run, target: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="nasseg_report_") as folder:
        return atomic_write_text(target, render_run(collect_run(run, Path(folder)), target.parent))


def _write_experiment_report(path: Path, out: Path, retrains: Iterable[str | Path]) -> Path:
    """A report per trial (next to the index, mirroring the trial folders) and the index page."""
    trials = find_trials(path)
    if not trials:
        raise NassegError(f"{path}: neither a search run directory (config.yaml and metrics.csv) nor an "
                          "experiment holding run directories")
    runs = [load_run(trial) for trial in trials]
    attach_retrains(runs, [*retrains, *study_retrains(path)])  # a study: its searched architectures' retrainings
    reports = [_write_run_report(run, out.parent / run.path.relative_to(path) / REPORT_FILE) for run in runs]
    with tempfile.TemporaryDirectory(prefix="nasseg_report_") as folder:
        page = collect_experiment(path, runs, reports, Path(folder))
        page["study"] = collect_study(path, Path(folder))
        return atomic_write_text(out, render_experiment(page, out.parent))


def write_report(run_dir: str | Path, out: str | Path | None = None, retrains: Iterable[str | Path] = ()) -> Path:
    """Write the report of a run directory (default ``<run_dir>/report.html``) or of an experiment
    (a report per trial plus ``<dir>/index.html``); returns the page written (the index).
    ``retrains``: training run directories of the run's (or a trial's) decoded architecture."""
    path = Path(run_dir)
    if not path.is_dir():
        raise NassegError(f"{path}: no such directory")
    if out is not None and Path(out).suffix.lower() not in (".html", ".htm"):
        raise NassegError(f"{out}: a report is an HTML file; give a name ending in .html")
    if not ((path / "config.yaml").is_file() or (path / "metrics.csv").is_file()):
        return _write_experiment_report(path, Path(out) if out else path / INDEX_FILE, retrains)
    run = load_run(path)
    attach_retrains([run], retrains)
    return _write_run_report(run, Path(out) if out else path / REPORT_FILE)


__all__ = ["write_report", "load_run", "find_trials", "plot_retrain_curves", "SECTIONS", "RETRAIN_DIR",
           "REPORT_FILE", "INDEX_FILE"]
