"""``nasseg plan``: a job's predicted peak memory, and the memory check of ``nasseg search`` / ``train``."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import torch

from nasseg import plan as planner  # looked up at each call: tests replace available_memory and refusal
from nasseg.config import load_yaml
from nasseg.device import resolve_device
from nasseg.errors import NassegError
from nasseg.search import load_job
from nasseg.train.config import is_train_job, load_train_job

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


def parse_memory(text: str) -> int:
    """'16GB' -> bytes (powers of 1024: 16 GB = 16 GiB); '512MB', '1.5T', '1000000' (bytes)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match and _UNITS.get(match.group(2).lower())
    if not unit or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a memory size such as 16GB or 512MB, got {text!r}")
    return int(float(match.group(1)) * unit)


def load_any_job(path: str, overrides: list[str]):
    """A search or a training job file (the kind by its keys: a training job names a ``model``)."""
    if not Path(path).is_file():
        raise NassegError(f"{path}: file not found (expected a search or a training job)")
    data = load_yaml(path)
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in (None, "search", "train"):
        raise NassegError(f"{path}: nasseg plan takes a search or a training job, not kind: {kind}")
    return load_train_job(path, overrides) if is_train_job(path) else load_job(path, overrides)


def job_device(config, requested: str | None) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``: the one asked for, else the job's (``auto`` resolved here)."""
    if requested:
        if requested != "cpu" and not re.fullmatch(r"cuda(:\d+)?", requested):
            raise NassegError(f"--device: expected cpu, cuda or cuda:N, got {requested!r}")
        return requested
    return str(resolve_device(config.device))


def check_memory(config, parallel: int = 1) -> None:
    """Refuse (NassegError, one line) a job predicted not to fit this machine's free memory with
    ``parallel`` copies running at once; nothing when it fits or the free memory is unknown."""
    device = job_device(config, None)
    available = planner.available_memory(device)
    if available is None:
        return
    try:
        message = planner.refusal(config, device, available.bytes, available.source, parallel)
    except NassegError:
        raise  # bad input the job itself would fail on
    except Exception as exc:  # a model the tracer cannot follow must not stop the job it only checks
        print(f"nasseg: memory check skipped ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
              "nasseg plan JOB shows more", file=sys.stderr)
        return
    if message:
        raise NassegError(message)


def check_search_memory(config, args: argparse.Namespace, seeds: list[int]) -> None:
    """``nasseg search``'s check: the trials that run at once on this machine (local Ray: as many as
    the CPUs hold, ``resources.cpus`` each) must fit together; trials on a cluster are not checked."""
    if args.no_ray:
        parallel = 1
    elif args.address or os.environ.get("RAY_ADDRESS"):
        return
    else:
        cpus = args.num_cpus or os.cpu_count() or 1
        parallel = max(1, min(len(seeds), int(cpus // config.resources.cpus)))
    check_memory(config, parallel)


def add_force_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="run even when the job is predicted not to fit the free memory (see nasseg plan)")


def cmd_plan(args: argparse.Namespace) -> int:
    config = load_any_job(args.job, args.set)
    device = job_device(config, args.device)
    if args.memory:
        available, source = args.memory, "--memory"
    else:
        found = planner.available_memory(device) if device == "cpu" or torch.cuda.is_available() else None
        available, source = (found.bytes, found.source) if found else (None, "unknown")
    report = planner.fit_report(config, device, available, confirm=args.confirm) if available else None
    plan = report.plan if report else planner.plan_job(config, device)
    if args.json:
        print(json.dumps(_as_json(plan, report, source), indent=2))
    else:
        print(format_report(plan, report, source, args.confirm))
    return 0


def _as_json(plan, report, source: str) -> dict:
    data = {"plan": plan.to_dict(), "available": report.available if report else None, "available_source": source}
    if report:
        data.update(fits=report.fits, largest_batch=report.largest_batch,
                    checkpoint_needed=None if plan.kind != "search" or plan.checkpoint else not report.fits,
                    checkpointed_peak=report.checkpointed.peak if report.checkpointed else None,
                    checkpointed_fits=report.checkpointed.fits(report.available) if report.checkpointed else None)
    return data


def format_report(plan, report, source: str, confirm: bool = False) -> str:
    fb = planner.format_bytes
    width = max(20, *(len(phase.name) for phase in plan.phases))
    lines = [f"{plan.job}: {plan.describe()}", f"  {'phase':<{width}} {'peak':>10}"]
    for phase in plan.phases:
        mark = "  <- peak" if phase.name == plan.peak_phase else ""
        lines.append(f"  {phase.name:<{width}} {fb(phase.peak):>10}{mark}")
    lines.append(f"  in it: weights {fb(plan.weights)}, gradients + optimiser state {fb(plan.state)}, inputs "
                 f"{fb(plan.inputs)}, runtime {fb(plan.runtime)}; saved for backward by one training "
                 f"forward {fb(plan.saved)}")
    lines += [f"  note: {note}" for note in plan.notes]
    if report is None:
        lines.append(f"memory: {source} on {plan.device} (give --memory 16GB to check a budget)")
        return "\n".join(lines)
    verdict = "fits" if report.fits else "does NOT fit"
    lines.append(f"memory: {fb(report.available)} ({source}): {verdict} "
                 f"({100 * plan.peak / report.available:.0f} % of it at the peak)")
    how = "traced" if confirm else "linear in the batch from this plan; --confirm traces it"
    lines.append(f"largest batch that fits: {report.largest_batch or 'none'} ({how})")
    if plan.kind == "search":
        if plan.checkpoint:
            lines.append("activation checkpointing: on (supernet.checkpoint: true)")
        elif report.fits:
            lines.append("activation checkpointing: not needed")
        else:
            c = report.checkpointed
            lines.append(f"activation checkpointing: with supernet.checkpoint: true the peak is {fb(c.peak)} "
                         f"({c.peak_phase}): {'fits' if c.fits(report.available) else 'still does not fit'}")
    if not report.fits:
        lines.append(f"to fit: {planner.way_out(report)}")
    return "\n".join(lines)


def add_plan_parser(sub) -> None:
    plan = sub.add_parser(
        "plan", help="predict a job's peak memory before running it: what fits, the largest batch",
        description="Predict the peak memory of a search job's steps (architecture and weight steps, the Hessian "
                    "eigenvalue, validation) or a training job's iterations on a device, without running them: "
                    "the steps are traced on meta tensors (nothing is allocated or computed). Prints the peak "
                    "per phase, whether it fits the free memory (or --memory), the largest batch that fits and, "
                    "for a search, whether activation checkpointing (supernet.checkpoint) is needed. "
                    "Accuracy against measured peaks: docs/planning.md.",
        epilog="Examples: nasseg plan jobs/camvid_autodeeplab.yaml --set data.crop=[321,321];  "
               "nasseg plan jobs/retrain_camvid_dlv3p_mbv2.yaml --device cuda --memory 16GB --json")
    plan.add_argument("job", metavar="JOB.yaml", help="a search or training job file")
    plan.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: the job's device)")
    plan.add_argument("--memory", type=parse_memory, default=None, metavar="SIZE",
                      help="the memory budget, e.g. 16GB (default: the device's free memory now)")
    plan.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a job key, e.g. --set data.batch_size=8 (repeatable; value is YAML)")
    plan.add_argument("--confirm", action="store_true",
                      help="trace the plan again at the estimated largest batch (and correct it, up to 3 more "
                           "plans) instead of extrapolating linearly from the job's batch")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(run=cmd_plan)
