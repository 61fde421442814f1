"""How the bench measures: step times alternated between variants in one process, peak memory of a
variant's first step in a fresh process, seconds of any call with the device synchronised."""

from __future__ import annotations

import dataclasses
import gc
import json
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import torch
from tqdm import tqdm

from nasseg.errors import NassegError

from .nets import NetConfig, Variant


def time_alternating(variants: dict[str, Variant], warmup: int, repeats: int,
                     bar: tqdm | None = None) -> dict[str, dict[str, float]]:
    """Median seconds per step part of each variant; the variants take turns (A B B A ...), so slow
    drifts of a shared machine hit all of them."""
    names = list(variants)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for round_ in range(warmup + repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            seconds = variants[name].step()
            if round_ >= warmup:
                samples[name].append(seconds)
            if bar is not None:
                bar.set_postfix_str(f"{name} {seconds['total']:.2f}s")
        if bar is not None:
            bar.update(1)
    return {name: {part: statistics.median(s[part] for s in runs) for part in runs[0]}
            for name, runs in samples.items()}


def timed(call: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """(wall seconds, result) of one call, the device's queued work included."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    result = call()
    sync()
    return time.perf_counter() - start, result


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


def measure_memory(net: NetConfig, kind: str, device: str, seed: int = 0) -> dict[str, Any]:
    """Peak memory of the first search step above the memory after building model and data, and
    the bytes saved for backward (call in a fresh process for a clean CPU figure)."""
    dev = torch.device(device)
    variant = Variant(net, kind, dev, seed)
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
        before = _proc_status()["VmRSS"] if reset else _maxrss_bytes()
        variant.step()
        peak = (_proc_status()["VmHWM"] if reset else _maxrss_bytes()) - before
        how = "VmHWM - VmRSS" if reset else "ru_maxrss delta"
    return {"peak_bytes": int(peak), "saved_bytes": int(variant.saved_bytes()), "how": how}


def memory_child(args: list) -> dict[str, Any]:
    """The child process's side of :func:`memory_in_subprocess`: set up like any nasseg process."""
    from ..process import configure_process

    net_fields, kind, device, threads, seed = args
    configure_process(threads)
    return measure_memory(NetConfig(**{**net_fields, "size": tuple(net_fields["size"])}), kind, device, seed)


MARK = "NASSEG_BENCH "
# the child imports nasseg the way this process did: same interpreter, same environment
_CHILD_CODE = ("import json, sys; from nasseg.shell.bench.measure import MARK, memory_child; "
               "print(MARK + json.dumps(memory_child(json.loads(sys.argv[1]))))")


def memory_in_subprocess(net: NetConfig, kind: str, device: str, threads: int, seed: int) -> dict[str, Any]:
    """:func:`measure_memory` in a fresh ``python -c`` process (whatever the caller's main module)."""
    args = [dataclasses.asdict(net), kind, device, threads, seed]
    proc = subprocess.run([sys.executable, "-c", _CHILD_CODE, json.dumps(args)], capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    if proc.returncode == -9:
        lines.append("killed (out of memory?)")
    raise NassegError(f"memory measurement of {kind} on {net.label} failed (exit {proc.returncode}): "
                      f"{lines[-1] if lines else 'no output'}")


class MemoryProbe:
    """Memory figures per (net, variant), each measured once: in a fresh process (``subprocess``),
    in this one (``inprocess``) or not at all (``off``). A failed measurement (e.g. out of memory)
    is kept as ``{"error": ...}`` so the other suites still run."""

    def __init__(self, mode: str, device: str, threads: int, seed: int):
        self.mode, self.device, self.threads, self.seed = mode, device, threads, seed
        self.cache: dict[tuple[NetConfig, str], dict[str, Any]] = {}

    def __call__(self, net: NetConfig, kind: str) -> dict[str, Any] | None:
        if self.mode == "off":
            return None
        key = (net, kind)
        if key not in self.cache:
            try:
                if self.mode == "inprocess":
                    self.cache[key] = measure_memory(net, kind, self.device, self.seed)
                else:
                    self.cache[key] = memory_in_subprocess(net, kind, self.device, self.threads, self.seed)
            except (NassegError, RuntimeError) as exc:
                self.cache[key] = {"error": str(exc).split("\n")[0]}
        return self.cache[key]
