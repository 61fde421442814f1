"""The study section of an experiment's report page (``nasseg report STUDY_DIR``): the study's table,
comparisons, per-class IoU, candidates, searches and the mIoU / multiply-adds plot, as plain data
for the templates (study.html). The numbers come from nasseg.shell.runner.study_table, recomputed
from the study's run directories, so the page and table.csv agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from nasseg.errors import NassegError

from .collect import Picture, Table

STUDY_FILES = [("table.csv", "one row per group (pandas.read_csv)"), ("table.md", "every table as markdown"),
               ("candidates.csv", "one row per candidate"), ("runs.csv", "one row per retraining run"),
               ("comparisons.csv", "the bootstrap comparisons"), ("searches.csv", "one row per search seed"),
               ("study.yaml", "the study as run"), ("units.yaml", "the training job of every retraining run")]


def is_study(path: Path) -> bool:
    from nasseg.shell.runner.study_units import STUDY_FILE

    return (path / STUDY_FILE).is_file()


def study_retrains(path: Path) -> list[Path]:
    """The finished retrainings of the searched architectures, to show on their search runs' pages."""
    from nasseg.shell.runner.study_units import RETRAIN_DIR

    folder = path / RETRAIN_DIR
    return sorted(p for p in folder.glob("search_s*_r*") if (p / "result.json").is_file()) if is_study(path) else []


def collect_study(path: Path, folder: Path) -> dict[str, Any] | None:
    """The section's data, or None when ``path`` is no study; a study whose searches have not finished
    is a note, not an error."""
    from nasseg.shell.runner.study_table import (PLOT, candidate_cells, class_cells, collect_tables, comparison_cells,
                                                 percent, plot_miou_vs_macs, versus_random)

    if not is_study(path):
        return None
    try:
        t = collect_tables(path)
    except NassegError as exc:
        return {"note": str(exc)}
    if t.runs.empty:
        return {"note": "no retraining run has finished yet"}
    g = t.groups
    groups = Table(("group", "candidates", "runs", "mIoU %", "std between archs", "params (M)", "MACs (G)",
                    "search CPU h", "search GPU h", "retrain CPU h", "retrain GPU h", "vs random (Δ, interval)"),
                   [(r.group, r.candidates, r.runs, percent(r.miou_mean, r.miou_std), percent(r.miou_std_between),
                     f"{r.params_mean / 1e6:.2f}", f"{r.macs_mean / 1e9:.3f}", f"{r.search_cpu_h:.3f}",
                     f"{r.search_gpu_h:.3f}", f"{r.retrain_cpu_h:.3f}", f"{r.retrain_gpu_h:.3f}", versus_random(r))
                    for r in g.itertuples()], left=(0, 11))
    comparisons = Table(("A", "B", "pairing", "Δ mIoU (pts)", "interval", "resamples > 0", "verdict"),
                        comparison_cells(t), left=(0, 1, 2, 6)) if len(t.comparisons) else None
    classes = Table(("class", *g["group"]), class_cells(t), left=(0,))
    candidates = Table(("group", "candidate", "source", "runs", "mIoU %", "params (M)", "MACs (G)"),
                       candidate_cells(t), left=(0, 1, 2))
    searches = Table(("seed", "epochs", "stop rule fired at", "returned epoch", "the rule's decision", "hours",
                      "hours to the stop"),
                     [(r.seed, r.epochs, "never" if pd.isna(r.stop_epoch) else int(r.stop_epoch), r.return_epoch,
                       r.rule,
                       f"{r.seconds / 3600:.3f}", f"{r.seconds_to_stop / 3600:.3f}") for r in t.searches.itertuples()],
                     left=(4,))
    plot = Picture("study_plot", plot_miou_vs_macs(t, folder / PLOT),
                   "mIoU against multiply-adds: a dot per candidate (mean ± std over its retraining seeds), a larger "
                   "marker per group (mean ± std over its runs).")
    return {"note": "", "name": t.name, "ablation": t.ablation, "split": t.split,
            "cost_input": f"{t.cost_input[0]}x{t.cost_input[1]}",
            "finished": len(t.runs), "planned": t.planned_runs, "groups": groups, "comparisons": comparisons,
            "classes": classes, "candidates": candidates, "searches": searches, "plot": plot,
            "files": [(path / name, name, what) for name, what in STUDY_FILES if (path / name).is_file()]}
