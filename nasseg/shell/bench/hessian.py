"""The ``hessian`` suite: seconds of one dominant-eigenvalue computation (``Search.eigenvalue``)
against one search epoch (training steps + evaluation + eigenvalue) of a search job, and against an
epoch of the DARTS paper's CIFAR-10 search (391 first-order steps of batch 64)."""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
from functools import partial
from importlib import resources
from pathlib import Path

from nasseg.errors import NassegError
from nasseg.search import Search, SearchConfig, load_job, parse_job
from nasseg.search.config import HessianConfig
from nasseg.search.loop import EigenInFlight, architecture_eigenpair
from nasseg.space import SearchSpace
from nasseg.config import resolve_builtin

from .measure import Bench
from .nets import Variant, bench_space, loss_fn, timed
from .settings import DEFAULT_JOB, TARGETS, Row, Settings

JOBS_DIR = Path(str(resources.files("nasseg") / "jobs"))
PAPER_EPOCH_STEPS = 391  # DARTS: 25,000 CIFAR-10 training images (half the train set) in batches of 64


def resolve_job(name_or_path: str) -> Path:
    """A job file as given, or a job shipped with nasseg by name (e.g. camvid_darts)."""
    path = resolve_builtin(name_or_path, JOBS_DIR, "job")
    if not path.is_file():
        raise NassegError(f"--job {name_or_path}: job file not found")
    return path


def bench_job(s: Settings) -> tuple[SearchConfig, SearchSpace | None, list[str]]:
    """The job to measure, its space when overridden, and notes on what was changed."""
    if s.quick and s.job is None:
        config = parse_job({"name": "bench_hessian", "space": "darts", "epochs": 1, "seeds": [s.seed],
                            "data": {"dataset": "camvid_demo", "size": [48, 64], "crop": [32, 32], "batch_size": 2,
                                     "limit": 8, "val_batch_size": 8},
                            "hessian": {"iters": 4}, "early_stop": {"rule": "none"}})
        return config, bench_space("darts", 4, 3), ["quick: camvid_demo, darts C=4 L=3, 32x32 crops"]
    config = load_job(resolve_job(s.job or DEFAULT_JOB))
    notes = []
    if config.data.root and not Path(config.data.root).exists():
        notes.append(f"{config.data.root} not found: camvid_demo instead")
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, dataset="camvid_demo", root=None))
    return config, None, notes


def hessian(bench: Bench) -> list[Row]:
    s = bench.s
    config, space, notes = bench_job(s)
    config = dataclasses.replace(config, device=s.device)
    label = f"{Path(config.file).name if config.file else config.name} ({config.data.dataset})"
    bench.say(f"[hessian] {label}: eigenvalue / epoch")
    with tempfile.TemporaryDirectory(prefix="nasseg-bench-") as out:
        search = Search(config, s.seed, out, progress=s.progress, space=space)
        # as at the end of epoch 1: Lanczos from a random start
        eigen_cold, _ = timed(search.eigenvalue, search.device)
        cold_steps = search.eigen_steps
        epoch_steps = min(len(loader) for loader in search.data.loaders(config.data.batch_size, s.seed, 1))
        steps = epoch_steps if s.epoch_steps <= 0 else min(s.epoch_steps, epoch_steps)
        train = timed(lambda: search.train_epoch(1, max_steps=steps), search.device)[0] * epoch_steps / steps
        if steps < epoch_steps:
            notes.append(f"training part extrapolated from {steps} of {epoch_steps} steps")
        evaluation, _ = timed(search.evaluate, search.device)
        # as at the end of a later epoch: warm-started from the previous eigenvector when the job says so
        previous = search.eigenvector
        eigen, value = timed(search.eigenvalue, search.device)
        steps_used = search.eigen_steps
        exact = None
        if config.hessian.method != "exact":  # the same computation with exact (double-backward) products
            search.eigenvector = previous
            search.config = dataclasses.replace(config, hessian=dataclasses.replace(config.hessian, method="exact"))
            exact, exact_value = timed(search.eigenvalue, search.device)
            exact_steps = search.eigen_steps
            search.config = config
        # hessian.overlap: the same eigenvalue on a thread of its own beside the next epoch's steps
        search.eigenvector = previous
        twin = search.model_copy()
        overlapped, waited = timed(lambda: overlapped_steps(search, twin, steps), search.device)
    # the epoch with the eigenvalue beside it: the measured steps (slowed by it) + the wait for what was left of
    # it + the epoch's other steps and evaluation at their own speed
    overlapped_epoch = overlapped + train * (epoch_steps - steps) / epoch_steps + evaluation
    warm = config.hessian.warm_start
    notes.append(f"epoch = training {train:.1f}s + evaluation {evaluation:.1f}s + eigenvalue ({steps_used} of "
                 f"{config.hessian.iters} Lanczos steps{', warm start' if warm else ''})")
    epoch = train + evaluation
    rows = [Row("hessian", label, "eigen share", "eigenvalue / epoch", eigen, epoch + eigen, "s",
                TARGETS["hessian", "eigen share"], "; ".join(notes))]
    if exact is not None:
        rows.append(Row("hessian", label, "eigen share, exact products", "eigenvalue / epoch", exact, epoch + exact,
                        "s", None, f"hessian.method: exact instead of {config.hessian.method}: eigenvalue "
                                   f"{exact_value:.5g} vs {value:.5g}, {exact_steps} Lanczos steps"))
    rows.append(Row("hessian", label, "eigen share, overlapped", "added wall time / epoch",
                    overlapped_epoch - epoch, overlapped_epoch, "s", None,
                    f"hessian.overlap: the eigenvalue beside {steps} training steps ({overlapped:.1f}s, "
                    f"{waited:.1f}s of it waiting for the eigenvalue after them), one torch thread each"))
    if warm:
        rows.append(Row("hessian", label, "eigen share, epoch 1", "eigenvalue / epoch", eigen_cold, epoch + eigen_cold,
                        "s", None, f"cold start (random Lanczos vector), first call, {cold_steps} Lanczos steps"))
    return rows + paper_setting(bench)


def overlapped_steps(search: Search, twin, steps: int) -> float:
    """Train ``steps`` steps of epoch 2 while ``twin``'s eigenvalue runs on a thread; seconds waited after them."""
    in_flight = EigenInFlight(partial(search.measure_eigen, twin))
    search.train_epoch(2, max_steps=steps)
    return in_flight.result()[1]


def paper_setting(bench: Bench) -> list[Row]:
    """The eigenvalue (the search job's defaults: forward-difference products, Lanczos to a 1 % residual)
    on one batch of the DARTS CIFAR search net against an epoch of first-order steps at the paper's setting,
    epoch = 391 steps timed here (median) + the eigenvalue; cold (epoch 1) and warm-started (later epochs)."""
    s = bench.s
    net = s.darts_net()
    bench.say(f"[hessian] {net.label}: eigenvalue / epoch at the paper's setting")
    variant = Variant(net, "ours", bench.device, seed=s.seed)
    model, config = variant.model, HessianConfig()

    def eigenpair(start):
        return architecture_eigenpair(model, lambda: loss_fn(model, variant.xb, variant.yb), model.arch_parameters(),
                                      config, s.seed, start)

    cold, (_, vector, cold_steps, _) = timed(lambda: eigenpair(None), bench.device)
    for _ in range(s.warmup):
        variant.step()
    step = statistics.median(variant.step()["total"] for _ in range(s.repeats))
    # warm-started after the timed steps moved weights and alphas, as at the end of a later epoch (from the
    # same point the previous eigenvector is already converged and the warm start would look cheaper)
    warm, (value, _, warm_steps, _) = timed(lambda: eigenpair(vector.detach()), bench.device)
    epoch = PAPER_EPOCH_STEPS * step
    label = f"{net.label}, paper setting"
    note = (f"epoch = {PAPER_EPOCH_STEPS} first-order steps x {step:.3f}s (median of {s.repeats}) + eigenvalue on "
            f"one batch of {net.batch} ({config.method} products)")
    return [Row("hessian", label, "eigen share, paper setting", "eigenvalue / epoch", warm, epoch + warm, "s",
                TARGETS["hessian", "eigen share, paper setting"], f"{note}; warm start, {warm_steps} Lanczos steps, "
                                                                   f"eigenvalue {value:.4g}"),
            Row("hessian", label, "eigen share, paper setting, epoch 1", "eigenvalue / epoch", cold, epoch + cold, "s",
                None, f"{note}; cold start, {cold_steps} Lanczos steps")]
