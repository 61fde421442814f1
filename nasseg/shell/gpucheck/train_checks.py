"""The retraining checks: lockstep Trainer steps in float32 and with AMP (float16 autocast and
GradScaler on CUDA), each step's loss and weight update against the CPU's."""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import tolerances as tol
from .compare import Comparison, bounded, within
from .context import CheckContext
from .environment import strict_float32
from .jobs import train_job
from .lockstep import LockstepTrainer, update_difference


@dataclass
class TrainTrace:
    losses: list[float]
    before: list[dict]  # model and optimiser states before each step
    after: list[dict]  # the model after each step
    skipped: list[int]  # steps whose update GradScaler skipped
    names: list[str]  # the model's parameters
    miou: float  # validation mIoU after the steps


def lockstep_train(ctx: CheckContext, side: str, name: str, device: str, amp: bool,
                   starts: list[dict] | None = None) -> TrainTrace:
    config = train_job(ctx.sizes, name, ctx.settings.seed, device, amp)
    out = ctx.run_dir(side, name, "train").parent
    trainer = LockstepTrainer(config, out, starts=starts)
    result = trainer.run()
    return TrainTrace(trainer.losses, trainer.before, trainer.after, trainer.skipped, trainer.parameter_names(),
                      float(result["miou"]) if result else math.nan)


def reference_train(ctx: CheckContext) -> TrainTrace:
    return ctx.reference("train", lambda: lockstep_train(ctx, "reference", "train", "cpu", amp=False))


def compare_training(check: str, reference: TrainTrace, measured: TrainTrace, reduced: bool,
                     note: str = "") -> list[Comparison]:
    """Steps GradScaler skipped (their update is zero by design) are left out of the comparison."""
    kept = [k for k in range(len(reference.losses)) if k + 1 not in measured.skipped]
    updates = [update_difference(reference.before[k]["model"], reference.after[k], measured.after[k],
                                 reference.names) for k in kept]
    skipped = f"GradScaler skipped step(s) {measured.skipped}; " if measured.skipped else ""
    steps = f"{len(reference.losses)} lockstep steps; val mIoU after them {reference.miou:.4f} (CPU), " \
            f"{measured.miou:.4f} (device)"
    return [
        within(check, "step loss", [reference.losses[k] for k in kept], [measured.losses[k] for k in kept],
               tol.LOSS_REDUCED if reduced else tol.LOSS_FP32, f"{skipped}{steps}. {note}".strip()),
        bounded(check, "weight update (relative L2 difference)", updates,
                tol.UPDATE_REDUCED if reduced else tol.UPDATE_FP32_TRAIN),
    ]


def check_train(ctx: CheckContext) -> list[Comparison]:
    reference = reference_train(ctx)
    with strict_float32():
        measured = ctx.on_device(lambda: lockstep_train(ctx, "device", "train", str(ctx.device), False,
                                                        reference.before))
    return compare_training("train", reference, measured, reduced=False)


def check_train_amp(ctx: CheckContext) -> list[Comparison]:
    reference = reference_train(ctx)
    measured = ctx.on_device(lambda: lockstep_train(ctx, "device", "train_amp", str(ctx.device), True,
                                                    reference.before))
    note = "" if ctx.device.type == "cuda" else "amp applies on CUDA only: float32 on both sides here"
    return compare_training("train_amp", reference, measured, reduced=True, note=note)
