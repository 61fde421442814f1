"""``nasseg train --workers N``: data-parallel retraining with Ray Train (``TorchTrainer``).

Every worker runs the ordinary :class:`~nasseg.train.trainer.Trainer` on its slice of each
seeded global batch (data.batch_size stays the global batch, so a 2-worker run follows the same
learning-rate schedule and sees the same images as a 1-process run); DistributedDataParallel
averages the gradients (gloo on CPU, NCCL on GPU, SyncBatchNorm on GPU). Rank 0 writes the normal
run directory (log.csv, checkpoints/last.pt, final.pt, result.json), so evaluate / predict / export
and ``--resume`` treat it like any other run. Each checkpoint is also reported to Ray Train
(OUT/<name>/ray_train/): when a worker dies, Ray Train restarts the group from it
(``max_failures``), and a resumed run starts from the newer of it and checkpoints/last.pt.

BatchNorm on CPU uses each worker's share of the batch for its statistics (torch has no
SyncBatchNorm on CPU), and the loss is a mean per rank before averaging: with different worker
counts the losses stay close but the weights take another path (numbers in docs/ray.md). One
worker matches a run without Ray bitwise; the same worker count resumes bitwise.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nasseg.errors import NassegError
from nasseg.io import read_json_object
from nasseg.rundirs import run_path
from nasseg.train.checkpoint import read_checkpoint
from nasseg.train.config import TrainConfig
from nasseg.train.trainer import Trainer, prepare_run_dir

from ..process import configure_process
from .ray_session import largest_node, ray_session
from .record import current_node, node_alive, node_label
from .experiment import check_out_path, staged

MAX_FAILURES = 2  # worker-group restarts from the last reported checkpoint before giving up
RAY_TRAIN_DIR = "ray_train"  # Ray Train's storage inside the run directory
PLACEMENTS_FILE = "placements.jsonl"  # in RAY_TRAIN_DIR: each start of the worker group, its ranks' nodes


def run_distributed(config: TrainConfig, out: str | Path, workers: int, *, resume: bool = False,
                    restart: bool = False, address: str | None = None, num_cpus: int | None = None,
                    progress: bool = True, stop_at: int | None = None) -> dict[str, Any] | None:
    """Train ``config`` on ``workers`` Ray Train workers; result.json's contents once finished
    (None when stopped early by ``stop_at``, which tests use to interrupt a run)."""
    check_out_path(out)
    if workers < 1:
        raise NassegError(f"--workers must be >= 1, got {workers}")
    if config.data.batch_size % workers:
        raise NassegError(f"data.batch_size {config.data.batch_size} does not split over {workers} workers; "
                          f"use a multiple of {workers} (it stays the global batch)")
    run_dir = prepare_run_dir(config, Path(out).resolve(), resume, restart)
    with ray_session(address, num_cpus):
        use_gpu, cpus = plan_workers(config, workers)
        loop_config = {"config": portable_config(config), "out": str(run_dir.parent), "resume": resume,
                       "stop_at": stop_at, "use_gpu": use_gpu, "threads": cpus}
        trainer = ray.train.torch.TorchTrainer(
            train_worker, train_loop_config=loop_config,
            scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                                   resources_per_worker={"CPU": cpus}),
            run_config=ray.train.RunConfig(name=RAY_TRAIN_DIR, storage_path=str(run_dir),
                                           failure_config=ray.train.FailureConfig(max_failures=MAX_FAILURES),
                                           checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1)))
        follower = LogFollower(run_dir, config.iters, resume_point(run_dir) if resume else 0) if progress else None
        try:
            trainer.fit()
        except Exception as exc:  # a worker's exception, wrapped by Ray Train
            raise NassegError(f"distributed training of {run_dir} failed: {worker_error(exc)}; "
                              f"fix the cause and continue with --resume") from None
        finally:
            if follower:
                follower.stop()
    result = run_dir / "result.json"
    if stop_at is not None and stop_at < config.iters or not result.exists():
        return None
    return read_json_object(result, "a training result (result.json)")


def resume_point(run_dir: Path) -> int:
    """The iteration a resumed run continues from (its checkpoints/last.pt)."""
    return _iteration(run_dir / "checkpoints" / "last.pt")


def plan_workers(config: TrainConfig, workers: int) -> tuple[bool, int]:
    """GPU or not, and CPUs per worker; fails fast when the workers can never be placed (Ray
    would otherwise wait for them forever)."""
    total = ray.cluster_resources()
    gpus, cpus = total.get("GPU", 0.0), total.get("CPU", 0.0)
    # auto: GPUs when the cluster has one per worker
    use_gpu = config.device.startswith("cuda") or (config.device != "cpu" and gpus >= workers)
    if use_gpu and gpus < workers:
        raise NassegError(f"{workers} GPU workers need {workers} GPUs, the cluster has {gpus:g}; "
                          f"lower --workers or use --device cpu")
    if cpus < workers:
        raise NassegError(f"{workers} workers need a CPU each, the cluster has {cpus:g}; lower --workers")
    return use_gpu, max(1, int(min(cpus // workers, largest_node()["CPU"])))


def portable_config(config: TrainConfig) -> TrainConfig:
    """Relative paths (an ArchSpec model, pretrained weights, a dataset folder) made absolute:
    workers need not run in the driver's folder."""
    def absolute(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path and Path(path).exists() else path

    data = dataclasses.replace(config.data, root=absolute(config.data.root))
    model = absolute(config.model) if config.model.endswith((".yaml", ".yml")) else config.model
    return dataclasses.replace(config, model=model, pretrained=absolute(config.pretrained), data=data)


def train_worker(loop_config: dict[str, Any]) -> None:
    context = ray.train.get_context()
    configure_process(threads=int(loop_config["threads"]))
    device = ray.train.torch.get_device() if loop_config["use_gpu"] else "cpu"
    if loop_config["use_gpu"]:
        torch.cuda.set_device(device)
    config = dataclasses.replace(loop_config["config"], device=str(device))
    trainer = RankTrainer(config, loop_config["out"], resume=bool(loop_config["resume"]),
                          rank=context.get_world_rank(), world_size=context.get_world_size(),
                          ray_checkpoint=ray.train.get_checkpoint())
    trainer.record_start()
    trainer.run(stop_at=loop_config["stop_at"])


class RankTrainer(Trainer):
    def __init__(self, config: TrainConfig, out: str | Path, *, resume: bool, rank: int, world_size: int,
                 ray_checkpoint: Any = None):
        self.ray_checkpoint = ray_checkpoint  # set by Ray Train after a worker-group restart or on resume
        # The driver prepared a fresh run directory without last.pt: one found here was written by this
        # run before its worker group restarted (also when Ray Train had not registered it yet).
        written = (run_path(out, config.name) / "checkpoints" / "last.pt").is_file()
        super().__init__(config, out, resume=resume or ray_checkpoint is not None or written, progress=False,
                         rank=rank, world_size=world_size)
        if self.device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)  # keeps the parameters
            self.net = DistributedDataParallel(self.model, device_ids=[self.device])
        else:
            self.net = DistributedDataParallel(self.model)

    def _prepare_run_dir(self, resume: bool, restart: bool) -> None:
        """The driver prepared the run directory before starting the workers."""

    def _load_resume_state(self, path: Path | None = None) -> None:
        """Continue from the newer of checkpoints/last.pt and Ray Train's latest checkpoint."""
        last = self.run_dir / "checkpoints" / "last.pt"
        if self.ray_checkpoint is None:
            return super()._load_resume_state(last)
        with self.ray_checkpoint.as_directory() as folder:
            reported = Path(folder) / "last.pt"
            newer = not last.is_file() or _iteration(reported) > _iteration(last)
            return super()._load_resume_state(reported if newer else last)

    def after_checkpoint(self) -> None:
        """Report the checkpoint to Ray Train (a barrier: every rank reports, rank 0 with the file)."""
        metrics = {"iteration": self.iteration}
        if not self.is_writer:
            ray.train.report(metrics)
            return
        with staged(self.run_dir / "checkpoints" / "last.pt") as folder:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)))

    def record_start(self) -> None:
        """Every rank's Ray node, gathered to rank 0, which appends this start of the worker group
        (and the iteration it continues from) to ray_train/placements.jsonl."""
        node_id, node_ip = current_node()
        workers: list[Any] = [None] * self.world_size
        dist.all_gather_object(workers, {"rank": self.rank, "node_id": node_id, "node_ip": node_ip,
                                         "pid": os.getpid()})
        if self.is_writer:
            line = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "from_iteration": self.iteration,
                    "workers": workers}
            with open(self.run_dir / RAY_TRAIN_DIR / PLACEMENTS_FILE, "a") as handle:
                handle.write(json.dumps(line) + "\n")


def _iteration(path: Path) -> int:
    return int(read_checkpoint(path)["iteration"])


def worker_error(exc: BaseException) -> str:
    """The last line of the worker's traceback that Ray Train wraps into its own error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("nasseg.errors.", "NassegError", "SpecError")):
            return line.split(": ", 1)[-1]
    return lines[-1] if lines else type(exc).__name__


class LogFollower:
    """Prints the rows rank 0 appends to log.csv / eval.csv while the workers train (their own
    output stays in Ray's worker logs). Rows up to iteration ``start`` are old: a resumed run
    rewrites the ones after its checkpoint, and those are printed (again). A restart of the worker
    group (Ray Train after a worker or node died) is one line: the lost node, the iteration the
    group continues from and its nodes."""

    def __init__(self, run_dir: Path, iters: int, start: int = 0):
        self.paths = {"log": run_dir / "log.csv", "eval": run_dir / "eval.csv"}
        self.printed = {name: start for name in self.paths}  # the last iteration shown, per file
        self.starts_file = run_dir / RAY_TRAIN_DIR / PLACEMENTS_FILE
        self.starts = self._read_starts()  # the worker group's starts so far (earlier sessions included)
        self.session_starts = 0
        self.iters = iters
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self.poll()

    def poll(self) -> None:
        for start in self._read_starts()[len(self.starts):]:
            if self.session_starts:  # not the first start of this command: a restart
                print(self.restart_line(self.starts[-1], start), flush=True)
            self.session_starts += 1
            self.starts.append(start)
        for name, path in self.paths.items():
            if not path.exists():
                continue
            with path.open(newline="") as handle:
                for row in csv.DictReader(handle):
                    if row.get("iteration") and int(row["iteration"]) > self.printed[name]:
                        print(self.format(name, row), flush=True)
                        self.printed[name] = int(row["iteration"])

    @staticmethod
    def restart_line(before: dict[str, Any], now: dict[str, Any]) -> str:
        lost = [node_label(w) for w in before.get("workers", []) if w.get("node_id") and not node_alive(w["node_id"])]
        cause = f"node {', '.join(dict.fromkeys(lost))} lost; " if lost else ""
        nodes = ", ".join(dict.fromkeys(node_label(w) for w in now.get("workers", [])))
        return f"{cause}workers restarted from iteration {now.get('from_iteration')} on node(s) {nodes}"

    def _read_starts(self) -> list[dict[str, Any]]:
        if not self.starts_file.exists():
            return []
        complete = self.starts_file.read_text().split("\n")[:-1]  # a line being appended has no newline yet
        return [json.loads(line) for line in complete if line.strip()]

    def format(self, name: str, row: dict[str, str]) -> str:
        it = f"iteration {int(row['iteration']):>{len(str(self.iters))}}/{self.iters}"
        if name == "eval":
            return f"{it}  val mIoU {float(row['miou']):.4f}  pixel accuracy {float(row['pixel_accuracy']):.4f}"
        return (f"{it}  loss {float(row['loss']):.4f}  lr {float(row['lr']):.2e}  "
                f"{float(row['images_per_s']):.1f} images/s")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()
