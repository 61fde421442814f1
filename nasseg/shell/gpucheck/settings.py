"""What one GPU check runs: the checks, the device, the sizes (default or ``--quick``), where it writes,
and the search and training jobs of the checks: fixed seeds, the bundled camvid_demo images, the
same job on both sides but for the device and the precision."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nasseg.search import SearchConfig, parse_job
from nasseg.train.config import TrainConfig, parse_train_job

from ..bench.settings import DEFAULT_SUITES

# the checks in the order they run (``--checks`` picks some)
DESCRIPTIONS = {
    "search": "DARTS search epochs (first order, float32, channels-last; TF32 off): steps, validation, "
              "eigenvalue, decoded architecture",
    "search_bf16": "the same search steps with supernet.amp: bfloat16 autocast",
    "hessian": "dominant Hessian eigenvalue of the architecture loss on a fixed batch, initial supernet",
    "train": "retraining steps (float32; channels-last on CUDA; TF32 off)",
    "train_amp": "retraining steps with amp: true (float16 autocast + GradScaler on CUDA)",
    "latency": "nasseg info --latency (median forward pass)",
    "bench": "nasseg bench on the device",
    "nccl": "nasseg train --workers 2: NCCL data-parallel retraining on 2 GPUs (Ray Train)",
}
CHECKS = tuple(DESCRIPTIONS)


@dataclass(frozen=True)
class Sizes:
    """The networks and data of the checks: small enough for a CPU reference in seconds."""

    search_width: int  # C of the DARTS segmentation space
    search_layers: int
    search_crop: int  # square crops of camvid_demo images resized to crop*3/2 x crop*2
    search_batch: int
    search_epochs: int  # one step each: the data is limited to one batch per half
    hessian_iters: int  # Lanczos steps, all of them (the stopping tolerance is out of reach)
    train_model: str
    train_crop: int
    train_batch: int
    train_steps: int
    latency_input: tuple[int, int]


DEFAULT_SIZES = Sizes(search_width=8, search_layers=5, search_crop=64, search_batch=4, search_epochs=3,
                      hessian_iters=8, train_model="icnet_resnet50", train_crop=160, train_batch=4, train_steps=3,
                      latency_input=(512, 1024))
QUICK_SIZES = Sizes(search_width=4, search_layers=3, search_crop=32, search_batch=2, search_epochs=2,
                    hessian_iters=3, train_model="icnet_resnet50", train_crop=64, train_batch=2, train_steps=2,
                    latency_input=(64, 64))


@dataclass
class GpuCheckSettings:
    device: str = "cuda"
    out: Path = Path("runs/gpucheck")
    checks: tuple[str, ...] = CHECKS
    quick: bool = False  # tiny sizes: a smoke run (the tolerances are set for the default sizes)
    seed: int = 0
    threads: int | None = None  # torch threads of the CPU side; None: torch's default
    bench_suites: tuple[str, ...] = DEFAULT_SUITES
    bench_full: bool = False  # nasseg bench at its full sizes instead of --quick
    workers: int = 2  # the data-parallel check's GPUs
    progress: bool = True
    sizes: Sizes = field(init=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.sizes = QUICK_SIZES if self.quick else DEFAULT_SIZES


UNREACHABLE_TOL = 1e-9  # Lanczos' stopping tolerance: out of reach, so both sides take every step


def search_job(sizes: Sizes, space_file: Path, seed: int, device: str, amp: bool = False,
               hessian_method: str = "forward") -> SearchConfig:
    """First-order DARTS on camvid_demo, architecture steps from the first step, one step per epoch
    (half A and half B hold one batch each), validation and the eigenvalue after every epoch."""
    crop, batch = sizes.search_crop, sizes.search_batch
    return parse_job({
        "name": "gpucheck_search", "space": str(space_file), "algorithm": "darts", "order": "first",
        "epochs": sizes.search_epochs, "seeds": [seed], "device": device,
        "data": {"dataset": "camvid_demo", "size": [crop * 3 // 2, crop * 2], "crop": [crop, crop],
                 "batch_size": batch, "limit": 2 * batch, "val_batch_size": 8},
        "hessian": {"iters": sizes.hessian_iters, "tol": UNREACHABLE_TOL, "batch_size": batch,
                    "method": hessian_method},
        "early_stop": {"rule": "none"}, "supernet": {"amp": amp}})


def train_job(sizes: Sizes, name: str, seed: int, device: str, amp: bool = False) -> TrainConfig:
    """``train_steps`` iterations of the training model on camvid_demo crops (no random scaling),
    a loss logged every step, then the final validation."""
    crop = sizes.train_crop
    return parse_train_job({
        "model": sizes.train_model, "name": name, "device": device, "amp": amp, "seed": seed,
        "iters": sizes.train_steps, "checkpoint_every": sizes.train_steps, "log_every": 1, "eval_every": 0,
        "data": {"dataset": "camvid_demo", "crop": [crop, crop], "scale": [1.0, 1.0],
                 "batch_size": sizes.train_batch}})
