"""NAS studies (kind: study): the job file, every candidate trained with the same recipe, the stop rule
replayed as the search loop applies it, the tables and the bootstrap on synthetic run results, and a
real study on Ray that is killed mid-way and resumed to the same table as an uninterrupted one."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from nasseg import space as spaces
from nasseg.arch import sample_architecture
from nasseg.errors import NassegError, SpecError
from nasseg.search.rundir import RunDir
from nasseg.shell.cli.main import main as nasseg_main
from nasseg.shell.runner.study import PER_CANDIDATE, load_study_job, parse_study_job
from nasseg.shell.runner.study_run import check_resumable_changes, check_units_unchanged
from nasseg.shell.runner.study_stats import compare
from nasseg.shell.runner.study_table import FILES, TIMING_COLUMNS, collect_tables, write_tables
from nasseg.shell.runner.study_units import (replay_stop_rule, study_candidates, study_document, unit_jobs,
                                             write_units)

from conftest import TINY_DARTS_SPACE

CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
           "Bicyclist"]


def study_data(folder: Path, **changes) -> dict:
    """A tiny study on the bundled CamVid images: the tiny DARTS space, 2 search seeds, 2 random
    architectures, 2 baselines, 2 retraining seeds."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY_DARTS_SPACE))
    search = {"space": "tiny.yaml", "epochs": 3, "seeds": [0, 1],
              "data": {"dataset": "camvid_demo", "size": [48, 64], "crop": [32, 32], "batch_size": 2, "limit": 6,
                       "val_batch_size": 8},
              "hessian": {"iters": 3, "batch_size": 2}, "early_stop": {"rule": "paper", "window": 1, "ratio": 0.75}}
    data = {"kind": "study", "name": "s", "search": search, "random": {"count": 2, "seed": 0},
            "arch_args": {"C": 4, "layers": 3},
            "baselines": ["icnet_resnet50", {"model": "deeplabv3plus_mobilenetv2", "name": "dlv3p",
                                             "model_args": {"output_stride": 8}}],
            "recipe": {"data": {"dataset": "camvid_demo", "size": [48, 64], "crop": [32, 32], "batch_size": 2},
                       "iters": 4, "checkpoint_every": 2, "optim": {"lr": 0.01, "grad_clip": 5.0}, "device": "cpu"},
            "retrain_seeds": [0, 1], "bootstrap": {"samples": 2000}}
    data.update(changes)
    return data


def write_study(folder: Path, **changes) -> Path:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study_data(folder, **changes)))
    return path


# --- the job file ---------------------------------------------------------------------------------------

def test_study_job_is_read_and_checked(tmp_path):
    path = write_study(tmp_path)
    study = load_study_job(path, ["search.epochs=2", "random.count=3"])
    assert study.name == "s" and study.search.epochs == 2 and study.job.random.count == 3
    assert study.search.early_stop.rule == "none" and study.rule["rule"] == "paper"  # replayed, not applied
    assert study.search.name == "search" and study.search.seeds == (0, 1)
    assert [b.group for b in study.baselines] == ["icnet_resnet50", "dlv3p"]
    assert not set(PER_CANDIDATE) & set(study.recipe) and study.recipe["iters"] == 4
    # the saved document reads back to the same study
    again = parse_study_job(study_document(study), "study.yaml")
    assert study_document(again) == study_document(study)
    mistakes = {"recipe.model=x": "recipe.model: set by the study per candidate",
                "recipe.iters=0": "recipe.iters: must be >= 1",
                "baselines=[nosuchnet]": "baselines[0].model: unknown model 'nosuchnet'",
                "baselines=[{model: icnet_resnet50, model_args: {width: 2}}]":
                    "baselines[0].model_args.width: unknown key",
                "baselines=[random]": "baselines[0]: group name 'random' is taken",
                "arch_args.F=2": "arch_args.F: unknown key",
                "search.epochs=0": "search.epochs: must be >= 1",
                "search.early_stop={rule: none}": "ablation: the stop-rule vs last-epoch ablation",
                "random.count=-1": "random.count: must be >= 0",
                "retrain_seeds=[]": "retrain_seeds: empty"}
    for change, message in mistakes.items():
        with pytest.raises(SpecError) as info:
            load_study_job(path, [change])
        assert str(info.value).startswith(f"{path}: {message}"), (change, str(info.value))
    assert load_study_job(path, ["ablation=false", "search.early_stop={rule: none}"]).search.early_stop.rule == "none"


def test_the_documented_study_is_valid():
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "study.md").read_text()
    block = re.search(r"## The job file.*?```yaml\n(.*?)```", text, re.S).group(1)
    study = parse_study_job(yaml.safe_load(block), "docs/study.md")
    assert (study.job.random.count, study.retrain_seeds, study.search.seeds) == (5, (0, 1), (0, 1, 2))
    assert study.recipe["data"]["val_split"] == "val" and study.job.bootstrap.samples == 10_000


def test_a_search_file_is_read_in_and_keeps_its_paths(tmp_path):
    data = study_data(tmp_path / "jobs")
    (tmp_path / "jobs" / "search.yaml").write_text(yaml.safe_dump(data["search"]))  # space: tiny.yaml beside it
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({**data, "search": "jobs/search.yaml"}))
    study = load_study_job(tmp_path / "study.yaml", ["search.epochs=5"])  # --set reaches the file's keys
    assert study.search.epochs == 5 and Path(study.search.space) == tmp_path / "jobs" / "tiny.yaml"
    assert study.search.file == str(tmp_path / "jobs" / "search.yaml")


def test_bad_study_input_is_one_line(tmp_path, capsys):
    path = write_study(tmp_path)
    for extra, message in ((["--no-ray"], "a study runs its searches and retrainings as Ray trials"),
                           (["--set", "recipe.seed=3"], "recipe.seed: set by the study per candidate"),
                           (["--resume"], "nothing to resume")):
        assert nasseg_main(["search", str(path), "--out", str(tmp_path / "runs"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs" / "s" / "study.yaml").exists()


# --- synthetic searches and retrainings ----------------------------------------------------------------------

# search seed -> eigenvalues per epoch: seed 0's rule (window 1, ratio 0.75) fires at epoch 3 and returns
# epoch 2; seed 1's never fires, so its two answers are the same network
EIGENVALUES = {0: [1.0, 1.0, 2.0], 1: [1.0, 1.0, 1.0]}


def fake_search(study_dir: Path, seed: int) -> None:
    run = RunDir(study_dir / "search" / f"seed{seed}")
    run.claim()
    space = spaces.load(TINY_DARTS_SPACE_FILE[0])
    rows = []
    for epoch, value in enumerate(EIGENVALUES[seed], start=1):
        sample_architecture(space, [100 + seed, epoch if seed == 0 else 0], f"e{epoch}").save(
            run.epoch_file("arch", epoch, ".yaml"))
        rows.append({"epoch": epoch, "val_miou": 0.1, "eigenvalue": value, "arch_active": True, "epoch_seconds": 60.0})
    run.write_metrics(rows)
    run.write_result({"status": "finished", "epochs_run": 3, "arch_epoch": 3, "reason": "ran all 3 epochs",
                      "seed": seed})


TINY_DARTS_SPACE_FILE: list = []


def fake_retrain(study_dir: Path, run: str, miou: float, seconds: float = 30.0) -> None:
    folder = study_dir / "retrain" / run
    folder.mkdir(parents=True)
    classes = [{"class": c, "iou": miou + 0.01 * (i - 5), "accuracy": 0.5, "pixels": 10} for i, c in enumerate(CLASSES)]
    folder.joinpath("result.json").write_text(json.dumps({"miou": miou, "pixel_accuracy": 0.8, "iterations": 4,
                                                          "train_seconds": seconds, "classes": classes}))
    folder.joinpath("eval.csv").write_text("iteration,miou,pixel_accuracy,eval_seconds\n4,0.1,0.8,6.0\n")


@pytest.fixture
def synthetic(tmp_path):
    """A study folder as a finished study leaves it, with chosen mIoUs: searched 0.50 / 0.54 (+-0.01
    over retraining seeds), random 0.30 / 0.34, ICNet 0.40 / 0.42, DeepLabV3+ 0.45 / 0.45."""
    TINY_DARTS_SPACE_FILE[:] = [write_study(tmp_path / "job").parent / "tiny.yaml"]
    study = load_study_job(tmp_path / "job" / "study.yaml")
    study_dir = tmp_path / "out" / "s"
    study_dir.mkdir(parents=True)
    (study_dir / "study.yaml").write_text(yaml.safe_dump(study_document(study)))
    for seed in (0, 1):
        fake_search(study_dir, seed)
    candidates = study_candidates(study, study_dir, write=True)
    write_units(study_dir, unit_jobs(study, candidates))
    means = {"search_s0_stop": 0.50, "search_s0_last": 0.46, "search_s1_stop": 0.54, "random_00": 0.30,
             "random_01": 0.34, "icnet_resnet50": 0.40, "dlv3p": 0.45}
    for unit, mean in means.items():
        spread = 0.0 if unit == "dlv3p" else 0.01
        fake_retrain(study_dir, f"{unit}_r0", mean - spread, seconds=30.0)
        fake_retrain(study_dir, f"{unit}_r1", mean + spread, seconds=90.0)
    return study, study_dir, candidates


def test_every_candidate_gets_the_same_recipe(synthetic):
    study, study_dir, candidates = synthetic
    ids = [c.id for c in candidates]
    assert ids == ["search_s0_stop", "search_s0_last", "search_s1_stop", "search_s1_last", "random_00", "random_01",
                   "icnet_resnet50", "dlv3p"]
    by_id = {c.id: c for c in candidates}
    assert by_id["search_s0_stop"].model.endswith("search/seed0/arch/epoch_002.yaml")  # the rule's answer
    assert by_id["search_s0_last"].model.endswith("search/seed0/arch/epoch_003.yaml")
    assert by_id["search_s1_last"].unit == "search_s1_stop"  # never fired: the same network, trained once
    assert by_id["random_01"].model == str(study_dir / "archs" / "random_01.yaml")
    jobs = yaml.safe_load((study_dir / "units.yaml").read_text())
    assert len(jobs) == 7 * 2 and "search_s1_last_r0" not in jobs
    shared = {json.dumps({k: v for k, v in job.items() if k not in ("model", "model_args", "name", "seed")},
                         sort_keys=True) for job in jobs.values()}
    assert len(shared) == 1  # data, iters, optim, ...: one recipe
    assert json.loads(shared.pop()) == {**study.recipe, "kind": "train", "loss_weights": None}
    for run, job in jobs.items():
        unit, seed = run.rsplit("_r", 1)
        assert job["name"] == run and job["seed"] == int(seed)
        expected = {"icnet_resnet50": {}, "dlv3p": {"output_stride": 8}}.get(unit, {"C": 4, "layers": 3})
        assert job["model_args"] == expected and job["model"] == by_id[unit].model
    # the random architectures are the study's seeded draws from the search's space
    space = spaces.load(study.search.space)
    assert (study_dir / "archs" / "random_00.yaml").read_text() == sample_architecture(
        space, [0, 0], "random_00", meta={"sampled_from": "tiny_darts", "seed": [0, 0]}).to_yaml()


def test_table_and_comparison_on_synthetic_runs(synthetic):
    study, study_dir, _ = synthetic
    t = write_tables(study_dir)
    groups = pd.read_csv(study_dir / "table.csv").set_index("group")
    assert list(groups.index) == ["searched_stop", "searched_last", "random", "icnet_resnet50", "dlv3p"]
    assert groups.loc["searched_stop", "miou_mean"] == pytest.approx(0.52)
    assert groups.loc["searched_last", "miou_mean"] == pytest.approx((0.46 + 0.54) / 2)
    assert groups.loc["random", "miou_mean"] == pytest.approx(0.32)
    assert groups.loc["random", "miou_std"] == pytest.approx(np.std([0.29, 0.31, 0.33, 0.35], ddof=1))
    assert groups.loc["random", "miou_std_between"] == pytest.approx(np.std([0.30, 0.34], ddof=1))
    assert math.isnan(groups.loc["dlv3p", "miou_std_between"]) and groups.loc["dlv3p", "miou_std"] == 0
    assert groups.loc["random", "iou_Sky"] == pytest.approx(0.32 - 0.05)
    assert (groups["runs"] == [4, 4, 4, 2, 2]).all() and (groups["candidates"] == [2, 2, 2, 1, 1]).all()
    # cost: 2 searches x 3 epochs x 60 s on 1 CPU; the stop rule's group: seed 0 up to epoch 3, seed 1 all epochs
    assert groups.loc["searched_last", "search_cpu_h"] == pytest.approx(2 * 180 / 3600)
    assert groups.loc["searched_stop", "search_cpu_h"] == pytest.approx(2 * 180 / 3600)
    assert groups.loc["random", "search_cpu_h"] == 0 and groups.loc["random", "search_gpu_h"] == 0
    assert groups.loc["random", "retrain_cpu_h"] == pytest.approx(2 * (30 + 6 + 90 + 6) / 3600)
    macs = pd.read_csv(study_dir / "candidates.csv").set_index("candidate")["macs"]
    assert macs["icnet_resnet50"] < macs["dlv3p"] and macs["random_00"] > 0
    # searched beats random: the interval of the difference lies above 0
    comparisons = pd.read_csv(study_dir / "comparisons.csv")
    first = comparisons.iloc[0]
    assert (first["a"], first["b"], first["verdict"]) == ("searched_stop", "random", "beats")
    assert first["difference"] == pytest.approx(0.20) and 0 < first["low"] < 0.20 < first["high"]
    assert groups.loc["searched_stop", "vs_random"] == "beats"
    ablation = comparisons[(comparisons["a"] == "searched_stop") & (comparisons["b"] == "searched_last")].iloc[0]
    assert ablation["paired"] and ablation["difference"] == pytest.approx(0.02)
    assert list(comparisons["b"]) == ["random", "random", "searched_last", "icnet_resnet50", "dlv3p"]
    text = (study_dir / "table.md").read_text()
    assert "| searched_stop | 2 | 4 | 52.00 ± 2.58 |" in text and "beats" in text
    assert (study_dir / "miou_vs_macs.png").stat().st_size > 10_000
    assert collect_tables(study_dir).groups.equals(t.groups)  # recomputed from the folder: the same numbers


def test_unfinished_runs_are_left_out(synthetic):
    _, study_dir, _ = synthetic
    for run in ("random_01_r1", "search_s0_last_r0", "search_s0_last_r1"):
        (study_dir / "retrain" / run / "result.json").unlink()
    t = collect_tables(study_dir)
    assert t.planned_runs == 14 and len(t.runs) == 11
    assert t.groups.set_index("group").loc["random", "miou_mean"] == pytest.approx((0.30 + 0.33) / 2)
    # stop rule vs last epoch, paired by seed, on the seed with runs of both: seed 1, one network, no difference
    ablation = t.comparisons[t.comparisons["b"] == "searched_last"].iloc[0]
    assert (ablation["candidates_a"], ablation["difference"], ablation["low"], ablation["high"]) == (1, 0, 0, 0)


def test_resume_refuses_changes_to_what_was_computed(synthetic, tmp_path):
    study, study_dir, candidates = synthetic
    saved = study_document(study)
    check_resumable_changes(saved, {**saved, "retrain_seeds": [0, 1, 2], "random": {**saved["random"], "count": 4}},
                            Path("x"))
    with pytest.raises(NassegError, match="would change recipe.iters"):
        check_resumable_changes(saved, {**saved, "recipe": {**saved["recipe"], "iters": 8}}, Path("x"))
    with pytest.raises(NassegError, match="would change search.epochs"):
        check_resumable_changes(saved, {**saved, "search": {**saved["search"], "epochs": 9}}, Path("x"))
    jobs = unit_jobs(study, candidates)
    (study_dir / "retrain" / "dlv3p_r0" / "config.yaml").write_text(yaml.safe_dump({**jobs["dlv3p_r0"], "iters": 9}))
    with pytest.raises(NassegError, match=r"dlv3p_r0: trained with other settings \(iters\)"):
        check_units_unchanged(study_dir, jobs)


def test_stop_rule_replay_is_the_search_loops_decision(darts_run):
    """A real search that the paper rule (window 2) stopped at epoch 4, returning epoch 2: the replay on
    its recorded eigenvalues takes the same decision."""
    stop, returned, reason = replay_stop_rule(RunDir(darts_run), {"rule": "paper", "window": 2, "ratio": 0.75})
    result = json.loads((darts_run / "result.json").read_text())
    assert (stop, returned) == (result["epochs_run"], result["arch_epoch"]) == (4, 2)
    assert reason == result["reason"]
    assert replay_stop_rule(RunDir(darts_run), {"rule": "paper", "window": 2, "ratio": 0.01})[:2] == (None, None)


# --- the bootstrap ---------------------------------------------------------------------------------------------

def test_bootstrap_comparison():
    runs = {"s0": [0.50, 0.51], "s1": [0.53, 0.55], "s2": [0.49, 0.52], "r0": [0.30, 0.31], "r1": [0.36, 0.33],
            "l1": [0.40, 0.42], "l2": [0.52, 0.50], "one": [0.45]}
    found = compare(["s0", "s1", "s2"], ["r0", "r1"], runs, samples=4000, seed=3)
    assert found.verdict == "beats" and found.low > 0 and found.share_above == 1.0
    assert found.difference == pytest.approx(np.mean([0.505, 0.54, 0.505]) - np.mean([0.305, 0.345]))
    assert found == compare(["s0", "s1", "s2"], ["r0", "r1"], runs, samples=4000, seed=3)  # reproducible
    assert compare(["r0", "r1"], ["s0", "s1", "s2"], runs, samples=4000, seed=3).verdict == "worse"
    # paired by seed; seed 0's two answers are one network (one unit, the same runs): only s1-l1, s2-l2 differ
    paired = compare(["s0", "s1", "s2"], ["s0", "l1", "l2"], runs, paired=True, samples=4000, seed=3)
    assert paired.difference == pytest.approx((0 + 0.13 + -0.005) / 3)
    # a resampled difference lies between the extremes of the pairs' resampled differences: s2 - l2 >= 0.49 - 0.52,
    # s1 - l1 <= 0.55 - 0.40
    assert -0.03 - 1e-12 <= paired.low <= paired.difference <= paired.high <= 0.15 + 1e-12
    assert paired.verdict == "no clear difference" and paired.paired
    same = compare(["s0", "s1"], ["s0", "s1"], runs, paired=True, samples=1000)
    assert (same.difference, same.low, same.high, same.verdict) == (0.0, 0.0, 0.0, "no clear difference")
    assert compare(["s0"], ["one"], runs).verdict == "too few runs"
    wide = compare(["s0", "r0"], ["s1", "r1"], runs, samples=4000)  # overlapping groups
    assert wide.verdict == "no clear difference" and wide.low < 0 < wide.high


# --- a real study on Ray, killed and resumed -----------------------------------------------------------------

def ray_study(folder: Path) -> Path:
    """One search seed (4 epochs of about a second), 2 random architectures, one baseline, 2
    retraining seeds of 6 iterations with a checkpoint every 2: 8 or 10 retraining runs (the last
    epoch's architecture may be the stop rule's)."""
    data = study_data(folder)
    search = {**data["search"], "seeds": [0], "epochs": 4, "data": {**data["search"]["data"], "limit": 8},
              "hessian": {"iters": 5, "batch_size": 2}}
    return write_study(folder, search=search, baselines=["icnet_resnet50"], recipe={**data["recipe"], "iters": 6})


def compare_tables(a: Path, b: Path) -> None:
    """The same numbers in every table, timings aside."""
    for name in FILES.values():
        left, right = pd.read_csv(a / name), pd.read_csv(b / name)
        timing = [c for c in left.columns if c in TIMING_COLUMNS]
        pd.testing.assert_frame_equal(left.drop(columns=timing), right.drop(columns=timing), check_exact=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The study run through by `nasseg search` in this process, on a 2-CPU embedded Ray."""
    import ray

    folder = tmp_path_factory.mktemp("study_ray")
    job = ray_study(folder / "job")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=256 * 1024**2)
    try:
        assert nasseg_main(["search", str(job), "--out", str(folder / "whole")]) == 0
    finally:
        ray.shutdown()
    return folder, job


@pytest.mark.slow
def test_study_runs_end_to_end(uninterrupted):
    folder, _ = uninterrupted
    study_dir = folder / "whole" / "s"
    groups = pd.read_csv(study_dir / "table.csv")
    assert list(groups["group"]) == ["searched_stop", "searched_last", "random", "icnet_resnet50"]
    runs = pd.read_csv(study_dir / "runs.csv")
    assert len(runs) == len(set(runs["run"])) and runs["miou"].between(0, 1).all()
    for run in runs["run"]:  # every unit a finished, marked training run of the recipe
        config = yaml.safe_load((study_dir / "retrain" / run / "config.yaml").read_text())
        marker = json.loads((study_dir / "retrain" / run / ".nasseg-run").read_text())
        assert config["iters"] == 6 and marker["kind"] == "train"
    assert json.loads((study_dir / ".nasseg-run").read_text())["kind"] == "study"
    assert (study_dir / "search" / "seed0" / "result.json").is_file()
    assert nasseg_main(["report", str(study_dir)]) == 0
    page = (study_dir / "index.html").read_text()
    assert "<section id='study'>" in page and "searched_stop" in page and "data:image/png;base64," in page
    assert "search_s0_stop_r0" in (study_dir / "search" / "seed0" / "report.html").read_text()


def run_until(job: Path, out: Path, marker: str, *extra: str, wait: float = 0.0) -> list[str]:
    """`nasseg search JOB` SIGKILLed ``wait`` seconds after it printed a line containing ``marker``;
    its lines."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen([sys.executable, "-m", "nasseg", "search", str(job), "--out", str(out),
                               "--num-cpus", "2", *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env, start_new_session=True)
    lines = []
    try:
        for line in driver.stdout:
            lines.append(line)
            if marker in line:
                time.sleep(wait)
                break
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:  # Ray's processes of the dead driver share its process group
        time.sleep(2)
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert any(marker in line for line in lines), "".join(lines)
    return lines


@pytest.mark.slow
def test_killed_driver_then_resume_gives_the_same_table(uninterrupted):
    """SIGKILL `nasseg search STUDY` in the searches, --resume, SIGKILL it again once the first
    retraining run finished, --resume: the search continues from its epoch checkpoint, finished
    retraining runs are not redone, and every table holds the uninterrupted run's numbers."""
    folder, job = uninterrupted
    out = folder / "killed"
    study_dir = out / "s"
    run_until(job, out, "[seed 0] epoch   1/4", wait=0.3)  # Tune snapshots the experiment after the checkpoint
    assert not (study_dir / "search" / "seed0" / "result.json").exists()
    lines = run_until(job, out, "] done: val mIoU", "--resume")
    events = study_dir / "search" / "seed0" / "events.jsonl"
    restored = [e["epoch"] for e in map(json.loads, events.read_text().splitlines()) if e["event"] == "restored"]
    assert restored and min(restored) >= 1, "".join(lines)  # continued from an epoch checkpoint
    planned = len(yaml.safe_load((study_dir / "units.yaml").read_text()))
    finished = sorted(p.parent.name for p in (study_dir / "retrain").glob("*/result.json"))
    assert finished and len(finished) < planned, "".join(lines)
    stamps = {run: (study_dir / "retrain" / run / "result.json").stat().st_mtime_ns for run in finished}
    resumed = subprocess.run([sys.executable, "-m", "nasseg", "search", str(job), "--out", str(out), "--resume",
                              "--num-cpus", "2"], capture_output=True, text=True, timeout=600,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "searches: all 1 seeds finished" in resumed.stdout
    assert f"retraining: {len(finished)} of {planned} runs finished, {planned - len(finished)} to go" in resumed.stdout
    assert stamps == {run: (study_dir / "retrain" / run / "result.json").stat().st_mtime_ns for run in finished}
    compare_tables(study_dir, folder / "whole" / "s")


def test_submit_sends_a_study_as_a_search(tmp_path, monkeypatch):
    """`nasseg submit STUDY.yaml` checks the study locally and runs `nasseg search` on the cluster."""
    from nasseg.shell.cli.cluster import job_command
    from nasseg.shell.cli.main import build_parser

    monkeypatch.chdir(tmp_path)
    write_study(tmp_path)
    args = build_parser().parse_args(["submit", "study.yaml", "--address", "http://head:8265", "--set",
                                      "random.count=1"])
    argv, name, metadata, _ = job_command(args)
    assert argv[1:5] == ["-m", "nasseg", "search", "study.yaml"] and argv[-2:] == ["--set", "random.count=1"]
    assert name == "s" and metadata["nasseg_command"] == "search"
    bad = build_parser().parse_args(["submit", "study.yaml", "--address", "http://head:8265",
                                     "--set", "recipe.iters=0"])
    with pytest.raises(SpecError, match="recipe.iters: must be >= 1"):
        job_command(bad)
