"""The supernet suites: nasseg's search step against the straightforward supernet (``darts``,
``autodeeplab``), second against first order (``order``), checkpointing against not (``checkpoint``)."""

from __future__ import annotations

from typing import Any, Sequence

from .measure import Bench
from .nets import NetConfig
from .settings import TARGETS, Row


def step_rows(suite: str, config: str, compare: str, value: dict[str, float], base: dict[str, float],
              target: float | None, note: str = "", parts: Sequence[str] = ("weight", "arch")) -> list[Row]:
    rows = [Row(suite, config, "step time", compare, value["total"], base["total"], "s", target, note)]
    return rows + [Row(suite, config, f"{part} step time", compare, value[part], base[part], "s") for part in parts]


def memory_rows(suite: str, config: str, compare: str, value: dict[str, Any] | None,
                base: dict[str, Any] | None) -> list[Row]:
    """Peak memory and bytes saved for backward, or one n/a row naming what failed."""
    if value is None or base is None:  # --memory off
        return []
    target = TARGETS.get((suite, "peak memory"))
    failed = [m["error"] for m in (value, base) if "error" in m]
    if failed:
        return [Row(suite, config, "peak memory", compare, None, None, "MB", target, "n/a: " + "; ".join(failed))]
    how = "" if value["how"] == "VmHWM - VmRSS" else value["how"]
    return [Row(suite, config, "peak memory", compare, value["peak_bytes"] / 2**20, base["peak_bytes"] / 2**20, "MB",
                target, how),
            Row(suite, config, "saved for backward", compare, value["saved_bytes"] / 2**20,
                base["saved_bytes"] / 2**20, "MB", target)]


def compare(bench: Bench, suite: str, net: NetConfig, value_kind: str, base_kind: str, label: str,
            extra: Sequence[tuple[str, str]] = ()) -> list[Row]:
    """Memory, then time, of variant ``value_kind`` against ``base_kind`` on one net; ``extra`` =
    ((variant, label), ...): more variants timed in the same run against the baseline."""
    bench.say(f"[{suite}] {net.label}: {label}")
    # memory first: each variant in its own process while this one is still small
    memory_value, memory_base = bench.memory(net, value_kind), bench.memory(net, base_kind)
    timed = bench.time(net, (value_kind, base_kind, *(kind for kind, _ in extra)), f"{suite} {net.label}")
    rows = step_rows(suite, net.label, label, timed[value_kind], timed[base_kind], TARGETS[suite, "step time"])
    for kind, extra_label in extra:
        rows += step_rows(suite, net.label, extra_label, timed[kind], timed[base_kind], None)
    return rows + memory_rows(suite, net.label, label, memory_value, memory_base)


def darts(bench: Bench) -> list[Row]:
    return compare(bench, "darts", bench.s.darts_net(), "ours", "straightforward", "ours / straightforward",
                   extra=(("ours_nchw", "ours in NCHW / straightforward"),))


def autodeeplab(bench: Bench) -> list[Row]:
    return [row for net in bench.s.adl_nets()
            for row in compare(bench, "autodeeplab", net, "ours", "straightforward", "ours / straightforward")]


def order(bench: Bench) -> list[Row]:
    """Second-order step (DARTS' central difference, and the forward difference of arch.fd) vs first order."""
    net = bench.s.darts_net()
    bench.say(f"[order] {net.label}: 2nd / 1st order")
    timed = bench.time(net, ("ours", "ours_2nd", "ours_2nd_fwd"), f"order {net.label}")
    target = TARGETS["order", "step time"]
    return (step_rows("order", net.label, "2nd / 1st order", timed["ours_2nd"], timed["ours"], target,
                      "arch.fd: central (DARTS)", parts=("arch",))
            + step_rows("order", net.label, "2nd (forward difference) / 1st order", timed["ours_2nd_fwd"],
                        timed["ours"], target, "arch.fd: forward (one training pass fewer, kinks frozen)",
                        parts=("arch",)))


def checkpoint(bench: Bench) -> list[Row]:
    """Checkpointing every state; on the lattice also only the states at stride 16 or finer."""
    rows = compare(bench, "checkpoint", bench.s.darts_net(), "ours_ckpt", "ours", "checkpoint / normal")
    limited = "checkpoint_max_stride 16 / normal"
    for net in bench.s.adl_nets()[:1]:
        rows += compare(bench, "checkpoint", net, "ours_ckpt", "ours", "checkpoint / normal",
                        extra=(("ours_ckpt16", limited),))
        rows += memory_rows("checkpoint", net.label, limited, bench.memory(net, "ours_ckpt16"), bench.memory(net, "ours"))
        # the same steps, each variant alone in a fresh process (alternated in one process, the checkpointed
        # lattice runs slower beside the unchecked one's freed heap)
        bench.say(f"[checkpoint] {net.label}: each variant in its own process")
        alone = bench.time_alone(net, ("ours", "ours_ckpt", "ours_ckpt16"))
        rows += step_rows("checkpoint", net.label, "checkpoint / normal, own processes", alone["ours_ckpt"],
                          alone["ours"], None)
        rows += step_rows("checkpoint", net.label, limited + ", own processes", alone["ours_ckpt16"], alone["ours"], None)
    return rows
