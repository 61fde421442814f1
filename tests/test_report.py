"""`nasseg report`: the HTML page of a search run / experiment, and the search curves it embeds."""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import re
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest
import yaml

from nasseg.errors import NassegError
from nasseg.search.rundir import METRIC_COLUMNS
from nasseg.viz import plots
from nasseg.viz.draw import PATH_CLASS
from nasseg.shell.cli.report import add_report_parser
from nasseg.shell.report import SECTIONS, write_report
from nasseg.shell.report.runs import attach_retrains, find_trials, load_run

REPO = Path(__file__).resolve().parents[1]
SVG = "{http://www.w3.org/2000/svg}"
pytestmark = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz dot is not installed")


def svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(m) for m in re.findall(r"<svg.*?</svg>", page, flags=re.S)]


def svg_texts(svg: ET.Element) -> list[str]:
    return [html.unescape("".join(t.itertext())).strip() for t in svg.iter(f"{SVG}text")]


def links(page: str) -> list[str]:
    return [unquote(h) for h in re.findall(r"<a href='([^'#][^']*)'", page)]


def check_self_contained(page: str) -> None:
    assert "<script" not in page and "<link" not in page
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r"src='([^']*)'", page))
    assert not re.search(r"(href|src)=['\"]https?:", page)


def check_common(page: str, report: Path, run_dir: Path) -> None:
    """Every section; the decoded ops in the cells drawing; links resolving to the run's files."""
    for title in SECTIONS.values():
        assert f"<h2>{title}</h2>" in page
    check_self_contained(page)
    arch = yaml.safe_load((run_dir / "arch.yaml").read_text())
    drawn = Counter(svg_texts(svgs(page)[0]))  # the first drawing: the decoded cells
    for cell in arch["cells"].values():
        for op, count in Counter(op for edges in cell["nodes"].values() for op, _ in edges).items():
            assert drawn[op] >= count, op
    targets = {(report.parent / href).resolve() for href in links(page)}
    assert all(t.is_file() for t in targets)
    for name in ("arch.yaml", "metrics.csv", "checkpoints/last.pt", f"arch/epoch_{arch['meta']['epoch']:03d}.yaml"):
        assert (run_dir / name).resolve() in targets, name


# --- a tiny real DARTS run, stopped by the paper rule (conftest.darts_run) --------------------------------

def section(page: str, key: str) -> str:
    return page[page.index(f"<section id='{key}'>"):].split("</section>", 1)[0]


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment)))


def truncate(path: Path, keep: float = 0.5) -> None:
    text = path.read_text()
    path.write_text(text[:int(len(text) * keep)])


def replace(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new, 1))


@pytest.fixture(scope="module")
def darts_report(darts_run, tmp_path_factory) -> tuple[Path, Path, str]:
    """The report of a copy of the run whose job name holds markup (escaped, as every text)."""
    run = shutil.copytree(darts_run, tmp_path_factory.mktemp("darts_report") / "seed0")
    replace(run / "config.yaml", "name: tiny_darts", "name: tiny <i>darts</i> & co")
    report = write_report(run, run.parent / "darts.html")
    return run, report, report.read_text()


def test_darts_report_sections_cells_links(darts_report):
    run, report, page = darts_report
    check_common(page, report, run)
    assert page.count("<img ") == 6  # training, eigenvalue, 2 op shares, 2 alpha evolutions (no betas: chain)
    assert "<h1>tiny &lt;i&gt;darts&lt;/i&gt; &amp; co — seed 1</h1>" in page and "<i>" not in page


def test_darts_report_explains_the_stop(darts_report):
    run, _, page = darts_report
    eigenvalues = pd.read_csv(run / "metrics.csv").set_index("epoch")["eigenvalue"]
    before, now = eigenvalues[[1, 2]].mean(), eigenvalues[[3, 4]].mean()
    stop = section(page, "stop")
    text = text_of(stop)
    assert "stopped the search at epoch 4 and returned the architecture of epoch 2" in text
    assert f"λ̄(2): mean eigenvalue of epochs 1–2 {before:.4g}" in text
    assert f"λ̄(4): mean eigenvalue of epochs 3–4 {now:.4g}" in text
    assert f"{before / now:.3f} &lt; 0.75 (threshold)" in stop
    metrics = section(page, "metrics")
    assert metrics.count("<tr class='returned'>") == 1 and metrics.count("<tr class='stop'>") == 1


def test_darts_report_shows_the_eigenvalue_error_bounds(darts_report, tmp_path):
    """metrics.csv records the Ritz residual of every eigenvalue; the rule's trace table shows it, the
    plot draws it as error bars; a run written before the column existed still reports ('–')."""
    run, _, page = darts_report
    metrics = pd.read_csv(run / "metrics.csv")
    assert (metrics["eigen_bound"] >= 0).all() and metrics["eigen_bound"].notna().all()
    stop = section(page, "stop")
    assert "<th>error bound</th>" in stop
    first = metrics.iloc[0]
    assert f"± {first['eigen_bound']:.2g} ({100 * first['eigen_bound'] / abs(first['eigenvalue']):.2g} %)" in stop
    old = shutil.copytree(run, tmp_path / "seed0")
    metrics.drop(columns=["eigen_bound"]).to_csv(old / "metrics.csv", index=False)
    assert plots.load_metrics(old)["eigen_bound"].isna().all()
    plots.plot_eigenvalue_and_ops(old, tmp_path / "eigen.png")
    older = text_of(section(write_report(old, tmp_path / "old.html").read_text(), "stop"))
    assert "error bound" in older and "–" in older


# --- a tiny real lattice (Auto-DeepLab) search, as an experiment of two trials --------------------------

@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    from nasseg.search import Search, parse_job

    root = tmp_path_factory.mktemp("adl")
    space = yaml.safe_load((REPO / "search_spaces" / "autodeeplab.yaml").read_text())
    space["name"] = "tiny_lattice"
    space["cell"]["nodes"] = 3
    space["network"].update(F=2, layers=4)
    (root / "tiny_lattice.yaml").write_text(yaml.safe_dump(space))
    job = {"name": "tiny_adl", "space": str(root / "tiny_lattice.yaml"), "algorithm": "autodeeplab", "epochs": 2,
           "data": {"dataset": "camvid_demo", "size": [32, 32], "crop": [32, 32], "limit": 4, "batch_size": 2,
                    "val_batch_size": 8},
           "arch": {"lr": 0.3, "start_epoch": 1}, "hessian": {"every": 0}, "early_stop": {"rule": "none"},
           "device": "cpu"}
    seed0 = root / "exp" / "tiny_adl" / "seed0"
    Search(parse_job(job), 0, seed0, progress=False).run_search()
    seed1 = shutil.copytree(seed0, seed0.parent / "seed1")
    result = json.loads((seed1 / "result.json").read_text())
    (seed1 / "result.json").write_text(json.dumps({**result, "seed": 1}))
    write_report(root / "exp")
    return root / "exp"


def test_lattice_report(experiment):
    run = experiment / "tiny_adl" / "seed0"
    page = (run / "report.html").read_text()
    check_common(page, run / "report.html", run)
    assert "finished without stopping" in page and "none: early stopping is off" in page
    assert "alt='betas'" in page
    path = yaml.safe_load((run / "arch.yaml").read_text())["path"]
    lattice = next(s for s in svgs(page) if s.find(f"{SVG}g").get("id").startswith("lattice_"))
    marked = [g for g in lattice.iter(f"{SVG}g") if PATH_CLASS in g.get("class", "").split()]
    assert sum("node" in g.get("class") for g in marked) == len(path) + 1  # stem + a state per layer
    assert sum("edge" in g.get("class") for g in marked) == len(path)


def test_experiment_index_links_every_trial(experiment):
    index = experiment / "index.html"
    page = index.read_text()
    check_self_contained(page)
    reports = {(index.parent / href).resolve() for href in links(page)}
    assert reports == {(experiment / "tiny_adl" / s / "report.html").resolve() for s in ("seed0", "seed1")}
    rows = re.findall(r"<tr><td class='l'><a[^>]*>[^<]*</a></td><td>(\d+)</td><td>(\w+)</td>", page)
    assert sorted(rows) == [("0", "finished"), ("1", "finished")]
    assert "path " in page  # the genotype summary names the lattice path


def test_plot_panels_and_formats(experiment, tmp_path, monkeypatch):
    run = experiment / "tiny_adl" / "seed0"
    panels: list[int] = []
    save = plots.save
    monkeypatch.setattr(plots, "save", lambda fig, out: (panels.append(len(fig.axes)), save(fig, out))[1])
    outputs = [plots.plot_alpha_evolution(run, tmp_path / "alphas.png"),  # 2 + 3 + 4 candidate edges
               plots.plot_beta_evolution(run, tmp_path / "betas.png"),  # a panel per layer
               plots.plot_training_curves(run, tmp_path / "training.png"),
               plots.plot_op_share(run, tmp_path / "ops.svg"),
               plots.plot_eigenvalue_and_ops(run, tmp_path / "eigen.png")]
    assert panels == [9, 4, 2, 1, 2]
    for out in outputs:
        assert out.stat().st_size > 1000
    assert outputs[0].read_bytes().startswith(b"\x89PNG") and b"<svg" in outputs[3].read_bytes()
    shares = plots.op_shares(run)
    assert list(shares.index) == [1, 2] and shares.sum(axis=1).round(6).eq(1).all()


# --- the retraining of a search's architecture (a tiny real nasseg.train run next to the search) -------

RETRAIN_JOB = {"model_args": {"F": 2}, "iters": 4, "log_every": 1, "eval_every": 2, "checkpoint_every": 4,
               "data": {"dataset": "camvid_demo", "size": [36, 48], "crop": [32, 32], "batch_size": 2},
               "device": "cpu"}


@pytest.fixture(scope="module")
def retrained(experiment, tmp_path_factory) -> Path:
    """OUT/tiny_adl/seed0 (a copy of the lattice search) and OUT/tiny_adl/retrain, a real 4-iteration
    retraining of its arch.yaml (validated at iterations 2 and 4), laid out as `nasseg demo` does."""
    from nasseg.train.config import parse_train_job
    from nasseg.train.trainer import Trainer

    run = shutil.copytree(experiment / "tiny_adl" / "seed0", tmp_path_factory.mktemp("out") / "tiny_adl" / "seed0")
    job = parse_train_job({**RETRAIN_JOB, "name": "retrain", "model": str(run / "arch.yaml")})
    assert Trainer(job, run.parent, progress=False).run() is not None
    write_report(run, retrains=[run.parent / "retrain"])  # as nasseg demo calls it: given, and in the place looked at
    return run


def test_report_shows_the_retraining(retrained):
    report, retrain = retrained / "report.html", retrained.parent / "retrain"
    page = report.read_text()
    check_common(page, report, retrained)
    res = json.loads((retrain / "result.json").read_text())
    body = section(page, "retrain")
    text = text_of(body)
    for key in ("miou", "pixel_accuracy", "mean_accuracy"):
        assert f"{100 * res[key]:.2f} %" in text, key
    assert f"{res['iterations']} of 4, batch 2" in text and res["iterations"] == 4
    assert f"{res['params'] / 1e6:.2f} M ({res['params']:,})" in text
    assert "36x48 / random 32x32 crops" in text and f"{res['train_seconds']:.1f} s" in text
    assert "arch.yaml (the returned architecture, epoch 2), model_args F=2" in text
    assert str(retrain.resolve()) in text
    rows = re.findall(r"<tr><td class='l'>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>", body)
    pct = lambda v: "–" if v is None else f"{100 * v:.2f}"  # noqa: E731
    assert rows == [(c["class"], pct(c["iou"]), pct(c["accuracy"]), f"{c['pixels']:,}") for c in res["classes"]]
    assert len(rows) == 11
    images = re.findall(r"<img alt='([^']*)' src='data:image/png;base64,([^']*)'", body)
    assert [alt for alt, _ in images] == ["retrain_0"]
    assert base64.b64decode(images[0][1]).startswith(b"\x89PNG")
    targets = {(report.parent / href).resolve() for href in links(body)}
    assert targets == {(retrain / name).resolve() for name in ("final.pt", "result.json", "config.yaml", "log.csv",
                                                                "eval.csv")}
    header = text_of(page[:page.index("<section")])
    assert f"retrained val mIoU {res['miou']:.4g} (4 iterations, retrain)" in header


def test_retrain_curves(retrained, tmp_path, monkeypatch):
    from nasseg.shell.report import plot_retrain_curves

    retrain = retrained.parent / "retrain"
    assert [line.split(",")[0] for line in (retrain / "log.csv").read_text().split()] == ["iteration", "1", "2",
                                                                                            "3", "4"]
    assert [line.split(",")[0] for line in (retrain / "eval.csv").read_text().split()] == ["iteration", "2", "4"]
    axes: list[list[str]] = []
    save = plots.save
    monkeypatch.setattr(plots, "save", lambda fig, out: (axes.append([a.get_ylabel() for a in fig.axes]),
                                                         save(fig, out))[1])
    out = plot_retrain_curves(retrain, tmp_path / "curves.png")
    assert axes == [["loss (mean over the log interval)", "mIoU / pixel accuracy", "learning rate"]]
    assert out.read_bytes().startswith(b"\x89PNG") and out.stat().st_size > 10_000
    (tmp_path / "empty").mkdir()
    with pytest.raises(NassegError, match="no training iterations logged"):
        plot_retrain_curves(tmp_path / "empty", tmp_path / "none.png")


def copy_training_run(original: Path, where: Path, model: str, finished: bool = True) -> Path:
    """A copy of a training run whose job trained ``model``."""
    shutil.copytree(original, where)
    config = yaml.safe_load((where / "config.yaml").read_text())
    (where / "config.yaml").write_text(yaml.safe_dump({**config, "model": model}))
    if not finished:
        (where / "result.json").unlink()
    return where


def test_the_report_is_told_where_retrainings_are(retrained, tmp_path, monkeypatch):
    """--retrain: a relative model path to arch/epoch_001.yaml counts (resolved against the folders
    above the training run), several are listed newest first; a retraining of another search's
    arch.yaml, a baseline, an unfinished run and a missing folder are refused in one line. By itself
    the report looks only in <run_dir>/../retrain and passes over another architecture's retraining there."""
    out = tmp_path / "runs"
    run = shutil.copytree(retrained, out / "tiny_adl" / "seed0")
    original = retrained.parent / "retrain"
    epoch1 = copy_training_run(original, out / "train" / "arch", "runs/tiny_adl/seed0/arch/epoch_001.yaml")
    sibling = copy_training_run(original, out / "tiny_adl" / "sibling", str(run / "arch.yaml"))
    shutil.copytree(original, out / "tiny_adl" / "retrain")  # the original run's arch.yaml, not this copy's
    copy_training_run(original, out / "tiny_adl" / "baseline", "icnet_resnet50")
    copy_training_run(original, out / "tiny_adl" / "unfinished", str(run / "arch.yaml"), finished=False)
    os.utime(sibling / "result.json", (1e9, 1e9))  # the older of the two
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the relative path resolves against the folders above the run

    by_itself = load_run(run)
    attach_retrains([by_itself])
    assert by_itself.retrains == []  # tiny_adl/retrain trained another run's arch.yaml; siblings are not looked at
    page = write_report(run, retrains=[sibling, epoch1]).read_text()
    body = section(page, "retrain")
    newest, older = body.split("<details><summary>", 1)
    assert "<h3>arch: val mIoU" in newest and "(newest)" in newest and older.startswith("sibling: val mIoU")
    assert "arch/epoch_001.yaml (the architecture of epoch 1)" in text_of(newest)
    assert "arch.yaml (the returned architecture, epoch 2)" in text_of(older)
    assert "(4 iterations, arch)" in text_of(page[:page.index("<section")])
    for name, message in (("retrain", f"trained {retrained / 'arch.yaml'}, not the arch.yaml or an "
                                      f"arch/epoch_NNN.yaml of {run}"),
                          ("baseline", f"trained icnet_resnet50, not the arch.yaml or an arch/epoch_NNN.yaml of {run}"),
                          ("unfinished", "not a finished training run (no result.json)"),
                          ("missing", "no such directory")):
        with pytest.raises(NassegError) as error:
            write_report(run, retrains=[out / "tiny_adl" / name])
        assert str(error.value) == f"{out / 'tiny_adl' / name}: {message}"


def test_experiment_retrainings_go_to_their_trial(experiment, retrained, tmp_path):
    seed1 = experiment / "tiny_adl" / "seed1"
    training = copy_training_run(retrained.parent / "retrain", tmp_path / "train" / "seed1", str(seed1 / "arch.yaml"))
    runs = [load_run(trial) for trial in find_trials(experiment)]
    attach_retrains(runs, [training])
    assert [run.path.name for run in runs] == ["seed0", "seed1"]
    assert [[r.path for r in run.retrains] for run in runs] == [[], [training]]
    baseline = copy_training_run(training, tmp_path / "train" / "baseline", "icnet_resnet50")
    with pytest.raises(NassegError, match=r"icnet_resnet50, not the arch.yaml or an arch/epoch_NNN.yaml of any of "
                                          r"the 2 trials"):
        attach_retrains(runs, [baseline])


def test_report_without_retraining_says_how(experiment, tmp_path, monkeypatch):
    """No retraining: the section says how to make one; that command, run, is what the report finds."""
    from nasseg.shell.cli.main import main

    run = shutil.copytree(experiment / "tiny_adl" / "seed0", tmp_path / "tiny_adl" / "seed0")
    monkeypatch.chdir(tmp_path)
    body = section(write_report(run).read_text(), "retrain")
    assert "No retraining of this architecture yet" in body and "<img" not in body
    assert str(tmp_path / "tiny_adl" / "retrain") in text_of(body)
    command = html.unescape(re.search(r"<pre>(nasseg train [^<]*)</pre>", body).group(1))
    assert command == ("nasseg train tiny_adl/seed0/arch.yaml --data camvid_demo --iters 1000 --name retrain "
                       "--out tiny_adl")
    argv = command.split()[1:]
    argv[argv.index("--iters") + 1] = "2"
    assert main(argv + ["--size", "36x48", "--crop", "32x32", "--batch-size", "2", "--model-arg", "F=2",
                        "--device", "cpu", "--quiet"]) == 0
    page = write_report(run).read_text()
    res = json.loads((tmp_path / "tiny_adl" / "retrain" / "result.json").read_text())
    assert f"{100 * res['miou']:.2f} %" in text_of(section(page, "retrain"))


# --- errors and the command line ----------------------------------------------------------------------

def test_errors_are_one_line(tmp_path, experiment):
    with pytest.raises(NassegError, match="no such directory"):
        write_report(tmp_path / "missing")
    with pytest.raises(NassegError, match="neither a search run directory"):
        write_report(tmp_path)
    (tmp_path / "config.yaml").write_text("name: x\n")
    with pytest.raises(NassegError, match="no metrics.csv"):
        write_report(tmp_path)
    with pytest.raises(NassegError, match=r"\.html"):
        write_report(experiment / "tiny_adl" / "seed0", tmp_path / "report.png")
    chain = tmp_path / "chain"
    shutil.copytree(experiment / "tiny_adl" / "seed0", chain)
    (chain / "space.yaml").write_text((REPO / "search_spaces" / "darts.yaml").read_text())
    with pytest.raises(NassegError, match="only lattice runs have betas"):
        plots.plot_beta_evolution(chain, tmp_path / "b.png")


BROKEN_RUNS = {
    "truncated alphas": (lambda run: truncate(run / "alphas" / "epoch_003.json"),
                         "alphas/epoch_003.json: not valid JSON"),
    "alphas of another program": (lambda run: (run / "alphas" / "epoch_001.json").write_text('{"alphas": []}'),
                                  "alphas/epoch_001.json: no 'alphas_raw', 'betas_raw' in it"),
    "metrics.csv cut mid-row": (lambda run: replace(run / "metrics.csv", (run / "metrics.csv").read_text()
                                                    .split("\n")[4], "4,2.26,0.05,2.3,0.02"),
                                f"metrics.csv: line 5 has 5 fields, the header {len(METRIC_COLUMNS)}"),
    "a word in metrics.csv": (lambda run: replace(run / "metrics.csv", "\n2,", "\nthree,"),
                              "metrics.csv: row 2, column 'epoch': 'three' is not a number"),
    "metrics.csv without val_miou": (lambda run: replace(run / "metrics.csv", "val_miou", "miou"),
                                     "metrics.csv: no column 'val_miou' (columns: epoch,"),
    "binary metrics.csv": (lambda run: (run / "metrics.csv").write_bytes(b"\xff\xfe\x00garbage"),
                           "metrics.csv: not text"),
    "config.yaml not YAML": (lambda run: (run / "config.yaml").write_text("name: [tiny\n"),
                             "config.yaml: line 2, column 1: invalid YAML"),
    "config.yaml a list": (lambda run: (run / "config.yaml").write_text("- name\n"),
                           "config.yaml: expected a mapping of job keys, got list"),
    "config.yaml data a number": (lambda run: replace(run / "config.yaml", "data:\n", "data: 5\nx:\n"),
                                  "config.yaml: data: expected a mapping, got 5"),
    "config.yaml unknown stop rule": (lambda run: replace(run / "config.yaml", "rule: paper", "rule: papr"),
                                      "config.yaml: early_stop"),
    "truncated result.json": (lambda run: truncate(run / "result.json"), "result.json: not valid JSON"),
    "garbled events.jsonl": (lambda run: (run / "events.jsonl").write_text('{"event": "early_stop"}\n{"ev\n'),
                             "events.jsonl: line 2: not valid JSON"),
    "no metrics.csv": (lambda run: (run / "metrics.csv").unlink(), "no metrics.csv"),
    "no space.yaml nor arch.yaml": (lambda run: [(run / name).unlink() for name in ("space.yaml", "arch.yaml")],
                                    "space.yaml"),
}


@pytest.mark.parametrize("case", list(BROKEN_RUNS))
def test_a_broken_run_is_one_line_naming_the_file(case, darts_run, tmp_path):
    run = shutil.copytree(darts_run, tmp_path / "tiny_darts" / "seed0", ignore=shutil.ignore_patterns("checkpoints"))
    breaks, message = BROKEN_RUNS[case]
    breaks(run)
    with pytest.raises(NassegError) as error:
        write_report(run, tmp_path / "report.html")
    assert message in str(error.value) and str(run) in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "report.html").exists()


def test_the_command_prints_one_line_for_a_broken_run(darts_run, tmp_path, capsys):
    from nasseg.shell.cli.main import main

    run = shutil.copytree(darts_run, tmp_path / "seed0", ignore=shutil.ignore_patterns("checkpoints"))
    truncate(run / "alphas" / "epoch_002.json")
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nasseg: error: {run / 'alphas' / 'epoch_002.json'}: not valid JSON")
    assert err.count("\n") == 1


def test_report_parser(monkeypatch, capsys, tmp_path):
    from nasseg.shell import report

    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers())
    args = parser.parse_args(["report", "runs/x/seed0", "-o", str(tmp_path / "r.html")])
    monkeypatch.setattr(report, "write_report", lambda target, out, retrains: Path(out))
    assert args.run(args) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'r.html'}"
