"""The Ray Tune trainable: one seed of one search job (or one HPO trial), checkpointed every epoch.

A plain function of its Tune config (``experiment``: the experiment dir, ``seed``, ``params``:
HPO overrides, ``resume_run_dir``: continue from the run dir's last.pt when Tune has no
checkpoint). It builds the same :class:`~nasseg.search.Search` as an in-process run, restores the
state of the last finished epoch from ``tune.get_checkpoint()`` when Tune restarts it (a dead
worker or node, or ``Tuner.restore`` after the driver died), and reports each epoch with a
checkpoint holding a copy of the nasseg checkpoint, so Tune can restart it on any worker. Each
start is recorded in the run's trial.json with its Ray node (nasseg.shell.runner.record).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from nasseg.errors import NassegError
from nasseg.io import atomic_write_text
from nasseg.search import Search, SearchDiverged
from nasseg.search.config import SearchConfig
from nasseg.search.rundir import RunDir, read_search_checkpoint
from ..process import configure_process
from .experiment import PID_FILE, config_digest, load_experiment, staged
from .ray_session import torch_threads
from .record import RunRecord, current_node, read_optional

CHECKPOINT_FILE = "last.pt"
REPORTED = ("epoch", "train_loss", "train_miou", "val_loss", "val_miou", "val_pixel_acc", "eigenvalue",
            "lr", "skip_share", "param_free_share", "epoch_seconds")
COST_METRICS = ("macs", "params", "latency_ms")  # of the architecture decoded after each epoch
COST_FILE = "arch_cost.json"


def search_trainable(trial_config: dict[str, Any]) -> None:
    from ray import tune

    experiment = load_experiment(trial_config["experiment"])
    params = dict(trial_config.get("params") or {})
    config = experiment.search_config(params)
    threads = torch_threads(config.resources, config.hessian.overlap)
    configure_process(threads=threads)
    seed = int(trial_config["seed"])
    trial_id = tune.get_context().get_trial_id()
    run = RunDir(experiment.run_dir(seed, trial_id))
    digest = config_digest(config.to_dict())
    refuse_known_divergence(run, digest)
    search = Search(config, seed, run.path, progress=False)
    run.claim()
    atomic_write_text(run.file(PID_FILE), str(os.getpid()))
    restore(search, resume_run_dir=bool(trial_config.get("resume_run_dir")))
    record = RunRecord(run)
    placement = record.start({"experiment": experiment.path.name, "trial_id": trial_id, "seed": seed,
                              "overrides": {**experiment.overrides, **params}, "job_digest": digest},
                             from_epoch=search.epoch, threads=threads, node=current_node())
    costs = [m for m in experiment.hpo.get("cost_metrics", []) if m in COST_METRICS]
    cost_input = tuple(experiment.hpo.get("cost_input") or config.data.size or config.data.crop or (512, 512))

    def report(row: dict[str, Any]) -> None:
        metrics = {k: row[k] for k in REPORTED if row.get(k) is not None}
        metrics["node_id"] = placement["node_id"]  # Tune's node_ip cannot tell nodes on one host apart
        if costs:
            metrics.update(record_arch_cost(run, row["epoch"], search.data.num_classes, cost_input, costs))
        record.epoch_done(row["epoch"])
        with staged(run.file("checkpoints", CHECKPOINT_FILE)) as folder:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(folder)))

    try:
        search.run_search(on_epoch=report)
    except SearchDiverged as exc:
        run.write_result({"status": "diverged", "reason": str(exc), "job_digest": digest, "seed": seed,
                          "epochs_run": search.epoch, "arch_epoch": search.epoch})
        raise


def restore(search: Search, resume_run_dir: bool) -> None:
    """The state of the last epoch Tune checkpointed (a restarted or restored trial), else, with
    ``resume_run_dir``, the run dir's own last.pt (``--resume`` of a run Tune never saw). The event
    names the checkpoint read: on a cluster, a path on the shared storage."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = read_search_checkpoint(Path(folder) / CHECKPOINT_FILE)
        search.load_state_from(state, f"the Ray Tune checkpoint of {search.run.path}")
        search.run.log_event("restored", epoch=search.epoch, source="tune checkpoint",
                             checkpoint=str(Path(checkpoint.path) / CHECKPOINT_FILE))
    elif resume_run_dir and search.run.has_checkpoint():
        state = search.run.load_checkpoint()
        check_same_search(search.run, state["config"], search.config)
        search.load_state_from(state, search.run.file("checkpoints", CHECKPOINT_FILE))
        search.run.log_event("resumed", epoch=search.epoch, source="run dir")


def refuse_known_divergence(run: RunDir, digest: str) -> None:
    """A retry of a diverged search with unchanged settings would diverge again, epoch for epoch:
    fail at once so Tune's retries cost seconds; ``--resume --set ...`` changes the digest (and
    the stale result.json goes)."""
    result = read_optional(run.file("result.json"), "a search's result (result.json)")
    if result.get("status") == "diverged":
        if result.get("job_digest") == digest:
            raise SearchDiverged(result["reason"])
        run.file("result.json").unlink()


def check_same_search(run: RunDir, saved: dict[str, Any], config: SearchConfig) -> None:
    """Search.resume's check, by the space's content: trials name the space by absolute path, an
    in-process run as written in its job file."""
    same_space = (run.file("space.yaml").read_text() == Path(config.space).read_text()
                  if run.file("space.yaml").exists() else Path(str(saved.get("space"))).stem == Path(config.space).stem)
    for key, same in (("space", same_space), ("algorithm", saved.get("algorithm") == config.algorithm)):
        if not same:
            raise NassegError(f"{run.path}: cannot resume a {key}={saved.get(key)!r} run with "
                              f"{key}={getattr(config, key)!r}")


def model_cost(model: Any, model_args: dict[str, Any], classes: int, size: tuple[int, int]) -> tuple[int, int]:
    """(parameters, multiply-adds of one 1x3xHxW forward pass) of a network (a registered name, an ArchSpec
    or its file), on the meta device."""
    from nasseg.complexity import count_macs, count_params, meta_device
    from nasseg.models import build

    with meta_device():
        net = build(model, classes, **model_args).eval()
        x = torch.zeros(1, 3, *size)
        return count_params(net.parameters()), count_macs(lambda: net(x))


def record_arch_cost(run: RunDir, epoch: int, num_classes: int, size: tuple[int, int],
                     wanted: list[str]) -> dict[str, float]:
    """Multiply-adds and parameters and, if asked, the CPU/GPU latency of the retrain network of epoch
    ``epoch``'s architecture, also kept in arch_cost.json for `nasseg results`."""
    from nasseg.complexity import median_latency
    from nasseg.models import build

    arch_file = str(run.epoch_file("arch", epoch, ".yaml"))
    cost: dict[str, float] = {}
    if "macs" in wanted or "params" in wanted:
        cost["params"], cost["macs"] = model_cost(arch_file, {}, num_classes, size)
    if "latency_ms" in wanted:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        cost["latency_ms"] = median_latency(build(arch_file, num_classes), size, device=device) * 1e3
    cost = {k: cost[k] for k in COST_METRICS if k in wanted}
    table = read_optional(run.file(COST_FILE), "architecture costs per epoch")
    table[str(epoch)] = cost
    atomic_write_text(run.file(COST_FILE), json.dumps(table, indent=2))
    return cost
