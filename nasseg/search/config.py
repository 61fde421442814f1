"""Search job files: what to search, on which data, with which optimisers, and when to stop.

    name: demo
    space: darts                 # built-in space name or a path to a space YAML
    algorithm: darts             # darts | autodeeplab
    order: first                 # darts: first | second
    data: {dataset: camvid_demo, size: [180, 240], crop: [96, 128], batch_size: 4}
    epochs: 10
    seeds: [0]
    weights: {lr: 0.025, lr_min: 0.001, momentum: 0.9, weight_decay: 3.0e-4, grad_clip: 5}
    arch: {lr: 3.0e-4, betas: [0.5, 0.999], weight_decay: 1.0e-3, start_epoch: 0}
    hessian: {every: 1, iters: 20, tol: 1.0e-2, warm_start: true, method: forward, epsilon: 1.0e-4}
    supernet: {checkpoint: false, prune_below: 0.0}   # memory/time trade-offs (docs/performance.md)
    early_stop: {rule: paper, window: 5, ratio: 0.75}
    resources: {cpus: 1, gpus: 0}  # per seed when run as a Ray Tune trial (torch uses `cpus` threads)
    max_failures: 2              # Ray: restarts of a trial whose worker died, from its last epoch

Defaults follow REFERENCE.md: DARTS (weights SGD 0.025 cosine to 0.001, momentum 0.9, wd 3e-4,
clip 5; alphas Adam 3e-4, betas (0.5, 0.999), wd 1e-3) and Auto-DeepLab (alphas+betas Adam 3e-3,
wd 1e-3, architecture updates from the middle epoch on: epoch 20 of 40).
``--set key.path=value`` overrides any key (value parsed as YAML).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError
from ..spec_reader import (Section, apply_overrides, describe, is_instance, load_job_data, load_yaml, plain,
                           read_fields, read_pair)
from .architect import DIFFERENCES
from .hessian import METHODS
from .stop_rules import make_rule

from ..data.registry import available_datasets


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "camvid_demo"
    root: str | None = None  # the data set folder (any registered dataset); camvid_demo needs none
    size: tuple[int, int] | None = None  # resize every image to HxW first (reduced resolution)
    crop: tuple[int, int] | None = None  # random training crop after resizing (None = whole image)
    flip: bool = True
    batch_size: int = 4
    val_batch_size: int = 4
    limit: int | None = None  # use only the first N training images (quick checks)


@dataclass(frozen=True)
class WeightOptim:
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0


@dataclass(frozen=True)
class ArchOptim:
    lr: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 1e-3
    start_epoch: int = 0
    fd_radius: float = 0.01  # second order: finite-difference step R = fd_radius / ||v|| (DARTS: 0.01)
    fd: str = "central"  # second order: central (DARTS) or forward difference (one pass fewer; architect.py)


@dataclass(frozen=True)
class HessianConfig:
    every: int = 1  # compute the dominant eigenvalue every N epochs (0 = never)
    iters: int = 20  # Lanczos steps
    batch_size: int | None = None  # the fixed validation batch; default: data.batch_size
    tol: float = 1e-2  # Lanczos stops when the top Ritz pair's residual r is below tol * |eigenvalue|
    warm_start: bool = True  # start Lanczos from the previous epoch's eigenvector
    method: str = "forward"  # Hessian-vector products: exact (double backward) | forward | central differences
    epsilon: float = 1e-4  # finite-difference step along the unit Lanczos vector (accuracy: docs/search.md)


@dataclass(frozen=True)
class SupernetConfig:
    """How the supernet is computed; none of these changes what is searched except prune_below."""
    checkpoint: bool = False  # recompute each state's activations in backward: far less memory, ~1.3x time
    prune_below: float = 0.0  # skip candidate ops whose softmax weight fell below this (0 = never)
    channels_last: bool = True  # NHWC memory format for the convolutions (CPU and CUDA)
    amp: bool = False  # CUDA only: bfloat16 autocast in the weight and first-order architecture steps


@dataclass(frozen=True)
class ResourcesConfig:
    """What one seed's trial reserves on a Ray cluster; in-process runs ignore it."""
    cpus: float = 1.0
    gpus: float = 0.0


@dataclass(frozen=True)
class SearchConfig:
    name: str
    space: str
    algorithm: str = "darts"
    order: str = "first"
    data: DataConfig = field(default_factory=DataConfig)
    epochs: int = 50
    seeds: tuple[int, ...] = (0,)
    weights: WeightOptim = field(default_factory=WeightOptim)
    arch: ArchOptim = field(default_factory=ArchOptim)
    hessian: HessianConfig = field(default_factory=HessianConfig)
    early_stop: dict[str, Any] = field(default_factory=lambda: {"rule": "paper"})
    alpha_limit: float = 1e3  # |alpha| above this counts as divergence
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    file: str | None = None
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    max_failures: int = 2
    supernet: SupernetConfig = field(default_factory=SupernetConfig)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("file")
        return plain(data)


def parse_job(data: Any, file: str | None = None) -> SearchConfig:
    root = Section(data, file)
    root.get_choice("kind", ("search",), "search")  # kind: hpo files are read by nasseg.runner.hpo
    name = root.get("name", str, Path(file).stem if file else "search")
    space = root.get("space", str)
    algorithm = root.get_choice("algorithm", ("darts", "autodeeplab"), "darts")
    order = root.get_choice("order", ("first", "second"), "first")
    if algorithm == "autodeeplab" and order != "first":
        raise root.error("order", "Auto-DeepLab search is first order only (REFERENCE.md)")
    epochs = root.get_int("epochs", 50, minimum=1)

    data_sec = root.section("data", {})
    data_values = {"dataset": data_sec.get_choice("dataset", available_datasets(), "camvid_demo"),
                   "root": data_sec.get("root", str, None),
                   "size": read_pair(data_sec, "size", None), "crop": read_pair(data_sec, "crop", None),
                   "flip": data_sec.get("flip", bool, True),
                   "batch_size": data_sec.get_int("batch_size", 4, minimum=1),
                   "val_batch_size": data_sec.get_int("val_batch_size", 4, minimum=1),
                   "limit": data_sec.get_int("limit", None, minimum=2)}
    data_sec.finish()
    if data_values["dataset"] != "camvid_demo" and not data_values["root"]:
        raise data_sec.error("root", f"missing; the {data_values['dataset']} dataset needs its folder")

    arch_defaults = ArchOptim() if algorithm == "darts" else ArchOptim(lr=3e-3, start_epoch=epochs // 2)
    weights = WeightOptim(**read_fields(root.section("weights", {}), WeightOptim()))
    arch = ArchOptim(**read_fields(root.section("arch", {}), arch_defaults))
    if arch.fd not in DIFFERENCES:
        raise root.error("arch.fd", f"expected one of {', '.join(DIFFERENCES)}, got {arch.fd!r}")
    hessian_sec = root.section("hessian", {})
    hessian = HessianConfig(every=hessian_sec.get_int("every", 1, minimum=0),
                            iters=hessian_sec.get_int("iters", 20, minimum=2),
                            batch_size=hessian_sec.get_int("batch_size", None, minimum=1),
                            tol=hessian_sec.get("tol", float, 1e-2),
                            warm_start=hessian_sec.get("warm_start", bool, True),
                            method=hessian_sec.get_choice("method", METHODS, "forward"),
                            epsilon=hessian_sec.get("epsilon", float, 1e-4))
    hessian_sec.finish()
    if not 0 < hessian.tol < 1:
        raise hessian_sec.error("tol", f"expected a number between 0 and 1, got {hessian.tol:g}")
    if not 0 < hessian.epsilon < 1:
        raise hessian_sec.error("epsilon", f"expected a number between 0 and 1, got {hessian.epsilon:g}")
    supernet_sec = root.section("supernet", {})
    supernet = SupernetConfig(**read_fields(supernet_sec, SupernetConfig()))

    seeds = root.get("seeds", (list, int), [0])
    seeds = [seeds] if isinstance(seeds, int) else seeds
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise root.error("seeds", f"expected an integer or a list of integers, got {describe(seeds)}")
    early_stop = root.get("early_stop", dict, {"rule": "paper"})
    make_rule(early_stop, file=file, key="early_stop")  # validate now, not at epoch 10
    alpha_limit = root.get("alpha_limit", float, 1e3)
    device = root.get("device", str, "auto")
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise root.error("device", f"expected auto, cpu, cuda or cuda:N, got {device!r}")
    if early_stop.get("rule", "paper") != "none" and hessian.every != 1:
        raise root.error("hessian.every", "stop rules need the eigenvalue of every epoch; set hessian.every: 1 "
                         "or early_stop.rule: none")
    resources = _read_resources(root.section("resources", {}))
    max_failures = root.get_int("max_failures", 2, minimum=0)
    root.finish()
    config = SearchConfig(name, space, algorithm, order, DataConfig(**data_values), epochs, tuple(seeds),
                          weights, arch, hessian, early_stop, alpha_limit, device, file,
                          resources=resources, max_failures=max_failures, supernet=supernet)
    try:
        space_path = resolve_space_path(config)
    except SpecError as exc:
        raise root.error("space", exc.message) from None
    _check_prune_threshold(supernet_sec, supernet.prune_below, space_path)
    return config


def _check_prune_threshold(sec: Section, threshold: float, space_path: str) -> None:
    """A threshold at or above 1/(ops on an edge) could prune every op of a fresh edge."""
    if threshold == 0:
        return
    from .. import space as spaces
    widest = max(len(data["ops"]) for _, _, data in spaces.load(space_path).cell_graph.edges(data=True))
    if not 0 < threshold < 1 / widest:
        raise sec.error("prune_below", f"expected 0 (off) or a weight below 1/{widest} = {1 / widest:.3g} "
                        f"(an edge with {widest} candidates starts at that weight), got {threshold:g}")


def _read_resources(sec: Section) -> ResourcesConfig:
    """``resources: {cpus: 1, gpus: 0}``; fractions are allowed (Ray packs several trials per GPU)."""
    cpus = sec.get("cpus", float, 1.0)
    gpus = sec.get("gpus", float, 0.0)
    sec.finish()
    if cpus <= 0:
        raise sec.error("cpus", f"must be > 0, got {cpus:g}")
    if gpus < 0:
        raise sec.error("gpus", f"must be >= 0, got {gpus:g}")
    if gpus > 1 and gpus != int(gpus):
        raise sec.error("gpus", f"more than one GPU must be a whole number, got {gpus:g}")
    return ResourcesConfig(cpus, gpus)


def load_job(path: str | Path, overrides: list[str] | None = None) -> SearchConfig:
    return parse_job(load_job_data(path, overrides), str(path))


def resolve_space_path(config: SearchConfig) -> str:
    """A job's space: a built-in name, or a path relative to the job file."""
    from .. import space as spaces
    candidate = Path(config.space)
    if config.file and not candidate.is_absolute() and candidate.suffix in (".yaml", ".yml"):
        relative = Path(config.file).parent / candidate
        if relative.exists():
            return str(relative)
    return str(spaces.resolve(config.space))


def dump_job(config: SearchConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
