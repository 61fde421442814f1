"""Training (retraining) jobs: which model, on which data, for how long, with which optimiser.

    name: camvid_dlv3p_mbv2
    model: deeplabv3plus_mobilenetv2   # a registered model, or an ArchSpec YAML (decoded search)
    model_args: {output_stride: 16}    # keywords of the model builder
    data:
      dataset: camvid:../shared/data/camvid   # DATASET[:PATH], see `nasseg data check --help`
      size: [180, 240]                 # resize first (reduced resolution); evaluation uses it too
      crop: [160, 224]                 # random crop (label padding = ignore)
      scale: [0.5, 2.0]                # random scale range
      batch_size: 8
    iters: 4000
    optim: {lr: 0.01, momentum: 0.9, weight_decay: 1.0e-4, power: 0.9, warmup_iters: 100}

Every key has a default (DeepLab practice: SGD momentum 0.9, poly lr with power 0.9, random
scale 0.5-2.0, flip). ``nasseg train`` builds a job from its flags when given a model instead of a
job file; ``--set key.path=value`` overrides any key either way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..spec_reader import (Section, apply_overrides, describe, load_job_data, load_yaml, plain, read_fields,
                           read_pair)


@dataclass(frozen=True)
class TrainData:
    dataset: str = "camvid_demo"  # DATASET[:PATH]
    train_split: str = "train"
    val_split: str = "val"
    size: tuple[int, int] | None = None  # resize every image to HxW before augmenting / evaluating
    crop: tuple[int, int] = (256, 256)
    scale: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    jitter: float = 0.0  # photometric jitter strength (brightness/contrast/saturation), 0 = off
    batch_size: int = 8
    workers: int = 0  # DataLoader worker processes (augmentation is seeded per item: any count)


@dataclass(frozen=True)
class TrainOptim:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    power: float = 0.9  # poly schedule: lr * (1 - it / iters) ** power
    warmup_iters: int = 0  # linear warm-up from warmup_ratio * lr
    warmup_ratio: float = 0.1
    grad_clip: float = 0.0  # max global gradient norm, 0 = no clipping


@dataclass(frozen=True)
class TrainConfig:
    name: str
    model: str
    model_args: dict[str, Any] = field(default_factory=dict)
    data: TrainData = field(default_factory=TrainData)
    iters: int = 1000
    optim: TrainOptim = field(default_factory=TrainOptim)
    loss_weights: tuple[float, ...] | None = None  # per model output; None = the model's own
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    checkpoint_every: int = 200  # iterations between resumable checkpoints (and at the end)
    eval_every: int = 0  # iterations between validation passes (0 = only at the end)
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    pretrained: str | None = None  # local backbone weights (e.g. ImageNet), never downloaded
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("file")
        return plain(data)


def parse_train_job(data: Any, file: str | None = None) -> TrainConfig:
    root = Section(data, file)
    model = root.get("model", str)
    name = root.get("name", str, Path(file).stem if file else Path(model).stem)
    model_args = root.get("model_args", dict, {})
    data_sec = root.section("data", {})
    defaults = TrainData()
    values = {"dataset": data_sec.get("dataset", str, defaults.dataset),
              "train_split": data_sec.get("train_split", str, defaults.train_split),
              "val_split": data_sec.get("val_split", str, defaults.val_split),
              "size": read_pair(data_sec, "size", None),
              "crop": read_pair(data_sec, "crop", defaults.crop),
              "scale": read_pair(data_sec, "scale", defaults.scale, float),
              "flip": data_sec.get("flip", bool, defaults.flip),
              "jitter": data_sec.get("jitter", float, defaults.jitter),
              "batch_size": data_sec.get_int("batch_size", defaults.batch_size, minimum=1),
              "workers": data_sec.get_int("workers", defaults.workers, minimum=0)}
    data_sec.finish()
    if not 0 < values["scale"][0] <= values["scale"][1]:
        raise data_sec.error("scale", f"expected [min, max] with 0 < min <= max, got {list(values['scale'])}")
    optim = TrainOptim(**read_fields(root.section("optim", {}), TrainOptim()))
    loss_weights = root.get("loss_weights", list, None)
    if loss_weights is not None and not all(isinstance(w, (int, float)) for w in loss_weights):
        raise root.error("loss_weights", f"expected a list of numbers, got {describe(loss_weights)}")
    device = root.get("device", str, "auto")
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise root.error("device", f"expected auto, cpu, cuda or cuda:N, got {device!r}")
    config = TrainConfig(
        name=name, model=model, model_args=model_args, data=TrainData(**values),
        iters=root.get_int("iters", 1000, minimum=1), optim=optim,
        loss_weights=tuple(float(w) for w in loss_weights) if loss_weights is not None else None,
        amp=root.get("amp", bool, True),
        checkpoint_every=root.get_int("checkpoint_every", 200, minimum=1),
        eval_every=root.get_int("eval_every", 0, minimum=0),
        log_every=root.get_int("log_every", 10, minimum=1),
        seed=root.get_int("seed", 0, minimum=0), device=device,
        pretrained=root.get("pretrained", str, None), file=file)
    root.finish()
    return replace(config, model=resolve_model_path(config.model, file))


def resolve_model_path(model: str, file: str | None) -> str:
    """An ArchSpec path in a job file is relative to the job file when it exists there."""
    if file and model.endswith((".yaml", ".yml")) and not Path(model).is_absolute():
        relative = Path(file).parent / model
        if relative.exists():
            return str(relative)
    return model


def is_train_job(path: str | Path) -> bool:
    """A YAML file with a ``model`` key is a training job (an ArchSpec has ``cells``)."""
    data = load_yaml(path)
    return isinstance(data, dict) and "model" in data and "cells" not in data


def load_train_job(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    return parse_train_job(load_job_data(path, overrides), str(path))


def job_from_flags(model: str, flags: dict[str, Any], overrides: list[str] | None = None) -> TrainConfig:
    """A job for ``nasseg train MODEL --data ... --iters ...``: the flags given, defaults otherwise."""
    data: dict[str, Any] = {"model": model}
    for key, value in flags.items():
        if value is None:
            continue
        target = data
        *parents, last = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = list(value) if isinstance(value, tuple) else value
    return parse_train_job(apply_overrides(data, overrides or []), None)


def dump_train_job(config: TrainConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
