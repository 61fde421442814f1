"""The study's table, recomputed from its folder every time (the run directories are the truth):

    OUT/<study>/table.csv         one row per candidate group: mIoU mean ± std, per-class IoU, size, cost,
                                  the comparison with the random group (pandas.read_csv loads it)
    OUT/<study>/candidates.csv    one row per candidate (architecture or baseline)
    OUT/<study>/runs.csv          one row per retraining run
    OUT/<study>/searches.csv      one row per search seed: epochs, the stop rule's decision, seconds
    OUT/<study>/comparisons.csv   the bootstrap comparisons (nasseg.shell.runner.study_stats)
    OUT/<study>/table.md          all of it as markdown
    OUT/<study>/miou_vs_macs.png  mIoU against multiply-adds, error bars over retraining seeds

mIoU is the final evaluation of each training run on the recipe's ``data.val_split``. Cost: CPU
(GPU) hours = seconds x the CPUs (GPUs) a unit reserved / 3600; a search's seconds are the sum of
its epochs, the stop rule's group counts the epochs up to the one the rule fired at (what a
stopping search runs), a retraining's are its training plus its validation passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from nasseg.errors import NassegError
from nasseg.io import atomic_write_text, read_csv, read_json_object
from nasseg.viz import plots

from .study import StudyConfig
from .study_stats import Comparison, compare
from .trainable import model_cost
from .study_units import RETRAIN_DIR, Candidate, SearchOutcome, load_study, search_outcomes, study_candidates

TIMING_COLUMNS = ("search_cpu_h", "search_gpu_h", "retrain_cpu_h", "retrain_gpu_h", "train_seconds", "eval_seconds",
                  "seconds", "seconds_to_stop")
FILES = {"groups": "table.csv", "candidates": "candidates.csv", "runs": "runs.csv", "searches": "searches.csv",
         "comparisons": "comparisons.csv"}
MARKDOWN, PLOT = "table.md", "miou_vs_macs.png"
GROUP_MARKERS = ("D", "s", "^", "v", "P", "X")


@dataclass
class StudyTables:
    name: str
    split: str
    cost_input: tuple[int, int]
    groups: pd.DataFrame
    candidates: pd.DataFrame
    runs: pd.DataFrame
    searches: pd.DataFrame
    comparisons: pd.DataFrame
    classes: list[str]
    planned_runs: int
    ablation: bool  # the searches ran every epoch and their stop rule was replayed


# --- reading the runs --------------------------------------------------------------------------------

def _run_row(study_dir: Path, run: str) -> dict[str, Any] | None:
    """A finished retraining run's numbers; None while it has no result.json."""
    path = study_dir / RETRAIN_DIR / run
    if not (path / "result.json").is_file():
        return None
    result = read_json_object(path / "result.json", "a training run's result")
    evals = path / "eval.csv"
    eval_seconds = float(read_csv(evals, "the validation passes", ["eval_seconds"])["eval_seconds"].sum()) \
        if evals.is_file() else float(result.get("seconds") or 0.0)
    row = {"run": run, "miou": result["miou"], "pixel_accuracy": result.get("pixel_accuracy"),
           "train_seconds": float(result.get("train_seconds") or 0.0), "eval_seconds": eval_seconds}
    row.update({f"iou_{c['class']}": c.get("iou") for c in result.get("classes") or []})
    return row


def cost_size(study: StudyConfig) -> tuple[int, int]:
    data = study.recipe["data"]
    return tuple(study.job.cost_input or data.get("size") or data["crop"])  # type: ignore[return-value]


# --- the tables ----------------------------------------------------------------------------------------

def _hours(seconds: float, amount: float) -> float:
    return seconds * amount / 3600


def candidate_rows(study: StudyConfig, candidates: Sequence[Candidate], runs: pd.DataFrame,
                   classes: list[str], classes_count: int) -> pd.DataFrame:
    size = cost_size(study)
    cpus, gpus = study.job.resources.cpus, study.job.resources.gpus
    rows, costs = [], {}
    for c in candidates:
        mine = runs[runs["run"].isin(c.runs(study.retrain_seeds))]
        if c.unit not in costs:
            costs[c.unit] = model_cost(c.model, c.model_args, classes_count, size)
        params, macs = costs[c.unit]
        seconds = float((mine["train_seconds"] + mine["eval_seconds"]).sum())
        # pandas gives NaN for the mean of no runs and the std of fewer than two
        rows.append({"group": c.group, "candidate": c.id, "source": c.source, "unit": c.unit,
                     "search_seed": c.search_seed, "runs": len(mine), "miou_mean": mine["miou"].mean(),
                     "miou_std": mine["miou"].std(ddof=1), "pixel_accuracy": mine["pixel_accuracy"].mean(),
                     "params": params, "macs": macs,
                     "retrain_cpu_h": _hours(seconds, cpus), "retrain_gpu_h": _hours(seconds, gpus),
                     **{f"iou_{k}": mine[f"iou_{k}"].mean() for k in classes}})
    return pd.DataFrame(rows)


def group_names(study: StudyConfig) -> list[str]:
    groups = ["searched_stop", *(["searched_last"] if study.job.ablation else []),
              *(["random"] if study.job.random.count else [])]
    return groups + [b.group for b in study.baselines]


def comparisons(study: StudyConfig, candidates: pd.DataFrame, runs: pd.DataFrame) -> list[Comparison]:
    """searched (stop rule) vs random, searched (last epoch) vs random, stop rule vs last epoch
    (paired by search seed), searched (stop rule) vs each baseline."""
    values = {unit: list(runs.loc[runs["unit"] == unit, "miou"]) for unit in runs["unit"].unique()}
    finished = candidates[candidates["runs"] > 0]
    units = {g: list(finished.loc[finished["group"] == g, "unit"]) for g in group_names(study)}
    paired_units: dict[str, list[str]] = {}
    if study.job.ablation:  # the pairs: the stop rule's and the last epoch's unit of each seed with runs of both
        seeds = {g: dict(zip(finished.loc[finished["group"] == g, "search_seed"], units[g]))
                 for g in ("searched_stop", "searched_last")}
        both = [s for s in seeds["searched_stop"] if s in seeds["searched_last"]]
        paired_units = {g: [seeds[g][s] for s in both] for g in seeds}
    pairs: list[tuple[str, str, bool]] = []
    if units.get("random"):
        pairs.append(("searched_stop", "random", False))
        if study.job.ablation:
            pairs.append(("searched_last", "random", False))
    if study.job.ablation:
        pairs.append(("searched_stop", "searched_last", True))
    pairs += [("searched_stop", b.group, False) for b in study.baselines]
    boot = study.job.bootstrap
    found = []
    for stream, (a, b, paired) in enumerate(pairs, start=1):
        side_a, side_b = (paired_units[a], paired_units[b]) if paired else (units.get(a), units.get(b))
        if not side_a or not side_b:
            continue
        found.append(compare(side_a, side_b, values, paired=paired, samples=boot.samples,
                             confidence=boot.confidence, seed=boot.seed, stream=stream, names=(a, b)))
    return found


def group_rows(study: StudyConfig, candidates: pd.DataFrame, runs: pd.DataFrame, outcomes: Sequence[SearchOutcome],
               found: Sequence[Comparison], classes: list[str]) -> pd.DataFrame:
    rows = []
    search = study.search.resources
    versus = {c.a: c for c in found if c.b == "random"}
    for group in group_names(study):
        cands = candidates[candidates["group"] == group]
        done = cands[cands["runs"] > 0]
        # each candidate's runs; two candidates of a group training the same network count twice, as two draws
        mine = pd.concat([runs[runs["unit"] == u] for u in done["unit"]]) if len(done) else runs.iloc[:0]
        seconds = sum(o.seconds_to_stop if group == "searched_stop" else o.seconds for o in outcomes) \
            if group.startswith("searched_") else 0.0
        comparison = versus.get(group)
        rows.append({"group": group, "candidates": len(cands), "runs": len(mine),
                     "miou_mean": done["miou_mean"].mean(), "miou_std": mine["miou"].std(ddof=1),
                     "miou_std_between": done["miou_mean"].std(ddof=1),
                     "pixel_accuracy": mine["pixel_accuracy"].mean(),
                     "params_mean": cands["params"].mean(), "macs_mean": cands["macs"].mean(),
                     "search_cpu_h": _hours(seconds, search.cpus), "search_gpu_h": _hours(seconds, search.gpus),
                     "retrain_cpu_h": cands.drop_duplicates("unit")["retrain_cpu_h"].sum(),
                     "retrain_gpu_h": cands.drop_duplicates("unit")["retrain_gpu_h"].sum(),
                     "vs_random": comparison.verdict if comparison else "",
                     **{f"vs_random_{key}": getattr(comparison, key) if comparison else math.nan
                        for key in ("difference", "low", "high")},
                     **{f"iou_{k}": mine[f"iou_{k}"].mean() for k in classes}})
    return pd.DataFrame(rows)


def collect_tables(study_dir: str | Path) -> StudyTables:
    """Every table of a study whose searches have finished, from its folder alone (retraining runs
    that have not finished are left out and counted in ``planned_runs``)."""
    from nasseg.data.registry import dataset_info

    study_dir = Path(study_dir)
    study = load_study(study_dir)
    outcomes = search_outcomes(study, study_dir)
    cands = study_candidates(study, study_dir)
    planned = list(dict.fromkeys(run for c in cands for run in c.runs(study.retrain_seeds)))
    unit_of = {run: c.unit for c in cands for run in c.runs(study.retrain_seeds)}
    rows = [row for row in (_run_row(study_dir, run) for run in planned) if row is not None]
    runs = pd.DataFrame(rows, columns=["run", "miou", "pixel_accuracy", "train_seconds", "eval_seconds"]) \
        if not rows else pd.DataFrame(rows)
    runs.insert(1, "unit", [unit_of[r] for r in runs["run"]])
    runs.insert(2, "seed", [int(r.rsplit("_r", 1)[1]) for r in runs["run"]])
    classes = [c.removeprefix("iou_") for c in runs.columns if c.startswith("iou_")]
    data = study.recipe["data"]
    spec = f"{data['dataset']}:{data['root']}" if data.get("root") else data["dataset"]
    candidates = candidate_rows(study, cands, runs, classes, dataset_info(spec).num_classes)
    found = comparisons(study, candidates, runs)
    groups = group_rows(study, candidates, runs, outcomes, found, classes)
    table = pd.DataFrame([{"a": c.a, "b": c.b, "paired": c.paired, "difference": c.difference, "low": c.low,
                           "high": c.high, "share_above_zero": c.share_above, "candidates_a": c.candidates[0],
                           "candidates_b": c.candidates[1], "verdict": c.verdict} for c in found])
    searches = pd.DataFrame([{"seed": o.seed, "status": o.status, "epochs": o.epochs, "stop_epoch": o.stop_epoch,
                              "return_epoch": o.return_epoch, "rule": o.reason, "seconds": o.seconds,
                              "seconds_to_stop": o.seconds_to_stop} for o in outcomes])
    return StudyTables(study.name, data.get("val_split", "val"), cost_size(study), groups, candidates, runs,
                       searches, table, classes, len(planned), study.job.ablation)


# --- writing ---------------------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")  # a pipe would end the markdown cell


def _md_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return ["| " + " | ".join(map(_cell, head)) + " |", "|" + "---|" * len(head),
            *["| " + " | ".join(map(_cell, row)) + " |" for row in rows]]


def percent(value: Any, std: Any = None) -> str:
    """An mIoU (a fraction) in %, with its std: '52.00 ± 2.58'; '–' for nothing."""
    if value is None or pd.isna(value):
        return "–"
    return f"{100 * value:.2f}" + ("" if std is None or pd.isna(std) else f" ± {100 * std:.2f}")


def signed(value: Any) -> str:
    """A difference of mIoU in percentage points, with its sign."""
    return "–" if value is None or pd.isna(value) else f"{100 * value:+.2f}"


def versus_random(g: Any) -> str:
    """A group's comparison with the random group: 'Δ [low, high] verdict'; '' without one."""
    return f"{signed(g.vs_random_difference)} [{signed(g.vs_random_low)}, {signed(g.vs_random_high)}] " \
        f"{g.vs_random}" if g.vs_random else ""


def comparison_cells(t: StudyTables) -> list[tuple[Any, ...]]:
    return [(c.a, c.b, "by search seed" if c.paired else "independent", signed(c.difference),
             f"[{signed(c.low)}, {signed(c.high)}]", f"{c.share_above_zero:.3f}", c.verdict)
            for c in t.comparisons.itertuples()]


def candidate_cells(t: StudyTables) -> list[tuple[Any, ...]]:
    return [(c.group, c.candidate, c.source, c.runs, percent(c.miou_mean, c.miou_std), f"{c.params / 1e6:.3f}",
             f"{c.macs / 1e9:.3f}") for c in t.candidates.itertuples()]


def class_cells(t: StudyTables) -> list[tuple[Any, ...]]:
    return [(k, *(percent(v) for v in t.groups[f"iou_{k}"])) for k in t.classes]


def markdown(t: StudyTables) -> str:
    lines = [f"# Study {t.name}", "",
             f"mIoU (%) on the `{t.split}` split, mean ± std over retraining runs; multiply-adds at "
             f"{t.cost_input[0]}x{t.cost_input[1]}; {len(t.runs)} of {t.planned_runs} retraining runs finished.", ""]
    lines += _md_table(["group", "candidates", "runs", "mIoU", "std between archs", "params (M)", "MACs (G)",
                        "search CPU h", "retrain CPU h", "vs random (Δ mIoU, 95% CI)"],
                       [[g.group, g.candidates, g.runs, percent(g.miou_mean, g.miou_std), percent(g.miou_std_between),
                         f"{g.params_mean / 1e6:.2f}", f"{g.macs_mean / 1e9:.3f}", f"{g.search_cpu_h:.3f}",
                         f"{g.retrain_cpu_h:.3f}", versus_random(g)] for g in t.groups.itertuples()])
    if len(t.comparisons):
        lines += ["", "## Comparisons (two-level bootstrap of the difference of mean mIoU, percentile interval)", ""]
        lines += _md_table(["A", "B", "pairing", "Δ mIoU, pts (A − B)", "interval", "share of resamples > 0",
                            "verdict"], comparison_cells(t))
    lines += ["", "## Per-class IoU (%)", ""]
    lines += _md_table(["class", *t.groups["group"]], class_cells(t))
    lines += ["", "## Candidates", ""]
    lines += _md_table(["group", "candidate", "source", "runs", "mIoU", "params (M)", "MACs (G)"], candidate_cells(t))
    lines += ["", "## Searches", ""]
    lines += _md_table(["seed", "epochs", "stop rule fired at", "returned epoch", "search hours", "to the stop"],
                       [[s.seed, s.epochs, "never" if pd.isna(s.stop_epoch) else int(s.stop_epoch), s.return_epoch,
                         f"{s.seconds / 3600:.3f}", f"{s.seconds_to_stop / 3600:.3f}"]
                        for s in t.searches.itertuples()])
    return "\n".join(lines) + "\n"


@plots.styled
def plot_miou_vs_macs(t: StudyTables, output: str | Path) -> Path:
    """One point per candidate (mean ± std over its retraining seeds), one larger per group (its
    mean ± std over runs), x logarithmic when the multiply-adds span more than 10x."""
    fig = plots.figure(figsize=(7, 4.5))
    ax = fig.subplots()
    done = t.candidates[t.candidates["runs"] > 0]
    for i, group in enumerate(t.groups.itertuples()):
        mine = done[done["group"] == group.group]
        if not len(mine):
            continue
        color = f"C{i}"
        ax.errorbar(mine["macs"] / 1e9, 100 * mine["miou_mean"], yerr=100 * mine["miou_std"].fillna(0),
                    fmt="o", color=color, alpha=0.55, markersize=5, capsize=2)
        spread = 0.0 if math.isnan(group.miou_std) else 100 * group.miou_std
        # each group its own marker, each smaller than the one before: groups that coincide (the stop rule
        # never fired: the same architectures) stay visible inside each other
        ax.errorbar([group.macs_mean / 1e9], [100 * group.miou_mean], yerr=[spread], fmt=GROUP_MARKERS[i % 6],
                    color=color, markersize=max(7.0, 12 - 1.5 * i), capsize=4, markeredgecolor="black",
                    label=f"{group.group} ({group.candidates} candidate{'s' * (group.candidates != 1)}, "
                          f"{group.runs} runs)")
    macs = done["macs"]
    if len(macs) and macs.min() > 0 and macs.max() > 10 * macs.min():
        ax.set_xscale("log")
    ax.set_xlabel(f"multiply-adds (G) of one {t.cost_input[0]}x{t.cost_input[1]} image")
    ax.set_ylabel(f"mIoU (%) on {t.split}")
    ax.set_title(f"{t.name}: dots = candidates (mean ± std over retraining seeds), "
                 "large markers = groups (mean ± std over runs)", fontsize=8)
    ax.legend(fontsize=8, loc="best")
    output = Path(output)
    fig.savefig(output, dpi=110)  # not plots.save: its integer ticks suit epochs, not multiply-adds
    return output


def write_tables(study_dir: str | Path) -> StudyTables:
    """Recompute the tables from the study's folder and write them (CSV, markdown, plot)."""
    study_dir = Path(study_dir)
    t = collect_tables(study_dir)
    if t.runs.empty:
        raise NassegError(f"{study_dir}: no retraining run has finished yet; nothing to tabulate")
    for key, name in FILES.items():
        atomic_write_text(study_dir / name, getattr(t, key).to_csv(index=False))
    atomic_write_text(study_dir / MARKDOWN, markdown(t))
    plot_miou_vs_macs(t, study_dir / PLOT)
    return t
