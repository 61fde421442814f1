"""A memory plan: what a step needs at its peak, and whether and how it fits a memory budget."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KB', powers of 1024, one decimal (GB with two)."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "GB" else f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class Phase:
    name: str
    peak: int  # bytes in use at the phase's peak: everything alive, the device model applied
    bookkeeping: int = 0  # of which host memory per graph node and the runtime: not growing with the batch


@dataclass(frozen=True)
class MemoryPlan:
    """The predicted memory of one job's steps on one device, phase by phase."""

    job: str
    kind: str  # search | training
    device: str  # cpu | cuda
    batch: int
    input_size: tuple[int, int]
    checkpoint: bool  # activation checkpointing (supernet.checkpoint; False for training)
    weights: int  # parameters (architecture parameters included) and buffers
    state: int  # gradients and optimiser state kept between steps
    inputs: int  # the batches a step holds
    saved: int  # what autograd keeps for backward in one training forward pass
    runtime: int  # the device model's once-per-process cost
    baseline: int  # in use before the first step (weights, buffers, inputs; the device model applied)
    phases: tuple[Phase, ...]
    notes: tuple[str, ...] = ()  # what the prediction does not model for this job

    @property
    def peak(self) -> int:
        return max(phase.peak for phase in self.phases)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda phase: phase.peak).name

    @property
    def growth(self) -> int:
        """The peak above :attr:`baseline`: what ``nasseg bench`` measures of a first step."""
        return self.peak - self.baseline

    @property
    def fixed(self) -> int:
        """The part of the peak that does not grow with the batch."""
        peak = max(self.phases, key=lambda phase: phase.peak)
        return self.weights + self.state + peak.bookkeeping

    def largest_batch(self, available: int) -> int:
        """The largest batch whose peak fits ``available`` bytes, the peak taken as linear in the
        batch above :attr:`fixed` (activations, gradients in flight and inputs scale with it)."""
        per_sample = max(self.peak - self.fixed, 1) / self.batch
        return max(0, math.floor((available - self.fixed) / per_sample))

    def fits(self, available: int) -> bool:
        return self.peak <= available

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["phases"] = [asdict(phase) for phase in self.phases]
        data.update(peak=self.peak, peak_phase=self.peak_phase, growth=self.growth)
        return data

    def describe(self) -> str:
        """'search step (batch 4 at 64x64 on cpu)': what the plan is of."""
        h, w = self.input_size
        ckpt = ", supernet.checkpoint" if self.checkpoint else ""
        return f"{self.kind} step (batch {self.batch} at {h}x{w}{ckpt} on {self.device})"
