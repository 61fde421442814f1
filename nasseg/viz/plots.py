"""Curves of a search run, read from its run directory.

Every ``plot_*`` function takes a run directory and an output path and returns the path; the
suffix picks the format (.png at 110 dpi, .svg, .pdf). Figures are built with the object API
(no pyplot, no backend) and styled inside :data:`styled` calls, so importing or plotting changes
no process-wide matplotlib state. Ops keep one colour in every plot (skip_connect a strong red,
since its growth is what early stopping watches).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ..arch import load_arch
from ..config import load_yaml
from ..errors import NassegError
from ..io import read_json_object, read_text
from ..search import decode_run
from ..search.rundir import RunDir
from ..search.stop_rules import PaperRule, make_rule
from ..space import load as load_space
from .draw import edge_weight_rows, transition_weights

STYLE = {"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "legend.fontsize": 9,
         "axes.spines.top": False, "axes.spines.right": False}
# a decorator: the plot runs with STYLE, matplotlib's settings are restored when it returns
styled = matplotlib.rc_context(STYLE)

OP_COLORS = {"none": "#b0b0b0", "skip_connect": "#d62728", "identity": "#d62728",
             "max_pool_3x3": "#1f77b4", "avg_pool_3x3": "#7fb8e0",
             "sep_conv_3x3": "#2ca02c", "sep_conv_5x5": "#98d98e",
             "dil_conv_3x3": "#ff7f0e", "dil_conv_5x5": "#ffc285",
             "atrous_conv_3x3": "#9467bd", "atrous_conv_5x5": "#c9b3e0"}
_SPARE = ["#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#843c39"]
SKIP_OPS = ("skip_connect", "identity")
DIRECTION_COLORS = {"finer": "#1f77b4", "same": "#333333", "coarser": "#d62728"}


def op_colors(ops: Sequence[str]) -> dict[str, str]:
    """Known ops keep their colour in every plot; unknown ones take spare colours in order."""
    spare = iter(_SPARE * (len(ops) // len(_SPARE) + 1))
    return {op: OP_COLORS.get(op) or next(spare) for op in ops}


# metrics.csv columns the plots and the report compute with; the rest are shown as stored
METRIC_NUMBERS = ("epoch", "train_loss", "val_loss", "val_miou", "eigenvalue", "param_free_share", "skip_share")
# columns added later (the eigenvalue's error bound, hessian.blocks' eigenvalues): NaN where a run lacks them
OPTIONAL_NUMBERS = ("eigen_bound", "eigenvalue_alphas", "eigenvalue_betas")


def load_metrics(run_dir: str | Path) -> pd.DataFrame:
    """A search run's metrics.csv: every row complete, at least one epoch, the plotted columns numbers."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise NassegError(f"{run_dir}: no metrics.csv (not a search run directory, or no epoch finished yet)")
    reader = csv.reader(io.StringIO(read_text(path, "a search's per-epoch metrics")))
    try:
        header = next(reader, [])
        bad = next((row for row in reader if row and len(row) != len(header)), None)
        problem = bad and f"line {reader.line_num} has {len(bad)} fields, the header {len(header)}"
    except csv.Error as exc:
        problem = f"line {reader.line_num}: {exc}"
    if problem:
        raise NassegError(f"{path}: {problem} (a truncated or edited file?)")
    metrics = RunDir(run_dir).read_metrics(METRIC_NUMBERS)
    if metrics.empty or metrics["epoch"].isna().any():
        raise NassegError(f"{path}: {'a row without an epoch number' if len(metrics) else 'no epochs recorded'}")
    for column in OPTIONAL_NUMBERS:
        metrics[column] = pd.to_numeric(metrics[column], errors="coerce") if column in metrics else float("nan")
    return metrics


def load_result(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "result.json"
    return read_json_object(path, "a run's result (status and summary)") if path.is_file() else {}


def figure(**kwargs: Any) -> Figure:
    """A figure laid out by matplotlib's constrained layout, outside pyplot (nothing to close)."""
    return Figure(layout="constrained", **kwargs)


def save(fig: Figure, output: str | Path) -> Path:
    """Write the figure, epochs (iterations) on integer ticks in every panel."""
    for ax in fig.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    return output


def _mark_epochs(ax: Axes, result: dict[str, Any], label: bool = False, returned: str = "tab:green") -> None:
    """The stop epoch (dashed) and the returned epoch (dotted, colour ``returned``), when the
    rule stopped the run."""
    if result.get("status") != "stopped":
        return
    ax.axvline(result["epochs_run"], color="black", linestyle="--", linewidth=1, zorder=5,
               label=f"stop (epoch {result['epochs_run']})" if label else None)
    ax.axvline(result["arch_epoch"], color=returned, linestyle=":", linewidth=2, zorder=5,
               label=f"returned (epoch {result['arch_epoch']})" if label else None)


def _grid(panels: int, ncols: int, size: tuple[float, float] = (2.7, 2.0)) -> tuple[Figure, list[Axes]]:
    """Small multiples with shared axes, epochs on x; unused slots are removed so len(fig.axes) == panels."""
    ncols = min(ncols, panels)
    nrows = math.ceil(panels / ncols)
    fig = figure(figsize=(size[0] * ncols, size[1] * nrows + 0.9))
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    flat = list(axes.flat)
    for ax in flat[panels:]:
        ax.remove()
    for ax in flat[:panels]:
        ax.tick_params(labelbottom=True)
    for ax in flat[panels - ncols:panels]:  # the lowest panel of each column
        ax.set_xlabel("epoch")
    return fig, flat[:panels]


# --- eigenvalue --------------------------------------------------------------------------------

def rule_windows(rule: Any, metrics: pd.DataFrame, result: dict[str, Any]) -> list[tuple[int, int, float]] | None:
    """The two windows of the paper rule at the stop epoch, [(first, last, lambda_bar)], from the
    measured eigenvalues; None unless the paper rule stopped the run."""
    if result.get("status") != "stopped" or not isinstance(rule, PaperRule):
        return None
    epochs, values = measured_eigenvalues(metrics, upto=result["epochs_run"])
    k = rule.window
    if len(values) < 2 * k:
        return None
    return [(epochs[-2 * k], epochs[-k - 1], float(np.mean(values[-2 * k:-k]))),
            (epochs[-k], epochs[-1], float(np.mean(values[-k:])))]


def measured_eigenvalues(metrics: pd.DataFrame, upto: int | None = None) -> tuple[list[int], list[float]]:
    """Epochs and eigenvalues the stop rule saw: measured, architecture steps on (as the loop)."""
    rows = metrics[metrics["eigenvalue"].notna()]
    if "arch_active" in rows:
        rows = rows[rows["arch_active"].astype(str).str.lower() == "true"]
    if upto is not None:
        rows = rows[rows["epoch"] <= upto]
    return [int(e) for e in rows["epoch"]], [float(v) for v in rows["eigenvalue"]]


@styled
def plot_eigenvalue_and_ops(run_dir: str | Path, output: str | Path, title: str | None = None) -> Path:
    """Eigenvalue per epoch (stop point, returned epoch and the paper rule's two lambda_bar
    windows marked) above the share of skip / parameter-free ops."""
    run_dir = Path(run_dir)
    metrics, result = load_metrics(run_dir), load_result(run_dir)
    fig = figure(figsize=(7.5, 5.6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(metrics["epoch"], metrics["eigenvalue"], marker="o", color="tab:red", label="eigenvalue")
    bounded = metrics[metrics["eigen_bound"].notna() & metrics["eigenvalue"].notna()]
    if len(bounded):  # an eigenvalue lies within the Ritz residual of each estimate
        top.errorbar(bounded["epoch"], bounded["eigenvalue"], yerr=bounded["eigen_bound"], fmt="none",
                     ecolor="tab:red", capsize=3, label="± Ritz residual (error bound)")
    for column, color, label in (("eigenvalue_alphas", "tab:orange", "alphas only"),
                                 ("eigenvalue_betas", "tab:blue", "betas only")):
        if metrics[column].notna().any():  # hessian.blocks on a lattice
            top.plot(metrics["epoch"], metrics[column], marker=".", linestyle="--", color=color, label=label)
    top.set_ylabel("dominant eigenvalue of\n$\\nabla^2_\\alpha L_{val}$")
    config = load_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    rule = make_rule(config.get("early_stop") if isinstance(config, dict) else None) if config is not None else None
    for first, last, mean in rule_windows(rule, metrics, result) or []:
        top.hlines(mean, first - 0.3, last + 0.3, color="tab:purple", linewidth=3, alpha=0.7)
        top.annotate(f"$\\bar\\lambda({last})$={mean:.3g}", (last + 0.3, mean), fontsize=8,
                     color="tab:purple", xytext=(3, 3), textcoords="offset points")
    _mark_epochs(top, result, label=True)
    top.legend(loc="upper left")
    bottom.plot(metrics["epoch"], metrics["param_free_share"], marker="s", label="parameter-free ops")
    bottom.plot(metrics["epoch"], metrics["skip_share"], marker="^", color=OP_COLORS["skip_connect"],
                label="skip_connect")
    _mark_epochs(bottom, result)
    bottom.set_ylabel("share of kept edges\n(normal cell)")
    bottom.set_xlabel("epoch")
    bottom.set_ylim(-0.05, 1.05)
    bottom.legend(loc="upper left")
    top.set_title(title or run_dir.parent.name)
    return save(fig, output)


# --- losses and mIoU ---------------------------------------------------------------------------

def _shade_warmup(ax: Axes, metrics: pd.DataFrame) -> None:
    """Epochs without architecture steps (Auto-DeepLab's warm-up) in grey."""
    if "arch_active" not in metrics:
        return
    off = metrics[metrics["arch_active"].astype(str).str.lower() != "true"]["epoch"]
    if len(off):
        ax.axvspan(off.min() - 0.5, off.max() + 0.5, color="#eeeeee", zorder=0)


@styled
def plot_training_curves(run_dir: str | Path, output: str | Path, title: str | None = None) -> Path:
    """Train/val loss and train/val mIoU per epoch (grey: weights-only warm-up epochs)."""
    run_dir = Path(run_dir)
    metrics, result = load_metrics(run_dir), load_result(run_dir)
    fig = figure(figsize=(10, 3.6))
    loss, miou = fig.subplots(1, 2, sharex=True)
    epoch = metrics["epoch"]
    loss.plot(epoch, metrics["train_loss"], marker="o", markersize=3, label="train loss")
    loss.plot(epoch, metrics["val_loss"], marker="s", markersize=3, label="val loss")
    loss.set_ylabel("cross-entropy")
    for column, label, style in (("train_miou", "train mIoU", "o-"), ("val_miou", "val mIoU", "s-"),
                                 ("val_pixel_acc", "val pixel accuracy", "--")):
        if column in metrics:
            miou.plot(epoch, metrics[column], style, markersize=3, label=label,
                      color="tab:purple" if column == "val_pixel_acc" else None)
    miou.set_ylabel("mIoU / pixel accuracy")
    for ax in (loss, miou):
        _shade_warmup(ax, metrics)
        _mark_epochs(ax, result, label=ax is miou)
        ax.set_xlabel("epoch")
        ax.legend(loc="best")
    fig.suptitle(title or f"{run_dir.parent.name}/{run_dir.name}: training curves")
    return save(fig, output)


# --- architecture weights ----------------------------------------------------------------------

def _run_space(run_dir: Path):
    if not (run_dir / "space.yaml").is_file():
        raise NassegError(f"{run_dir}: no space.yaml (not a search run directory)")
    return load_space(run_dir / "space.yaml")


def _arch_weights(run_dir: Path) -> tuple[list[int], list[dict[str, Any]]]:
    run = RunDir(run_dir)
    epochs = run.epochs_recorded()
    if not epochs:
        raise NassegError(f"{run_dir}: no alphas/epoch_*.json recorded yet")
    return epochs, [run.read_arch_weights(epoch) for epoch in epochs]


def edge_label(source: int, node: int, inputs: int) -> str:
    """Edge names as in the cell drawings: inputs c_{k-2}, c_{k-1}, intermediates 0, 1, ..."""
    name = f"$c_{{k-{inputs - source}}}$" if source < inputs else str(source - inputs)
    return f"{name} → {node - inputs}"


@styled
def plot_alpha_evolution(run_dir: str | Path, output: str | Path, kind: str = "normal") -> Path:
    """softmax(alpha) of every op per edge over epochs: one panel per candidate edge, a line per
    op. Panels of edges the answer keeps have bold titles and their kept op drawn thick."""
    run_dir = Path(run_dir)
    space = _run_space(run_dir)
    if kind not in space.cell_types:
        raise NassegError(f"{run_dir}: space {space.name!r} has cell types {', '.join(space.cell_types)}; got {kind!r}")
    epochs, payloads = _arch_weights(run_dir)
    # rows[epoch][edge] -> the weights of that edge's ops
    rows = [edge_weight_rows(space, kind, p.get("alphas") or p["alphas_raw"]) for p in payloads]
    edges = sorted(space.cell_graph.edges(data=True), key=lambda e: e[2]["index"])
    inputs = sum(1 for _, role in space.cell_graph.nodes(data="role") if role == "input")
    answer = decode_run(run_dir)  # arch.yaml, else the last recorded epoch's architecture
    kept = {(s, n): op for s, n, op in answer.cells[kind].edges()} if kind in answer.cells else {}
    colors = op_colors(space.op_names)
    fig, axes = _grid(len(edges), 5)
    for ax, (index, (source, node, data)) in zip(axes, enumerate(edges)):
        for j, op in enumerate(data["ops"]):
            chosen = kept.get((source, node)) == op
            ax.plot(epochs, [rows[t][index][j] for t in range(len(epochs))], color=colors[op],
                    linewidth=2.6 if chosen else 1.2, zorder=3 if chosen else 2)
        title = edge_label(source, node, inputs)
        ax.set_title(f"{title}  [{kept[(source, node)]}]" if (source, node) in kept else title,
                     fontweight="bold" if (source, node) in kept else "normal", fontsize=9)
        ax.axvline(answer.meta.get("epoch", epochs[-1]), color="tab:green", linestyle=":", linewidth=1)
        ax.axhline(1 / len(data["ops"]), color="#999999", linewidth=0.6, zorder=1)
    handles = [Line2D([], [], color=colors[op], linewidth=2.5, label=op) for op in space.op_names]
    handles.append(Line2D([], [], color="tab:green", linestyle=":", label="returned epoch"))
    handles.append(Line2D([], [], color="#999999", linewidth=0.6, label="uniform"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False)
    fig.suptitle(f"softmax(alpha) per edge of the {kind} cell; bold title: an edge the answer keeps "
                 "(its op in brackets, drawn thick)", fontsize=11)
    return save(fig, output)


def _state(path: Sequence[int], strides: Sequence[int], layer: int) -> tuple[int, int]:
    return (0, 0) if layer == 0 else (layer, list(strides).index(path[layer - 1]))


@styled
def plot_beta_evolution(run_dir: str | Path, output: str | Path) -> Path:
    """softmax(beta) over epochs of the transitions leaving each state of the answer's path (one
    panel per layer; the transition the path takes thick), for lattice (Auto-DeepLab) runs."""
    run_dir = Path(run_dir)
    space = _run_space(run_dir)
    if space.network.type != "lattice":
        raise NassegError(f"{run_dir}: space {space.name!r} is a chain; only lattice runs have betas")
    network, strides = space.network_graph, list(space.network.strides)
    epochs, payloads = _arch_weights(run_dir)
    weights = [transition_weights(network, p.get("betas") or p["betas_raw"]) for p in payloads]
    path = list(decode_run(run_dir).path or [])
    fig, axes = _grid(len(path), 4, size=(2.9, 2.0))
    for layer, ax in enumerate(axes):
        state, chosen = _state(path, strides, layer), _state(path, strides, layer + 1)
        for target in sorted(network.successors(state), key=lambda n: n[1]):
            direction = "same" if target[1] == state[1] else "finer" if target[1] < state[1] else "coarser"
            ax.plot(epochs, [w.get((state, target), np.nan) for w in weights], marker="o", markersize=2.5,
                    color=DIRECTION_COLORS[direction], linewidth=2.6 if target == chosen else 1.1,
                    linestyle="-" if target == chosen else "--")
        source = "stem" if layer == 0 else f"layer {layer}"
        ax.set_title(f"{source} (stride {strides[state[1]]}) → {strides[chosen[1]]}", fontsize=9)
        ax.set_ylim(0, 1.02)
    handles = [Line2D([], [], color=c, label=f"to a {d} stride" if d != "same" else "same stride")
               for d, c in DIRECTION_COLORS.items()]
    handles.append(Line2D([], [], color="black", linewidth=2.6, label="the path's transition"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    fig.suptitle(f"softmax(beta) of the transitions leaving each state of the path {path}", fontsize=11)
    return save(fig, output)


def op_shares(run_dir: str | Path, kind: str = "normal") -> pd.DataFrame:
    """Share of each op among the kept edges of the decoded ``kind`` cell, one row per epoch."""
    run_dir = Path(run_dir)
    files = sorted((run_dir / "arch").glob("epoch_*.yaml"))
    if not files:
        raise NassegError(f"{run_dir}: no decoded architectures (arch/epoch_*.yaml)")
    rows = {}
    for file in files:
        cell = load_arch(file).cells.get(kind)
        if cell is None:
            raise NassegError(f"{file}: no {kind!r} cell")
        ops = pd.Series([op for *_, op in cell.edges()])
        rows[int(file.stem.split("_")[1])] = ops.value_counts(normalize=True)
    return pd.DataFrame.from_dict(rows, orient="index").fillna(0.0).sort_index()


@styled
def plot_op_share(run_dir: str | Path, output: str | Path, kind: str = "normal") -> Path:
    """Stacked shares of op types among the decoded cell's kept edges per epoch; skip_connect
    at the bottom, hatched, so its growth (the DARTS failure mode) stands out."""
    run_dir = Path(run_dir)
    shares = op_shares(run_dir, kind)
    space_ops = list(_run_space(run_dir).op_names) if (run_dir / "space.yaml").is_file() else []
    order = sorted(shares.columns, key=lambda op: (op not in SKIP_OPS, space_ops.index(op) if op in space_ops else 99))
    colors = op_colors(space_ops + [op for op in order if op not in space_ops])
    fig = figure(figsize=(8, 3.6))
    ax = fig.subplots()
    layers = ax.stackplot(shares.index, *(shares[op] for op in order), labels=order,
                          colors=[colors[op] for op in order], alpha=0.9, edgecolor="white", linewidth=0.5)
    for layer, op in zip(layers, order):
        if op in SKIP_OPS:
            layer.set_hatch("//")
            layer.set_edgecolor("black")
    _mark_epochs(ax, load_result(run_dir), label=True, returned="black")
    if shares.index.min() < shares.index.max():  # a one-epoch run keeps matplotlib's default range
        ax.set_xlim(shares.index.min(), shares.index.max())
    ax.set_ylim(0, 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"share of kept edges\n({kind} cell)")
    ax.set_title(f"ops of the decoded {kind} cell per epoch")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return save(fig, output)

