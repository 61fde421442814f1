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
    hessian: {every: 1, iters: 20, tol: 1.0e-2, warm_start: true, method: forward, epsilon: 1.0e-4, overlap: false}
    supernet: {checkpoint: false, prune_below: 0.0}   # memory/time trade-offs (docs/performance.md)
    early_stop: {rule: paper, window: 5, ratio: 0.75}
    resources: {cpus: 1, gpus: 0}  # per seed when run as a Ray Tune trial (torch uses `cpus` threads; half with overlap)
    max_failures: 2              # Ray: restarts of a trial whose worker died, from its last epoch

Every key has its default (DARTS' settings; for ``algorithm: autodeeplab`` Auto-DeepLab's architecture optimiser,
updating from the middle epoch on) and its valid range in the schema below, written once. ``--set key.path=value``
overrides any key (value parsed as YAML). ``nasseg schema search`` prints the JSON Schema.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from .. import space as spaces
from ..config import FieldError, dump_yaml, load_document, relative_to_file, spec, to_plain, validate
from ..config.types import (BatchSize, Bool, Device, Float, NonNegativeFloat, NonNegativeInt, OpenUnit, PositiveFloat,
                            PositiveInt, Probability, RunName, Seeds, Size, Str)
from ..data.registry import DatasetRef
from ..errors import SpecError
from .stop_rules import EarlyStop, PaperStop

AdamBeta = Annotated[Float, Field(ge=0, lt=1)]
# Auto-DeepLab searches its alphas and betas with another optimiser, from the middle epoch on
AUTODEEPLAB_ARCH = {"lr": 3e-3, "weight_decay": 1e-3}


@spec
class DataConfig(DatasetRef):
    size: Size | None = None  # resize every image to HxW first (reduced resolution)
    crop: Size | None = None  # random training crop after resizing (None = whole image)
    flip: Bool = True
    batch_size: BatchSize = 4
    val_batch_size: PositiveInt = 4
    limit: Annotated[int, Field(ge=2, strict=True)] | None = None  # only the first N training images

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.size and self.crop and (self.crop[0] > self.size[0] or self.crop[1] > self.size[1]):
            raise FieldError("crop", f"{list(self.crop)} is larger than the resized image, data.size "
                             f"{list(self.size)}; expected a crop within it (or no crop)")


@spec
class WeightOptim:
    lr: PositiveFloat = 0.025
    lr_min: NonNegativeFloat = 0.001
    momentum: Probability = 0.9
    weight_decay: NonNegativeFloat = 3e-4
    grad_clip: PositiveFloat = 5.0


@spec
class ArchOptim:
    lr: PositiveFloat = 3e-4
    betas: tuple[AdamBeta, AdamBeta] = (0.5, 0.999)  # Adam's decay rates, each in [0, 1)
    weight_decay: NonNegativeFloat = 1e-3
    start_epoch: NonNegativeInt = 0
    fd_radius: PositiveFloat = 0.01  # second order: finite-difference step R = fd_radius / ||v|| (DARTS: 0.01)
    fd: Literal["central", "forward"] = "central"  # second order: central (DARTS) or forward difference


@spec
class HessianConfig:
    every: NonNegativeInt = 1  # compute the dominant eigenvalue every N epochs (0 = never)
    iters: Annotated[int, Field(ge=2, strict=True)] = 20  # Lanczos steps
    batch_size: BatchSize | None = None  # the fixed validation batch; default: data.batch_size
    tol: OpenUnit = 1e-2  # Lanczos stops when the top Ritz pair's residual r is below tol * |eigenvalue|
    warm_start: Bool = True  # start Lanczos from the previous epoch's eigenvector
    method: Literal["exact", "forward", "central"] = "forward"  # Hessian-vector products (double backward or differences)
    epsilon: OpenUnit = 1e-4  # finite-difference step along the unit Lanczos vector (accuracy: docs/search.md)
    blocks: Bool = False  # lattices: also the eigenvalue over the alphas alone and the betas alone (2 more Lanczos runs)
    # compute epoch e's eigenvalue on a thread of its own while epoch e+1 trains (same numbers; a second
    # core's worth of work: a trial then gives each thread half its resources.cpus as torch threads)
    overlap: Bool = False


@spec
class SupernetConfig:
    """How the supernet is computed; none of these changes what is searched except prune_below."""
    checkpoint: Bool = False  # recompute each state's activations in backward: far less memory, more time
    # with checkpoint: recompute only the states at this stride or finer (null: all). Coarse states hold few
    # bytes for the time their recomputation takes (docs/performance.md)
    checkpoint_max_stride: PositiveInt | None = None
    prune_below: Annotated[Float, Field(ge=0, lt=1)] = 0.0  # skip ops whose softmax weight fell below
    channels_last: Bool = True  # NHWC memory format for the convolutions (CPU and CUDA)
    # the candidate ops keep fewer tensors for backward (fast path lean_saved, CPU): null = on for chain
    # (DARTS) networks, for tensors of at least 2^17 elements, off for the lattice, whose per-call-bound steps
    # it slows, except where the conv candidates of k edges run side by side (fast path batched_edges; k x the
    # state's elements >= 2^16); true = on at every tensor size, on any network; false = off (docs/performance.md)
    lean_saved: Bool | None = None
    amp: Bool = False  # CUDA only: bfloat16 autocast in the weight and first-order architecture steps


@spec
class ResourcesConfig:
    """What one seed's trial reserves on a Ray cluster; in-process runs ignore it. Fractions are
    allowed (Ray packs several trials per GPU); more than one GPU must be a whole number."""
    cpus: PositiveFloat = 1.0
    gpus: NonNegativeFloat = 0.0

    def __post_init__(self) -> None:
        if self.gpus > 1 and self.gpus != int(self.gpus):
            raise FieldError("gpus", f"more than one GPU must be a whole number, got {self.gpus:g}")


@spec
class SearchConfig:
    space: Str  # a built-in space name or a space file (relative to the job file)
    name: RunName = "search"  # default: the job file's name
    kind: Literal["search"] = "search"
    algorithm: Literal["darts", "autodeeplab"] = "darts"
    order: Literal["first", "second"] = "first"
    data: DataConfig = DataConfig()
    epochs: Annotated[int, Field(ge=1, le=100_000, strict=True)] = 50
    seeds: Seeds = (0,)
    weights: WeightOptim = WeightOptim()
    arch: ArchOptim = ArchOptim()
    hessian: HessianConfig = HessianConfig()
    early_stop: EarlyStop = PaperStop()
    alpha_limit: PositiveFloat = 1e3  # |alpha| above this counts as divergence
    device: Device = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    resources: ResourcesConfig = ResourcesConfig()
    max_failures: NonNegativeInt = 2
    supernet: SupernetConfig = SupernetConfig()
    file: SkipJsonSchema[str | None] = None  # the job file it was read from (not a key of the file)

    @model_validator(mode="before")
    @classmethod
    def _algorithm_defaults(cls, data: Any) -> Any:
        """Auto-DeepLab's architecture optimiser, unless the job sets it."""
        if isinstance(data, dict) and data.get("algorithm") == "autodeeplab":
            arch = data.get("arch") or {}
            if isinstance(arch, dict):
                epochs = data.get("epochs", 50)
                half = {"start_epoch": epochs // 2} if isinstance(epochs, int) and not isinstance(epochs, bool) else {}
                data = {**data, "arch": {**AUTODEEPLAB_ARCH, **half, **arch}}
        return data

    def __post_init__(self) -> None:
        repeated = sorted({seed for seed in self.seeds if self.seeds.count(seed) > 1})
        if repeated:
            raise FieldError("seeds", f"seed {repeated[0]} is listed twice; expected distinct seeds (each writes seed<N>)")
        if self.algorithm == "autodeeplab" and self.order != "first":
            raise FieldError("order", "Auto-DeepLab search is first order only (the paper's method)")
        if self.early_stop.rule != "none" and self.hessian.every != 1:
            raise FieldError("hessian.every", "stop rules need the eigenvalue of every epoch; set hessian.every: 1 "
                             "or early_stop.rule: none")
        if self.supernet.checkpoint_max_stride is not None and not self.supernet.checkpoint:
            raise FieldError("supernet.checkpoint_max_stride", "limits activation checkpointing, which is off; set "
                             "supernet.checkpoint: true or remove supernet.checkpoint_max_stride")
        if self.hessian.overlap and self.early_stop.ada is not None:
            raise FieldError("hessian.overlap", "DARTS-ADA rolls back to saved epochs, and with overlap an epoch is "
                             "saved before its eigenvalue; set hessian.overlap: false or remove early_stop.ada")

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in to_plain(self).items() if key != "file"}

    def replace(self, **changes: Any) -> "SearchConfig":
        return dataclasses.replace(self, **changes)


def parse_job(data: Any, file: str | None = None) -> SearchConfig:
    """Validate a search job document; paths in it are relative to ``file`` (see relative_to_file)."""
    if isinstance(data, dict):
        if "file" in data:
            raise SpecError(file, "file", "unknown key; the job's file is where it was read from")
        data = {"name": Path(file).stem if file else "search", **data}
        if isinstance(data.get("space"), str):
            data["space"] = _space_path(data["space"], file)
        if isinstance(data.get("data"), dict) and isinstance(data["data"].get("root"), str):
            data["data"] = {**data["data"], "root": relative_to_file(data["data"]["root"], file)}
    config = validate(SearchConfig, data, file)
    config = dataclasses.replace(config, file=file)
    _check_prune_threshold(config, file)
    return config


def load_job(path: str | Path, overrides: list[str] | None = None) -> SearchConfig:
    return parse_job(load_document(path, overrides), str(path))


def _space_path(space: str, file: str | None) -> str:
    """A built-in space name as it is; a space file relative to the job file (or the working
    directory); an unknown name fails here, naming the ``space`` key."""
    if Path(space).suffix in (".yaml", ".yml"):
        space = relative_to_file(space, file)
    try:
        spaces.resolve(space)
    except SpecError as exc:
        raise SpecError(file, "space", exc.message) from None
    return space


def resolve_space_path(config: SearchConfig) -> str:
    """The file of a job's space (a built-in name resolves to the packaged file)."""
    return str(spaces.resolve(config.space))


def _check_prune_threshold(config: SearchConfig, file: str | None) -> None:
    """A threshold at or above 1/(ops on an edge) could prune every op of a fresh edge."""
    threshold = config.supernet.prune_below
    if threshold == 0:
        return
    widest = max(len(data["ops"]) for _, _, data in spaces.load(resolve_space_path(config)).cell_graph.edges(data=True))
    if threshold >= 1 / widest:
        raise SpecError(file, "supernet.prune_below", f"expected 0 (off) or a weight below 1/{widest} = "
                        f"{1 / widest:.3g} (an edge with {widest} candidates starts at that weight), got {threshold:g}")


def dump_job(config: SearchConfig) -> str:
    return dump_yaml(config.to_dict())
