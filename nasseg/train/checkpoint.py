"""Training checkpoints: self-describing files that rebuild their model without the job file.

A checkpoint is a plain dict that ``torch.load(weights_only=True)`` accepts (tensors, numbers,
strings, lists, dicts only)::

    format      "nasseg-train-1"
    model       {"name": registered model name or None, "arch": ArchSpec YAML text or None,
                 "args": builder keywords, "num_classes": int}
    data        {"dataset": str, "classes": [names], "ignore_index": int, "mean": [3 floats],
                 "std": [3 floats], "crop": [h, w], "size": [h, w] or None (training resize),
                 "palette": [[r, g, b], ...]}
    state_dict  the model weights
    iteration   iterations done (== iters for a finished run)
    iters       the run's total iterations
    training    (only in resumable checkpoints) optimizer / grad-scaler state, RNG states, config

``last.pt`` (written every N iterations) carries ``training``; ``final.pt`` is weights only.
Writes are atomic (temp file, fsync, rename): a crash never leaves a truncated checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import NassegError
from ..io import atomic_write, load_tensors

FORMAT = "nasseg-train-1"
PAYLOAD_KEYS = ("model", "data", "state_dict", "iteration", "iters")
RUN_CHECKPOINTS = ("final.pt", "checkpoints/last.pt")  # what a run directory resolves to, in order


@dataclass(frozen=True)
class TrainedMeta:
    """What evaluation, prediction and export need to know about a trained model."""

    model_name: str | None
    arch_yaml: str | None
    model_args: dict[str, Any]
    num_classes: int
    dataset: str
    classes: tuple[str, ...]
    ignore_index: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop: tuple[int, int]
    size: tuple[int, int] | None  # images were resized to this before training (reduced resolution)
    palette: tuple[tuple[int, int, int], ...]
    iteration: int
    iters: int

    @property
    def label(self) -> str:
        """Short model description for tables: the model name or the architecture's name."""
        if self.model_name:
            return self.model_name
        first = (self.arch_yaml or "").splitlines()[:1]
        return first[0].removeprefix("name:").strip() if first else "arch"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (a dict in the format above) with ``torch.save``."""
    payload = {"format": FORMAT, **payload}
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a training run directory (its final.pt, else checkpoints/last.pt)."""
    path = Path(path)
    if path.is_dir():
        for name in RUN_CHECKPOINTS:
            if (path / name).is_file():
                return path / name
        raise NassegError(f"{path}: no checkpoint in this directory (looked for "
                          f"{', '.join(RUN_CHECKPOINTS)})")
    if not path.is_file():
        raise NassegError(f"{path}: checkpoint not found")
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a training checkpoint safely (``weights_only=True``); one-line errors for bad files."""
    path = resolve_checkpoint(path)
    payload = load_tensors(path, "nasseg checkpoint", map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise NassegError(f"{path}: not a nasseg training checkpoint (format {found!r}, "
                          f"expected {FORMAT!r})")
    missing = [key for key in PAYLOAD_KEYS if key not in payload]
    if missing:
        raise NassegError(f"{path}: incomplete nasseg training checkpoint (no {', '.join(missing)})")
    return payload


def meta_from_payload(payload: dict[str, Any], path: str | Path = "<checkpoint>") -> TrainedMeta:
    """The metadata of a checkpoint read by :func:`read_checkpoint`; NassegError naming ``path``
    when its model or data record lacks a field or holds a wrong type."""
    try:
        return _meta(payload)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        what = f"no {e}" if isinstance(e, KeyError) else " ".join(str(e).split())[:160]
        raise NassegError(f"{path}: incomplete nasseg training checkpoint ({what})") from None


def _meta(payload: dict[str, Any]) -> TrainedMeta:
    model, data = payload["model"], payload["data"]
    return TrainedMeta(
        model_name=model.get("name"), arch_yaml=model.get("arch"), model_args=dict(model["args"]),
        num_classes=int(model["num_classes"]), dataset=data["dataset"],
        classes=tuple(data["classes"]), ignore_index=int(data["ignore_index"]),
        mean=tuple(data["mean"]), std=tuple(data["std"]), crop=tuple(data["crop"]),
        size=tuple(data["size"]) if data.get("size") else None,
        palette=tuple(tuple(c) for c in data["palette"]),
        iteration=int(payload["iteration"]), iters=int(payload["iters"]))


def build_model(meta: TrainedMeta) -> nn.Module:
    """The (untrained) network a checkpoint's weights belong to."""
    from ..arch import parse_arch
    from ..models import build
    import yaml

    if meta.arch_yaml is not None:
        arch = parse_arch(yaml.safe_load(meta.arch_yaml), file="<checkpoint arch>")
        return build(arch, meta.num_classes, **meta.model_args)
    return build(meta.model_name, meta.num_classes, **meta.model_args)


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainedMeta]:
    """Rebuild a trained model from a checkpoint file or run directory; returned in eval mode."""
    path = resolve_checkpoint(path)
    payload = read_checkpoint(path)
    meta = meta_from_payload(payload, path)
    model = build_model(meta)
    try:
        missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    except (RuntimeError, TypeError, AttributeError) as e:  # shapes that differ, a state_dict that is none
        raise NassegError(f"{path}: weights do not fit {meta.label} ({' '.join(str(e).split())[:200]})") from None
    if missing or unexpected:
        raise NassegError(f"{path}: weights do not fit {meta.label} "
                          f"({len(missing)} missing, {len(unexpected)} unexpected keys, e.g. "
                          f"{(missing or unexpected)[0]})")
    return model.to(device).eval(), meta
