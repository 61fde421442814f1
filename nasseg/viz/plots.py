"""Curves of a search run, read from its metrics.csv (matplotlib, no display needed)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def load_metrics(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / "metrics.csv")


def plot_eigenvalue_and_ops(run_dir: str | Path, output: str | Path, title: str | None = None) -> Path:
    """Eigenvalue per epoch (stop point marked) above the share of skip / parameter-free ops."""
    run_dir = Path(run_dir)
    metrics = load_metrics(run_dir)
    result = json.loads((run_dir / "result.json").read_text()) if (run_dir / "result.json").exists() else {}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True)
    top.plot(metrics["epoch"], metrics["eigenvalue"], marker="o", color="tab:red")
    top.set_ylabel("dominant eigenvalue of\n$\\nabla^2_\\alpha L_{val}$")
    if result.get("status") == "stopped":
        top.axvline(result["epochs_run"], color="black", linestyle="--", label=f"stop (epoch {result['epochs_run']})")
        top.axvline(result["arch_epoch"], color="tab:green", linestyle=":", label=f"returned (epoch {result['arch_epoch']})")
        top.legend()
    bottom.plot(metrics["epoch"], metrics["param_free_share"], marker="s", label="parameter-free ops")
    bottom.plot(metrics["epoch"], metrics["skip_share"], marker="^", label="skip_connect")
    bottom.set_ylabel("share of kept edges\n(normal cell)")
    bottom.set_xlabel("epoch")
    bottom.set_ylim(-0.05, 1.05)
    bottom.legend()
    top.set_title(title or run_dir.parent.name)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output
