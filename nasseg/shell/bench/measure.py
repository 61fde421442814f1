"""How the bench measures: step times alternated between variants in one process, peak memory of a
variant's first step in a fresh process; what the suites of one run share (:class:`Bench`)."""

from __future__ import annotations

import dataclasses
import gc
import importlib
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm import tqdm

from nasseg.errors import NassegError

from .nets import NetConfig, Variant
from .settings import Settings


def time_alternating(variants: dict[str, Variant], warmup: int, repeats: int, bar: tqdm) -> dict[str, dict[str, float]]:
    """Median seconds per step part of each variant; the variants take turns (A B B A ...), so slow
    drifts of a shared machine hit all of them."""
    names = list(variants)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for round_ in range(warmup + repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            seconds = variants[name].step()
            if round_ >= warmup:
                samples[name].append(seconds)
            bar.set_postfix_str(f"{name} {seconds['total']:.2f}s")
        bar.update(1)
    return {name: {part: statistics.median(s[part] for s in runs) for part in runs[0]}
            for name, runs in samples.items()}


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


# --- peak memory -------------------------------------------------------------------------------

def _proc_status() -> dict[str, int]:
    """VmRSS / VmHWM in bytes (Linux); empty elsewhere."""
    try:
        with open("/proc/self/status") as status:
            return {key: int(value.split()[0]) * 1024 for key, value in (line.split(":", 1) for line in status)
                    if key in ("VmRSS", "VmHWM")}
    except OSError:
        return {}


def _maxrss_bytes() -> int:
    import resource
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def peak_growth(device: torch.device, step: Callable[[], Any]) -> tuple[int, str]:
    """Peak memory of ``step()`` above the memory before it, and how it was measured (call in a fresh
    process for a clean CPU figure)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before, "cuda max_memory_allocated"
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to VmRSS
        reset = "VmHWM" in _proc_status()
    except OSError:
        reset = False
    before = _proc_status()["VmRSS"] if reset else _maxrss_bytes()
    step()
    peak = (_proc_status()["VmHWM"] if reset else _maxrss_bytes()) - before
    return peak, "VmHWM - VmRSS" if reset else "ru_maxrss delta"


def measure_memory(net: NetConfig, kind: str, device: str, seed: int = 0) -> dict[str, Any]:
    """Peak memory of the first search step above the memory after building model and data, and
    the bytes saved for backward."""
    variant = Variant(net, kind, torch.device(device), seed)
    peak, how = peak_growth(variant.device, variant.step)
    return {"peak_bytes": int(peak), "saved_bytes": int(variant.saved_bytes()), "how": how}


def net_from_fields(net_fields: dict[str, Any]) -> NetConfig:
    """A NetConfig sent to a child process as ``dataclasses.asdict`` (JSON makes its size a list)."""
    return NetConfig(**{**net_fields, "size": tuple(net_fields["size"])})


def measure_memory_child(net_fields: dict[str, Any], kind: str, device: str, seed: int) -> dict[str, Any]:
    return measure_memory(net_from_fields(net_fields), kind, device, seed)


def time_alone_child(net_fields: dict[str, Any], kind: str, device: str, seed: int, warmup: int,
                     repeats: int) -> dict[str, float]:
    """Median seconds per step part of one variant alone in its process (call in a fresh one): no other
    supernet's freed heap around its tensors, as in a search."""
    variant = Variant(net_from_fields(net_fields), kind, torch.device(device), seed)
    runs = [variant.step() for _ in range(warmup + repeats)][warmup:]
    return {part: statistics.median(run[part] for run in runs) for part in runs[0]}


MARK = "NASSEG_BENCH "
# the child imports nasseg the way this process did: same interpreter, same environment
_CHILD_CODE = ("import json, sys; from nasseg.shell.bench.measure import MARK, child_main; "
               "print(MARK + json.dumps(child_main(*json.loads(sys.argv[1]))))")


def child_main(target: str, threads: int, args: list) -> dict[str, Any]:
    """The child process's side of :func:`in_subprocess`: set up like any nasseg process."""
    from ..process import configure_process

    configure_process(threads)
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)(*args)


def in_subprocess(target: str, args: list, threads: int, what: str) -> dict[str, Any]:
    """``target(*args)`` (``module:function``, returning a JSON object) in a fresh ``python -c`` process
    (whatever the caller's main module); NassegError naming ``what`` when it fails."""
    proc = subprocess.run([sys.executable, "-c", _CHILD_CODE, json.dumps([target, threads, args])],
                          capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    if proc.returncode == -9:
        lines.append("killed (out of memory?)")
    raise NassegError(f"memory measurement of {what} failed (exit {proc.returncode}): "
                      f"{lines[-1] if lines else 'no output'}")


class Bench:
    def __init__(self, settings: Settings):
        self.s = settings
        self.device = torch.device(settings.device)
        self.memory_cache: dict[tuple[NetConfig, str], dict[str, Any]] = {}

    def say(self, text: str) -> None:
        if self.s.progress:
            tqdm.write(text, file=sys.stderr)

    def memory(self, net: NetConfig, kind: str) -> dict[str, Any] | None:
        """The memory figures of one variant, measured once: in a fresh process (``--memory
        subprocess``), in this one (``inprocess``) or not at all (``off``). A failed measurement (e.g.
        out of memory) is kept as ``{"error": ...}`` so the other suites still run."""
        s, key = self.s, (net, kind)
        if s.memory == "off":
            return None
        if key not in self.memory_cache:
            try:
                if s.memory == "inprocess":
                    self.memory_cache[key] = measure_memory(net, kind, s.device, s.seed)
                else:
                    self.memory_cache[key] = in_subprocess(f"{__name__}:measure_memory_child",
                                                           [dataclasses.asdict(net), kind, s.device, s.seed],
                                                           s.threads, f"{kind} on {net.label}")
            except (NassegError, RuntimeError) as exc:
                self.memory_cache[key] = {"error": str(exc).split("\n")[0]}
        return self.memory_cache[key]

    def time_alone(self, net: NetConfig, kinds: Sequence[str]) -> dict[str, dict[str, float]]:
        """Median seconds per step part of each variant, each in a fresh process of its own, one after
        the other (a step of a small lattice runs slower beside another supernet's freed heap)."""
        fields = dataclasses.asdict(net)
        return {kind: in_subprocess(f"{__name__}:time_alone_child", [fields, kind, self.s.device, self.s.seed,
                                                                      self.s.warmup, self.s.repeats],
                                    self.s.threads, f"{net.label} {kind} (timing)")
                for kind in kinds}

    def time(self, net: NetConfig, kinds: Sequence[str], desc: str) -> dict[str, dict[str, float]]:
        """Median seconds per step part of each variant of ``net``, all starting from the weights of
        one nasseg supernet, alternated in this process (:func:`time_alternating`); freed after."""
        first = Variant(net, "ours", self.device, self.s.seed)
        variants = {kind: first if kind == "ours" else Variant(net, kind, self.device, self.s.seed, source=first.model)
                    for kind in kinds}
        with tqdm(total=self.s.warmup + self.s.repeats, disable=not self.s.progress, leave=False, desc=desc,
                  unit="round") as bar:
            timed = time_alternating(variants, self.s.warmup, self.s.repeats, bar)
        for variant in (first, *variants.values()):
            variant.release()
        del first, variants
        release_memory()
        return timed
