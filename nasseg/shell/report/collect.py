"""Everything a report page shows, as plain data: the numbers, tables, texts and figure files of a
search run (:func:`collect_run`) or an experiment (:func:`collect_experiment`). Figures are drawn
into a folder the caller provides; :mod:`.render` turns the data into HTML."""

from __future__ import annotations

import itertools
import json
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from nasseg.data.registry import dataset_info
from nasseg.errors import NassegError
from nasseg.search import decode_run
from nasseg.search.rundir import RunDir
from nasseg.search.stop_rules import DartsADA, NeverStop, PaperRule, ReleasedCodeRule
from nasseg.io import read_text
from nasseg.space import load as load_space
from nasseg.viz import draw, plots

from .figures import plot_retrain_curves, plot_trials
from .runs import RETRAIN_DIR, Retrain, Run

SECTIONS = {"config": "Configuration", "stop": "Early stopping", "curves": "Curves",
            "arch": "Decoded architecture", "size": "Network size", "retrain": "Retraining and evaluation",
            "metrics": "Per-epoch metrics", "files": "Files"}
RUN_FILES = [("arch.yaml", "the search's answer (ArchSpec)"), ("result.json", "status and summary"),
             ("metrics.csv", "per-epoch metrics"), ("config.yaml", "the resolved job"),
             ("space.yaml", "the search space"), ("events.jsonl", "stop decisions, rollbacks, resumes"),
             ("checkpoints/last.pt", "the last epoch's state")]
RETRAIN_FILES = [("final.pt", "the trained weights (nasseg evaluate / predict / export)"),
                 ("result.json", "final metrics"), ("config.yaml", "the training job"),
                 ("log.csv", "training log"), ("eval.csv", "validation passes")]


@dataclass
class Picture:
    """A figure file: a PNG (embedded) or an SVG (inlined, its ids prefixed with ``name``);
    ``path`` None with ``missing`` saying why when it could not be drawn."""
    name: str
    path: Path | None
    caption: str = ""
    css: str = ""
    missing: str = ""


@dataclass
class Table:
    head: Sequence[str]
    rows: Sequence[Sequence[Any]]
    left: Sequence[int] = ()  # left-aligned columns
    classes: Sequence[str] = ()  # a CSS class per row
    wrap_head: bool = False  # header names may break after underscores


def _draw(make: Callable[[Path], Path], name: str, folder: Path, caption: str = "", css: str = "") -> Picture:
    """Draw a figure into ``folder``; an input it cannot draw from becomes a note, not an error."""
    try:
        return Picture(name, make(folder), caption, css)
    except NassegError as exc:
        return Picture(name, None, caption, css, missing=str(exc))


def _size_text(value: Any) -> str:
    return "x".join(map(str, value)) if value else "as stored"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 \
        else f"{seconds / 3600:.2f} h"


# --- header, configuration, early stopping --------------------------------------------------------

def _describe_data(data: dict[str, Any]) -> str:
    where = f" ({data['root']})" if data.get("root") else ""
    crop = f", random {_size_text(data['crop'])} crops" if data.get("crop") else ""
    limit = f", first {data['limit']} training images" if data.get("limit") else ""
    return (f"{data.get('dataset', '?')}{where}, images {_size_text(data.get('size'))}{crop}{limit}, "
            f"batch {data.get('batch_size', '?')}")


def _header(run: Run) -> dict[str, Any]:
    cfg, res, m = run.config, run.result, run.metrics
    best = m.loc[m["val_miou"].idxmax()] if m["val_miou"].notna().any() else None
    algorithm = cfg.get("algorithm", res.get("algorithm", "?"))
    if algorithm == "darts":
        algorithm += f", {cfg.get('order', res.get('order', 'first'))} order"
    status = res.get("status", "running")
    header = {"space": cfg.get("space", res.get("space", "?")), "algorithm": algorithm,
              "status": status if res else "no result yet", "reason": res.get("reason", ""),
              "status_kind": status if status in ("stopped", "finished", "running") else "other",
              "epochs run": f"{run.last_epoch} of {cfg.get('epochs', '?')}",
              "returned epoch": f"{run.arch_epoch}" + ("" if res else " (latest so far)"),
              "data": _describe_data(cfg.get("data") or {}), "final val mIoU": float(m["val_miou"].iloc[-1]),
              "best val mIoU": "–" if best is None else f"{best['val_miou']:.4g} (epoch {int(best['epoch'])})"}
    if "seconds" in res:
        header["search time"] = (f"{res['seconds'] / 3600:.2f} h, {100 * res.get('eigen_share', 0):.0f}% of it on "
                                 "Hessian eigenvalues")
    if run.retrains:
        newest = run.retrains[0]
        header["retrained"] = {"miou": newest.result.get("miou"), "after": f" ({newest.result.get('iterations', '?')} "
                                                                             f"iterations, {newest.path.name})"}
    return header


def describe_rule(rule: Any) -> str:
    """What a stop rule (``nasseg.search.stop_rules.make_rule``) does, in one sentence."""
    base = rule.rule if isinstance(rule, DartsADA) else rule
    if isinstance(base, PaperRule):
        k = base.window
        text = (f"paper rule (Zela et al. 2020): stop at epoch i when λ̄(i−{k}) / λ̄(i) < {base.ratio}, where "
                f"λ̄(i) is the mean dominant eigenvalue of the {k} epochs i−{k - 1}..i; return the "
                f"architecture of epoch i−{k}")
    elif isinstance(base, ReleasedCodeRule):
        text = (f"released RobustDARTS code rule: local average of the last {base.window} eigenvalues; stop when it "
                f"grows by more than ×{base.factor} over {base.lag} epochs (checks from return epoch "
                f"{base.start_epoch} on)")
    elif isinstance(base, NeverStop):
        return "none: early stopping is off (rule: none)"
    else:
        text = type(base).__name__
    if isinstance(rule, DartsADA):
        text += (f"; with DARTS-ADA: on the signal roll back and multiply the weight decay by {rule.factor} "
                 f"(bounds: max_wd {rule.max_wd}, max_rollbacks {rule.max_rollbacks})")
    return text


def _stop_numbers(run: Run) -> list[tuple[str, str]]:
    """λ̄ values, their ratio and the epochs at the paper rule's stop."""
    windows = plots.rule_windows(run.rule, run.metrics, run.result)
    if not windows:
        return []
    (b0, b1, before), (n0, n1, now) = windows
    return [(f"λ̄({b1}): mean eigenvalue of epochs {b0}–{b1}", f"{before:.4g}"),
            (f"λ̄({n1}): mean eigenvalue of epochs {n0}–{n1}", f"{now:.4g}"),
            (f"ratio λ̄({b1}) / λ̄({n1})", f"{before / now:.3f} < {run.rule.ratio} (threshold)"),
            ("stop epoch", str(run.result["epochs_run"])), ("returned epoch", str(run.result["arch_epoch"]))]


def _bound_text(metrics: Any, epoch: int, value: float) -> str:
    """The recorded error bound of an epoch's eigenvalue (the Ritz residual r: an eigenvalue of the
    Hessian lies within r of the value), absolute and relative; '–' for runs that did not record it."""
    bound = float(metrics.loc[metrics["epoch"] == epoch, "eigen_bound"].iloc[-1])
    if not math.isfinite(bound):
        return "–"
    return f"± {bound:.2g}" + (f" ({100 * bound / abs(value):.2g} %)" if value else "")


def _stop(run: Run) -> dict[str, Any]:
    # the rule's decision after every measured epoch, as the search loop took it; none for DARTS-ADA,
    # whose rollbacks rewrite the history
    epochs, values = ([], []) if isinstance(run.rule, DartsADA) else plots.measured_eigenvalues(run.metrics)
    decisions = [run.rule.check(values[:j + 1], epochs[0]) for j in range(len(values))]
    rows = [(epoch, value, _bound_text(run.metrics, epoch, value), "stop" if d.stop else "continue", d.reason)
            for epoch, value, d in zip(epochs, values, decisions)]
    events = [(ev.get("time", ""), ev.get("event", ""),
               json.dumps({k: v for k, v in ev.items() if k not in ("time", "event")})) for ev in run.events]
    return {"rule": describe_rule(run.rule), "last_check": rows[-1][4] if rows else "",
            "numbers": _stop_numbers(run),
            "trace": Table(("epoch", "eigenvalue", "error bound", "decision", "why"), rows, left=(3, 4),
                           classes=[row[3] for row in rows]) if rows else None,
            "events": Table(("time", "event", "details"), events, left=(0, 1, 2)) if events else None}


# --- curves, architecture, size -----------------------------------------------------------------------

def _curves(run: Run, space: Any, folder: Path) -> list[Picture]:
    """Every curve that applies to this run."""
    windows = (" (purple bars: the paper rule's two λ̄ windows at the stop)"
               if plots.rule_windows(run.rule, run.metrics, run.result) else "")
    unmeasured = "" if run.metrics["eigenvalue"].notna().any() else " No eigenvalue was measured in this run."
    items: list[tuple[str, str, Callable[[Path, Path], Path]]] = [
        ("training", "Train/val loss and mIoU per epoch (grey: weights-only warm-up; dashed: stop epoch, "
                     "dotted: returned epoch).", plots.plot_training_curves),
        ("eigenvalue", f"Dominant Hessian eigenvalue of the architecture loss per epoch (error bars: the Lanczos "
                       f"Ritz residual, an eigenvalue lies within it){windows} and the share of "
                       f"skip / parameter-free ops among the kept edges of the normal cell.{unmeasured}",
         plots.plot_eigenvalue_and_ops)]
    for kind in space.cell_types if space else ("normal",):
        items.append((f"ops_{kind}", f"Ops of the decoded {kind} cell per epoch (skip_connect hatched, at the bottom).",
                      lambda r, o, k=kind: plots.plot_op_share(r, o, k)))
    for kind in space.cell_types if space else ():
        items.append((f"alphas_{kind}", f"softmax(alpha) per candidate edge of the {kind} cell over epochs.",
                      lambda r, o, k=kind: plots.plot_alpha_evolution(r, o, k)))
    if space is not None and space.network.type == "lattice":
        items.append(("betas", "softmax(beta) of the transitions leaving each state of the decoded path, over "
                               "epochs (thick: the transition the path takes).", plots.plot_beta_evolution))
    return [_draw(lambda f, p=plot, n=name: p(run.path, f / f"{n}.png"), name, folder, caption)
            for name, caption, plot in items]


def _arch(run: Run, space: Any, folder: Path) -> dict[str, Any]:
    arch = decode_run(run.path)
    epoch = arch.meta.get("epoch", run.arch_epoch)

    def svg(graph: Any, name: str, caption: str = "", css: str = "") -> Picture:
        return Picture(name, draw.render(graph, folder / f"{name}.svg"), caption, css)

    pictures = [svg(draw.draw_arch(arch), "cells", "Decoded cells (DARTS-paper style)"
                    + (" and the network-level path." if arch.path else "."))]
    payload = RunDir(run.path).read_arch_weights(epoch) if run.file("alphas", f"epoch_{epoch:03d}.json").is_file() \
        else None
    if space is not None and space.network.type == "lattice" and payload and arch.path:
        graph = draw.draw_lattice(space, payload.get("betas_raw"), arch.path,
                                  title=f"lattice: softmax(beta) at epoch {epoch}, decoded path {list(arch.path)} "
                                        "in red")
        pictures.append(svg(graph, "lattice", "Transitions drawn by softmax(beta); the decoded path in red."))
    pictures.append(svg(draw.draw_network(arch), "network", css="tall", caption=(
        "The retrain network nasseg.models.build_from_arch makes of it, with its defaults "
        + ("(Auto-DeepLab, F=20)." if arch.path else "(DARTS chain, C=32, 12 cells)."))))
    try:
        space_cells = [(f"search-space {kind} cell with softmax(alpha) at epoch {epoch}",
                        svg(draw.draw_space_cell(space, kind, payload["alphas_raw"]), f"space_{kind}"))
                       for kind in (space.cell_types if space is not None and payload else ())]
    except NassegError as exc:  # alphas that do not fit the run's space: the file that holds them
        raise NassegError(f"{run.file('alphas', f'epoch_{epoch:03d}.json')}: {exc}") from None
    source = "arch.yaml" if run.file("arch.yaml").is_file() else f"decoded from the alphas of epoch {epoch}"
    return {"name": arch.name, "source": source, "epoch": epoch, "pictures": pictures, "space_cells": space_cells,
            "spec": arch}


def _num_classes(run: Run, space: Any) -> int:
    """The job's dataset decides the classes (as in the search); the space's default otherwise."""
    data = run.config.get("data") or {}
    name = data.get("dataset", "camvid_demo")
    try:
        spec = f"{name}:{data['root']}" if data.get("root") and name != "camvid_demo" else name
        return dataset_info(spec).num_classes
    except NassegError:
        return space.network.classes if space is not None and space.network.classes else 19


def _size(run: Run, space: Any, arch: Any) -> dict[str, Any]:
    """Parameters and multiply-adds of ``build_from_arch(arch)`` (its defaults), on the meta device."""
    from nasseg.shell.runner.trainable import model_cost

    data = run.config.get("data") or {}
    search_size = data.get("crop") or data.get("size")
    sizes = [(512, 512)] + ([tuple(search_size)] if search_size and tuple(search_size) != (512, 512) else [])
    classes = _num_classes(run, space)
    costs = [model_cost(arch, {}, classes, size) for size in sizes]
    defaults = "Auto-DeepLab network, F=20" if arch.path else "DARTS segmentation chain, C=32, 12 cells"
    return {"note": f"nasseg.models.build(arch.yaml, {classes} classes) with build_from_arch's defaults ({defaults}; "
                    "not the smaller supernet of the search), counted on the meta device; multiply-adds of one "
                    f"forward pass of a 1×3×H×W input at 512x512 and at the search's "
                    f"{'crop' if data.get('crop') else 'input size'}.",
            "table": Table(("input (HxW)", "parameters", "multiply-adds"),
                           [(f"{h}x{w}", f"{params / 1e6:.2f} M", f"{macs / 1e9:.2f} G")
                            for (h, w), (params, macs) in zip(sizes, costs)])}


# --- retraining, metrics, files -----------------------------------------------------------------------

def _retrain(run: Run, retrain: Retrain, folder: Path, index: int) -> dict[str, Any]:
    cfg, res = retrain.config, retrain.result
    data, optim = cfg.get("data") or {}, cfg.get("optim") or {}
    which = (f"arch/{retrain.arch_file.name} (the architecture of epoch {retrain.epoch})" if retrain.epoch is not None
             else f"arch.yaml (the returned architecture, epoch {run.arch_epoch})")
    args = ", ".join(f"{k}={v}" for k, v in (cfg.get("model_args") or {}).items())
    evaluated = res.get("settings") or {}
    scales = ",".join(map(str, evaluated.get("scales") or [1.0]))
    classes = res.get("classes") or []
    curves = _draw(lambda f: plot_retrain_curves(retrain.path, f / f"retrain_{index}.png",
                                                 f"{retrain.path.name}: retraining of {which.split(' (')[0]}"),
                   f"retrain_{index}", folder,
                   "Training loss per logged interval (log.csv) with the learning rate (dashed), and val mIoU / "
                   "pixel accuracy at each validation pass (eval.csv; the last one is the final evaluation).")
    return {
        "title": f"{retrain.path.name}: val mIoU {_pct(res.get('miou'))}",
        "settings": [
            ("run directory", str(retrain.path.resolve())),
            ("model", which + (f", model_args {args}" if args else "")),
            ("dataset", f"{res.get('dataset', data.get('dataset', '?'))}: train split {data.get('train_split', '?')}, "
                        f"val split {data.get('val_split', '?')}"),
            ("iterations", f"{res.get('iterations', '?')} of {cfg.get('iters', '?')}, batch "
                           f"{data.get('batch_size', '?')}, lr {optim.get('lr', '?')} (poly), "
                           f"seed {cfg.get('seed', '?')}"),
            ("image size / crop", f"{_size_text(res.get('size'))} / random {_size_text(res.get('crop'))} crops"),
            ("parameters", f"{res['params'] / 1e6:.2f} M ({res['params']:,})" if "params" in res else "–"),
            ("train time", _duration(res.get("train_seconds")))],
        "results": [
            ("val mIoU", _pct(res.get("miou"))), ("pixel accuracy", _pct(res.get("pixel_accuracy"))),
            ("mean class accuracy", _pct(res.get("mean_accuracy"))),
            ("evaluated on", f"{res.get('images', '?')} val images at {_size_text(evaluated.get('size'))}, scales "
                             f"{scales}{', flipped' if evaluated.get('flip') else ''}; "
                             f"{_duration(res.get('seconds'))}")],
        "classes": Table(("class", "IoU %", "accuracy %", "pixels"),
                         [(c["class"], _pct(c.get("iou")).removesuffix(" %"),
                           _pct(c.get("accuracy")).removesuffix(" %"),
                           f"{c.get('pixels', 0):,}") for c in classes], left=(0,)) if classes else None,
        "curves": curves,
        "files": [(retrain.path / name, name, what) for name, what in RETRAIN_FILES
                  if (retrain.path / name).is_file()]}


def retrain_hint(run: Run) -> dict[str, str]:
    """The ``nasseg train`` of the run's arch.yaml into ``<run_dir>/../retrain``, where the report looks."""
    def short(path: Path) -> str:
        path, here = path.resolve(), Path.cwd().resolve()
        return str(path.relative_to(here) if path.is_relative_to(here) else path)

    data = run.config.get("data") or {}
    dataset = str(data.get("dataset") or "camvid_demo")
    if data.get("root"):
        dataset += f":{data['root']}"
    return {"folder": str((run.path.parent / RETRAIN_DIR).resolve()),
            "command": f"nasseg train {shlex.quote(short(run.path / 'arch.yaml'))} --data {shlex.quote(dataset)} "
                       f"--iters 1000 --name {RETRAIN_DIR} --out {shlex.quote(short(run.path.parent))}"}


def _metrics(run: Run) -> Table:
    m, res = run.metrics, run.result
    stop = res.get("epochs_run") if res.get("status") == "stopped" else None
    classes = [" ".join(c for c, on in (("returned", e == res.get("arch_epoch")), ("stop", e == stop)) if on)
               for e in m["epoch"]]
    return Table(list(m.columns), [row.tolist() for _, row in m.iterrows()], classes=classes, wrap_head=True)


def _epoch_files(run: Run) -> list[tuple[str, str, list[tuple[Path, str]]]]:
    return [(folder, what, [(f, str(int(f.stem.split("_")[1]))) for f in files])
            for folder, what in (("arch", "per-epoch ArchSpecs"), ("alphas", "per-epoch alphas/betas"))
            if (files := sorted(run.file(folder).glob("epoch_*")))]


def collect_run(run: Run, folder: Path) -> dict[str, Any]:
    space = load_space(run.file("space.yaml")) if run.file("space.yaml").is_file() else None
    arch = _arch(run, space, folder)
    texts = [("config.yaml (the resolved job)", read_text(run.file("config.yaml"), "a job"))]
    if run.file("space.yaml").is_file():
        texts.append(("space.yaml (the search space)", read_text(run.file("space.yaml"), "a search space")))
    return {"run": run, "header": _header(run), "texts": texts, "stop": _stop(run),
            "curves": _curves(run, space, folder), "arch": arch, "size": _size(run, space, arch["spec"]),
            "retrains": [_retrain(run, r, folder, i) for i, r in enumerate(run.retrains)],
            "retrain_hint": retrain_hint(run),  # with no retraining: the command that makes one and where it goes
            "metrics": _metrics(run),
            "files": [(run.file(name), name, what) for name, what in RUN_FILES if run.file(name).is_file()],
            "epoch_files": _epoch_files(run)}  # (folder, what, (file, epoch) per epoch)


# --- experiments ---------------------------------------------------------------------------------------

def genotype_summary(arch: Any) -> str:
    """The normal (else first) cell as 'op←input, op←input' per node, plus the lattice path."""
    cell = arch.cells.get("normal") or next(iter(arch.cells.values()))
    edges = sorted(cell.edges(), key=lambda e: e[1])  # stable: each node's edges in their order
    text = " | ".join(", ".join(f"{op}←{source}" for source, _, op in group)
                      for _, group in itertools.groupby(edges, key=lambda e: e[1]))
    return text + (f"; path {'-'.join(map(str, arch.path))}" if arch.path else "")


def trial_row(run: Run) -> dict[str, Any]:
    m, res = run.metrics, run.result
    stop = m[m["epoch"] == res.get("epochs_run", run.last_epoch)]
    try:
        genotype = genotype_summary(decode_run(run.path))
    except NassegError as exc:
        genotype = f"({exc})"
    return {"seed": run.seed, "status": res.get("status", "running"), "epochs": run.last_epoch,
            "returned epoch": run.arch_epoch, "best val mIoU": float(m["val_miou"].max()),
            "final val mIoU": float(m["val_miou"].iloc[-1]),
            "eigenvalue at stop": float(stop["eigenvalue"].iloc[0]) if len(stop) else float("nan"),
            "genotype (normal cell)": genotype}


def collect_experiment(path: Path, runs: Sequence[Run], reports: Sequence[Path], folder: Path) -> dict[str, Any]:
    """The index page of an experiment: a row per trial (linking to its report ``reports[i]``) and
    the trials' curves side by side."""
    labels = [str(run.path.relative_to(path)) for run in runs]
    yaml_file = path / "experiment.yaml"
    return {"name": path.resolve().name, "path": path.resolve(),
            "trials": [(report, label, trial_row(run)) for run, label, report in zip(runs, labels, reports)],
            "figure": Picture("trials", plot_trials(runs, labels, folder / "trials.png"),
                              "Eigenvalue and val mIoU per epoch of every trial (dashed: stop epochs)."),
            "experiment_yaml": read_text(yaml_file, "an experiment") if yaml_file.is_file() else None,
            "study": None}  # a NAS study's section, filled in by nasseg.shell.report.study
