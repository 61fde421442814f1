"""``nasseg results``: one pandas table of the searches in an experiment directory.

Everything is read from the nasseg run dirs (config.yaml, metrics.csv, result.json, arch.yaml,
trial.json: the overrides and the Ray nodes a trial ran on), never from Ray's state, so runs made
in-process (``--no-ray``) and Tune trials (seeds or Optuna trials) are listed alike. Runs with the
same settings (the job minus seeds and placement) form one config; ``summarize`` gives mean and std
over its seeds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from nasseg.errors import NassegError
from nasseg.search.rundir import RunDir
from nasseg.config import did_you_mean, load_yaml
from .experiment import config_digest
from .record import node_history, read_optional, read_record, short_node

RESULT_COLUMNS = ["run", "config", "overrides", "seed", "status", "epochs", "arch_epoch", "final_val_miou",
                  "best_val_miou", "best_epoch", "arch_val_miou", "last_eigenvalue", "macs", "params",
                  "seconds", "nodes", "genotype", "checkpoint"]
NODE_SEPARATOR = " > "  # the Ray nodes a trial ran on, in order (a node lost mid-run: two of them)
METRICS_READ = ("epoch", "val_miou", "eigenvalue", "epoch_seconds")  # the metrics.csv columns a row uses
HIGHER_IS_BETTER = ("final_val_miou", "best_val_miou", "arch_val_miou")
_SHORT_OPS = [(r"sep_conv_(\d)x\d", r"sep\1"), (r"dil_conv_(\d)x\d", r"dil\1"), (r"atrous_conv_(\d)x\d", r"atr\1"),
              (r"max_pool_(\d)x\d", r"max\1"), (r"avg_pool_(\d)x\d", r"avg\1"), (r"skip_connect", "skip"),
              (r"^conv_(\d)x\d", r"conv\1")]


def find_run_dirs(path: str | Path) -> list[Path]:
    """Search run dirs (config.yaml + metrics.csv) at ``path`` or up to two levels below it."""
    path = Path(path)
    if not path.is_dir():
        raise NassegError(f"{path}: no such directory")
    candidates = [path, *path.glob("*"), *path.glob("*/*")]
    runs = sorted(p for p in candidates if (p / "config.yaml").is_file() and (p / "metrics.csv").is_file()
                  and "_tune" not in p.parts)
    if not runs:
        raise NassegError(f"{path}: no search runs found (run dirs hold config.yaml and metrics.csv)")
    return runs


def short_op(name: str) -> str:
    for pattern, replacement in _SHORT_OPS:
        name = re.sub(pattern, replacement, name)
    return name


def genotype_summary(arch_file: Path) -> str:
    """The normal cell as 'op@input ...' per node, nodes separated by '|' (plus the lattice path)."""
    if not arch_file.exists():
        return ""
    data = load_yaml(arch_file)
    try:
        cells = data.get("cells") or {}
        cell = cells.get("normal") or next(iter(cells.values()), None)
        text = " | ".join(" ".join(f"{short_op(op)}@{src}" for op, src in edges)
                          for _, edges in sorted(cell["nodes"].items())) if cell else ""
        if data.get("path"):
            text += f"  path {'-'.join(str(s) for s in data['path'])}"
    except (AttributeError, KeyError, TypeError, ValueError):
        raise NassegError(f"{arch_file}: not an architecture nasseg wrote (cells.<type>.nodes: "
                          "[[op, input], ...] per node)") from None
    return text


def read_run(run_dir: Path, root: Path) -> dict[str, Any]:
    metrics = RunDir(run_dir).read_metrics(METRICS_READ)
    config = load_yaml(run_dir / "config.yaml")
    if not isinstance(config, dict):
        raise NassegError(f"{run_dir / 'config.yaml'}: expected the search job nasseg wrote (a mapping)")
    result = read_optional(run_dir / "result.json", "a search's result")
    trial = read_record(RunDir(run_dir))
    seed = trial.get("seed", result.get("seed"))
    if seed is None and run_dir.name.startswith("seed") and run_dir.name[4:].isdigit():
        seed = int(run_dir.name[4:])
    epochs = len(metrics)
    arch_epoch = int(result.get("arch_epoch") or epochs or 0)
    by_epoch = metrics.set_index("epoch") if epochs else metrics
    cost = read_optional(run_dir / "arch_cost.json", "architecture costs per epoch").get(str(arch_epoch), {})
    arch_file = run_dir / "arch.yaml"
    if not arch_file.exists() and arch_epoch:
        arch_file = run_dir / "arch" / f"epoch_{arch_epoch:03d}.yaml"
    eigen = metrics["eigenvalue"].dropna() if epochs else metrics.get("eigenvalue", pd.Series(dtype=float))
    status = result.get("status") or ("incomplete" if epochs < config.get("epochs", epochs + 1) else "unknown")
    return {
        "run": str(run_dir.relative_to(root)) if run_dir != root else run_dir.name,
        "config": config_digest(config)[:8],
        "overrides": " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in sorted(trial.get("overrides", {}).items())),
        "seed": seed,
        "status": status,
        "epochs": epochs,
        "arch_epoch": arch_epoch,
        "final_val_miou": float(metrics["val_miou"].iloc[-1]) if epochs else None,
        "best_val_miou": float(metrics["val_miou"].max()) if epochs else None,
        "best_epoch": int(metrics.loc[metrics["val_miou"].idxmax(), "epoch"]) if epochs else None,
        "arch_val_miou": float(by_epoch.loc[arch_epoch, "val_miou"]) if arch_epoch in by_epoch.index else None,
        "last_eigenvalue": float(eigen.iloc[-1]) if len(eigen) else None,
        "macs": cost.get("macs"),
        "params": cost.get("params"),
        "seconds": float(metrics["epoch_seconds"].sum()) if epochs else 0.0,
        "nodes": NODE_SEPARATOR.join(node_history(trial)) or None,
        "genotype": genotype_summary(arch_file),
        "checkpoint": str(run_dir / "checkpoints" / "last.pt"),
    }


def collect_results(path: str | Path) -> pd.DataFrame:
    """One row per run dir under ``path`` (columns: RESULT_COLUMNS)."""
    root = Path(path)
    rows = [read_run(run, root) for run in find_run_dirs(root)]
    table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    return table.dropna(axis=1, how="all").reset_index(drop=True)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std across seeds of each config (runs whose settings differ only in the seed)."""
    metrics = [c for c in ("final_val_miou", "best_val_miou", "arch_val_miou", "epochs") if c in table]
    grouped = table.groupby(["config", "overrides"], sort=False)
    summary = grouped[metrics].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    if "seed" in table:  # a run dir that records no seed (no trial.json, result.json or seed<N> name) has none
        summary.insert(0, "seeds", grouped["seed"].apply(lambda s: ",".join(str(v) for v in s)))
    summary.insert(0, "runs", grouped.size())
    return summary.reset_index()


def sort_table(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Best first: descending for mIoU columns, ascending otherwise (epochs, seconds, macs, ...)."""
    if column not in table.columns:
        raise NassegError(f"--sort {column}: no such column; columns: {', '.join(table.columns)}"
                          + did_you_mean(column, table.columns))
    return table.sort_values(column, ascending=column not in HIGHER_IS_BETTER, kind="stable",
                             na_position="last").reset_index(drop=True)


def short_nodes(table: pd.DataFrame) -> pd.DataFrame:
    """The terminal's table: node ids cut to their first 8 digits (--csv and --json keep them whole)."""
    if "nodes" not in table:
        return table
    return table.assign(nodes=[NODE_SEPARATOR.join(short_node(n) for n in v.split(NODE_SEPARATOR))
                               if isinstance(v, str) else v for v in table["nodes"]])


def format_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """'mean ± std' text columns for the terminal."""
    shown = summary[["config", "overrides", "runs", "seeds"]].copy()
    for metric in ("final_val_miou", "best_val_miou", "arch_val_miou"):
        if f"{metric}_mean" in summary:
            shown[metric] = [f"{m:.4f} ± {s:.4f}" if pd.notna(s) else f"{m:.4f}"
                             for m, s in zip(summary[f"{metric}_mean"], summary[f"{metric}_std"])]
    return shown
