"""The search checks: lockstep DARTS epochs in float32 and in bfloat16 autocast, and the Hessian
eigenvalue of a fixed batch at the initial supernet (exact and forward-difference products)."""

from __future__ import annotations

from nasseg.search import Search

from . import tolerances as tol
from .compare import Comparison, bounded, equal, within
from .context import RUNS, CheckContext
from .environment import strict_float32
from .jobs import search_job
from .lockstep import SearchTrace, run_search, update_difference


def _reference_search(ctx: CheckContext) -> SearchTrace:
    def compute() -> SearchTrace:
        config = search_job(ctx.sizes, ctx.space_file(), ctx.settings.seed, "cpu")
        return run_search(config, ctx.run_dir("reference", "search", "search"), ctx.settings.seed)
    return ctx.reference("search", compute)


def _device_search(ctx: CheckContext, amp: bool, reference: SearchTrace) -> SearchTrace:
    config = search_job(ctx.sizes, ctx.space_file(), ctx.settings.seed, str(ctx.device), amp=amp)
    run_dir = ctx.run_dir("device", "search_bf16" if amp else "search", "search")
    return ctx.on_device(lambda: run_search(config, run_dir, ctx.settings.seed, starts=reference.states))


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


def check_search(ctx: CheckContext) -> list[Comparison]:
    reference = _reference_search(ctx)
    with strict_float32():
        measured = _device_search(ctx, False, reference)
    return compare_searches("search", reference, measured, reduced=False)


def check_search_bf16(ctx: CheckContext) -> list[Comparison]:
    reference = _reference_search(ctx)
    measured = _device_search(ctx, True, reference)
    note = "" if ctx.device.type == "cuda" else "supernet.amp applies on CUDA only: float32 on both sides here"
    return compare_searches("search_bf16", reference, measured, reduced=True, note=note)


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
