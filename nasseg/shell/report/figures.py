"""The report's own plots: a retraining's curves and the trials of an experiment side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from nasseg.errors import NassegError
from nasseg.io import read_csv
from nasseg.viz import plots

from .runs import Run


@plots.styled
def plot_retrain_curves(train_dir: str | Path, output: str | Path, title: str | None = None) -> Path:
    """Training loss (and learning rate) per iteration from log.csv; val mIoU and pixel accuracy per
    validation pass from eval.csv, when it has rows."""
    train_dir = Path(train_dir)
    log, evals = (read_csv(train_dir / name, what, ("iteration", column)) if (train_dir / name).is_file()
                  else pd.DataFrame() for name, what, column in (("log.csv", "the training log", "loss"),
                                                                   ("eval.csv", "the validation passes", "miou")))
    if log.empty:
        raise NassegError(f"{train_dir}/log.csv: no training iterations logged")
    fig = plots.figure(figsize=(5.5 if evals.empty else 10, 3.4))
    axes = fig.subplots(1, 1 if evals.empty else 2, squeeze=False)[0]
    loss = axes[0]
    loss.plot(log["iteration"], log["loss"], marker="o", markersize=3, label="training loss")
    loss.set_xlabel("iteration")
    loss.set_ylabel("loss (mean over the log interval)")
    loss.set_xlim(left=0)
    handles, labels = loss.get_legend_handles_labels()
    if "lr" in log:
        lr = loss.twinx()
        lr.plot(log["iteration"], log["lr"], color="tab:gray", linestyle="--", linewidth=1, label="learning rate")
        lr.set_ylabel("learning rate", color="tab:gray")
        lr.tick_params(axis="y", colors="tab:gray")
        lr.set_ylim(bottom=0)
        more = lr.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    loss.legend(handles, labels, loc="upper right")
    if not evals.empty:
        miou = axes[1]
        miou.plot(evals["iteration"], evals["miou"], "s-", markersize=5, label="val mIoU")
        if "pixel_accuracy" in evals:
            miou.plot(evals["iteration"], evals["pixel_accuracy"], "o--", markersize=4, color="tab:purple",
                      label="val pixel accuracy")
        miou.set_xlim(0, max(float(log["iteration"].max()), float(evals["iteration"].max())) * 1.05)
        miou.set_ylim(0, 1)
        miou.set_xlabel("iteration")
        miou.set_ylabel("mIoU / pixel accuracy")
        miou.legend(loc="upper left")
    fig.suptitle(title or f"{train_dir.name}: retraining")
    return plots.save(fig, output)


@plots.styled
def plot_trials(runs: Sequence[Run], labels: Sequence[str], output: Path) -> Path:
    """Eigenvalue and val mIoU of every trial, one line per trial, stop epochs marked; the
    eigenvalue axis is logarithmic when trials differ by more than 10x (all positive)."""
    fig = plots.figure(figsize=(11, 3.8))
    eig, miou = fig.subplots(1, 2)
    values = pd.concat([run.metrics["eigenvalue"] for run in runs]).dropna()
    if len(values) and values.min() > 0 and values.max() > 10 * values.min():
        eig.set_yscale("log")
    for run, label in zip(runs, labels):
        line, = eig.plot(run.metrics["epoch"], run.metrics["eigenvalue"], marker="o", markersize=3, label=label)
        miou.plot(run.metrics["epoch"], run.metrics["val_miou"], marker="s", markersize=3, color=line.get_color())
        if run.result.get("status") == "stopped":
            eig.axvline(run.result["epochs_run"], color=line.get_color(), linestyle="--", linewidth=1)
    eig.set_ylabel("dominant eigenvalue")
    miou.set_ylabel("val mIoU")
    for ax in (eig, miou):
        ax.set_xlabel("epoch")
    eig.legend(loc="best")
    return plots.save(fig, output)
