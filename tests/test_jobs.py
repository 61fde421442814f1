"""The shipped job files: all valid; the demo job runs end to end on the bundled data."""

from pathlib import Path

import pytest
import yaml

from nasseg.shell.cli.main import main
from nasseg.search import load_job

JOBS = sorted(p for p in (Path(__file__).resolve().parents[1] / "jobs").glob("*.yaml")
              if not p.name.startswith("retrain_"))  # search jobs; retrain jobs: test_train.py


def test_jobs_exist():
    names = {p.stem for p in JOBS}
    assert {"demo", "camvid_darts", "camvid_darts_2nd", "camvid_autodeeplab", "robustdarts_s2",
            "robustdarts_s3", "paper_darts", "paper_autodeeplab"} <= names


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.stem)
def test_job_file_is_valid(job):
    from nasseg.shell.runner.hpo import is_hpo_job, load_hpo_job
    from nasseg.config import load_yaml

    if is_hpo_job(load_yaml(job)):
        hpo = load_hpo_job(job)
        assert hpo.trials >= 6 and hpo.objectives
        return
    if load_yaml(job).get("kind") == "study":
        from nasseg.shell.runner.study import load_study_job

        study = load_study_job(job)
        assert len(study.search.seeds) >= 3 and study.job.random.count >= 5 and study.job.ablation
        assert len(study.retrain_seeds) >= 2 and {b.model for b in study.baselines} >= {"icnet_resnet50"}
        return
    config = load_job(job)
    assert config.epochs >= 1 and config.seeds


def test_paper_recipes_follow_reference():
    darts = load_job(next(p for p in JOBS if p.stem == "paper_darts"))
    assert (darts.epochs, darts.data.batch_size, darts.order) == (50, 64, "second")
    assert (darts.weights.lr, darts.weights.lr_min, darts.weights.momentum, darts.weights.weight_decay) == \
        (0.025, 0.001, 0.9, 3e-4)
    assert (darts.arch.lr, darts.arch.betas, darts.arch.weight_decay) == (3e-4, (0.5, 0.999), 1e-3)
    adl = load_job(next(p for p in JOBS if p.stem == "paper_autodeeplab"))
    assert (adl.epochs, adl.data.batch_size, adl.data.crop, adl.arch.start_epoch, adl.arch.lr) == \
        (40, 2, (321, 321), 20, 3e-3)


def test_demo_job_runs(tmp_path, capsys):
    job = next(p for p in JOBS if p.stem == "demo")
    assert main(["search", str(job), "--out", str(tmp_path), "--quiet", "--set", "epochs=1"]) == 0
    run = tmp_path / "demo" / "seed0"
    assert len((run / "metrics.csv").read_text().splitlines()) == 2
    arch = yaml.safe_load((run / "arch.yaml").read_text())
    assert set(arch["cells"]) == {"normal", "reduce"}
    assert "epoch   1/1" in capsys.readouterr().out


@pytest.mark.slow
def test_full_demo_job_runs(tmp_path):
    job = next(p for p in JOBS if p.stem == "demo")
    assert main(["search", str(job), "--out", str(tmp_path), "--quiet"]) == 0
