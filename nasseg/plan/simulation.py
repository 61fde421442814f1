"""Running the phases of a step on ``meta`` tensors and recording the memory each one peaks at.

A device model says how tensor bytes become device memory:

* ``cuda``: what ``torch.cuda.max_memory_allocated`` counts, every storage rounded up to the caching
  allocator's 512-byte blocks. Not modelled: cuDNN / cuBLAS workspaces and the CUDA context.
* ``cpu``: the resident memory of the process, which is more than its tensors. Measured on the DARTS
  and Auto-DeepLab search nets (docs/planning.md), three costs come on top, and the model adds them:
  every storage is 64-byte aligned (c10's allocator) and glibc's heap (with nasseg's kept heap) holds
  more than the live tensors: ~15 % more (measured 1.22-1.32x on the DARTS CIFAR search net, 1.0-1.05x
  on the Auto-DeepLab supernet), about twice as much with activation checkpointing (2.2x; its first
  forward frees its temporaries between the states it keeps; measured 2.1-2.5x on the Auto-DeepLab
  supernet at 225x225 and 321x321, 1.4-1.5x at 129x129, so small checkpointed steps are over-predicted,
  by up to ~45 %, the side that refuses nothing that matters); each operation recorded for autograd costs
  ~1.9 KB of host memory until its graph is freed (the node, its saved variables, the tensors' metadata; an
  Auto-DeepLab pass records ~90 000 of them, ~170 MB); the first step of a process loads kernels and
  modules once (~40 MB).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .. import fastpaths
from ..layers import forget_index_tables
from .budget import MemoryPlan, Phase
from .tracer import MemoryTracer

MB = 2**20
META = torch.device("meta")


@dataclass(frozen=True)
class DeviceModel:
    name: str
    round_to: int  # allocation granularity in bytes
    byte_factor: float  # allocator slack on top of the live tensors
    checkpoint_byte_factor: float  # the same when activation checkpointing recomputes in backward
    node_bytes: int  # host bytes per autograd graph node (CPU: the same memory as the tensors)
    runtime_bytes: int  # once per process, from its first step on


DEVICE_MODELS = {"cpu": DeviceModel("cpu", 64, 1.15, 2.20, 1900, 40 * MB),
                 "cuda": DeviceModel("cuda", 512, 1.0, 1.0, 0, 0)}


def device_model(device: str) -> DeviceModel:
    return DEVICE_MODELS["cuda" if device.startswith("cuda") else "cpu"]


def on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with every parameter and buffer on the ``meta`` device: nothing allocated or
    initialised (a scratch tracer skips the initialisers' work)."""
    with MemoryTracer(), torch.device("meta"):
        return build()


def meta_batch(batch: int, size: tuple[int, int], dense: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, H, W) and labels (N, H, W) on ``meta``, as the data loader makes them; one
    label per image for a classification head (the DARTS CIFAR net of the benchmarks)."""
    return (torch.empty(batch, 3, *size, device=META),
            torch.empty(batch, *(size if dense else ()), dtype=torch.int64, device=META))


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    seen = {t.untyped_storage()._cdata: t.untyped_storage().nbytes() for t in tensors}
    return sum(seen.values())


class SavedCounter:
    """Bytes of the distinct storages autograd saves for backward inside :meth:`counting`,
    those of ``exclude`` (parameters, inputs) not counted."""

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self.exclude = {t.untyped_storage()._cdata for t in exclude}
        self.seen: dict[int, int] = {}

    @property
    def bytes(self) -> int:
        return sum(self.seen.values())

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in self.exclude:
            self.seen[storage._cdata] = storage.nbytes()
        return tensor

    def counting(self) -> contextlib.AbstractContextManager:
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)


def simulate(trace, device: str, phases: list[tuple[str, Callable[[], None]]], *, warm: bool,
             checkpoint: bool = False, **fields: Any) -> MemoryPlan:
    """One tracer over a whole plan: what exists before the steps (weights, buffers, batches: the
    plan's ``baseline``), with ``warm`` the state a previous step leaves (``trace.warm_up()``, e.g. one
    optimiser step), then each of ``phases`` with its own peak. ``trace`` has the ``model``, its
    ``inputs()`` and a ``saved`` counter; ``fields``: the plan's other fields."""
    model = device_model(device)
    forget_index_tables()  # a fresh process makes them in its first step
    tracer = MemoryTracer(model.round_to, model.checkpoint_byte_factor if checkpoint else model.byte_factor,
                          model.node_bytes)
    weights = [*trace.model.parameters(), *trace.model.buffers()]
    tracer.track([*weights, *trace.inputs()])
    baseline = tracer.current
    if warm:
        with tracer, fastpaths.traced_as(model.name):  # meta tensors take the planned device's fast paths
            trace.warm_up()
    state = tracer.current - baseline
    done = []
    for name, run in phases:
        tracer.reset_peak()
        with tracer, fastpaths.traced_as(model.name):
            run()
        runtime = model.runtime_bytes
        done.append(Phase(name, tracer.peak + runtime, tracer.peak - tracer.peak_tensors + runtime))
    return MemoryPlan(device=model.name, checkpoint=checkpoint, weights=storage_bytes(weights), state=state,
                      inputs=storage_bytes(trace.inputs()), saved=trace.saved.bytes, runtime=model.runtime_bytes,
                      baseline=baseline, phases=tuple(done), **fields)
