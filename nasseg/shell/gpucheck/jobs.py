"""The search and training jobs of the checks: fixed seeds, the bundled camvid_demo images, sizes
from :class:`~.settings.Sizes`; the same job on both sides but for the device and the precision."""

from __future__ import annotations

from pathlib import Path

from nasseg.search import SearchConfig, parse_job
from nasseg.train.config import TrainConfig, parse_train_job

from .settings import Sizes

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
