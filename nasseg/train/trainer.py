"""Iteration-based segmentation training: SGD + poly lr with warm-up, AMP on CUDA, seeded, resumable.

Data flow: TrainConfig -> dataset (registry) + model (registry / ArchSpec) -> iterations ->
``<out>/<name>/``::

    config.yaml            the job as run
    log.csv                every log_every iterations: loss terms, lr, grad norm, images/s
    eval.csv               every validation pass: mIoU, pixel accuracy
    tb/                    the same as TensorBoard events (with the 'tensorboard' extra)
    checkpoints/last.pt    resumable (weights, optimiser, scaler, RNG states), every checkpoint_every
    final.pt               weights + metadata: what evaluate / predict / export read
    result.json            final validation metrics (per-class IoU), params, training time

Exact resume: the batch order of epoch e is a permutation seeded by (seed, e) and the augmentation
of item i by (seed, e, i) (see nasseg.data.datasets), the learning rate is a closed form of the
iteration, and the checkpoint carries the optimiser and RNG states; so a run killed after its
checkpoint at iteration k and resumed ends with the same weights as an uninterrupted run (CPU:
bitwise, tested).

Data-parallel runs (``nasseg train --workers N``, nasseg.runner.distributed_train) construct one
Trainer per process with ``rank``/``world_size``: every rank takes its slice of each global batch
(so data.batch_size stays the global batch), losses are averaged over ranks, and only rank 0
writes the run directory.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from ..data.registry import build_dataset
from ..data.transforms import Normalize, eval_transform, train_transform
from ..device import resolve_device
from ..errors import NassegError
from ..extras import MissingExtra, require
from ..io import atomic_write_text, read_csv
from ..layers import to_channels_last
from ..models import build
from ..models.pretrained import load_pretrained
from ..rundirs import MARKER, check_resume_restart, check_run_dir, claim_run_dir, remove_run_dir, run_path
from .checkpoint import read_checkpoint, save_checkpoint
from .config import TrainConfig, dump_train_job
from .evaluate import evaluate
from .losses import as_outputs, loss_weights_for, segmentation_loss

log = logging.getLogger(__name__)

LOG_FIELDS = ("iteration", "epoch", "loss", "lr", "grad_norm", "images_per_s", "elapsed_s")


def poly_lr(config: TrainConfig, iteration: int) -> float:
    """Learning rate at ``iteration`` (0-based): linear warm-up, then poly decay to 0."""
    o = config.optim
    lr = o.lr * (1 - iteration / config.iters) ** o.power
    if iteration < o.warmup_iters:
        lr *= o.warmup_ratio + (1 - o.warmup_ratio) * iteration / o.warmup_iters
    return lr


class EpochBatches(Sampler[list[int]]):
    """Batches of one epoch in a (seed, epoch)-seeded order, starting at batch ``start``.

    Starting mid-epoch without loading the skipped batches is what makes resume cheap; dropping
    the last partial batch keeps BatchNorm away from batches of one. With ``world_size`` > 1 this
    rank gets its contiguous slice of every global batch: the ranks together see exactly the
    batches of a one-process run.
    """

    def __init__(self, size: int, batch_size: int, seed: int, epoch: int, start: int = 0,
                 rank: int = 0, world_size: int = 1):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(size, generator=generator).tolist()
        self.batches = [order[i:i + batch_size] for i in range(0, size - batch_size + 1, batch_size)]
        if world_size > 1:
            per = batch_size // world_size
            self.batches = [batch[rank * per:(rank + 1) * per] for batch in self.batches]
        self.start = start

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches[self.start:])

    def __len__(self) -> int:
        return len(self.batches) - self.start


def model_record(config: TrainConfig, num_classes: int) -> dict[str, Any]:
    """How to rebuild the network: a registered name, or the ArchSpec text itself."""
    is_arch = config.model.endswith((".yaml", ".yml"))
    arch = Path(config.model).read_text() if is_arch else None
    return {"name": None if is_arch else config.model, "arch": arch, "args": dict(config.model_args),
            "num_classes": num_classes}


def prepare_run_dir(config: TrainConfig, out: str | Path, resume: bool, restart: bool) -> Path:
    """Check OUT/<name> against --resume/--restart (once, before any training process starts),
    claim it (nasseg's marker) and write config.yaml; the run directory. ``--restart`` deletes
    only a training run nasseg made (nasseg.rundirs)."""
    check_resume_restart(resume, restart)
    run_dir = run_path(out, config.name)
    if resume:
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise NassegError(f"{run_dir}: nothing to resume (no checkpoints/last.pt)")
        check_run_dir(run_dir, "train")
    elif run_dir.is_dir() and any(p.name != MARKER for p in run_dir.iterdir()):
        if not restart:
            check_run_dir(run_dir, "train")
            raise NassegError(f"{run_dir} already exists; pass --resume to continue it or --restart to discard it")
        remove_run_dir(run_dir, "train")
    claim_run_dir(run_dir, "train")
    atomic_write_text(run_dir / "config.yaml", dump_train_job(config))
    return run_dir


class Trainer:
    """One training run; ``run()`` trains to ``config.iters`` (or ``stop_at``) and evaluates.

    ``rank``/``world_size`` make it one process of a data-parallel run: a subclass wraps
    ``self.net`` (DistributedDataParallel) and hooks ``after_checkpoint``; rank 0 alone writes.
    """

    def __init__(self, config: TrainConfig, out: str | Path = "runs/train", *, resume: bool = False,
                 restart: bool = False, progress: bool = True, rank: int = 0, world_size: int = 1):
        self.config = config
        self.run_dir = run_path(out, config.name)
        self.rank, self.world_size = rank, world_size
        self.is_writer = rank == 0
        self.progress = progress and self.is_writer
        self.device = resolve_device(config.device)
        if config.data.batch_size % world_size or config.data.batch_size < 2 * world_size:
            raise NassegError(f"data.batch_size {config.data.batch_size} does not split over {world_size} "
                              f"workers into batches of 2 or more (batch normalisation needs 2 images); "
                              f"use a multiple of {world_size} of at least {2 * world_size}")
        self._prepare_run_dir(resume, restart)
        d = config.data
        probe = build_dataset(d.spec, d.train_split)
        self.ignore_index = probe.ignore_index
        augment = train_transform(d.crop, d.scale, d.flip, d.jitter, probe.ignore_index, size=d.size)
        self.train_set = build_dataset(d.spec, d.train_split, augment, seed=config.seed)
        # labels at full resolution, the model sees d.size: the same protocol as `nasseg evaluate`
        self.val_set = build_dataset(d.spec, d.val_split, eval_transform(), seed=config.seed)
        self.steps_per_epoch = len(self.train_set) // d.batch_size
        if self.steps_per_epoch == 0:
            raise NassegError(f"data.batch_size {d.batch_size} is larger than the {d.train_split} split "
                              f"({len(self.train_set)} images)")
        torch.manual_seed(config.seed)  # model initialisation
        model = build(config.model, probe.num_classes, **config.model_args)
        if config.pretrained:
            load_pretrained(getattr(model, "backbone", model), config.pretrained)
        self.model = model.to(self.device)
        if self.device.type == "cuda":  # CPU: the baselines' ops are not yet checked in NHWC (docs/performance.md)
            self.model = to_channels_last(self.model)
        self.net: nn.Module = self.model  # what the training step calls (a DDP wrapper in parallel runs)
        o = config.optim
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum,
                                         weight_decay=o.weight_decay, nesterov=o.nesterov)
        self.use_amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.meta = {"dataset": d.spec, "classes": list(probe.classes), "ignore_index": probe.ignore_index,
                     "mean": Normalize().mean.tolist(), "std": Normalize().std.tolist(), "crop": list(d.crop),
                     "palette": [list(c) for c in probe.palette], "size": list(d.size) if d.size else None}
        self.model_record = model_record(config, probe.num_classes)
        self.iteration = 0
        self.elapsed = 0.0  # training seconds over all sessions of this run
        self.final_eval = None  # the EvalResult of the final validation, once run() finished
        if resume:
            self._load_resume_state()

    # --- run directory -------------------------------------------------------------------------

    def _prepare_run_dir(self, resume: bool, restart: bool) -> None:
        prepare_run_dir(self.config, self.run_dir.parent, resume, restart)

    def _load_resume_state(self, path: Path | None = None) -> None:
        path = path or self.run_dir / "checkpoints" / "last.pt"
        payload = read_checkpoint(path, map_location=self.device)
        if not isinstance(payload.get("training"), dict):
            raise NassegError(f"{path}: holds no training state (optimizer, RNG); a weights-only checkpoint "
                              "such as final.pt cannot be resumed")
        state = payload["training"]
        try:
            self.model.load_state_dict(payload["state_dict"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng_cpu"].cpu())
            if self.device.type == "cuda" and state.get("rng_cuda") is not None:
                torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
            self.iteration = int(payload["iteration"])
            self.elapsed = float(state["elapsed"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            reason = f"no {e}" if isinstance(e, KeyError) else " ".join(str(e).split())[:200]
            raise NassegError(f"{path}: this checkpoint does not fit the run ({reason})") from None
        if self.is_writer:
            _truncate_csv(self.run_dir / "log.csv", self.iteration)  # rows written after the checkpoint
            _truncate_csv(self.run_dir / "eval.csv", self.iteration)

    def _payload(self, with_training: bool) -> dict[str, Any]:
        payload = {"model": self.model_record, "data": self.meta, "state_dict": self.model.state_dict(),
                   "iteration": self.iteration, "iters": self.config.iters}
        if with_training:
            payload["training"] = {
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "rng_cpu": torch.get_rng_state(), "elapsed": self.elapsed,
                "rng_cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
                "config": self.config.to_dict()}
        return payload

    def save(self) -> None:
        save_checkpoint(self.run_dir / "checkpoints" / "last.pt", self._payload(with_training=True))

    def after_checkpoint(self) -> None:
        """Called on every rank at each checkpoint (after rank 0 wrote last.pt); a hook."""

    def mean_over_ranks(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a per-rank scalar over all ranks (itself in a one-process run)."""
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world_size

    # --- training ------------------------------------------------------------------------------

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches from the current iteration on, epoch after epoch (seeded, resumable)."""
        d, spe = self.config.data, self.steps_per_epoch
        epoch, start = divmod(self.iteration, spe)
        while True:
            self.train_set.set_epoch(epoch)
            sampler = EpochBatches(len(self.train_set), d.batch_size, self.config.seed, epoch, start,
                                   self.rank, self.world_size)
            # own generator: a DataLoader iterator otherwise draws its base seed from the global RNG
            yield from DataLoader(self.train_set, batch_sampler=sampler, num_workers=d.workers,
                                  generator=torch.Generator().manual_seed(epoch), pin_memory=self.device.type == "cuda")
            epoch, start = epoch + 1, 0

    def step(self, image: torch.Tensor, label: torch.Tensor) -> tuple[float, list[float], float]:
        config = self.config
        image, label = image.to(self.device, non_blocking=True), label.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            image = image.contiguous(memory_format=torch.channels_last)
        lr = poly_lr(config, self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast("cuda", dtype=torch.float16) if self.use_amp else nullcontext():
            outputs = as_outputs(self.net(image))
        weights = loss_weights_for(self.model, len(outputs), config.loss_weights)
        loss, terms = segmentation_loss(outputs, label, weights, self.ignore_index)
        mean_loss = self.mean_over_ranks(loss.detach())  # every rank sees the same value: all stop together
        if not torch.isfinite(mean_loss):
            raise NassegError(f"training diverged at iteration {self.iteration + 1}: loss is {mean_loss.item()}; "
                              f"checkpoints/last.pt holds the last good state; lower optim.lr "
                              f"or set optim.grad_clip and resume with --resume")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        max_norm = config.optim.grad_clip if config.optim.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return mean_loss.item(), [t.item() for t in terms], float(grad_norm)

    def run(self, stop_at: int | None = None) -> dict[str, Any] | None:
        """Train up to ``stop_at`` (default: the end), then evaluate and write final.pt when done."""
        config = self.config
        stop_at = config.iters if stop_at is None else min(stop_at, config.iters)
        writer = _tensorboard(self.run_dir / "tb", purge_step=self.iteration) if self.is_writer else None
        bar = tqdm(total=config.iters, initial=self.iteration, disable=not self.progress, desc=config.name, unit="it",
                   dynamic_ncols=True)
        window: list[float] = []
        window_start = time.perf_counter()
        self.net.train()
        try:
            for image, label in self.batches():
                if self.iteration >= stop_at:
                    break
                started = time.perf_counter()
                loss, terms, grad_norm = self.step(image, label)
                self.iteration += 1
                self.elapsed += time.perf_counter() - started
                window.append(loss)
                bar.update(1)
                if self.is_writer and (self.iteration % config.log_every == 0 or self.iteration == config.iters):
                    seconds = time.perf_counter() - window_start
                    row = {"iteration": self.iteration, "epoch": (self.iteration - 1) // self.steps_per_epoch,
                           "loss": sum(window) / len(window), "lr": poly_lr(config, self.iteration - 1),
                           "grad_norm": grad_norm,
                           "images_per_s": len(window) * config.data.batch_size / max(seconds, 1e-9),
                           "elapsed_s": self.elapsed}
                    self._log(writer, row, terms)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2e}",
                                    img_s=f"{row['images_per_s']:.1f}")
                    window, window_start = [], time.perf_counter()
                if self.is_writer and config.eval_every and self.iteration % config.eval_every == 0 \
                        and self.iteration < config.iters:
                    self.validate(writer)
                if self.iteration % config.checkpoint_every == 0 or self.iteration == config.iters:
                    if self.is_writer:
                        self.save()
                    self.after_checkpoint()
        finally:
            bar.close()
        result = self.finish(writer) if self.iteration == config.iters and self.is_writer else None
        if writer is not None:
            writer.close()
        return result

    def _log(self, writer: Any, row: dict[str, Any], terms: list[float]) -> None:
        _append_csv(self.run_dir / "log.csv", row, LOG_FIELDS)
        if writer is None:
            return
        for key in ("loss", "lr", "grad_norm", "images_per_s"):
            writer.add_scalar(f"train/{key}", row[key], row["iteration"])
        if len(terms) > 1:
            for i, term in enumerate(terms):
                writer.add_scalar(f"train/loss_output{i}", term, row["iteration"])

    def validate(self, writer: Any, progress: bool = False):
        result = evaluate(self.model, self.val_set, device=self.device, progress=progress,
                          base_size=self.config.data.size)
        self.model.train()
        row = {"iteration": self.iteration, "miou": result.miou, "pixel_accuracy": result.pixel_accuracy,
               "eval_seconds": result.seconds}
        _append_csv(self.run_dir / "eval.csv", row, tuple(row))
        if writer is not None:
            writer.add_scalar("val/miou", result.miou, self.iteration)
            writer.add_scalar("val/pixel_accuracy", result.pixel_accuracy, self.iteration)
        return result

    def finish(self, writer: Any) -> dict[str, Any]:
        """Final validation on the whole split, final.pt and result.json."""
        result = self.final_eval = self.validate(writer, progress=self.progress)
        save_checkpoint(self.run_dir / "final.pt", self._payload(with_training=False))
        summary = {"name": self.config.name, "model": self.config.model, "dataset": self.config.data.spec,
                   "iterations": self.iteration, "crop": list(self.config.data.crop), "size": self.meta["size"],
                   "params": sum(p.numel() for p in self.model.parameters()),
                   "train_seconds": round(self.elapsed, 1), **result.to_dict()}
        atomic_write_text(self.run_dir / "result.json", json.dumps(summary, indent=2) + "\n")
        return summary


def _tensorboard(folder: Path, purge_step: int):
    """A SummaryWriter; events after ``purge_step`` from a killed session are discarded.

    None, with one warning, without the 'tensorboard' extra: TensorBoard is a viewer of numbers
    that log.csv and eval.csv hold too, so a run does not fail for it.
    """
    try:
        tensorboard = require("torch.utils.tensorboard", "tensorboard", "TensorBoard logging")
    except MissingExtra as exc:
        log.warning("%s; training goes on without TensorBoard logs (log.csv and eval.csv hold the numbers)", exc)
        return None
    return tensorboard.SummaryWriter(str(folder), purge_step=purge_step or None)


def _append_csv(path: Path, row: dict[str, Any], fields: tuple[str, ...]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _truncate_csv(path: Path, last_iteration: int) -> None:
    """Drop rows logged after the checkpoint we resume from (they will be logged again). Rows are
    appended in iteration order, so the kept rows are the first lines after the header."""
    if not path.exists() or path.stat().st_size == 0:
        return
    table = read_csv(path, "the training log (rows with an iteration column)", ["iteration"])
    kept = int((table["iteration"] <= last_iteration).sum())
    if kept == len(table):
        return
    lines = path.read_text().splitlines()[:1 + kept]
    atomic_write_text(path, "\n".join(lines) + "\n")
