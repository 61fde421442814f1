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

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn

from ..arch import parse_arch
from ..config import FieldError, parse_yaml, spec, validate
from ..config.types import Classes, Float, Int, PositiveFloat, Size, Str
from ..errors import NassegError, SpecError
from ..io import atomic_write, load_tensors
from ..models import build

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
    payload = {"format": FORMAT, **payload}
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a training run directory (its final.pt, else checkpoints/last.pt)."""
    path = Path(path)
    if path.is_dir():
        for name in RUN_CHECKPOINTS:
            if (path / name).is_file():
                return path / name
        raise NassegError(f"{path}: no checkpoint in this directory (looked for {', '.join(RUN_CHECKPOINTS)})")
    if not path.is_file():
        raise NassegError(f"{path}: checkpoint not found")
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a training checkpoint safely (``weights_only=True``); one-line errors for bad files."""
    path = resolve_checkpoint(path)
    payload = load_tensors(path, "nasseg checkpoint", map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise NassegError(f"{path}: not a nasseg training checkpoint (format {found!r}, expected {FORMAT!r})")
    missing = [key for key in PAYLOAD_KEYS if key not in payload]
    if missing:
        raise NassegError(f"{path}: incomplete nasseg training checkpoint (no {', '.join(missing)})")
    return payload


# --- the records a checkpoint carries, checked as any file nasseg reads: a checkpoint may come from
# anywhere, and its numbers size the network and the images it is rebuilt for ---------------------

Colour = tuple[Annotated[int, Field(ge=0, le=255, strict=True)], ...]


@spec
class ModelRecord:
    num_classes: Classes
    name: Str | None = None  # a registered model ...
    arch: Str | None = None  # ... or the ArchSpec text
    args: dict[Str, Any] = dataclasses.field(default_factory=dict)  # the builder's keywords

    def __post_init__(self) -> None:
        if (self.name is None) == (self.arch is None):
            raise FieldError("name", "expected a registered model name or an ArchSpec in 'arch', one of them")


@spec
class DataRecord:
    dataset: Str
    classes: tuple[Str, ...]
    ignore_index: Int
    mean: tuple[Float, Float, Float]
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat]
    crop: Size
    palette: tuple[Annotated[Colour, Field(min_length=3, max_length=3)], ...]
    size: Size | None = None


@spec
class Progress:
    iteration: Annotated[int, Field(ge=0, strict=True)]
    iters: Annotated[int, Field(ge=1, strict=True)]


def meta_from_payload(payload: dict[str, Any], path: str | Path = "<checkpoint>") -> TrainedMeta:
    """The metadata of a checkpoint read by :func:`read_checkpoint`; SpecError naming ``path`` and
    the record's key when a field is missing, of a wrong type or out of its range."""
    file = str(path)
    model = validate(ModelRecord, payload["model"], file, "model")
    data = validate(DataRecord, payload["data"], file, "data")
    progress = validate(Progress, {"iteration": payload["iteration"], "iters": payload["iters"]}, file)
    for key, count in (("classes", len(data.classes)), ("palette", len(data.palette))):
        if count != model.num_classes:
            raise NassegError(f"{path}: data.{key} holds {count} entries for model.num_classes "
                              f"{model.num_classes}; expected one per class (a damaged checkpoint?)")
    return TrainedMeta(model.name, model.arch, dict(model.args), model.num_classes, iteration=progress.iteration,
                       iters=progress.iters, **dataclasses.asdict(data))


def build_model(meta: TrainedMeta, source: str | Path = "<checkpoint>") -> nn.Module:
    """The (untrained) network a checkpoint's weights belong to (``source`` names it in errors)."""
    if meta.arch_yaml is not None:
        where = f"{source} (its model.arch)"
        arch = parse_arch(parse_yaml(meta.arch_yaml, where), file=where)
        return build(arch, meta.num_classes, **meta.model_args)
    return build(meta.model_name, meta.num_classes, **meta.model_args)


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainedMeta]:
    """Rebuild a trained model from a checkpoint file or run directory; returned in eval mode."""
    path = resolve_checkpoint(path)
    payload = read_checkpoint(path)
    meta = meta_from_payload(payload, path)
    try:
        model = build_model(meta, path)
    except SpecError as e:  # the builder's keywords (model_args.KEY) belong to this file
        if e.file is not None:
            raise
        raise SpecError(str(path), e.key, e.message) from None
    except NassegError as e:
        raise NassegError(f"{path}: {e}") from None
    try:
        missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    except (RuntimeError, TypeError, AttributeError) as e:  # shapes that differ, a state_dict that is none
        raise NassegError(f"{path}: weights do not fit {meta.label} ({' '.join(str(e).split())[:200]})") from None
    if missing or unexpected:
        raise NassegError(f"{path}: weights do not fit {meta.label} ({len(missing)} missing, {len(unexpected)} "
                          f"unexpected keys, e.g. {(missing or unexpected)[0]})")
    return model.to(device).eval(), meta
