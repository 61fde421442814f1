"""Running the CPU reference and the checked device in lockstep.

The reference runs free, recording its state before every step; the device starts every step from
the reference's state of that step, so each comparison measures one step's arithmetic and not an
earlier difference amplified (see :mod:`.tolerances`). Searches step epoch by epoch through the
public :class:`~nasseg.search.Search` API (one step per epoch: the data is one batch per half);
training steps through a :class:`~nasseg.train.trainer.Trainer` whose ``step`` loads the state.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from nasseg.arch import ArchSpec, load_arch
from nasseg.search import Search, SearchConfig
from nasseg.search.rundir import RunDir
from nasseg.train.config import TrainConfig
from nasseg.train.trainer import Trainer


def cpu_copy(state: Any) -> Any:
    """A deep copy with every tensor on the CPU: states taken on one device, loaded on another."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: cpu_copy(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(cpu_copy(value) for value in state)
    return copy.deepcopy(state)


def update_difference(before: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                      measured: dict[str, torch.Tensor], names: Iterable[str]) -> float:
    """||measured update - reference update|| / ||reference update|| over the tensors ``names``
    of three state dicts (float64): 0 for the same update, 1 for no update at all."""
    names = list(names)

    def flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([state[name].detach().to("cpu", torch.float64).reshape(-1) for name in names])

    start, ref = flat(before), flat(reference)
    step = (ref - start).norm()
    gap = (flat(measured) - ref).norm()
    return float(gap / step) if step > 0 else (0.0 if gap == 0 else float("inf"))


# --- searches ----------------------------------------------------------------------------------

@dataclass
class SearchTrace:
    """What a search did, epoch by epoch: metrics rows, states (before epoch 1, then after each
    epoch, on the CPU) and the decoded architectures."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    archs: list[ArchSpec] = field(default_factory=list)
    weight_names: tuple[str, ...] = ()
    arch_names: tuple[str, ...] = ()


def run_search(config: SearchConfig, run_dir: Path, seed: int,
               starts: Sequence[dict[str, Any]] | None = None) -> SearchTrace:
    """All epochs of ``config``; with ``starts`` (a reference's states) each epoch starts from the
    state the reference had before it."""
    search = Search(config, seed, run_dir, progress=False)
    arch = {id(p) for p in search.model.arch_parameters()}
    trace = SearchTrace(states=[cpu_copy(search.state())],
                        weight_names=tuple(n for n, p in search.model.named_parameters() if id(p) not in arch),
                        arch_names=tuple(n for n, p in search.model.named_parameters() if id(p) in arch))
    run = RunDir(run_dir)
    for epoch in range(1, config.epochs + 1):
        if starts is not None:
            search.load_state(copy.deepcopy(starts[epoch - 1]))
        search.run_search(max_epochs=epoch)
        trace.rows.append(dict(search.history[-1]))
        trace.states.append(cpu_copy(search.state()))
        trace.archs.append(load_arch(run.epoch_file("arch", epoch, ".yaml")))
    return trace


# --- training ----------------------------------------------------------------------------------

class LockstepTrainer(Trainer):
    """A Trainer that records each step's loss and the model and optimiser states around it; given
    ``starts`` (a reference's states before each step) it begins every step from them."""

    def __init__(self, config: TrainConfig, out: str | Path, starts: Sequence[dict[str, Any]] | None = None):
        super().__init__(config, out, restart=True, progress=False)
        self.starts = starts
        self.losses: list[float] = []
        self.before: list[dict[str, Any]] = []  # {"model", "optimizer"} before each step (CPU copies)
        self.after: list[dict[str, torch.Tensor]] = []  # the model after each step
        self.skipped: list[int] = []  # steps (from 1) whose update GradScaler skipped (inf/NaN gradients)

    def step(self, image: torch.Tensor, label: torch.Tensor) -> tuple[float, list[float], float]:
        if self.starts is not None:
            start = self.starts[self.iteration]
            self.model.load_state_dict(start["model"])
            self.optimizer.load_state_dict(copy.deepcopy(start["optimizer"]))
        self.before.append(cpu_copy({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}))
        scale = self.scaler.get_scale()
        loss, terms, grad_norm = super().step(image, label)
        if self.scaler.get_scale() < scale:  # GradScaler lowers its scale exactly when it skips a step
            self.skipped.append(self.iteration + 1)
        self.losses.append(loss)
        self.after.append(cpu_copy(self.model.state_dict()))
        return loss, terms, grad_norm
