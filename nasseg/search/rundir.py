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
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write, atomic_write_text

METRIC_COLUMNS = ["epoch", "train_loss", "train_miou", "val_loss", "val_miou", "val_pixel_acc",
                  "eigenvalue", "lr", "weight_decay", "arch_active", "param_free_share", "skip_share",
                  "epoch_seconds", "eval_seconds", "eigen_seconds", "eigen_steps"]


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    def epoch_file(self, folder: str, epoch: int, suffix: str) -> Path:
        return self.file(folder, f"epoch_{epoch:03d}{suffix}")

    # --- writing ------------------------------------------------------------------------------

    def write_config(self, text: str) -> None:
        atomic_write_text(self.file("config.yaml"), text)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in METRIC_COLUMNS})
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
        path = self.file("checkpoints", "last.pt") if epoch is None else self.epoch_file("checkpoints", epoch, ".pt")
        return torch.load(path, map_location="cpu", weights_only=True)

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
        return json.loads(self.epoch_file("alphas", epoch, ".json").read_text())

    def epochs_recorded(self) -> list[int]:
        return sorted(int(p.stem.split("_")[1]) for p in self.file("alphas").glob("epoch_*.json"))
