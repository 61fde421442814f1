"""The ``peers`` suite: nasseg against the original DARTS and Auto-DeepLab codes, through the
side-by-side scripts kept beside those codes (``--peer-dir``). Each script builds the original's
network and nasseg's (through :class:`nasseg.bench.Variant`), times their steps alternated in one
process, measures the peak RSS growth of each in a fresh process, and prints one JSON line last."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from nasseg.complexity import count_macs, meta_device
from nasseg.errors import NassegError

from .measure import Bench
from .nets import NetConfig, bench_space
from .settings import Row, Settings
from .straightforward import StraightforwardSupernet

DARTS_SCRIPT, ADL_SCRIPT = "side_by_side_darts.py", "side_by_side_adl.py"
COMPARE = "nasseg / original"
CHECKPOINT_MEMORY_GOAL = 0.2  # supernet.checkpoint: memory against the original's ...
CHECKPOINT_TIME_GOAL = 1.3  # ... at this much of nasseg's own un-checkpointed step time


@dataclass(frozen=True)
class PeerRun:
    """One run of a side-by-side script and the goals for it (nasseg / original, at most)."""

    script: str
    args: tuple[str, ...]
    net: NetConfig  # the network both sides build
    what: str  # e.g. "1st order"
    time_goal: float
    memory_goal: float
    passes: int | None = None  # forward + backward passes of a step, for its nominal FLOPs (DARTS)
    # the script's memory children (--child WHO) and their arguments besides --threads, as the script runs them
    children: tuple[str, ...] = ("original", "nasseg")
    child_args: tuple[str, ...] = ()


def peer_runs(s: Settings) -> list[PeerRun]:
    batch, crop = (2, 32) if s.quick else (64, 128)
    darts = NetConfig("darts_cifar", 16, 8, 10, batch, (32, 32))
    adl = NetConfig("autodeeplab", 8, 12, 19, 2, (crop, crop))
    darts_child = ("--iters", "2", "--warmup", "0", "--batch", str(batch))
    return [PeerRun(DARTS_SCRIPT, ("--order", "first", "--batch", str(batch)), darts, "1st order", 0.25, 0.5, 2,
                    child_args=("--order", "first", *darts_child)),
            # DARTS' unrolled step: virtual step, gradient at w', two Hessian-vector passes; then the weight step
            PeerRun(DARTS_SCRIPT, ("--order", "second", "--batch", str(batch)), darts,
                    "2nd order (central difference)", 0.3, 0.5, 5, child_args=("--order", "second", *darts_child)),
            PeerRun(ADL_SCRIPT, ("--crop", str(crop)), adl, "", 0.4, 0.5,
                    children=("original", "nasseg", "nasseg_ckpt"), child_args=("--crop", str(crop)))]


def peer_folder(folder: str) -> Path:
    path = Path(folder)
    missing = [name for name in (DARTS_SCRIPT, ADL_SCRIPT) if not (path / name).is_file()]
    if missing:
        problem = "no such folder" if not path.is_dir() else f"no {' or '.join(missing)} in it"
        raise NassegError(f"--peer-dir {folder}: {problem}; expected the folder of the side-by-side scripts of "
                          f"the original DARTS and Auto-DeepLab codes ({DARTS_SCRIPT}, {ADL_SCRIPT})")
    return path


def run_script(path: Path, args: list[str], say: Callable[[str], None]) -> dict[str, Any]:
    """Run one script with this python, pass its progress lines on, and return the JSON object it
    prints last; NassegError with its last line when it fails."""
    command = [sys.executable, str(path), *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    result, tail = None, "no output"
    for line in proc.stdout:
        line = line.strip()
        if line.startswith("{"):
            try:
                result = json.loads(line)
                continue
            except ValueError:
                pass
        if line:
            tail = line
            say(f"  {path.name}: {line}")
    code = proc.wait()
    if code != 0 or not isinstance(result, dict):
        raise NassegError(f"{path.name} {' '.join(args)} failed (exit {code}): {tail}")
    return result


def peak_memory(folder: Path, run: PeerRun, threads: int, say: Callable[[str], None]) -> dict[str, float | None]:
    """The script's memory children, each in a fresh process after the timing process has exited: peak RSS growth
    (MB) by child, None where one failed. The scripts start them from their timing process, which by then holds
    both networks' heap (12.7 GB for DARTS' second order); beside it the original's second-order child (12.3 GB)
    was killed for memory on a 24 GB machine."""
    peaks: dict[str, float | None] = {}
    for who in run.children:
        try:
            result = run_script(folder / run.script, ["--child", who, "--threads", str(threads), *run.child_args], say)
            peaks[who] = result["peak_delta_mb"]
        except (NassegError, KeyError) as exc:
            say(f"  {run.script} --child {who}: {exc}")
            peaks[who] = None
    return peaks


def step_gflop(net: NetConfig, passes: int) -> tuple[float, float]:
    """(nominal GFLOP of a step, GMAC of one image's forward pass): passes x 3 (forward, backward
    to inputs, backward to weights) x forward MACs x 2 FLOP per MAC, the MACs of the papers'
    supernet counted on the meta device (convolutions and linear layers)."""
    space = bench_space(net.space, net.width, net.layers, net.classes)
    with meta_device():
        model = StraightforwardSupernet(space, net.classes)
        x = torch.zeros(net.batch, 3, *net.size)
        macs = count_macs(lambda: model(x))
    return passes * 3 * 2 * macs / 1e9, macs / net.batch / 1e9


def script_rows(run: PeerRun, config: str, result: dict[str, Any]) -> list[Row]:
    step = result["step_s"]
    params = f"parameters: original {result.get('params_original')}, nasseg {result.get('params_nasseg')}"
    rows = [Row("peers", config, "step time", COMPARE, step["nasseg"], step["original"], "s", run.time_goal, params)]
    if run.passes:
        gflop, gmac = step_gflop(run.net, run.passes)
        rows.append(Row("peers", config, "achieved GFLOP/s", COMPARE, gflop / step["nasseg"], gflop / step["original"],
                        "GFLOP/s", None, f"{gflop:.1f} GFLOP a step: {run.passes} forward+backward passes x 3 x "
                                         f"{gmac:.3f} GMAC an image x batch {run.net.batch} x 2 FLOP a MAC"))
    memory = result.get("peak_delta_mb")
    if memory is not None:  # absent with --memory off
        for key, metric, compare, goal in (("nasseg", "peak memory", COMPARE, run.memory_goal),
                                           ("nasseg_ckpt", "peak memory, checkpoint", "nasseg checkpoint / original",
                                            CHECKPOINT_MEMORY_GOAL)):
            if key in memory:
                failed = memory[key] is None or memory["original"] is None
                rows.append(Row("peers", config, metric, compare, memory[key], memory["original"], "MB", goal,
                                "n/a: a memory child failed" if failed else "peak RSS growth over 2 steps"))
    return rows


def lean_rows(bench: Bench, net: NetConfig, original_mb: float | None, memory_goal: float) -> list[Row]:
    """The lattice with its ops' lean layers at every size (supernet.lean_saved: true; off there by default),
    which the scripts do not run: step time against nasseg's default, and peak memory against the original's
    (``original_mb``, the script's figure for ``net``) or, without it, against nasseg's default."""
    bench.say(f"[peers] {net.label}: supernet.lean_saved: true")
    timed = bench.time(net, ("ours", "ours_lean"), f"peers {net.label} lean")
    rows = [Row("peers", net.label, "step time, lean_saved: true", "nasseg lean / nasseg", timed["ours_lean"]["total"],
                timed["ours"]["total"], "s", None, "supernet.lean_saved: true, timed in this process")]
    lean, native = bench.memory(net, "ours_lean"), bench.memory(net, "ours")
    if lean is None or native is None:  # --memory off
        return rows
    compare, baseline, goal, note = COMPARE, original_mb, memory_goal, "nasseg's first step in a fresh process"
    if "peak_bytes" not in lean or "peak_bytes" not in native:
        value, note = None, "n/a: a memory child failed"
    elif original_mb:
        value = lean["peak_bytes"] / 2**20
        note += f" (the default layers by the same measure: {native['peak_bytes'] / 2**20:,.0f} MB)"
    else:
        value, baseline = lean["peak_bytes"] / 2**20, native["peak_bytes"] / 2**20
        compare, goal = "nasseg lean / nasseg", None
    return rows + [Row("peers", net.label, "peak memory, lean_saved: true", compare, value, baseline, "MB", goal, note)]


def checkpoint_time(bench: Bench, net: NetConfig) -> Row:
    """nasseg's checkpointed step against its own un-checkpointed one (the scripts time neither)."""
    bench.say(f"[peers] {net.label}: checkpoint / normal step time")
    timed = bench.time(net, ("ours", "ours_ckpt"), f"peers {net.label}")
    return Row("peers", net.label, "step time, checkpoint", "nasseg checkpoint / nasseg", timed["ours_ckpt"]["total"],
               timed["ours"]["total"], "s", CHECKPOINT_TIME_GOAL, "supernet.checkpoint: true, timed in this process")


def peers(bench: Bench) -> list[Row]:
    s = bench.s
    folder = peer_folder(s.peer_dir)
    # the memory children run here, one after another, not from the script's timing process (peak_memory)
    common = ["--iters", str(s.repeats), "--warmup", str(s.warmup), "--threads", str(s.threads), "--no-memory"]
    runs, rows = peer_runs(s), []
    lattice_original_mb = None
    for run in runs:
        config = f"{run.net.label}, {run.what}" if run.what else run.net.label
        bench.say(f"[peers] {config}: {run.script} {' '.join(run.args)}")
        try:
            result = run_script(folder / run.script, [*run.args, *common], bench.say)
        except NassegError as exc:  # e.g. an original code failing at this size: report it, go on
            rows.append(Row("peers", config, "step time", COMPARE, None, None, "s", run.time_goal, f"n/a: {exc}"))
            continue
        if s.memory != "off":
            result["peak_delta_mb"] = peak_memory(folder, run, s.threads, bench.say)
        rows += script_rows(run, config, result)
        if run.script == ADL_SCRIPT:
            lattice_original_mb = (result.get("peak_delta_mb") or {}).get("original")
    # (--quick: on the quick lattice, not the script's)
    rows.append(checkpoint_time(bench, s.adl_nets()[0] if s.quick else runs[-1].net))
    rows += lean_rows(bench, s.adl_nets()[0], None, runs[-1].memory_goal) if s.quick else \
        lean_rows(bench, runs[-1].net, lattice_original_mb, runs[-1].memory_goal)
    return rows
