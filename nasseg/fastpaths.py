"""Every CPU fast path and torch-bug workaround of nasseg: named, documented, individually switchable.

Each path computes the same function and gradients as the native op it stands in for (tested in
float64) and is on by default only on the device types and torch versions it was measured on or is
needed for. Layers ask :func:`enabled` at call time with their input's device. Measurements and bug
reports: docs/performance.md. Switches, strongest first:

* in code: :func:`set_enabled` (``None``: back to the default) or, for a block, :func:`overridden`;
* ``NASSEG_FASTPATHS=-compact_max_pool,+subgrid_dilated_conv``: ``-name`` off, ``+name`` or ``name``
  on, ``all`` for every path (read at first use; :func:`reset` reads it again);
* the default, :meth:`FastPath.applies`.

Forced on, a path runs outside its range too (it is exact everywhere; the range says where it pays
or is needed). To widen a workaround's ``torch_versions``, run its regression test on the new torch
with the path off and see it still fail; to widen a kernel's, re-measure (benchmarks/fastpaths.py).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import torch
from torch.torch_version import TorchVersion

ENV = "NASSEG_FASTPATHS"


@dataclass(frozen=True)
class FastPath:
    name: str
    what: str
    why: str
    devices: tuple[str, ...] | None  # device types (torch.device.type); None: every device
    torch_versions: tuple[str | None, str | None] = (None, None)  # [first, before); None: unbounded

    def applies(self, device: str, version: str = torch.__version__) -> bool:
        """Whether the path is on by default for device type ``device`` under torch ``version``."""
        first, before = self.torch_versions
        version = TorchVersion(version)
        return (self.devices is None or device in self.devices) and \
            (first is None or version >= first) and (before is None or version < before)

    def scope(self) -> str:
        first, before = self.torch_versions
        versions = ",".join(bound for bound in (first and f">={first}", before and f"<{before}") if bound)
        return f"{'any device' if self.devices is None else ' or '.join(self.devices)}, torch {versions or 'any'}"


FAST_PATHS: dict[str, FastPath] = {path.name: path for path in (
    FastPath(
        "compact_max_pool",
        what="max pools of the supernet's candidate ops keep one int8 window offset per output for "
             "backward instead of torch's int64 indices (layers.CompactMaxPool2d)",
        why="memory: a search step keeps fewer bytes; costs time (the offsets' bookkeeping). Off on the CPU: with "
            "shared_pools it lowered the peak of a DARTS CIFAR step (batch 64) by 47 MB of 3.7 GB and of an "
            "Auto-DeepLab 128x128 step by 24 MB of 1.18 GB, at 3.5 % and 2 % of the step time",
        devices=("cuda",)),
    FastPath(
        "subgrid_dilated_conv",
        what="dilated depthwise convs (dil_conv, atrous_conv) run as undilated convs on the dilation's "
             "interleaved sub-grids when a gradient of the conv is needed (layers.DilatedDepthwiseConv2d)",
        why="speed: torch's CPU backward of dilated depthwise convs has no fast path",
        devices=("cpu",), torch_versions=("2.13", None)),
    FastPath(
        "subsampled_pointwise_conv",
        what="strided 1x1 convs (factorized reduce, strided conv_1x1, shortcuts) run as a subsample "
             "followed by a stride-1 1x1 conv (layers.SubsampledPointwiseConv2d)",
        why="bug: oneDNN's channels-last weight gradient of strided 1x1 convs "
            "(jit_avx2_1x1_convolution_bwd_weights) writes past its buffer and corrupts the heap; "
            "in NCHW also faster than the native conv",
        devices=("cpu",), torch_versions=("2.13", "2.14")),
    FastPath(
        "batched_transitions",
        what="an Auto-DeepLab state evaluates its cell once for all its incoming transitions, stacked along "
             "the batch, BatchNorm statistics per transition, the edges from its l-2 input once, broadcast "
             "(supernet.Supernet.state_forward, mixed.stacked_sum, layers.GroupBatchNorm2d)",
        why="speed: a lattice step is bound by per-call overhead (tiny tensors); one call per op instead of up to 3",
        devices=("cpu", "cuda")),
    FastPath(
        "batched_subgrids",
        what="a candidate op's stride-1 dilated depthwise conv in its sub-grid form convolves the d x d "
             "sub-grids stacked along the batch, one call, instead of one call per strided view "
             "(supernet.depthwise.BatchedSubgridConv2d)",
        why="speed: each view's backward zero-fills a full-size gradient; 2-3x on these convs in NHWC",
        devices=("cpu",), torch_versions=("2.13", None)),
    FastPath(
        "shared_pools",
        what="the pools of a cell's edges that read one state (pool + non-affine BatchNorm, training mode) "
             "are computed once and read by all of them; each edge's BatchNorm still updates its running "
             "statistics (supernet.mixed.MixedOp)",
        why="speed and memory: the same function on each edge; 14 pool computations of a DARTS cell become 5",
        devices=("cpu", "cuda")),
    FastPath(
        "batched_edges",
        what="the conv candidates (sep_conv, dil_conv / atrous_conv) of a cell's edges that read one state run "
             "side by side, one call per layer: the input repeated along the channels, grouped depthwise convs, "
             "the pointwise convs as one batched product, one BatchNorm call with each edge's statistics, the "
             "weighted sum per channel; on states of fewer than 65,536 elements, not in lean layers that are "
             "lean at every size (supernet.edge_batch)",
        why="speed: small states (an Auto-DeepLab lattice at batch 2) are bound by the number of calls",
        devices=("cpu",)),
    FastPath(
        "lean_saved",
        what="in search passes that build a graph, in the ops of supernets that take it (supernet.lean_saved; "
             "by default on tensors of lean.MIN_ELEMENTS or more): depthwise + pointwise conv pairs with frozen "
             "weights keep only their inputs' sizes, in the weight step the depthwise output is computed again "
             "in backward instead of kept (saved-tensor hooks on torch's conv nodes), and non-affine BatchNorms "
             "keep their output (which the mixed sum keeps anyway) instead of their input "
             "(lean.depthwise_pointwise, lean.batch_norm_saving_output); also, on any network unless "
             "supernet.lean_saved is false, the layers that run side by side (batched_edges) from 2^16 elements: "
             "their BatchNorms keep their outputs, the ReLU between blocks is computed again, frozen depthwise "
             "convs keep only their inputs' sizes (supernet.edge_batch); passes that differentiate twice take "
             "the native path (lean.twice_differentiable)",
        why="memory: fewer tensors kept for backward in the weight and the architecture step; "
            "one depthwise forward more per conv pair",
        devices=("cpu",)),
)}

_code: dict[str, bool] = {}  # set_enabled / overridden
_environment: dict[str, bool] | None = None  # parsed NASSEG_FASTPATHS, at first use
_decided: dict[tuple[str, str], bool] = {}  # (name, device type) -> enabled
_meta_stands_for: str | None = None  # the device type whose paths meta tensors take (traced_as)


def _path(name: str) -> FastPath:
    if name not in FAST_PATHS:
        raise ValueError(f"unknown fast path {name!r}; known: {', '.join(FAST_PATHS)}")
    return FAST_PATHS[name]


def _parse(text: str) -> dict[str, bool]:
    """``NASSEG_FASTPATHS`` as {name: on}; ``all`` stands for every path."""
    switches: dict[str, bool] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        on, name = item[0] != "-", item.lstrip("+-")
        if name != "all" and name not in FAST_PATHS:
            raise ValueError(f"{ENV}={text!r}: unknown fast path {name!r}; known: all, {', '.join(FAST_PATHS)}")
        switches.update(dict.fromkeys(FAST_PATHS if name == "all" else [name], on))
    return switches


def _environment_switches() -> dict[str, bool]:
    global _environment
    if _environment is None:
        _environment = _parse(os.environ.get(ENV, ""))
    return _environment


def _decide(name: str, device: str) -> tuple[bool, str]:
    """(enabled, why) for path ``name`` on device type ``device``."""
    path = _path(name)
    if name in _code:
        return _code[name], "set in code"
    if name in _environment_switches():
        return _environment_switches()[name], f"set by {ENV}"
    if path.applies(device):
        return True, f"default on {device}, torch {torch.__version__} ({path.scope()})"
    return False, f"default off on {device}, torch {torch.__version__} (on for {path.scope()})"


def _kind(device: torch.device | str) -> str:
    return torch.device(device).type if isinstance(device, str) else device.type


def enabled(name: str, device: torch.device | str) -> bool:
    """Whether fast path ``name`` runs for a tensor on ``device`` (a device or device type); inside
    :func:`traced_as`, tensors on ``meta`` take the paths of the device they stand for."""
    kind = _kind(device)
    if kind == "meta" and _meta_stands_for:
        kind = _meta_stands_for
    try:
        return _decided[name, kind]
    except KeyError:
        _decided[name, kind] = on = _decide(name, kind)[0]
        return on


@contextlib.contextmanager
def traced_as(device: torch.device | str) -> Iterator[None]:
    """Inside the block, tensors on ``meta`` take the fast paths of ``device``: the memory planner traces a
    job's steps on meta tensors and must follow the code the job will run on its device. Outside, meta is
    a device of its own (only the paths for every device run: a MAC count on meta counts the method)."""
    global _meta_stands_for
    outer, _meta_stands_for = _meta_stands_for, _kind(device)
    try:
        yield
    finally:
        _meta_stands_for = outer


def set_enabled(name: str, on: bool | None) -> None:
    """Force path ``name`` on or off on every device, over the environment; None: back to the default."""
    _path(name)
    if on is None:
        _code.pop(name, None)
    else:
        _code[name] = bool(on)
    _decided.clear()


@contextlib.contextmanager
def overridden(**switches: bool) -> Iterator[None]:
    """Inside the block the named paths are forced on (True) or off (False); restored after."""
    before = {name: _code.get(_path(name).name) for name in switches}
    try:
        for name, on in switches.items():
            set_enabled(name, on)
        yield
    finally:
        for name, on in before.items():
            set_enabled(name, on)


def reset() -> None:
    """Forget the switches set in code and read ``NASSEG_FASTPATHS`` again."""
    global _environment
    _code.clear()
    _environment = None
    _decided.clear()


class FastPathState(NamedTuple):
    name: str
    enabled: bool
    reason: str


def describe(device: torch.device | str = "cpu") -> list[FastPathState]:
    """Every fast path, whether it runs on ``device`` and why (what it does: ``FAST_PATHS[name]``)."""
    return [FastPathState(name, *_decide(name, _kind(device))) for name in FAST_PATHS]


__all__ = ["ENV", "FAST_PATHS", "FastPath", "FastPathState", "describe", "enabled", "overridden", "reset",
           "set_enabled"]
