"""The benchmarked supernets: a space at one size (:class:`NetConfig`) and one way of running its
search steps (:class:`Variant`: nasseg's code in one of its modes, or the straightforward baseline)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from nasseg import space as spaces
from nasseg.config import load_yaml
from nasseg.errors import NassegError
from nasseg.layers import frozen_bn_stats, to_channels_last
from nasseg.plan.simulation import SavedCounter
from nasseg.search.architect import first_order_grads, second_order_grads, set_arch_grads
from nasseg.search.config import AUTODEEPLAB_ARCH, ArchOptim, SupernetConfig, WeightOptim
from nasseg.search.loop import optimizers
from nasseg.search.steps import weight_step
from nasseg.space import SearchSpace
from nasseg.space.spec import parse_space
from nasseg.supernet import Supernet, build

from . import straightforward

IGNORE_INDEX = 255
# ours: as a search runs it (channels-last when that is the default); ours_nchw: NCHW; ours_ckpt:
# activation checkpointing; ours_ckpt16: of the states at stride 16 or finer only (supernet.checkpoint_max_stride);
# ours_2nd / ours_2nd_fwd: second-order arch step, central / forward difference; ours_lean: supernet.lean_saved:
# true (the lean layers at every tensor size, also on a lattice)
VARIANTS = ("ours", "ours_nchw", "ours_ckpt", "ours_ckpt16", "ours_2nd", "ours_2nd_fwd", "ours_lean", "straightforward")


@dataclass(frozen=True)
class NetConfig:
    """One supernet at one input size: a space with its width/depth overridden."""

    space: str
    width: int | None  # C (chain) or F (lattice); None keeps the space's
    layers: int | None
    classes: int
    batch: int
    size: tuple[int, int]

    @property
    def label(self) -> str:
        letter = "F" if self.space == "autodeeplab" else "C"
        parts = [self.space, self.width and f"{letter}={self.width}", self.layers and f"L={self.layers}",
                 f"b{self.batch}", f"{self.size[0]}x{self.size[1]}"]
        return " ".join(part for part in parts if part)


def bench_space(name: str, width: int | None = None, layers: int | None = None,
                classes: int | None = None) -> SearchSpace:
    """A search space (built-in name or file) with ``network.C``/``F``, ``layers`` and ``classes``
    overridden, validated and compiled like any space file."""
    path = spaces.resolve(name)
    data = load_yaml(path)
    net = data.setdefault("network", {})
    overrides = {"F" if net.get("type") == "lattice" else "C": width, "layers": layers, "classes": classes}
    net.update({key: value for key, value in overrides.items() if value is not None})
    space = parse_space(data, str(path))
    space.cell_graph, space.network_graph
    return space


def criterion(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)


def loss_fn(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return criterion(model(x), y)


class Variant:
    """A supernet with its optimisers and fixed batches A (weights) and B (architecture);
    :meth:`step` runs one search step and returns the seconds of its parts.

    ``source``: a nasseg supernet of the same net whose weights this one copies, so that variants
    timed side by side compute from the same state."""

    def __init__(self, net: NetConfig, kind: str, device: torch.device, seed: int = 0,
                 source: Supernet | None = None):
        if kind not in VARIANTS:
            raise NassegError(f"unknown variant {kind!r}; expected one of {', '.join(VARIANTS)}")
        self.net, self.kind, self.device = net, kind, device
        space = bench_space(net.space, net.width, net.layers, net.classes)
        torch.manual_seed(seed)

        def build_ours() -> Supernet:
            return Supernet(space, net.classes, lean_saved=True) if kind == "ours_lean" else build(space, net.classes)

        ours = source if source is not None else build_ours()
        if kind == "straightforward":
            self.model = straightforward.StraightforwardSupernet(space, net.classes).load_from(ours)
        else:
            self.model = ours
            if source is not None:  # a second supernet with the same weights
                self.model = build_ours()
                self.model.load_state_dict(source.state_dict())
            self.model.checkpoint_cells = kind in ("ours_ckpt", "ours_ckpt16")
            self.model.checkpoint_max_stride = 16 if kind == "ours_ckpt16" else None
        self.model.to(device).train()
        if kind not in ("straightforward", "ours_nchw") and SupernetConfig().channels_last:
            self.model = to_channels_last(self.model)  # as the search loop does (supernet.channels_last)
        self.lattice = space.network.type == "lattice"
        # the search job's default optimisers (DARTS; Auto-DeepLab's for the architecture of a lattice)
        arch = ArchOptim(**AUTODEEPLAB_ARCH) if self.lattice else ArchOptim()
        self.weight_optimizer, self.arch_optimizer = optimizers(self.model, WeightOptim(), arch)
        generator = torch.Generator().manual_seed(seed + 1)
        shape = (net.batch, 3, *net.size)
        self.xa, self.xb = (torch.randn(shape, generator=generator).to(device) for _ in range(2))
        label_shape = (net.batch, *net.size) if getattr(self.model, "segmentation", True) else (net.batch,)
        self.ya, self.yb = (torch.randint(0, net.classes, label_shape, generator=generator).to(device)
                            for _ in range(2))

    def release(self) -> None:
        for name in ("model", "weight_optimizer", "arch_optimizer", "xa", "xb", "ya", "yb"):
            setattr(self, name, None)

    def arch_step(self) -> None:
        if self.kind == "straightforward":
            straightforward.straightforward_arch_step_first(self.model, self.xb, self.yb, self.arch_optimizer,
                                                            IGNORE_INDEX)
            return
        if self.kind in ("ours_2nd", "ours_2nd_fwd"):
            grads = second_order_grads(self.model, loss_fn, self.xa, self.ya, self.xb, self.yb, self.weight_optimizer,
                                       xi=self.weight_optimizer.param_groups[0]["lr"], r=0.01,
                                       difference="forward" if self.kind == "ours_2nd_fwd" else "central")
        else:
            grads = first_order_grads(self.model, loss_fn, self.xb, self.yb)
        self.arch_optimizer.zero_grad()
        set_arch_grads(self.model, grads)
        self.arch_optimizer.step()

    def weight_step(self) -> float:
        if self.kind == "straightforward":
            return straightforward.straightforward_weight_step(self.model, self.xa, self.ya, self.weight_optimizer,
                                                               5.0, IGNORE_INDEX)
        return weight_step(self.model, criterion, self.xa, self.ya, self.weight_optimizer, 5.0)[0]

    def step(self) -> dict[str, float]:
        """DARTS: architecture step on B, then weight step on A; Auto-DeepLab the other way round."""
        parts = [("weight", self.weight_step), ("arch", self.arch_step)]
        if not self.lattice:
            parts.reverse()
        seconds = {name: timed(run, self.device)[0] for name, run in parts}
        seconds["total"] = seconds["arch"] + seconds["weight"]
        return seconds

    def saved_bytes(self) -> int:
        """Bytes of the unique storages autograd keeps for backward in the weight step's forward pass
        (parameters, buffers and the input excluded), with BatchNorm statistics left as they are."""
        counter = SavedCounter([*self.model.parameters(), *self.model.buffers(), self.xa])
        with frozen_bn_stats(self.model), counter.counting():
            loss_fn(self.model, self.xa, self.ya)
        return counter.bytes


def timed(call: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """(wall seconds, result) of one call, the device's queued work included."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    start = time.perf_counter()
    result = call()
    sync()
    return time.perf_counter() - start, result
