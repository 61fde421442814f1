"""``nasseg report``: one self-contained HTML page per search run, and an index per experiment.

Everything is embedded (plots as base64 PNG, graphviz drawings as inline SVG, CSS inline; no
scripts, no network), so a report can be mailed or opened anywhere; only the links to the run's
files (arch.yaml, checkpoints, ...) are relative paths, valid next to the run directory.

A run directory holds config.yaml and metrics.csv (see :mod:`nasseg.search.rundir`); any other
directory is an experiment whose trials are the run directories up to two levels below it.
A retraining of a run's decoded architecture (a ``nasseg train`` run directory whose job's
``model`` is the run's arch.yaml or arch/epoch_NNN.yaml, found next to the run, in it, or in
OUT/train) gets its own section: settings, final validation metrics, per-class IoU, curves.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import quote

import pandas as pd
import yaml

from nasseg.errors import NassegError
from nasseg.io import atomic_write_text
from nasseg.viz import plots

REPORT_FILE, INDEX_FILE = "report.html", "index.html"
SECTIONS = {"config": "Configuration", "stop": "Early stopping", "curves": "Curves",
            "arch": "Decoded architecture", "size": "Network size", "retrain": "Retraining and evaluation",
            "metrics": "Per-epoch metrics", "files": "Files"}
CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:0 auto;max-width:1280px;padding:0 24px 48px;
  color:#222;line-height:1.45}
h1{margin:24px 0 4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
nav a{margin-right:14px}.sub{color:#666;margin:0 0 12px}.note{color:#666;font-size:90%}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}
table.kv td:first-child{text-align:left;font-weight:bold;background:#fafafa}
tr.returned td{background:#e6f4e6}tr.stop td{background:#fbe3e3}tr.returned.stop td{background:#f3efd0}
.scroll{overflow-x:auto}pre{background:#f7f7f7;padding:10px;overflow-x:auto;font-size:12px}
details{margin:8px 0}summary{cursor:pointer;font-weight:bold}
.figure{margin:12px 0 24px}.figure img{max-width:100%;height:auto;border:1px solid #eee}
.figure svg{max-width:100%;height:auto}.tall svg{max-height:1400px;width:auto}
.caption{color:#555;font-size:90%;margin-top:4px}
.badge{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-size:90%}
.stopped{background:#c0392b}.finished{background:#27ae60}.running{background:#7f8c8d}.other{background:#8e44ad}
.decision{background:#fdf6e3;border-left:4px solid #e0a800;padding:8px 14px;margin:8px 0}
ul.files li{margin:3px 0}
.cols{display:flex;flex-wrap:wrap;gap:0 32px;align-items:flex-start}h3{margin:20px 0 6px}
"""


# --- reading a run ---------------------------------------------------------------------------------

def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / "config.yaml").is_file() and (Path(path) / "metrics.csv").is_file()


def find_trials(path: str | Path) -> list[Path]:
    """Run directories at most two levels below ``path`` (Ray Tune's _tune state excluded)."""
    path = Path(path)
    candidates = [*path.glob("*"), *path.glob("*/*")]
    return sorted(p for p in candidates if is_run_dir(p) and "_tune" not in p.relative_to(path).parts)


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    result: dict[str, Any]
    metrics: pd.DataFrame
    events: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.parent.name)

    @property
    def seed(self) -> int | None:
        if "seed" in self.result:
            return self.result["seed"]
        trial = self.path / "trial.json"
        if trial.is_file():
            return json.loads(trial.read_text()).get("seed")
        digits = self.path.name.removeprefix("seed")
        return int(digits) if digits.isdigit() else None

    @property
    def last_epoch(self) -> int:
        return int(self.metrics["epoch"].max())

    @property
    def arch_epoch(self) -> int:
        return int(self.result.get("arch_epoch", self.last_epoch))

    def file(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)


def load_run(path: str | Path) -> Run:
    """A run directory's config, result, metrics and events; a non-run is one NassegError line."""
    path = Path(path)
    if not path.is_dir():
        raise NassegError(f"{path}: no such directory")
    if not (path / "config.yaml").is_file():
        raise NassegError(f"{path}: not a search run directory (no config.yaml)")
    metrics = plots.load_metrics(path)
    if metrics.empty or "epoch" not in metrics:
        raise NassegError(f"{path}/metrics.csv: no epochs recorded")
    config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    events_file = path / "events.jsonl"
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()] \
        if events_file.is_file() else []
    return Run(path, config, plots.load_result(path), metrics, events)


# --- html helpers ------------------------------------------------------------------------------------

def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, float):
        if value != value:
            return "–"
        return str(int(value)) if value.is_integer() and abs(value) < 1e6 else f"{value:.4g}"
    return str(value)


def _kv(rows: Iterable[tuple[str, Any]], raw: bool = False) -> str:
    cells = "".join(f"<tr><td>{_e(k)}</td><td class='l'>{v if raw else _e(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table class='kv'>{cells}</table>"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], left: Sequence[int] = (),
           classes: Sequence[str] | None = None, wrap_head: bool = False) -> str:
    """Escaped, formatted cells; columns in ``left`` left-aligned; ``classes`` per row (CSS);
    ``wrap_head``: header names may break after underscores (wide tables of snake_case columns)."""
    def cell(tag: str, i: int, value: Any) -> str:
        align = " class='l'" if i in left else ""
        text = _e(_fmt(value))
        return f"<{tag}{align}>{text.replace('_', '_<wbr>') if tag == 'th' and wrap_head else text}</{tag}>"

    header = "".join(cell("th", i, h) for i, h in enumerate(head))
    body = "".join(f"<tr class='{c}'>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>"
                   for c, row in zip(classes or [""] * len(rows), rows))
    return f"<div class='scroll'><table><tr>{header}</tr>{body}</table></div>"


def _section(key: str, body: str) -> str:
    return f"<section id='{key}'><h2>{SECTIONS[key]}</h2>\n{body}\n</section>"


def _details(summary: str, body: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{_e(summary)}</summary>{body}</details>"


def _figure(body: str, caption: str = "", css: str = "") -> str:
    return f"<div class='figure {css}'>{body}" + (f"<div class='caption'>{caption}</div>" if caption else "") + "</div>"


def _png(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{data}'>"


def _svg(path: Path, prefix: str) -> str:
    """Inline SVG from graphviz, ids prefixed so several drawings can share one page."""
    text = path.read_text()
    text = text[text.index("<svg"):]
    return re.sub(r'\bid="', f'id="{prefix}_', text)


def _href(target: Path, base: Path) -> str:
    return quote(os.path.relpath(target.resolve(), base.resolve()))


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head>"
            f"<body>\n{body}\n<p class='note'>written by nasseg report, {time.strftime('%Y-%m-%d %H:%M')}</p>"
            "</body></html>\n")


def _status(result: dict[str, Any]) -> str:
    status = result.get("status", "running")
    kind = status if status in ("stopped", "finished") else "running" if status == "running" else "other"
    return f"<span class='badge {kind}'>{_e(status if result else 'no result yet')}</span>"


# --- sections ----------------------------------------------------------------------------------------

def _header(run: Run, retrains: Sequence[Any] = ()) -> str:
    cfg, res, m = run.config, run.result, run.metrics
    data = cfg.get("data") or {}
    best = m.loc[m["val_miou"].idxmax()] if m["val_miou"].notna().any() else None
    algorithm = cfg.get("algorithm", res.get("algorithm", "?"))
    if algorithm == "darts":
        algorithm += f", {cfg.get('order', res.get('order', 'first'))} order"
    rows: list[tuple[str, Any]] = [
        ("job", _e(run.name)), ("seed", _e(_fmt(run.seed))),
        ("space", _e(cfg.get("space", res.get("space", "?")))), ("algorithm", _e(algorithm)),
        ("status", _status(res) + (f" &nbsp;{_e(res['reason'])}" if res.get("reason") else "")),
        ("epochs run", _e(f"{run.last_epoch} of {cfg.get('epochs', '?')}")),
        ("returned epoch", _e(f"{run.arch_epoch}" + ("" if res else " (latest so far)"))),
        ("data", _e(_describe_data(data))),
        ("final val mIoU", _e(_fmt(float(m["val_miou"].iloc[-1])))),
        ("best val mIoU", _e("–" if best is None else f"{best['val_miou']:.4g} (epoch {int(best['epoch'])})")),
    ]
    if "seconds" in res:
        rows.append(("search time", _e(f"{res['seconds'] / 3600:.2f} h, {100 * res.get('eigen_share', 0):.0f}% "
                                       "of it on Hessian eigenvalues")))
    if retrains:
        newest = retrains[0].result
        rows.append(("retrained val mIoU", f"<a href='#retrain'>{_e(_fmt(newest.get('miou')))}</a> ("
                     f"{_e(newest.get('iterations', '?'))} iterations, {_e(retrains[0].path.name)})"))
    nav = "".join(f"<a href='#{k}'>{v}</a>" for k, v in SECTIONS.items())
    return (f"<h1>{_e(run.name)} — seed {_e(_fmt(run.seed))}</h1><p class='sub'>{_e(run.path.resolve())}</p>"
            f"<nav>{nav}</nav>{_kv(rows, raw=True)}")


def _describe_data(data: dict[str, Any]) -> str:
    def size(value: Any) -> str:
        return "x".join(map(str, value)) if value else "as stored"

    where = f" ({data['root']})" if data.get("root") else ""
    crop = f", random {size(data['crop'])} crops" if data.get("crop") else ""
    limit = f", first {data['limit']} training images" if data.get("limit") else ""
    return (f"{data.get('dataset', '?')}{where}, images {size(data.get('size'))}{crop}{limit}, "
            f"batch {data.get('batch_size', '?')}")


def _config_section(run: Run) -> str:
    parts = [_details("config.yaml (the resolved job)", f"<pre>{_e(run.file('config.yaml').read_text())}</pre>")]
    if run.file("space.yaml").is_file():
        parts.append(_details("space.yaml (the search space)", f"<pre>{_e(run.file('space.yaml').read_text())}</pre>"))
    return _section("config", "".join(parts))


def describe_rule(early_stop: dict[str, Any] | None) -> str:
    """What the job's stop rule does, in one sentence."""
    from nasseg.search.stop_rules import DartsADA, NeverStop, PaperRule, ReleasedCodeRule, make_rule

    rule = make_rule(early_stop)
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


def stop_trace(run: Run) -> list[tuple[int, float, str, str]]:
    """The rule's decision after every measured epoch (epoch, eigenvalue, decision, reason), as
    the search loop took it; empty for DARTS-ADA, whose rollbacks rewrite the history."""
    from nasseg.search.stop_rules import DartsADA, make_rule

    rule = make_rule(run.config.get("early_stop"))
    if isinstance(rule, DartsADA):
        return []
    epochs, values = plots.measured_eigenvalues(run.metrics)
    trace = []
    for j, (epoch, value) in enumerate(zip(epochs, values)):
        decision = rule.check(values[:j + 1], epochs[0])
        trace.append((epoch, value, "stop" if decision.stop else "continue", decision.reason))
    return trace


def _stop_numbers(run: Run) -> list[tuple[str, Any]]:
    """λ̄ values, their ratio and the epochs at the paper rule's stop."""
    windows = plots.paper_windows(run.path)
    if not windows:
        return []
    (b0, b1, before), (n0, n1, now) = windows
    ratio = (run.config.get("early_stop") or {}).get("ratio", 0.75)
    return [(f"λ̄({b1}): mean eigenvalue of epochs {b0}–{b1}", f"{before:.4g}"),
            (f"λ̄({n1}): mean eigenvalue of epochs {n0}–{n1}", f"{now:.4g}"),
            (f"ratio λ̄({b1}) / λ̄({n1})", f"{before / now:.3f} < {ratio} (threshold)"),
            ("stop epoch", str(run.result["epochs_run"])), ("returned epoch", str(run.result["arch_epoch"]))]


def _stop_section(run: Run) -> str:
    res, early = run.result, run.config.get("early_stop")
    status = res.get("status")
    trace = stop_trace(run)
    if status == "stopped":
        verdict = (f"The rule <b>stopped</b> the search at epoch <b>{res['epochs_run']}</b> and returned the "
                   f"architecture of epoch <b>{res['arch_epoch']}</b>.<br>Recorded reason: {_e(res.get('reason', ''))}")
    elif status == "finished":
        verdict = (f"The search <b>finished without stopping</b>: it ran all {res['epochs_run']} epochs and returned "
                   f"the architecture of the last epoch ({res['arch_epoch']}).")
        if trace:
            verdict += f"<br>The rule at the last epoch: {_e(trace[-1][3])}"
    elif status:
        verdict = f"Status <b>{_e(status)}</b>: {_e(res.get('reason', ''))}"
    else:
        verdict = (f"No result.json: the search is still running or was interrupted after epoch {run.last_epoch}; "
                   "no stop decision yet." + (f"<br>The rule at that epoch: {_e(trace[-1][3])}" if trace else ""))
    body = [f"<p><b>Rule:</b> {_e(describe_rule(early))}</p>", f"<div class='decision'>{verdict}</div>"]
    numbers = _stop_numbers(run)
    if numbers:
        body.append(_kv(numbers))
    if trace:
        body.append(_details("the rule's check after every epoch",
                             _table(("epoch", "eigenvalue", "decision", "why"), trace, left=(2, 3),
                                    classes=[t[2] for t in trace])))
    if run.events:
        rows = [(ev.get("time", ""), ev.get("event", ""),
                 json.dumps({k: v for k, v in ev.items() if k not in ("time", "event")})) for ev in run.events]
        count = f"{len(rows)} event{'s' * (len(rows) != 1)}"
        body.append(_details(f"events.jsonl ({count}: stops, rollbacks, divergence, resumes)",
                             _table(("time", "event", "details"), rows, left=(0, 1, 2)), open_=True))
    return _section("stop", "".join(body))


def _space(run: Run):
    from nasseg.space import load

    return load(run.file("space.yaml")) if run.file("space.yaml").is_file() else None


def _eigen_caption(run: Run) -> str:
    windows = " (purple bars: the paper rule's two λ̄ windows at the stop)" if plots.paper_windows(run.path) else ""
    none = "" if run.metrics["eigenvalue"].notna().any() else " No eigenvalue was measured in this run."
    return (f"Dominant Hessian eigenvalue of the architecture loss per epoch{windows} and the share of skip / "
            f"parameter-free ops among the kept edges of the normal cell.{none}")


def _plots(run: Run, space: Any) -> list[tuple[str, str, Callable[[Path, Path], Path]]]:
    """(name, caption, plot) for every curve that applies to this run."""
    items: list[tuple[str, str, Callable[[Path, Path], Path]]] = [
        ("training", "Train/val loss and mIoU per epoch (grey: weights-only warm-up; dashed: stop epoch, "
                     "dotted: returned epoch).", plots.plot_training_curves),
        ("eigenvalue", _eigen_caption(run), plots.plot_eigenvalue_and_ops)]
    for kind in space.cell_types if space else ("normal",):
        items.append((f"ops_{kind}", f"Ops of the decoded {kind} cell per epoch (skip_connect hatched, at the bottom).",
                      lambda r, o, k=kind: plots.plot_op_share(r, o, k)))
    for kind in space.cell_types if space else ():
        items.append((f"alphas_{kind}", f"softmax(alpha) per candidate edge of the {kind} cell over epochs.",
                      lambda r, o, k=kind: plots.plot_alpha_evolution(r, o, k)))
    if space is not None and space.network.type == "lattice":
        items.append(("betas", "softmax(beta) of the transitions leaving each state of the decoded path, over "
                               "epochs (thick: the transition the path takes).", plots.plot_beta_evolution))
    return items


def _curves_section(run: Run, space: Any, tmp: Path) -> str:
    parts = []
    for name, caption, plot in _plots(run, space):
        try:
            parts.append(_figure(_png(plot(run.path, tmp / f"{name}.png"), name), _e(caption)))
        except NassegError as exc:
            parts.append(f"<p class='note'>{_e(name)}: not available ({_e(exc)})</p>")
    return _section("curves", "".join(parts))


def _arch_section(run: Run, space: Any, tmp: Path) -> str:
    from nasseg.search import decode_run
    from nasseg.search.rundir import RunDir
    from nasseg.viz.draw import draw_arch, draw_lattice, draw_network, draw_space_cell, render

    arch = decode_run(run.path)
    epoch = arch.meta.get("epoch", run.arch_epoch)
    source = "arch.yaml" if run.file("arch.yaml").is_file() else f"decoded from the alphas of epoch {epoch}"

    def svg(graph: Any, name: str) -> str:
        return _svg(render(graph, tmp / f"{name}.svg"), name)

    parts = [f"<p>The answer: <b>{_e(arch.name)}</b> ({_e(source)}, epoch {epoch}).</p>",
             _figure(svg(draw_arch(arch), "cells"), "Decoded cells (DARTS-paper style)" +
                     (" and the network-level path." if arch.path else "."))]
    recorded = run.file("alphas", f"epoch_{epoch:03d}.json").is_file()
    payload = RunDir(run.path).read_arch_weights(epoch) if recorded else None
    if space is not None and space.network.type == "lattice" and payload and arch.path:
        graph = draw_lattice(space, payload.get("betas_raw"), arch.path,
                             title=f"lattice: softmax(beta) at epoch {epoch}, decoded path {list(arch.path)} in red")
        parts.append(_figure(svg(graph, "lattice"), "Transitions drawn by softmax(beta); the decoded path in red."))
    parts.append(_figure(svg(draw_network(arch), "network"), css="tall", caption=
                         "The retrain network nasseg.models.build_from_arch makes of it, with its defaults "
                         + ("(Auto-DeepLab, F=20)." if arch.path else "(DARTS chain, C=32, 12 cells).")))
    if space is not None and payload:
        for kind in space.cell_types:
            graph = draw_space_cell(space, kind, payload["alphas_raw"])
            parts.append(_details(f"search-space {kind} cell with softmax(alpha) at epoch {epoch}",
                                  _figure(svg(graph, f"space_{kind}"))))
    return _section("arch", "".join(parts))


def _num_classes(run: Run, space: Any) -> int:
    """The job's dataset decides the classes (as in the search); the space's default otherwise."""
    from nasseg.data.registry import dataset_info

    data = run.config.get("data") or {}
    name = data.get("dataset", "camvid_demo")
    try:
        spec = f"{name}:{data['root']}" if data.get("root") and name != "camvid_demo" else name
        return dataset_info(spec).num_classes
    except NassegError:
        return space.network.classes if space is not None and space.network.classes else 19


def network_size(arch: Any, classes: int, sizes: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    """Parameters and multiply-adds of ``build_from_arch(arch)`` (its defaults), on the meta device."""
    import torch

    from nasseg.complexity import count_macs, count_params, meta_device
    from nasseg.models import build

    rows = []
    with meta_device():
        model = build(arch, classes).eval()
        for h, w in sizes:
            x = torch.zeros(1, 3, h, w)
            rows.append({"input": f"{h}x{w}", "params": count_params(model.parameters()),
                         "macs": count_macs(lambda: model(x))})
    return rows


def _size_section(run: Run, space: Any) -> str:
    from nasseg.search import decode_run

    arch = decode_run(run.path)
    data = run.config.get("data") or {}
    search_size = data.get("crop") or data.get("size")
    sizes = [(512, 512)] + ([tuple(search_size)] if search_size and tuple(search_size) != (512, 512) else [])
    classes = _num_classes(run, space)
    rows = network_size(arch, classes, sizes)
    table = _table(("input (HxW)", "parameters", "multiply-adds"),
                   [(r["input"], f"{r['params'] / 1e6:.2f} M", f"{r['macs'] / 1e9:.2f} G") for r in rows])
    defaults = "Auto-DeepLab network, F=20" if arch.path else "DARTS segmentation chain, C=32, 12 cells"
    note = (f"nasseg.models.build(arch.yaml, {classes} classes) with build_from_arch's defaults ({defaults}; not the "
            "smaller supernet of the search), counted on the meta device; multiply-adds of one forward pass of a "
            f"1×3×H×W input at 512x512 and at the search's {'crop' if data.get('crop') else 'input size'}.")
    return _section("size", f"<p class='note'>{_e(note)}</p>{table}")


# --- the retraining of the decoded architecture ------------------------------------------------------

@dataclass
class Retrain:
    """A finished training run (nasseg.train) of this search's arch.yaml or arch/epoch_NNN.yaml."""
    path: Path
    config: dict[str, Any]
    result: dict[str, Any]
    arch_file: Path  # the search run's file it retrained

    @property
    def epoch(self) -> int | None:
        """The search epoch of arch/epoch_NNN.yaml; None for arch.yaml (the returned epoch)."""
        stem = self.arch_file.stem
        return int(stem.split("_")[1]) if stem.startswith("epoch_") else None


def _train_run(path: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(config, result) of a finished training run directory, else None (never raises)."""
    if not ((path / "result.json").is_file() and (path / "config.yaml").is_file()):
        return None
    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
        result = json.loads((path / "result.json").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not (isinstance(config, dict) and isinstance(config.get("model"), str) and isinstance(result, dict)):
        return None
    return config, result


def _model_file(model: str, train_dir: Path) -> list[Path]:
    """Where a training job's ``model`` path can point: itself when absolute; else relative to the
    working directory or to any folder above the training run (the directory it was started in)."""
    path = Path(model)
    if path.is_absolute():
        return [path]
    return [Path.cwd() / path, *(folder / path for folder in train_dir.resolve().parents)]


def find_retrains(run: Run) -> list[Retrain]:
    """Finished training runs of this run's arch.yaml (or arch/epoch_NNN.yaml), newest first: the
    run's siblings (OUT/<job>/retrain from ``nasseg demo``), its children, and OUT/train/* (``nasseg
    train``'s default ``--out runs/train`` for a search in runs/<job>/seed<N>)."""
    ours = {(run.path / "arch.yaml").resolve(), *(f.resolve() for f in run.path.glob("arch/epoch_*.yaml"))}
    folders = [run.path.parent, run.path, run.path.parent.parent / "train"]
    seen, found = set(), []
    for folder in folders:
        for candidate in sorted(folder.iterdir()) if folder.is_dir() else []:
            key = candidate.resolve()
            if key in seen or key == run.path.resolve() or not candidate.is_dir():
                continue
            seen.add(key)
            loaded = _train_run(candidate)
            if loaded is None or not loaded[0]["model"].endswith((".yaml", ".yml")):
                continue
            target = next((f.resolve() for f in _model_file(loaded[0]["model"], candidate)
                           if f.is_file() and f.resolve() in ours), None)
            if target is not None:
                found.append(Retrain(candidate, loaded[0], loaded[1], target))
    return sorted(found, key=lambda r: (r.path / "result.json").stat().st_mtime, reverse=True)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return pd.DataFrame()


def plot_retrain_curves(train_dir: str | Path, output: str | Path, title: str | None = None) -> Path:
    """Training loss (and learning rate) per iteration from log.csv; val mIoU and pixel accuracy per
    validation pass from eval.csv, when it has rows."""
    train_dir = Path(train_dir)
    log, evals = _read_csv(train_dir / "log.csv"), _read_csv(train_dir / "eval.csv")
    if "loss" not in log or log.empty:
        raise NassegError(f"{train_dir}/log.csv: no training iterations logged")
    has_eval = "miou" in evals and not evals.empty
    fig, axes = plots.plt.subplots(1, 2 if has_eval else 1, figsize=(10 if has_eval else 5.5, 3.4),
                                   layout="constrained", squeeze=False)
    loss = axes[0][0]
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
    if has_eval:
        miou = axes[0][1]
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
    return plots._save(fig, output)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 \
        else f"{seconds / 3600:.2f} h"


def _size_text(value: Any) -> str:
    return "x".join(map(str, value)) if value else "as stored"


def _retrain_block(run: Run, retrain: Retrain, base: Path, tmp: Path, index: int) -> str:
    cfg, res = retrain.config, retrain.result
    data, optim = cfg.get("data") or {}, cfg.get("optim") or {}

    def link(path: Path, text: str) -> str:
        return f"<a href='{_href(path, base)}'>{_e(text)}</a>"

    which = (f"arch/{retrain.arch_file.name} (the architecture of epoch {retrain.epoch})" if retrain.epoch is not None
             else f"arch.yaml (the returned architecture, epoch {run.arch_epoch})")
    args = ", ".join(f"{k}={v}" for k, v in (cfg.get("model_args") or {}).items())
    settings = _kv([
        ("run directory", _e(retrain.path.resolve())),
        ("model", _e(which + (f", model_args {args}" if args else ""))),
        ("dataset", _e(f"{res.get('dataset', data.get('dataset', '?'))}: train split {data.get('train_split', '?')}"
                       f", val split {data.get('val_split', '?')}")),
        ("iterations", _e(f"{res.get('iterations', '?')} of {cfg.get('iters', '?')}, batch "
                          f"{data.get('batch_size', '?')}, lr {optim.get('lr', '?')} (poly), "
                          f"seed {cfg.get('seed', '?')}")),
        ("image size / crop", _e(f"{_size_text(res.get('size'))} / random {_size_text(res.get('crop'))} crops")),
        ("parameters", _e(f"{res['params'] / 1e6:.2f} M ({res['params']:,})" if "params" in res else "–")),
        ("train time", _e(_duration(res.get("train_seconds")))),
    ], raw=True)
    settings_eval = res.get("settings") or {}
    scales = ",".join(map(str, settings_eval.get("scales") or [1.0]))
    results = _kv([
        ("val mIoU", f"<b>{_e(_pct(res.get('miou')))}</b>"),
        ("pixel accuracy", _e(_pct(res.get("pixel_accuracy")))),
        ("mean class accuracy", _e(_pct(res.get("mean_accuracy")))),
        ("evaluated on", _e(f"{res.get('images', '?')} val images at {_size_text(settings_eval.get('size'))}, scales "
                            f"{scales}{', flipped' if settings_eval.get('flip') else ''}; "
                            f"{_duration(res.get('seconds'))}")),
    ], raw=True)
    classes = res.get("classes") or []
    table = _table(("class", "IoU %", "accuracy %", "pixels"),
                   [(c["class"], _pct(c.get("iou")).removesuffix(" %"), _pct(c.get("accuracy")).removesuffix(" %"),
                     f"{c.get('pixels', 0):,}") for c in classes], left=(0,)) if classes else ""
    try:
        figure = _figure(_png(plot_retrain_curves(retrain.path, tmp / f"retrain_{index}.png",
                                                  f"{retrain.path.name}: retraining of {which.split(' (')[0]}"),
                              f"retrain_{index}"),
                         _e("Training loss per logged interval (log.csv) with the learning rate (dashed), and val "
                            "mIoU / pixel accuracy at each validation pass (eval.csv; the last one is the final "
                            "evaluation)."))
    except NassegError as exc:
        figure = f"<p class='note'>training curves: not available ({_e(exc)})</p>"
    files = [(name, what) for name, what in (("final.pt", "the trained weights (nasseg evaluate / predict / export)"),
                                             ("result.json", "final metrics"), ("config.yaml", "the training job"),
                                             ("log.csv", "training log"), ("eval.csv", "validation passes"))
             if (retrain.path / name).is_file()]
    items = "".join(f"<li>{link(retrain.path / name, name)} — {_e(what)}</li>" for name, what in files)
    return (f"<div class='cols'><div>{settings}</div><div>{results}</div></div>{figure}"
            f"{_details(f'per-class IoU and accuracy ({len(classes)} classes)', table, open_=True) if table else ''}"
            f"<ul class='files'>{items}</ul>")


def _retrain_command(run: Run) -> str:
    def short(path: Path) -> str:
        try:
            return str(path.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(path.resolve())

    data = run.config.get("data") or {}
    dataset = str(data.get("dataset") or "camvid_demo")
    if data.get("root"):
        dataset += f":{data['root']}"
    return (f"nasseg train {shlex.quote(short(run.path / 'arch.yaml'))} --data {shlex.quote(dataset)} --iters 1000 "
            f"--out {shlex.quote(short(run.path.parent))}")


def _retrain_section(run: Run, retrains: Sequence[Retrain], base: Path, tmp: Path) -> str:
    if not retrains:
        body = ("<p>No retraining of this architecture yet: no finished training run (result.json) of "
                f"{_e((run.path / 'arch.yaml').name)} or arch/epoch_NNN.yaml was found next to this run "
                f"({_e(run.path.parent.resolve())}/*), in it, or in {_e(run.path.parent.parent.resolve())}/train/*. "
                "Retrain and evaluate it with</p>"
                f"<pre>{_e(_retrain_command(run))}</pre>"
                "<p class='note'>(--out next to the run, so that this report finds it; add --size HxW and --crop HxW "
                "for large images, see docs/training.md), then run nasseg report again.</p>")
        return _section("retrain", body)
    parts = []
    for i, retrain in enumerate(retrains):
        block = _retrain_block(run, retrain, base, tmp, i)
        if len(retrains) == 1:
            parts.append(block)
        else:
            title = f"{retrain.path.name}: val mIoU {_pct(retrain.result.get('miou'))}" + " (newest)" * (i == 0)
            parts.append(f"<div class='retrain'><h3>{_e(title)}</h3>{block}</div>" if i == 0
                         else _details(title, block))
    return _section("retrain", "".join(parts))


def _metrics_section(run: Run) -> str:
    m, res = run.metrics, run.result
    stop = res.get("epochs_run") if res.get("status") == "stopped" else None
    classes = [" ".join(c for c, on in (("returned", e == res.get("arch_epoch")), ("stop", e == stop)) if on)
               for e in m["epoch"]]
    return _section("metrics", "<p class='note'>metrics.csv; green: the returned epoch, red: the stop epoch.</p>"
                    + _table(list(m.columns), [row.tolist() for _, row in m.iterrows()], classes=classes,
                             wrap_head=True))


def _files_section(run: Run, base: Path) -> str:
    def link(path: Path, text: str) -> str:
        return f"<a href='{_href(path, base)}'>{_e(text)}</a>"

    names = [("arch.yaml", "the search's answer (ArchSpec)"), ("result.json", "status and summary"),
             ("metrics.csv", "per-epoch metrics"), ("config.yaml", "the resolved job"),
             ("space.yaml", "the search space"), ("events.jsonl", "stop decisions, rollbacks, resumes"),
             ("checkpoints/last.pt", "the last epoch's state")]
    items = [f"<li>{link(run.file(name), name)} — {_e(what)}</li>"
             for name, what in names if run.file(name).is_file()]
    for folder, what in (("arch", "per-epoch ArchSpecs"), ("alphas", "per-epoch alphas/betas")):
        files = sorted(run.file(folder).glob("epoch_*")) if run.file(folder).is_dir() else []
        if files:
            epochs = " ".join(link(f, str(int(f.stem.split("_")[1]))) for f in files)
            items.append(f"<li>{_e(folder)}/epoch_NNN — {_e(what)}: {epochs}</li>")
    return _section("files", f"<ul class='files'>{''.join(items)}</ul>")


def render_run_report(run: Run, base: Path) -> str:
    """The HTML page of one run; links are relative to ``base`` (the report's folder)."""
    space = _space(run)
    retrains = find_retrains(run)
    with tempfile.TemporaryDirectory(prefix="nasseg_report_") as tmp:
        body = [_header(run, retrains), _config_section(run), _stop_section(run),
                _curves_section(run, space, Path(tmp)), _arch_section(run, space, Path(tmp)),
                _size_section(run, space), _retrain_section(run, retrains, base, Path(tmp)), _metrics_section(run),
                _files_section(run, base)]
    return _page(f"{run.name} seed {_fmt(run.seed)}: search report", "\n".join(body))


# --- experiments ---------------------------------------------------------------------------------------

def genotype_summary(arch: Any) -> str:
    """The normal (else first) cell as 'op←input, op←input' per node, plus the lattice path."""
    cell = arch.cells.get("normal") or next(iter(arch.cells.values()))
    nodes: dict[int, list[str]] = {}
    for source, node, op in cell.edges():
        nodes.setdefault(node, []).append(f"{op}←{source}")
    text = " | ".join(", ".join(ops) for _, ops in sorted(nodes.items()))
    return text + (f"; path {'-'.join(map(str, arch.path))}" if arch.path else "")


def trial_row(run: Run) -> dict[str, Any]:
    from nasseg.search import decode_run

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


def plot_trials(runs: Sequence[Run], labels: Sequence[str], output: Path) -> Path:
    """Eigenvalue and val mIoU of every trial, one line per trial, stop epochs marked; the
    eigenvalue axis is logarithmic when trials differ by more than 10x (all positive)."""
    fig, (eig, miou) = plots.plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
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
    return plots._save(fig, output)


def write_experiment_report(path: Path, out: Path) -> Path:
    """A report per trial (next to the index, mirroring the trial folders) and the index page."""
    trials = find_trials(path)
    if not trials:
        raise NassegError(f"{path}: neither a search run directory (config.yaml and metrics.csv) nor an "
                          "experiment holding run directories")
    runs, rows = [], []
    for trial in trials:
        run = load_run(trial)
        report = out.parent / trial.relative_to(path) / REPORT_FILE
        atomic_write_text(report, render_run_report(run, report.parent))
        runs.append(run)
        rows.append((report, trial_row(run)))
    head = "<th class='l'>trial</th>" + "".join(f"<th>{_e(k)}</th>" for k in rows[0][1])
    body = "".join(f"<tr><td class='l'><a href='{_href(report, out.parent)}'>{_e(run.path.relative_to(path))}</a></td>"
                   + "".join(f"<td{' class=l' if k.startswith('genotype') else ''}>{_e(_fmt(v))}</td>"
                             for k, v in row.items()) + "</tr>"
                   for run, (report, row) in zip(runs, rows))
    parts = [f"<h1>{_e(path.resolve().name)}: {len(runs)} trial{'s' * (len(runs) != 1)}</h1>",
             f"<p class='sub'>{_e(path.resolve())}</p>", f"<table><tr>{head}</tr>{body}</table>"]
    with tempfile.TemporaryDirectory(prefix="nasseg_report_") as tmp:
        labels = [str(run.path.relative_to(path)) for run in runs]
        parts.append(_figure(_png(plot_trials(runs, labels, Path(tmp) / "trials.png"), "trials"),
                             "Eigenvalue and val mIoU per epoch of every trial (dashed: stop epochs)."))
    if (path / "experiment.yaml").is_file():
        parts.append(_details("experiment.yaml", f"<pre>{_e((path / 'experiment.yaml').read_text())}</pre>"))
    return atomic_write_text(out, _page(f"{path.resolve().name}: experiment report", "\n".join(parts)))


# --- entry points --------------------------------------------------------------------------------------

def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of a run directory (default ``<run_dir>/report.html``) or of an experiment
    (a report per trial plus ``<dir>/index.html``); returns the page written (the index)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise NassegError(f"{path}: no such directory")
    if out is not None and Path(out).suffix.lower() not in (".html", ".htm"):
        raise NassegError(f"{out}: a report is an HTML file; give a name ending in .html")
    if (path / "config.yaml").is_file() or (path / "metrics.csv").is_file():
        target = Path(out) if out else path / REPORT_FILE
        return atomic_write_text(target, render_run_report(load_run(path), target.parent))
    return write_experiment_report(path, Path(out) if out else path / INDEX_FILE)


__all__ = ["write_report", "load_run", "is_run_dir", "find_trials", "describe_rule", "stop_trace",
           "network_size", "find_retrains", "plot_retrain_curves", "SECTIONS", "genotype_summary"]
