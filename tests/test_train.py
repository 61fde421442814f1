"""The trainer: lr schedule, seeded batches, losses, job files, and exact resume after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nasseg.shell.cli.main import main
from nasseg.errors import NassegError, SpecError
from nasseg.train.checkpoint import load_trained, read_checkpoint
from nasseg.train.config import TrainConfig, TrainOptim, load_train_job, parse_train_job
from nasseg.train.losses import resize_label, segmentation_loss
from nasseg.train.trainer import EpochBatches, Trainer, poly_lr

ROOT = Path(__file__).resolve().parents[1]
# a tiny, fast run on the bundled demo set: ICNet exercises the three-output cascade loss
TINY = {"model": "icnet_resnet50", "data": {"dataset": "camvid_demo", "size": [90, 120], "crop": [64, 64],
                                            "batch_size": 2},
        "iters": 6, "checkpoint_every": 2, "log_every": 1, "optim": {"warmup_iters": 2}}


def tiny_config(**changes) -> TrainConfig:
    data = {**TINY, **changes}
    return parse_train_job(data)


def test_poly_lr_with_warmup():
    config = TrainConfig("m", "x", iters=100, optim=TrainOptim(lr=0.1, power=0.9, warmup_iters=10,
                                                               warmup_ratio=0.1))
    assert poly_lr(config, 0) == pytest.approx(0.1 * 0.1)  # warm-up starts at warmup_ratio * lr
    assert poly_lr(config, 5) == pytest.approx(0.1 * (1 - 0.05) ** 0.9 * (0.1 + 0.9 * 0.5))
    assert poly_lr(config, 50) == pytest.approx(0.1 * 0.5 ** 0.9)
    assert poly_lr(config, 99) == pytest.approx(0.1 * 0.01 ** 0.9)


def test_epoch_batches_are_seeded_and_resume_mid_epoch():
    full = list(EpochBatches(10, 3, seed=1, epoch=2))
    assert len(full) == 3 and sorted(sum(full, [])) != list(range(9))  # drop_last: 3 batches of 3
    assert full == list(EpochBatches(10, 3, seed=1, epoch=2))
    assert full != list(EpochBatches(10, 3, seed=1, epoch=3))
    assert list(EpochBatches(10, 3, seed=1, epoch=2, start=2)) == full[2:]


def test_small_outputs_get_nearest_downsampled_labels_and_all_ignore_is_not_nan():
    label = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]]])
    assert resize_label(label, (2, 2)).tolist() == [[[0, 1], [2, 255]]]
    coarse = torch.zeros(1, 3, 2, 2, requires_grad=True)
    fine = torch.zeros(1, 3, 4, 4, requires_grad=True)
    total, terms = segmentation_loss([coarse, fine], label, (0.4, 1.0), 255)
    assert terms[0].item() == pytest.approx(torch.log(torch.tensor(3.0)).item())
    assert total.item() == pytest.approx(1.4 * terms[1].item())
    total, _ = segmentation_loss([fine], torch.full((1, 4, 4), 255), (1.0,), 255)
    assert total.item() == 0 and torch.isfinite(total)


def test_job_validation_is_one_line(tmp_path):
    with pytest.raises(SpecError, match=r"optim\.lrr: unknown key.*did you mean 'lr'"):
        parse_train_job({"model": "icnet_resnet50", "optim": {"lrr": 0.1}}, "job.yaml")
    with pytest.raises(SpecError, match=r"data\.crop: expected a list of 2 integers >= 1, got 64"):
        parse_train_job({"model": "icnet_resnet50", "data": {"crop": 64}}, "job.yaml")
    with pytest.raises(SpecError, match=r"data\.scale: expected \[min, max\]"):
        parse_train_job({"model": "icnet_resnet50", "data": {"scale": [2.0, 1.0]}}, "job.yaml")
    from nasseg.shell.cli.main import build_parser
    from nasseg.shell.cli.train import load_config

    args = build_parser().parse_args(["train", "icnet_resnet50", "--crop", "32x48", "--iters", "7",
                                      "--set", "optim.warmup_iters=3", "--data", "camvid_demo"])
    config = load_config(args)
    assert (config.data.crop, config.iters, config.optim.warmup_iters, config.name) == ((32, 48), 7, 3,
                                                                                         "icnet_resnet50")
    job = tmp_path / "job.yaml"
    job.write_text("model: icnet_resnet50\ndata: {dataset: camvid, root: /a}\n")
    args = build_parser().parse_args(["train", str(job), "--data", "camvid:/b", "--model-arg", "width_mult=0.25"])
    config = load_config(args)
    assert (config.data.dataset, config.data.root, config.model_args) == ("camvid", "/b", {"width_mult": 0.25})


@pytest.mark.parametrize("job", sorted((ROOT / "jobs").glob("retrain_*.yaml")), ids=lambda p: p.stem)
def test_shipped_retrain_jobs_parse_and_their_models_exist(job):
    from nasseg.models import available_models

    config = load_train_job(job)
    assert config.model in available_models() or Path(config.model).is_file()


def test_resume_after_interruption_is_bitwise_identical(tmp_path):
    torch.set_num_threads(1)
    whole = Trainer(tiny_config(), tmp_path / "a", progress=False)
    whole.run()
    first = Trainer(tiny_config(), tmp_path / "b", progress=False)
    assert first.run(stop_at=3) is None  # stopped after iteration 3; last checkpoint at 2
    second = Trainer(tiny_config(), tmp_path / "b", resume=True, progress=False)
    assert second.iteration == 2
    result = second.run()
    a, b = whole.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    log_a = (tmp_path / "a" / "icnet_resnet50" / "log.csv").read_text().splitlines()
    log_b = (tmp_path / "b" / "icnet_resnet50" / "log.csv").read_text().splitlines()
    assert [r.split(",")[:4] for r in log_a] == [r.split(",")[:4] for r in log_b]  # iteration 3 logged once
    assert result["iterations"] == 6 and 0 <= result["miou"] <= 1 and len(result["classes"]) == 11
    model, meta = load_trained(tmp_path / "b" / "icnet_resnet50")
    assert meta.iteration == 6 and meta.classes[0] == "Sky" and meta.size == (90, 120)
    assert all(torch.equal(model.state_dict()[k], b[k]) for k in b)


def test_killed_training_process_resumes_to_the_same_weights(tmp_path):
    """SIGKILL a real `nasseg train` after its checkpoint at iteration 4, resume, compare."""
    args = [sys.executable, "-m", "nasseg", "train", "icnet_resnet50", "--data", "camvid_demo",
            "--size", "90x120", "--crop", "64x64", "--batch-size", "2", "--iters", "8",
            "--checkpoint-every", "2", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(args + ["--out", str(tmp_path / "whole")], check=True, env=env, capture_output=True)

    last = tmp_path / "killed" / "icnet_resnet50" / "checkpoints" / "last.pt"
    proc = subprocess.Popen(args + ["--out", str(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if last.is_file() and read_checkpoint(last)["iteration"] >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read_checkpoint(last)["iteration"]
    assert 4 <= killed_at < 8, "the run finished before it could be killed; make it longer"
    assert not (last.parent.parent / "final.pt").exists()
    done = subprocess.run(args + ["--out", str(tmp_path / "killed"), "--resume"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"resuming {tmp_path / 'killed' / 'icnet_resnet50'} at iteration {killed_at}" in done.stdout
    a = read_checkpoint(tmp_path / "whole" / "icnet_resnet50" / "final.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "killed" / "icnet_resnet50" / "final.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_refuses_to_overwrite_or_resume_nothing(tmp_path, capsys):
    common = ["train", "icnet_resnet50", "--data", "camvid_demo", "--out", str(tmp_path), "--quiet"]
    assert main(common + ["--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    (tmp_path / "icnet_resnet50").mkdir(parents=True)
    (tmp_path / "icnet_resnet50" / "log.csv").write_text("x\n")  # a run from before run markers
    (tmp_path / "icnet_resnet50" / "config.yaml").write_text("name: icnet_resnet50\n")
    assert main(common) == 2
    assert "already exists; pass --resume" in capsys.readouterr().err
    assert main(["train", "no_such_model", "--data", "camvid_demo", "--out", str(tmp_path)]) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err
    with pytest.raises(NassegError, match="not found"):
        from nasseg.train.checkpoint import resolve_checkpoint
        resolve_checkpoint(tmp_path / "missing.pt")
