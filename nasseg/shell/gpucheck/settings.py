"""What one GPU check runs: the checks, the device, the sizes (default or ``--quick``), where it writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..bench.settings import DEFAULT_SUITES

# the checks in the order they run (``--checks`` picks some)
CHECKS = ("search", "search_bf16", "hessian", "train", "train_amp", "latency", "bench", "nccl")
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
