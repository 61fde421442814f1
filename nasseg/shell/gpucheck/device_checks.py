"""The checks that measure the device rather than agree with the CPU: ``nasseg info --latency``,
``nasseg bench`` and, with two GPUs or more, NCCL data-parallel retraining (``--workers 2``)."""

from __future__ import annotations

import importlib.util

import torch

from nasseg.io import read_csv

from ..bench.output import write_csv, write_json
from ..bench.run import run_bench
from ..bench.settings import Settings
from ..describe import describe_model
from . import tolerances as tol
from .compare import Comparison, measured_only, skipped, within
from .context import CheckContext
from .jobs import train_job
from .train_checks import reference_train


def check_latency(ctx: CheckContext) -> list[Comparison]:
    model, size = ctx.sizes.train_model, ctx.sizes.latency_input
    reference = ctx.reference("latency", lambda: describe_model(model, size, None, latency=True, latency_device="cpu"))
    measured = ctx.on_device(lambda: describe_model(model, size, None, latency=True,
                                                    latency_device=str(ctx.device)))
    ms_cpu, ms = reference["latency_ms"], measured["latency_ms"]
    ok = torch.device(measured["latency_device"]).type == ctx.device.type and ms > 0
    return [measured_only("latency", f"{model} forward at {size[0]}x{size[1]}, median (ms)", f"{ms_cpu:g}", f"{ms:g}",
                          ok, f"on {measured['latency_device']}; CPU with {reference['latency_threads']} threads; "
                              f"{ms_cpu / ms:.1f}x the CPU's speed")]


def check_bench(ctx: CheckContext) -> list[Comparison]:
    s = ctx.settings
    settings = Settings(suites=s.bench_suites, device=str(ctx.device), threads=torch.get_num_threads(),
                        repeats=3 if s.bench_full else 1, warmup=1 if s.bench_full else 0, quick=not s.bench_full,
                        memory="inprocess", seed=s.seed, progress=s.progress)
    rows = ctx.on_device(lambda: run_bench(settings))
    write_csv(rows, str(s.out / "bench.csv"))
    write_json(rows, settings, str(s.out / "bench.json"))
    missing = [f"{r.suite} {r.metric}: {r.note}" for r in rows if r.value is None]
    ratios = [f"{r.suite} {r.metric} {r.ratio:.3g}" for r in rows if r.ratio is not None and r.target is not None]
    sizes = "full sizes" if s.bench_full else "--quick sizes"
    return [measured_only("bench", f"suites {','.join(s.bench_suites)} ({sizes}): rows measured", "-",
                          f"{len(rows) - len(missing)} of {len(rows)}", bool(rows) and not missing,
                          "; ".join(missing or ratios) + "; every row in bench.csv / bench.json")]


def check_nccl(ctx: CheckContext) -> list[Comparison]:
    workers = ctx.settings.workers
    quantity = f"first step loss, {workers} NCCL workers against one CPU process"
    if ctx.device.type != "cuda":
        return [skipped("nccl", quantity, "NCCL needs CUDA devices (--device cpu)")]
    count = torch.cuda.device_count()
    if count < workers:
        return [skipped("nccl", quantity, f"skipped: {count} GPU here, the data-parallel retraining needs {workers}")]
    if importlib.util.find_spec("ray") is None:
        return [skipped("nccl", quantity, "skipped: ray is not installed for this Python (pip install 'ray[train]')")]
    from ..runner.distributed_train import run_distributed

    reference = reference_train(ctx)
    config = train_job(ctx.sizes, "nccl", ctx.settings.seed, "cuda", amp=False)
    out = ctx.run_dir("device", "nccl", "train").parent
    result = ctx.on_device(lambda: run_distributed(config, out, workers, restart=True, progress=False))
    losses = [float(v) for v in read_csv(out / "nccl" / "log.csv", "the training log", ["loss"])["loss"]]
    return [within("nccl", quantity, reference.losses[:1], losses[:1], tol.LOSS_DATA_PARALLEL,
                   f"all steps: {', '.join(f'{v:.4g}' for v in losses)} (free-running: later steps not compared); "
                   f"peak GPU memory is the workers', not measured here"),
            measured_only("nccl", "finished (result.json)", "-", "yes" if result else "no", result is not None,
                          f"val mIoU {result['miou']:.4f}" if result else "")]
