"""The checks, in lockstep with the CPU (searches, the Hessian eigenvalue, retraining) or measuring
the device (``nasseg info --latency``, ``nasseg bench``, NCCL retraining); see the package docstring."""

from __future__ import annotations

import contextlib
import importlib.util
import math
from dataclasses import dataclass

import torch

from nasseg.io import read_csv
from nasseg.search import Search

from ..bench.output import write_csv, write_json
from ..bench.run import run_bench
from ..bench.settings import Settings
from ..describe import describe_model
from . import tolerances as tol
from .compare import Comparison, bounded, equal, measured_only, skipped, within
from .context import RUNS, CheckContext, strict_float32
from .lockstep import LockstepTrainer, SearchTrace, run_search, update_difference
from .settings import search_job, train_job


# --- searches ----------------------------------------------------------------------------------

def _updates(reference: SearchTrace, measured: SearchTrace, names: tuple[str, ...]) -> list[float]:
    return [update_difference(reference.states[e]["model"], reference.states[e + 1]["model"],
                              measured.states[e + 1]["model"], names) for e in range(len(reference.rows))]


def _column(trace: SearchTrace, key: str) -> list[float]:
    return [float(row[key]) for row in trace.rows]


def _genotypes(trace: SearchTrace) -> list[tuple]:
    return [(arch.cells, arch.path) for arch in trace.archs]


def _show_archs(trace: SearchTrace) -> str:
    last = trace.archs[-1]
    return "; ".join(f"{kind}: " + " ".join(f"{op}({source}->{node})" for source, node, op in cell.edges())
                     for kind, cell in last.cells.items())


def compare_searches(check: str, reference: SearchTrace, measured: SearchTrace, reduced: bool,
                     note: str = "") -> list[Comparison]:
    """Per epoch (one step each): the step's loss, the validation loss, the updates of weights and
    architecture parameters; in float32 also the eigenvalue and the decoded architecture."""
    epochs = f"{len(reference.rows)} lockstep epochs of one step"
    rows = [
        within(check, "step loss", _column(reference, "train_loss"), _column(measured, "train_loss"),
               tol.LOSS_REDUCED if reduced else tol.LOSS_FP32, f"{epochs}. {note}".strip()),
        within(check, "validation loss", _column(reference, "val_loss"), _column(measured, "val_loss"),
               tol.LOSS_REDUCED if reduced else tol.VAL_LOSS_FP32),
        bounded(check, "weight update (relative L2 difference)",
                _updates(reference, measured, reference.weight_names),
                tol.UPDATE_REDUCED if reduced else tol.UPDATE_FP32_SEARCH),
        bounded(check, "architecture update (relative L2 difference)",
                _updates(reference, measured, reference.arch_names),
                tol.UPDATE_REDUCED if reduced else tol.UPDATE_FP32_SEARCH),
    ]
    if not reduced:
        rows.append(within(check, "eigenvalue per epoch (forward-difference products, warm start)",
                           _column(reference, "eigenvalue"), _column(measured, "eigenvalue"), tol.EIGEN_FORWARD))
    rows.append(equal(check, "decoded architecture, every epoch", _genotypes(reference), _genotypes(measured),
                      _show_archs(reference), _show_archs(measured), required=not reduced,
                      note="last epoch shown" + ("; reduced precision may flip near ties: not a failure"
                                                 if reduced else "")))
    return rows


def _precision(amp: bool) -> contextlib.AbstractContextManager:
    """Float32 checks run with TF32 off; autocast ones as the job sets them."""
    return contextlib.nullcontext() if amp else strict_float32()


def check_search(ctx: CheckContext, amp: bool = False) -> list[Comparison]:
    """``search``, or ``search_bf16`` with ``amp``."""
    seed, name = ctx.settings.seed, "search_bf16" if amp else "search"
    reference = ctx.reference("search", lambda: run_search(search_job(ctx.sizes, ctx.space_file(), seed, "cpu"),
                                                           ctx.run_dir("reference", "search", "search"), seed))
    config = search_job(ctx.sizes, ctx.space_file(), seed, str(ctx.device), amp=amp)
    run_dir = ctx.run_dir("device", name, "search")
    with _precision(amp):
        measured = ctx.on_device(lambda: run_search(config, run_dir, seed, starts=reference.states))
    note = "supernet.amp applies on CUDA only: float32 on both sides here" if amp and ctx.device.type != "cuda" else ""
    return compare_searches(name, reference, measured, reduced=amp, note=note)


def _eigenvalue(ctx: CheckContext, device: str, method: str) -> tuple[float, int]:
    """The dominant eigenvalue at the initial supernet and its Lanczos steps."""
    config = search_job(ctx.sizes, ctx.space_file(), ctx.settings.seed, device, hessian_method=method)
    # a Search reads its data and builds the supernet; it writes its run folder only in run_search
    search = Search(config, ctx.settings.seed, ctx.settings.out / RUNS / "hessian_not_written", progress=False)
    return search.eigenvalue(), search.eigen_steps


def check_hessian(ctx: CheckContext) -> list[Comparison]:
    rows = []
    for method, bound in (("exact", tol.EIGEN_EXACT), ("forward", tol.EIGEN_FORWARD)):
        reference, ref_steps = ctx.reference(f"eigen_{method}", lambda: _eigenvalue(ctx, "cpu", method))
        with strict_float32():
            measured, steps = ctx.on_device(lambda: _eigenvalue(ctx, str(ctx.device), method))
        rows.append(within("hessian", f"eigenvalue, {method} products", [reference], [measured], bound,
                           f"Lanczos steps: {ref_steps} on the CPU, {steps} on the device"))
    return rows


# --- retraining ---------------------------------------------------------------------------------

@dataclass
class TrainTrace:
    losses: list[float]
    before: list[dict]  # model and optimiser states before each step
    after: list[dict]  # the model after each step
    skipped: list[int]  # steps whose update GradScaler skipped
    names: list[str]  # the model's parameters
    miou: float  # validation mIoU after the steps


def lockstep_train(ctx: CheckContext, side: str, name: str, device: str, amp: bool,
                   starts: list[dict] | None = None) -> TrainTrace:
    config = train_job(ctx.sizes, name, ctx.settings.seed, device, amp)
    out = ctx.run_dir(side, name, "train").parent
    trainer = LockstepTrainer(config, out, starts=starts)
    result = trainer.run()
    names = [name for name, _ in trainer.model.named_parameters()]
    return TrainTrace(trainer.losses, trainer.before, trainer.after, trainer.skipped, names,
                      float(result["miou"]) if result else math.nan)


def reference_train(ctx: CheckContext) -> TrainTrace:
    return ctx.reference("train", lambda: lockstep_train(ctx, "reference", "train", "cpu", amp=False))


def compare_training(check: str, reference: TrainTrace, measured: TrainTrace, reduced: bool,
                     note: str = "") -> list[Comparison]:
    """Steps GradScaler skipped (their update is zero by design) are left out of the comparison."""
    kept = [k for k in range(len(reference.losses)) if k + 1 not in measured.skipped]
    updates = [update_difference(reference.before[k]["model"], reference.after[k], measured.after[k],
                                 reference.names) for k in kept]
    skipped = f"GradScaler skipped step(s) {measured.skipped}; " if measured.skipped else ""
    steps = f"{len(reference.losses)} lockstep steps; val mIoU after them {reference.miou:.4f} (CPU), " \
            f"{measured.miou:.4f} (device)"
    return [
        within(check, "step loss", [reference.losses[k] for k in kept], [measured.losses[k] for k in kept],
               tol.LOSS_REDUCED if reduced else tol.LOSS_FP32, f"{skipped}{steps}. {note}".strip()),
        bounded(check, "weight update (relative L2 difference)", updates,
                tol.UPDATE_REDUCED if reduced else tol.UPDATE_FP32_TRAIN),
    ]


def check_train(ctx: CheckContext, amp: bool = False) -> list[Comparison]:
    """``train``, or ``train_amp`` with ``amp``."""
    name, reference = "train_amp" if amp else "train", reference_train(ctx)
    with _precision(amp):
        measured = ctx.on_device(lambda: lockstep_train(ctx, "device", name, str(ctx.device), amp, reference.before))
    note = "amp applies on CUDA only: float32 on both sides here" if amp and ctx.device.type != "cuda" else ""
    return compare_training(name, reference, measured, reduced=amp, note=note)


# --- the device ---------------------------------------------------------------------------------

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
