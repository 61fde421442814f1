"""The ``plan`` suite: the memory planner's predictions (nasseg.plan) against measured peaks.

Each case is measured as the other suites measure memory: the peak of a first step above the memory
after building model and data, in a fresh process (the bench's memory probe for the search nets of
the ``darts`` / ``autodeeplab`` suites, with and without activation checkpointing; the trainer's own
``Trainer.step`` for the retraining case of ``jobs/retrain_camvid_dlv3p_mbv2.yaml``), one case at a
time. The prediction is the planner's ``growth`` of the same first step (``warm=False``), traced on
meta tensors.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from nasseg.errors import NassegError
from nasseg.plan import MemoryPlan, plan_search, plan_training
from nasseg.plan.shapes import DataShapes
from nasseg.search import parse_job
from nasseg.train.config import load_train_job
from nasseg.train.trainer import Trainer

from .measure import Bench, in_subprocess, peak_growth
from .nets import IGNORE_INDEX, NetConfig, bench_space
from .settings import Row

MB = 2**20
RETRAIN_JOB = str(Path(__file__).resolve().parents[3] / "jobs" / "retrain_camvid_dlv3p_mbv2.yaml")
# the bundled images stand in for CamVid (same classes): the step's memory depends on crop and batch only
RETRAIN = ["data.dataset=camvid_demo", "data.root=null"]
RETRAIN_QUICK = RETRAIN + ["data.size=[90,120]", "data.crop=[64,64]", "data.batch_size=2"]


def predict_net(net: NetConfig, kind: str, device: str) -> MemoryPlan:
    """The plan of a bench net's first step (the ``ours`` / ``ours_ckpt`` variants)."""
    lattice = net.space == "autodeeplab"
    config = parse_job({"name": "bench_plan", "space": net.space, "algorithm": "autodeeplab" if lattice else "darts",
                        "data": {"batch_size": net.batch}, "early_stop": {"rule": "none"}})
    shapes = DataShapes(net.classes, IGNORE_INDEX, net.size, net.size, net.size)
    return plan_search(config, device, warm=False, checkpoint=kind == "ours_ckpt", shapes=shapes,
                       space=bench_space(net.space, net.width, net.layers, net.classes))


def measure_training_step(job: str, overrides: list[str], device: str) -> dict[str, Any]:
    """Peak memory of one ``Trainer.step`` above the memory after building the trainer and the batch
    (call in a fresh process)."""
    config = load_train_job(job, overrides + [f"device={device}", "amp=false"])
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, out, progress=False)
        batch, (h, w) = config.data.batch_size, config.data.crop
        image = torch.randn(batch, 3, h, w)
        label = torch.randint(0, len(trainer.meta["classes"]), (batch, h, w))
        peak, _ = peak_growth(trainer.device, lambda: trainer.step(image, label))
        return {"peak_bytes": peak}


def _row(config: str, plan: MemoryPlan, measured: dict[str, Any] | None) -> Row:
    predicted = plan.growth / MB
    if not measured or "error" in measured:
        return Row("plan", config, "peak memory", "predicted / measured", predicted, None, "MB",
                   note=f"n/a: {measured['error'] if measured else 'memory not measured (--memory off)'}")
    value = measured["peak_bytes"] / MB
    return Row("plan", config, "peak memory", "predicted / measured", predicted, value, "MB",
               note=f"error {100 * (predicted / value - 1):+.1f} % (target within 15 %)")


def plan_accuracy(bench: Bench) -> list[Row]:
    """Predicted vs measured first-step peak of each case, measured one after another."""
    s = bench.s
    rows = []
    cases = [(s.darts_net(), "ours")] + [(net, kind) for net in s.adl_nets() for kind in ("ours", "ours_ckpt")]
    for net, kind in cases:
        label = net.label + (" checkpoint" if kind == "ours_ckpt" else "")
        bench.say(f"[plan] {label}")
        rows.append(_row(label, predict_net(net, kind, s.device), bench.memory(net, kind)))
    overrides = RETRAIN_QUICK if s.quick else RETRAIN
    config = load_train_job(RETRAIN_JOB, overrides + [f"device={s.device}", "amp=false"])
    label = f"{config.model} b{config.data.batch_size} {config.data.crop[0]}x{config.data.crop[1]} retrain"
    bench.say(f"[plan] {label}")
    measured = None
    if s.memory != "off":
        try:
            measured = in_subprocess(f"{__name__}:measure_training_step", [RETRAIN_JOB, overrides, s.device],
                                     s.threads, f"a training step of {RETRAIN_JOB}")
        except NassegError as exc:
            measured = {"error": str(exc)}
    rows.append(_row(label, plan_training(config, s.device, warm=False), measured))
    return rows

