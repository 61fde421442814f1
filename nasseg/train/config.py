"""Training (retraining) jobs: which model, on which data, for how long, with which optimiser.

    name: camvid_dlv3p_mbv2
    model: deeplabv3plus_mobilenetv2   # a registered model, or an ArchSpec YAML (decoded search)
    model_args: {output_stride: 16}    # keywords of the model builder
    data:
      dataset: camvid                  # a registered dataset (`nasseg data check --help`) ...
      root: ../shared/data/camvid      # ... and its folder (or dataset: camvid:PATH)
      size: [180, 240]                 # resize first (reduced resolution); evaluation uses it too
      crop: [160, 224]                 # random crop (label padding = ignore)
      scale: [0.5, 2.0]                # random scale range
      batch_size: 8
    iters: 4000
    optim: {lr: 0.01, momentum: 0.9, weight_decay: 1.0e-4, power: 0.9, warmup_iters: 100}

Every key has a default (DeepLab practice: SGD momentum 0.9, poly lr with power 0.9, random scale
0.5-2.0, flip) and its valid range in the schema below. ``nasseg train`` builds a job from its flags
when given a model instead of a job file; ``--set key.path=value`` overrides any key either way.
``nasseg schema train`` prints the JSON Schema.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from ..config import FieldError, dump_yaml, load_document, load_yaml, relative_to_file, spec, to_plain, validate
from ..config.types import (BatchSize, Bool, Device, Float, NonNegativeFloat, NonNegativeInt, PositiveFloat,
                            PositiveInt, Probability, RunName, Seed, Size, Str)
from ..data.registry import DatasetRef
from ..errors import NassegError, SpecError
from ..models import check_args

# a crop may pass the (scaled) image and is padded with ignore labels, but not by more than this
MAX_CROP_OVER_IMAGE = 2.0


@spec
class TrainData(DatasetRef):
    train_split: Str = "train"
    val_split: Str = "val"
    size: Size | None = None  # resize every image to HxW before augmenting / evaluating
    crop: Size = (256, 256)
    scale: tuple[PositiveFloat, PositiveFloat] = (0.5, 2.0)
    flip: Bool = True
    jitter: Annotated[Float, Field(ge=0, le=1)] = 0.0  # photometric jitter strength, 0 = off
    batch_size: BatchSize = 8
    workers: Annotated[int, Field(ge=0, le=256, strict=True)] = 0  # DataLoader worker processes

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale[0] > self.scale[1]:
            raise FieldError("scale", f"expected [min, max] with min <= max, got {list(self.scale)}")
        if self.size and any(c > side * self.scale[1] * MAX_CROP_OVER_IMAGE for c, side in zip(self.crop, self.size)):
            raise FieldError("crop", f"{list(self.crop)} is more than {MAX_CROP_OVER_IMAGE:g}x the largest scaled "
                             f"image ({self.size[0]}x{self.size[1]} at scale {self.scale[1]:g}); every sample would "
                             "be mostly padding: lower data.crop or raise data.size")


@spec
class TrainOptim:
    lr: PositiveFloat = 0.01
    momentum: Probability = 0.9
    weight_decay: NonNegativeFloat = 1e-4
    nesterov: Bool = False
    power: PositiveFloat = 0.9  # poly schedule: lr * (1 - it / iters) ** power
    warmup_iters: NonNegativeInt = 0  # linear warm-up from warmup_ratio * lr
    warmup_ratio: Probability = 0.1
    grad_clip: NonNegativeFloat = 0.0  # max global gradient norm, 0 = no clipping


@spec
class TrainConfig:
    model: Str
    name: RunName = "train"  # default: the job file's name, else the model's
    kind: Literal["train"] = "train"
    model_args: dict[Str, Any] = dataclasses.field(default_factory=dict)
    data: TrainData = TrainData()
    iters: Annotated[int, Field(ge=1, le=100_000_000, strict=True)] = 1000
    optim: TrainOptim = TrainOptim()
    loss_weights: tuple[NonNegativeFloat, ...] | None = None  # per model output; None = the model's own
    amp: Bool = True  # mixed precision on CUDA (ignored on CPU)
    checkpoint_every: PositiveInt = 200  # iterations between resumable checkpoints (and at the end)
    eval_every: NonNegativeInt = 0  # iterations between validation passes (0 = only at the end)
    log_every: PositiveInt = 10
    seed: Seed = 0
    device: Device = "auto"
    pretrained: Str | None = None  # local backbone weights (e.g. ImageNet), never downloaded
    file: SkipJsonSchema[str | None] = None  # the job file it was read from (not a key of the file)

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in to_plain(self).items() if key != "file"}


def parse_train_job(data: Any, file: str | None = None) -> TrainConfig:
    """Validate a training job document; an ArchSpec ``model`` and ``pretrained`` weights are paths
    relative to ``file`` (see relative_to_file)."""
    if isinstance(data, dict):
        if "file" in data:
            raise SpecError(file, "file", "unknown key; the job's file is where it was read from")
        model = data.get("model")
        default_name = Path(file).stem if file else Path(model).stem if isinstance(model, str) else "train"
        data = {"name": default_name, **data}
        if isinstance(model, str) and model.endswith((".yaml", ".yml")):
            data["model"] = relative_to_file(model, file)
        if isinstance(data.get("pretrained"), str):
            data["pretrained"] = relative_to_file(data["pretrained"], file)
        if isinstance(data.get("data"), dict) and isinstance(data["data"].get("root"), str):
            data["data"] = {**data["data"], "root": relative_to_file(data["data"]["root"], file)}
    config = dataclasses.replace(validate(TrainConfig, data, file), file=file)
    try:  # the model's keywords fail now, naming the job file, not after the data is read
        check_args(config.model, config.model_args)
    except SpecError as exc:
        if exc.file is not None and file is not None and exc.file != file:  # the ArchSpec file the job names
            raise SpecError(file, "model", str(exc)) from None
        if exc.file is not None:  # from flags: the ArchSpec file's own line
            raise
        raise SpecError(file, exc.key, exc.message) from None
    except NassegError as exc:  # an unknown model name, a keyword the architecture does not take
        raise SpecError(file, "model", str(exc)) from None
    return config


def is_train_job(path: str | Path) -> bool:
    """A YAML file with a ``model`` key is a training job (an ArchSpec has ``cells``)."""
    data = load_yaml(path)
    return isinstance(data, dict) and "model" in data and "cells" not in data


def load_train_job(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    return parse_train_job(load_document(path, overrides), str(path))


def dump_train_job(config: TrainConfig) -> str:
    return dump_yaml(config.to_dict())
