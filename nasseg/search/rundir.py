"""The run directory of one search: everything a later decode, plot or report reads.

    config.yaml              the resolved job (after --set overrides)
    metrics.csv              one row per epoch (losses, mIoU, eigenvalue, lr, wd, timings, op shares)
    alphas/epoch_NNN.json    raw and softmaxed alphas (per cell type) and betas after epoch NNN
    arch/epoch_NNN.yaml      the architecture decoded after epoch NNN
    checkpoints/last.pt      the state after the last finished epoch (atomic write)
    checkpoints/epoch_NNN.pt kept for DARTS-ADA rollbacks only
    events.jsonl             stop decisions, rollbacks, divergence, resumes
    arch.yaml                the search's answer (the stop rule's epoch, else the last one)
    result.json              status and summary numbers
    .nasseg-run              the marker that nasseg created it (nasseg.rundirs)
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import NassegError
from ..io import atomic_write, atomic_write_text, load_tensors, read_csv, read_json_object
from ..rundirs import claim_run_dir

if TYPE_CHECKING:
    import pandas as pd

METRIC_COLUMNS = ["epoch", "train_loss", "train_miou", "val_loss", "val_miou", "val_pixel_acc",
                  "eigenvalue", "lr", "weight_decay", "arch_active", "param_free_share", "skip_share",
                  "epoch_seconds", "eval_seconds", "eigen_seconds", "eigen_wait_seconds", "eigen_steps", "eigen_bound",
                  "eigenvalue_alphas", "eigenvalue_betas"]  # the last two: hessian.blocks on a lattice
# what Search.state() writes and Search.load_state() needs
CHECKPOINT_KEYS = ("epoch", "model", "weight_optimizer", "arch_optimizer", "history", "config", "torch_rng",
                   "python_rng", "python_rng_version")


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    def epoch_file(self, folder: str, epoch: int, suffix: str) -> Path:
        return self.file(folder, f"epoch_{epoch:03d}{suffix}")

    # --- writing ------------------------------------------------------------------------------

    def claim(self) -> None:
        """Create the run directory with nasseg's marker, or accept it as an existing search run."""
        claim_run_dir(self.path, "search")

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, extrasaction="ignore")  # None and missing: ""
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.file("metrics.csv"), buffer.getvalue())

    def write_arch_weights(self, epoch: int, payload: dict[str, Any]) -> None:
        atomic_write_text(self.epoch_file("alphas", epoch, ".json"), json.dumps(payload))

    def save_checkpoint(self, state: dict[str, Any], epoch: int, keep_epochs: int = 0) -> None:
        """Write last.pt atomically; with keep_epochs > 0 also epoch_NNN.pt, pruning older ones."""
        atomic_write(self.file("checkpoints", "last.pt"), lambda handle: torch.save(state, handle))
        if keep_epochs:
            data = self.file("checkpoints", "last.pt").read_bytes()
            atomic_write(self.epoch_file("checkpoints", epoch, ".pt"), lambda handle: handle.write(data))
            for old in sorted(self.file("checkpoints").glob("epoch_*.pt"))[:-keep_epochs]:
                old.unlink()

    def load_checkpoint(self, epoch: int | None = None) -> dict[str, Any]:
        return read_search_checkpoint(self.file("checkpoints", "last.pt") if epoch is None
                                      else self.epoch_file("checkpoints", epoch, ".pt"))

    def has_checkpoint(self) -> bool:
        return self.file("checkpoints", "last.pt").exists()

    def log_event(self, kind: str, **fields: Any) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.file("events.jsonl"), "a") as handle:
            handle.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "event": kind, **fields}) + "\n")

    def write_result(self, result: dict[str, Any]) -> None:
        atomic_write_text(self.file("result.json"), json.dumps(result, indent=2))

    # --- reading ------------------------------------------------------------------------------

    def read_arch_weights(self, epoch: int) -> dict[str, Any]:
        """alphas/epoch_NNN.json: ``alphas_raw`` (cell type -> rows of numbers) and ``betas_raw``
        (rows of numbers or null), every number finite; NassegError naming the file otherwise."""
        path, what = self.epoch_file("alphas", epoch, ".json"), f"the architecture weights of epoch {epoch}"
        weights = read_json_object(path, what, ("alphas_raw", "betas_raw"))
        alphas = weights["alphas_raw"]
        problem = ("alphas_raw", "not a mapping of cell types") if not isinstance(alphas, dict) or not alphas else \
            next(filter(None, (_not_numbers(f"alphas_raw.{kind}", rows) for kind, rows in alphas.items())), None) \
            or (_not_numbers("betas_raw", weights["betas_raw"]) if weights["betas_raw"] is not None else None)
        if problem:
            raise NassegError(f"{path}: {problem[0]}: {problem[1]}; expected {what} (rows of finite numbers)")
        return weights

    def read_metrics(self, numeric: Sequence[str] = ("epoch",)) -> "pd.DataFrame":
        """metrics.csv as a table whose ``numeric`` columns exist and hold numbers."""
        return read_csv(self.file("metrics.csv"), "a search's per-epoch metrics (epoch, val_miou, ...)", numeric)

    def epochs_recorded(self) -> list[int]:
        return sorted(int(p.stem.split("_")[1]) for p in self.file("alphas").glob("epoch_*.json"))


def _not_numbers(key: str, value: Any) -> tuple[str, str] | None:
    """(where, what) for the first entry of a (nested) list that is not a finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, (list, int, float)):
        return key, f"{type(value).__name__} {str(value)[:40]!r} is not a number"
    if isinstance(value, (int, float)):
        return None if math.isfinite(value) else (key, f"{value} is not a finite number")
    if not value:
        return key, "an empty list"
    return next(filter(None, (_not_numbers(f"{key}[{i}]", item) for i, item in enumerate(value))), None)


def read_search_checkpoint(path: str | Path) -> dict[str, Any]:
    """A search checkpoint (``weights_only=True``): a dict with the keys Search.state() writes;
    one line naming the file otherwise."""
    state = load_tensors(path, "nasseg search checkpoint")
    if not isinstance(state, dict):
        raise NassegError(f"{path}: not a nasseg search checkpoint (holds a {type(state).__name__}, expected a dict)")
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise NassegError(f"{path}: not a nasseg search checkpoint (no {', '.join(missing)})")
    if not isinstance(state["config"], dict) or not isinstance(state["epoch"], int):
        raise NassegError(f"{path}: not a nasseg search checkpoint (config or epoch of the wrong type)")
    return state
