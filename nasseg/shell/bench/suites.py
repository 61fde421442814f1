"""``nasseg bench``: supernet step time and peak memory, against the papers' straightforward code.

Suites (``--suite``, comma-separated; ``all`` = every one):

* ``darts``: one DARTS search step (first-order architecture step + weight step) of the DARTS
  CIFAR search net (``darts_cifar``: C=16, 8 cells, batch 64, 32x32, 10 classes), nasseg's
  supernet vs the straightforward one of ``benchmarks/straightforward.py`` with the same weights
  (ours in channels-last, ``supernet.channels_last``, and also timed in NCHW);
* ``autodeeplab``: the same for the Auto-DeepLab supernet (F=8, 12 layers, batch 2) at each crop of
  ``--adl-crops`` (default 129 and the paper's 321);
* ``order``: DARTS second-order vs first-order search step (nasseg's code, the ``darts`` net),
  central (DARTS) and forward (``arch.fd: forward``) finite differences;
* ``checkpoint``: ``checkpoint_cells`` (activation checkpointing per state) vs normal, time and
  memory, on the ``darts`` net and the first Auto-DeepLab crop;
* ``hessian``: one dominant-eigenvalue computation vs one search epoch of ``jobs/camvid_darts.yaml``
  (``--epoch-steps N`` times N steps and extrapolates the epoch's training part), and the same
  eigenvalue with exact Hessian-vector products when the job uses finite differences;
* ``ray`` (not in the default set: it starts a local Ray): N seeds of a tiny search as parallel
  Ray Tune trials vs one after another in this process.

Times are medians of ``--repeats`` steps after ``--warmup`` steps; the variants compared by one
ratio are alternated (ABBA) in one process, so slow drifts of a shared machine hit both. Memory is
measured per variant in a fresh process: on CPU the peak RSS of the first step above the RSS after
building model and data (VmHWM, reset through /proc/self/clear_refs; ru_maxrss where that is
unavailable), on CUDA ``torch.cuda.max_memory_allocated`` above the allocation before the step.
Both also report the bytes autograd saves for backward in the weight step's forward pass
(unique storages, parameters and the input excluded), which is deterministic.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gc
import io
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from nasseg.errors import NassegError

from ..process import configure_process

SUITES = ("darts", "autodeeplab", "order", "checkpoint", "hessian", "ray")
DEFAULT_SUITES = ("darts", "autodeeplab", "order", "checkpoint", "hessian")
IGNORE_INDEX = 255
REPO = Path(__file__).resolve().parents[3]  # a source checkout: its jobs/ and ../shared data

# the targets: ratio = measured / baseline must be <= bound
TARGETS = {
    ("darts", "step time"): 0.8, ("darts", "peak memory"): 0.7,
    ("autodeeplab", "step time"): 0.8, ("autodeeplab", "peak memory"): 0.7,
    ("checkpoint", "step time"): 1.5, ("checkpoint", "peak memory"): 1 / 2.5,
    ("order", "step time"): 2.5,
    ("hessian", "eigen share"): 0.05,
}


# --- configuration ---------------------------------------------------------------------------

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
        parts = [self.space]
        if self.width:
            parts.append(f"{letter}={self.width}")
        if self.layers:
            parts.append(f"L={self.layers}")
        parts += [f"b{self.batch}", f"{self.size[0]}x{self.size[1]}"]
        return " ".join(parts)


@dataclass
class Settings:
    suites: tuple[str, ...] = DEFAULT_SUITES
    device: str = "cpu"
    threads: int = 1
    repeats: int = 3
    warmup: int = 1
    quick: bool = False
    darts_space: str = "darts_cifar"
    adl_crops: tuple[int, ...] = (129, 321)
    job: str | None = None  # hessian suite; default jobs/camvid_darts.yaml
    epoch_steps: int = 10  # hessian suite: 0 = time the whole epoch
    ray_trials: int | None = None
    memory: str = "subprocess"  # subprocess | inprocess | off
    seed: int = 0
    progress: bool = True

    def darts_net(self) -> NetConfig:
        if self.quick:
            return NetConfig(self.darts_space, 2, 3, 10, 2, (8, 8))
        return NetConfig(self.darts_space, 16, 8, 10, 64, (32, 32))

    def adl_nets(self) -> list[NetConfig]:
        if self.quick:
            return [NetConfig("autodeeplab", 2, 2, 5, 2, (c, c)) for c in self.adl_crops]
        return [NetConfig("autodeeplab", 8, 12, 19, 2, (c, c)) for c in self.adl_crops]


@dataclass
class Row:
    suite: str
    config: str
    metric: str  # step time | arch step time | weight step time | peak memory | saved for backward | ...
    compare: str  # what the ratio divides: "ours / straightforward", ...
    value: float | None
    baseline: float | None
    unit: str
    target: float | None = None  # ratio <= target
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.ratio <= self.target

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(ratio=self.ratio, met=self.met)
        return data


def target_for(suite: str, metric: str) -> float | None:
    return TARGETS.get((suite, metric))


# --- models, data, steps -----------------------------------------------------------------------

def bench_space(name: str, width: int | None = None, layers: int | None = None, classes: int | None = None):
    """A search space (built-in name or file) with ``network.C``/``F``, ``layers`` and ``classes``
    overridden, validated and compiled like any space file."""
    from nasseg import space as spaces
    from nasseg.space.spec import parse_space
    from nasseg.spec_reader import load_yaml

    path = spaces.resolve(name)
    data = load_yaml(path)
    net = data.setdefault("network", {})
    if width is not None:
        net["F" if net.get("type") == "lattice" else "C"] = width
    if layers is not None:
        net["layers"] = layers
    if classes is not None:
        net["classes"] = classes
    space = parse_space(data, str(path))
    space.cell_graph, space.network_graph
    return space


def load_straightforward():
    """The papers' straightforward supernets, the baseline every ratio is measured against."""
    from . import straightforward
    return straightforward


def loss_fn(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y, ignore_index=IGNORE_INDEX)


def criterion(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)


def _steps_api() -> tuple[Callable, Callable, Callable]:
    """(weight_step(model, x, y, optimizer, clip) -> loss, first-order grads, second-order grads)
    as nasseg's search loop runs them."""
    from nasseg.search.architect import first_order_grads, second_order_grads
    from nasseg.search.steps import weight_step as loop_weight_step

    def weight_step(model, x, y, optimizer, grad_clip) -> float:
        return loop_weight_step(model, criterion, x, y, optimizer, grad_clip)[0]

    return weight_step, first_order_grads, second_order_grads


VARIANTS = ("ours", "ours_nchw", "ours_ckpt", "ours_2nd", "ours_2nd_fwd", "straightforward")


class Variant:
    """A supernet with its optimisers and fixed batches A (weights) and B (architecture);
    :meth:`step` runs one search step and returns the seconds of its parts."""

    def __init__(self, net: NetConfig, kind: str, device: torch.device, seed: int = 0, source=None):
        from nasseg.supernet import build

        if kind not in VARIANTS:
            raise NassegError(f"unknown variant {kind!r}; expected one of {', '.join(VARIANTS)}")
        self.net, self.kind, self.device = net, kind, device
        space = bench_space(net.space, net.width, net.layers, net.classes)
        torch.manual_seed(seed)
        ours = source if source is not None else build(space, net.classes)
        self.available = True
        if kind == "straightforward":
            sf = load_straightforward()
            self.model = sf.StraightforwardSupernet(space, net.classes).load_from(ours)
            self.sf = sf
        else:
            self.model = ours if source is None else _clone(ours, space, net.classes)
            if kind == "ours_ckpt":
                if hasattr(self.model, "checkpoint_cells"):
                    self.model.checkpoint_cells = True
                else:
                    self.available = False
        self.model.to(device).train()
        if kind not in ("straightforward", "ours_nchw") and _channels_last_default():
            from nasseg.layers import to_channels_last

            self.model = to_channels_last(self.model)  # as nasseg's search loop does (supernet.channels_last)
        self.lattice = space.network.type == "lattice"
        self.weight_optimizer = torch.optim.SGD(self.model.weight_parameters(), lr=0.025, momentum=0.9,
                                                weight_decay=3e-4)
        self.arch_optimizer = torch.optim.Adam(self.model.arch_parameters(), lr=3e-3 if self.lattice else 3e-4,
                                               betas=(0.5, 0.999), weight_decay=1e-3)
        generator = torch.Generator().manual_seed(seed + 1)
        shape = (net.batch, 3, *net.size)
        self.xa, self.xb = (torch.randn(shape, generator=generator).to(device) for _ in range(2))
        segmentation = getattr(self.model, "segmentation", True)
        label_shape = (net.batch, *net.size) if segmentation else (net.batch,)
        self.ya, self.yb = (torch.randint(0, net.classes, label_shape, generator=generator).to(device)
                            for _ in range(2))
        self._api = _steps_api()

    def release(self) -> None:
        for name in ("model", "weight_optimizer", "arch_optimizer", "xa", "xb", "ya", "yb"):
            setattr(self, name, None)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def arch_step(self) -> None:
        if self.kind == "straightforward":
            self.sf.straightforward_arch_step_first(self.model, self.xb, self.yb, self.arch_optimizer, IGNORE_INDEX)
            return
        from nasseg.search.architect import set_arch_grads

        _, arch_first, second = self._api
        if self.kind in ("ours_2nd", "ours_2nd_fwd"):
            difference = {"difference": "forward"} if self.kind == "ours_2nd_fwd" else {}
            grads = second(self.model, loss_fn, self.xa, self.ya, self.xb, self.yb, self.weight_optimizer,
                           xi=self.weight_optimizer.param_groups[0]["lr"], r=0.01, **difference)
        else:
            self.arch_optimizer.zero_grad()
            grads = arch_first(self.model, loss_fn, self.xb, self.yb)
        if grads is not None:
            set_arch_grads(self.model, grads)
        self.arch_optimizer.step()

    def weight_step(self) -> float:
        if self.kind == "straightforward":
            return self.sf.straightforward_weight_step(self.model, self.xa, self.ya, self.weight_optimizer, 5.0,
                                                       IGNORE_INDEX)
        weight_step = self._api[0]
        return weight_step(self.model, self.xa, self.ya, self.weight_optimizer, 5.0)

    def step(self) -> dict[str, float]:
        """DARTS: architecture step on B, then weight step on A; Auto-DeepLab the other way round."""
        parts = [("weight", self.weight_step), ("arch", self.arch_step)]
        if not self.lattice:
            parts.reverse()
        seconds = {}
        for name, run in parts:
            self._sync()
            start = time.perf_counter()
            run()
            self._sync()
            seconds[name] = time.perf_counter() - start
        seconds["total"] = seconds["arch"] + seconds["weight"]
        return seconds

    def saved_bytes(self) -> int:
        """Bytes of the tensors autograd keeps for backward in the weight step's forward pass."""
        return saved_tensor_bytes(self.model, self.xa, self.ya)


def _channels_last_default() -> bool:
    try:
        from nasseg.search.config import SupernetConfig  # type: ignore[attr-defined]
    except ImportError:
        return False
    return bool(getattr(SupernetConfig(), "channels_last", False))


def supports_checkpoint() -> bool:
    """Whether this nasseg's Supernet has the ``checkpoint_cells`` option."""
    import inspect

    from nasseg.supernet import Supernet
    return "checkpoint_cells" in inspect.signature(Supernet.__init__).parameters


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc keeps it otherwise), so that the
    measurements that follow in child processes have the machine's memory."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _clone(ours, space, classes):
    """A second nasseg supernet with the same weights (two variants timed side by side)."""
    from nasseg.supernet import build

    twin = build(space, classes)
    twin.load_state_dict(ours.state_dict())
    return twin


def saved_tensor_bytes(model, x: torch.Tensor, y: torch.Tensor) -> int:
    exclude = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers(), x]}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr and ptr not in exclude:
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        return tensor

    from nasseg.layers import frozen_bn_stats

    with frozen_bn_stats(model), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(model, x, y)
    del loss
    return sum(seen.values())


# --- memory ----------------------------------------------------------------------------------

def _proc_status() -> dict[str, int]:
    """VmRSS / VmHWM in bytes (Linux); empty elsewhere."""
    values = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":")
                    values[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return values


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


def _maxrss_bytes() -> int:
    import resource
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def measure_memory(net: NetConfig, kind: str, device: str, threads: int, seed: int = 0) -> dict[str, Any]:
    """Peak memory of the first search step above the memory after building model and data,
    and the bytes saved for backward (call in a fresh process for a clean CPU figure)."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    variant = Variant(net, kind, dev, seed)
    if not variant.available:
        return {"available": False}
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        variant.step()
        torch.cuda.synchronize(dev)
        peak, how = torch.cuda.max_memory_allocated(dev) - before, "cuda max_memory_allocated"
    else:
        reset = _reset_peak_rss() and "VmHWM" in _proc_status()
        before = _proc_status().get("VmRSS") if reset else None
        if before is None:
            before = _maxrss_bytes()
        variant.step()
        peak = (_proc_status()["VmHWM"] if reset else _maxrss_bytes()) - before
        how = "VmHWM - VmRSS" if reset else "ru_maxrss delta"
    saved = variant.saved_bytes()
    return {"available": True, "peak_bytes": int(peak), "saved_bytes": int(saved), "how": how}


def _memory_child(args: Sequence) -> dict[str, Any]:
    net_fields, kind, device, threads, seed = args
    net_fields = {**net_fields, "size": tuple(net_fields["size"])}
    return measure_memory(NetConfig(**net_fields), kind, device, threads, seed)


_CHILD_CODE = ("import json, sys; from nasseg.shell.bench.suites import _memory_child; "
               "result = _memory_child(json.loads(sys.argv[1])); print('NASSEG_BENCH ' + json.dumps(result))")


def memory_in_subprocess(args: Sequence) -> dict[str, Any]:
    """:func:`measure_memory` in a fresh ``python -c`` process (whatever the caller's main module)."""
    import subprocess

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, "-c", _CHILD_CODE, json.dumps(list(args))], capture_output=True,
                          text=True, env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("NASSEG_BENCH "):
            return json.loads(line[len("NASSEG_BENCH "):])
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    if proc.returncode == -9:
        lines.append("killed (out of memory?)")
    raise NassegError(f"memory measurement of {args[1]} on {NetConfig(**{**args[0], 'size': tuple(args[0]['size'])}).label} "
                      f"failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}")


class MemoryProbe:
    """Memory figures per (net, variant), each measured once, in a fresh process by default."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.cache: dict[tuple, dict[str, Any]] = {}

    def __call__(self, net: NetConfig, kind: str) -> dict[str, Any] | None:
        s = self.settings
        if s.memory == "off":
            return None
        key = (net, kind)
        if key not in self.cache:
            args = (dataclasses.asdict(net), kind, s.device, s.threads, s.seed)
            try:
                self.cache[key] = _memory_child(args) if s.memory == "inprocess" else memory_in_subprocess(args)
            except (NassegError, RuntimeError) as exc:  # e.g. out of memory: report it, go on with the rest
                self.cache[key] = {"available": False, "error": str(exc).split("\n")[0]}
        return self.cache[key]


# --- timing ----------------------------------------------------------------------------------

def time_alternating(variants: dict[str, Variant], warmup: int, repeats: int,
                     bar: tqdm | None = None) -> dict[str, dict[str, float]]:
    """Median seconds per step part of each variant; the variants take turns (A B B A ...)."""
    names = list(variants)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for round_ in range(warmup + repeats):
        order = names if round_ % 2 == 0 else names[::-1]
        for name in order:
            seconds = variants[name].step()
            if round_ >= warmup:
                samples[name].append(seconds)
            if bar is not None:
                bar.set_postfix_str(f"{name} {seconds['total']:.2f}s")
        if bar is not None:
            bar.update(1)
    return {name: {part: statistics.median(s[part] for s in runs) for part in runs[0]}
            for name, runs in samples.items()}


# --- suites ----------------------------------------------------------------------------------

class Bench:
    def __init__(self, settings: Settings):
        self.s = settings
        self.device = torch.device(settings.device)
        self.memory = MemoryProbe(settings)
        self.rows: list[Row] = []
        self.notes: list[str] = []

    def say(self, text: str) -> None:
        if self.s.progress:
            tqdm.write(text, file=sys.stderr)

    def compare(self, suite: str, net: NetConfig, kinds: dict[str, str], label: str,
                extra: Sequence[tuple[str, str]] = ()) -> None:
        """Memory, then time, of ``kinds`` = {'value': variant, 'baseline': variant} on one net;
        ``extra`` = ((variant, label), ...): more variants timed in the same run against the baseline.

        Memory first: each variant in its own process while this one is still small."""
        value_kind, base_kind = kinds["value"], kinds["baseline"]
        self.say(f"[{suite}] {net.label}: {label}")
        if "ours_ckpt" in kinds.values() and not supports_checkpoint():
            note = "n/a: this nasseg's Supernet has no checkpoint_cells"
            for metric, unit in (("step time", "s"), ("peak memory", "MB")):
                self.rows.append(Row(suite, net.label, metric, label, None, None, unit, target_for(suite, metric),
                                     note))
            return
        mv, mb = self.memory(net, value_kind), self.memory(net, base_kind)
        first = Variant(net, "ours", self.device, self.s.seed)
        variants = {}
        for kind in (value_kind, base_kind, *(kind for kind, _ in extra)):
            variants[kind] = first if kind == "ours" else Variant(net, kind, self.device, self.s.seed,
                                                                   source=first.model)
        with tqdm(total=self.s.warmup + self.s.repeats, disable=not self.s.progress, leave=False,
                  desc=f"{suite} {net.label}", unit="round") as bar:
            timed = self._time(variants, bar)
        for variant in variants.values():
            variant.release()
        del variants, first
        release_memory()
        b = timed[base_kind]
        for kind, row_label, target in ((value_kind, label, target_for(suite, "step time")),
                                        *((kind, row_label, None) for kind, row_label in extra)):
            v = timed[kind]
            self.rows.append(Row(suite, net.label, "step time", row_label, v["total"], b["total"], "s", target))
            self.rows.append(Row(suite, net.label, "weight step time", row_label, v["weight"], b["weight"], "s"))
            self.rows.append(Row(suite, net.label, "arch step time", row_label, v["arch"], b["arch"], "s"))
        failed = [m.get("error", "unavailable") for m in (mv, mb) if m is not None and not m.get("available", True)]
        if failed:
            self.rows.append(Row(suite, net.label, "peak memory", label, None, None, "MB",
                                 target_for(suite, "peak memory"), "n/a: " + "; ".join(failed)))
        elif mv is not None and mb is not None:
            target = target_for(suite, "peak memory")
            self.rows.append(Row(suite, net.label, "peak memory", label, mv["peak_bytes"] / 2**20,
                                 mb["peak_bytes"] / 2**20, "MB", target,
                                 "" if mv["how"] == "VmHWM - VmRSS" else mv["how"]))
            self.rows.append(Row(suite, net.label, "saved for backward", label, mv["saved_bytes"] / 2**20,
                                 mb["saved_bytes"] / 2**20, "MB", target))

    def _time(self, variants: dict[str, Variant], bar: tqdm) -> dict[str, dict[str, float]]:
        return time_alternating(variants, self.s.warmup, self.s.repeats, bar)

    def suite_darts(self) -> None:
        self.compare("darts", self.s.darts_net(), {"value": "ours", "baseline": "straightforward"},
                     "ours / straightforward", extra=(("ours_nchw", "ours in NCHW / straightforward"),))

    def suite_autodeeplab(self) -> None:
        for net in self.s.adl_nets():
            self.compare("autodeeplab", net, {"value": "ours", "baseline": "straightforward"},
                         "ours / straightforward")

    def suite_order(self) -> None:
        """Second-order step (DARTS' central difference, and our forward difference: arch.fd) vs first order."""
        net = self.s.darts_net()
        self.say(f"[order] {net.label}: 2nd / 1st order")
        first = Variant(net, "ours", self.device, self.s.seed)
        variants = {"first": first,
                    "second": Variant(net, "ours_2nd", self.device, self.s.seed, source=first.model),
                    "forward": Variant(net, "ours_2nd_fwd", self.device, self.s.seed, source=first.model)}
        with tqdm(total=self.s.warmup + self.s.repeats, disable=not self.s.progress, leave=False,
                  desc=f"order {net.label}", unit="round") as bar:
            timed = self._time(variants, bar)
        for key, label, note in (("second", "2nd / 1st order", "arch.fd: central (DARTS)"),
                                 ("forward", "2nd (forward difference) / 1st order",
                                  "arch.fd: forward (one training pass fewer, kinks frozen)")):
            self.rows.append(Row("order", net.label, "step time", label, timed[key]["total"],
                                 timed["first"]["total"], "s", target_for("order", "step time"), note))
            self.rows.append(Row("order", net.label, "arch step time", label, timed[key]["arch"],
                                 timed["first"]["arch"], "s"))
        for variant in variants.values():
            variant.release()
        del first, variants
        release_memory()

    def suite_checkpoint(self) -> None:
        nets = [self.s.darts_net()] + self.s.adl_nets()[:1]
        for net in nets:
            self.compare("checkpoint", net, {"value": "ours_ckpt", "baseline": "ours"}, "checkpoint / normal")

    def suite_hessian(self) -> None:
        self.rows.extend(hessian_share(self.s, self.say))

    def suite_ray(self) -> None:
        self.rows.extend(ray_speedup(self.s, self.say))

    def run(self) -> list[Row]:
        torch.set_num_threads(self.s.threads)
        configure_process()  # as nasseg's search and training processes are
        for suite in tqdm(self.s.suites, disable=not self.s.progress, desc="bench", unit="suite"):
            getattr(self, f"suite_{suite}")()
        return self.rows


# --- eigenvalue share of an epoch --------------------------------------------------------------

def _resolve_data_root(root: str | None, job_file: str | None) -> str | None:
    if not root or Path(root).is_absolute() or Path(root).exists():
        return root
    for base in [REPO] + ([Path(job_file).resolve().parent] if job_file else []):
        if (base / root).exists():
            return str(base / root)
    return root


def hessian_share(s: Settings, say: Callable[[str], None] = print) -> list[Row]:
    """Seconds of one Search.eigenvalue() vs one epoch (train steps + evaluation + eigenvalue)."""
    from nasseg.search import Search, load_job, parse_job

    job_file = s.job or str(REPO / "jobs" / "camvid_darts.yaml")
    notes = []
    space = None
    if s.quick and not s.job:
        config = parse_job({"name": "bench_hessian", "space": "darts", "epochs": 1, "seeds": [s.seed],
                            "data": {"dataset": "camvid_demo", "size": [48, 64], "crop": [32, 32], "batch_size": 2,
                                     "limit": 8, "val_batch_size": 8},
                            "hessian": {"iters": 4}, "early_stop": {"rule": "none"}})
        space = bench_space("darts", 4, 3)
        notes.append("quick: camvid_demo, darts C=4 L=3, 32x32 crops")
    else:
        if not Path(job_file).exists():
            raise NassegError(f"{job_file}: job file not found (--job)")
        config = load_job(job_file)
        root = _resolve_data_root(config.data.root, job_file)
        if config.data.dataset != "camvid_demo" and not (root and Path(root).exists()):
            notes.append(f"{config.data.root} not found: camvid_demo instead")
            data = dataclasses.replace(config.data, dataset="camvid_demo", root=None)
        else:
            data = dataclasses.replace(config.data, root=root)
        config = dataclasses.replace(config, data=data)
    config = dataclasses.replace(config, device=s.device)
    label = f"{Path(config.file).name if config.file else config.name} ({config.data.dataset})"
    say(f"[hessian] {label}: eigenvalue / epoch")
    with tempfile.TemporaryDirectory(prefix="nasseg-bench-") as out:
        search = Search(config, s.seed, out, progress=False, space=space)
        sync = (lambda: torch.cuda.synchronize()) if search.device.type == "cuda" else (lambda: None)

        def timed(fn: Callable[[], Any]) -> float:
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            return time.perf_counter() - t0

        # as at the end of epoch 1: Lanczos from a random start
        with lanczos_steps() as cold_steps:
            eigen_cold = timed(search.eigenvalue)
        warm = getattr(config.hessian, "warm_start", False) and getattr(search, "eigenvector", None) is not None
        epoch = 1
        loader_a, loader_b = search.data.loaders(config.data.batch_size, s.seed, epoch)
        steps_per_epoch = min(len(loader_a), len(loader_b))
        limit = steps_per_epoch if s.epoch_steps <= 0 else min(s.epoch_steps, steps_per_epoch)
        if limit == steps_per_epoch:
            train_seconds = timed(lambda: search.train_epoch(epoch))
        else:  # the first `limit` steps of Search.train_epoch
            from nasseg.search.loop import cosine_lr
            from nasseg.train.metrics import ConfusionMatrix

            lr = cosine_lr(config.weights.lr, config.weights.lr_min, epoch, config.epochs)
            for group in search.weight_optimizer.param_groups:
                group["lr"] = lr
            search.model.train()
            search.data.set_epoch(epoch)
            confusion = ConfusionMatrix(search.data.num_classes, search.data.ignore_index)
            arch_active = epoch > config.arch.start_epoch
            bar = tqdm(zip(loader_a, loader_b), total=limit, disable=not s.progress, leave=False,
                       desc="hessian: epoch steps", unit="step")
            sync()
            start = time.perf_counter()  # data loading included, as in an epoch
            for step, ((xa, ya), (xb, yb)) in enumerate(bar, start=1):
                xa, ya, xb, yb = (t.to(search.device, non_blocking=True) for t in (xa, ya, xb, yb))
                if arch_active and config.algorithm == "darts":
                    search.arch_step(xa, ya, xb, yb)
                search.weight_step(xa, ya, confusion)
                if arch_active and config.algorithm == "autodeeplab":
                    search.arch_step(xa, ya, xb, yb)
                if step >= limit:
                    break
            sync()
            bar.close()
            train_seconds = (time.perf_counter() - start) / limit * steps_per_epoch
            notes.append(f"training part extrapolated from {limit} of {steps_per_epoch} steps")
        eval_seconds = timed(search.evaluate)
        # as at the end of a later epoch: warm-started from the previous eigenvector when the loop does that
        previous = search.eigenvector
        values = {}
        with lanczos_steps() as warm_steps:
            eigen = timed(lambda: values.setdefault("warm", search.eigenvalue()))
        exact = None
        if config.hessian.method != "exact":  # the same computation with exact (double-backward) products
            search.eigenvector = previous
            search.config = dataclasses.replace(config, hessian=dataclasses.replace(config.hessian, method="exact"))
            with lanczos_steps() as exact_steps:
                exact = timed(lambda: values.setdefault("exact", search.eigenvalue()))
            search.config = config
    steps_done = f"{warm_steps[0]} of " if warm_steps else "at most "
    notes.append(f"epoch = training {train_seconds:.1f}s + evaluation {eval_seconds:.1f}s + eigenvalue "
                 f"({steps_done}{config.hessian.iters} Lanczos steps{', warm start' if warm else ''})")
    rows = [Row("hessian", label, "eigen share", "eigenvalue / epoch", eigen, train_seconds + eval_seconds + eigen,
                "s", target_for("hessian", "eigen share"), "; ".join(notes))]
    if exact is not None:
        rows.append(Row("hessian", label, "eigen share, exact products", "eigenvalue / epoch", exact,
                        train_seconds + eval_seconds + exact, "s", None,
                        f"hessian.method: exact instead of {config.hessian.method}: eigenvalue "
                        f"{values['exact']:.5g} vs {values['warm']:.5g}"
                        + (f", {exact_steps[0]} Lanczos steps" if exact_steps else "")))
    if warm:
        rows.append(Row("hessian", label, "eigen share, epoch 1", "eigenvalue / epoch", eigen_cold,
                        train_seconds + eval_seconds + eigen_cold, "s", None,
                        "cold start (random Lanczos vector), first call"
                        + (f", {cold_steps[0]} Lanczos steps" if cold_steps else "")))
    return rows


@contextlib.contextmanager
def lanczos_steps() -> Iterator[list[int]]:
    """The Lanczos step counts of the eigenvalue computations inside the block (read from
    nasseg.search.loop's dominant_eigenvalue; an empty list if the loop calls it otherwise)."""
    from nasseg.search import loop

    counts: list[int] = []
    original = getattr(loop, "dominant_eigenvalue", None)
    if original is None:
        yield counts
        return

    def counting(*args, **kwargs):
        result = original(*args, **kwargs)
        if isinstance(result, tuple) and len(result) >= 3 and isinstance(result[2], int):
            counts.append(result[2])
        return result

    loop.dominant_eigenvalue = counting
    try:
        yield counts
    finally:
        loop.dominant_eigenvalue = original


# --- Ray: parallel trials vs one after another --------------------------------------------------

RAY_SPACE = {
    "name": "bench_tiny",
    "ops": ["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"],
    "cell": {"inputs": 2, "nodes": 2, "edges": "dense", "decode": {"k": 2}},
    "network": {"type": "chain", "C": 4, "layers": 3, "reductions": [1],
                "stem": {"type": "three_conv", "channels": [8, 8, 8]},
                "head": {"type": "aspp", "rates": [48], "channels": 8}, "classes": 11},
}


def ray_speedup(s: Settings, say: Callable[[str], None] = print) -> list[Row]:
    import yaml

    from ..runner.inprocess import run_in_process
    from ..runner.ray_session import ray_session
    from ..runner.tune_search import run_tune_search
    from nasseg.search import load_job

    cpus = os.cpu_count() or 1
    n = s.ray_trials or max(2, min(cpus, 4))
    # long enough per trial (about a minute on one core) that Ray's per-trial overhead does not dominate
    epochs, limit, crop = (1, 8, [32, 32]) if s.quick else (16, None, [96, 128])
    space = RAY_SPACE if s.quick else {**RAY_SPACE, "network": {**RAY_SPACE["network"], "C": 8, "layers": 5,
                                                                "reductions": [1, 3]}}
    label = f"small search x{n} seeds, {epochs} epochs (camvid_demo)"
    say(f"[ray] {label}: parallel Ray Tune trials vs sequential")
    with tempfile.TemporaryDirectory(prefix="nasseg-bench-ray-") as folder:
        folder = Path(folder)
        (folder / "tiny.yaml").write_text(yaml.safe_dump(space))
        job = {"name": "bench_ray", "space": "tiny.yaml", "epochs": epochs, "seeds": list(range(n)),
               "data": {"size": [96, 128], "crop": crop, "batch_size": 2, "limit": limit, "val_batch_size": 8},
               "hessian": {"iters": 5}, "early_stop": {"rule": "none"}, "device": s.device,
               "resources": {"cpus": 1, "gpus": 0}}
        (folder / "job.yaml").write_text(yaml.safe_dump(job))
        config = load_job(folder / "job.yaml")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # what each trial uses (resources.cpus = 1)
        try:
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                results = run_in_process(config, config.seeds, folder / "sequential", progress=False)
            sequential = time.perf_counter() - start
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), ray_session(None, num_cpus=n):
                startup = time.perf_counter() - t0
                start = time.perf_counter()
                outcomes = run_tune_search(config, folder / "parallel", config.seeds)
                parallel = time.perf_counter() - start
            own_sequential = [json.loads((r.run_dir / "result.json").read_text())["seconds"] for r in results]
            own_parallel = [o["seconds"] for o in outcomes if "seconds" in o]
        finally:
            torch.set_num_threads(threads)
    ideal = min(n, cpus)
    mean = lambda values: sum(values) / len(values) if values else float("nan")  # noqa: E731
    note = (f"ratio = speed-up of {n} parallel trials on {cpus} CPUs (ideal {ideal}x); starting Ray took "
            f"{startup:.1f}s more; the searches' own epoch seconds: {mean(own_sequential):.1f}s per seed one "
            f"after another, {mean(own_parallel):.1f}s per trial in parallel")
    return [Row("ray", label, "wall time", "sequential / parallel", sequential, parallel, "s", None, note)]


# --- output ----------------------------------------------------------------------------------

def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def format_table(rows: Sequence[Row], settings: Settings | None = None) -> str:
    header = ("suite", "config", "metric", "value", "baseline", "ratio", "compared", "target", "met")
    lines = []
    for r in rows:
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        target = f"<= {r.target:.2g}" if r.target is not None else ""
        lines.append((r.suite, r.config, f"{r.metric} ({r.unit})", _fmt(r.value, r.unit), _fmt(r.baseline, r.unit),
                      "-" if r.ratio is None else f"{r.ratio:.3f}", r.compare, target, met))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    out = []
    if settings is not None:
        out.append(describe_settings(settings))
    out.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    out.append("  ".join("-" * w for w in widths))
    for line in lines:
        out.append("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())
    out.append(LEGEND)
    notes = [f"  {r.suite} {r.config}, {r.metric}: {r.note}" for r in rows if r.note]
    if notes:
        out.append("notes:")
        out.extend(notes)
    return "\n".join(out)


LEGEND = """\
ratio = value / baseline; met = ratio <= target. step time: one search step (first-order architecture
step + weight step; 'order': second-order architecture step), median. peak memory: peak RSS (CPU) or
max_memory_allocated (CUDA) of the first step above the memory after building model and data, in a fresh
process. saved for backward: bytes autograd keeps in the weight step's forward (parameters excluded)."""


def describe_settings(s: Settings) -> str:
    device = s.device
    if device.startswith("cuda") and torch.cuda.is_available():
        device += f" ({torch.cuda.get_device_name(torch.device(device))})"
    return (f"nasseg bench: device {device}, {s.threads} thread(s) of {os.cpu_count()} CPUs, torch "
            f"{torch.__version__}, {s.repeats} timed steps after {s.warmup} warm-up (median), memory "
            f"{s.memory}{', quick sizes' if s.quick else ''}")


def write_csv(rows: Sequence[Row], path: str) -> None:
    fields = list(rows[0].to_dict()) if rows else ["suite"]
    with _open_out(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.to_dict())


def write_json(rows: Sequence[Row], settings: Settings, path: str) -> None:
    payload = {"settings": {**dataclasses.asdict(settings), "cpus": os.cpu_count(), "torch": torch.__version__},
               "rows": [r.to_dict() for r in rows]}
    with _open_out(path) as handle:
        json.dump(payload, handle, indent=2, default=list)
        handle.write("\n")


@contextlib.contextmanager
def _open_out(path: str) -> Iterator[Any]:
    if path == "-":
        yield sys.stdout
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        yield handle


def plot_ratios(rows: Sequence[Row], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.ratio is not None and r.metric not in ("weight step time", "arch step time")]
    if not shown:
        raise NassegError("nothing to plot: no ratio was measured")
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(shown) + 1.2))
    labels = [f"{r.suite}: {r.config}\n{r.metric} ({r.compare})" for r in shown]
    colors = ["tab:gray" if r.met is None else ("tab:green" if r.met else "tab:red") for r in shown]
    y = list(range(len(shown)))[::-1]
    ax.barh(y, [r.ratio for r in shown], color=colors)
    for yi, r in zip(y, shown):
        if r.target is not None:
            ax.plot([r.target, r.target], [yi - 0.4, yi + 0.4], color="black", lw=2)
        ax.text(r.ratio, yi, f" {r.ratio:.3f}", va="center", fontsize=7)
    ax.axvline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("ratio (black tick: target, at most)")
    ax.set_title("nasseg bench")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# --- command line ----------------------------------------------------------------------------

def parse_suites(text: str) -> tuple[str, ...]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return SUITES
    unknown = [n for n in names if n not in SUITES]
    if unknown or not names:
        raise NassegError(f"--suite: unknown suite {', '.join(unknown) or '(none)'}; expected a comma-separated "
                          f"list of {', '.join(SUITES)} or all")
    return tuple(dict.fromkeys(names))


def run_bench(settings: Settings) -> list[Row]:
    return Bench(settings).run()
