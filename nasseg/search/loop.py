"""The search loop: one seed of one job, epoch by epoch, checkpointed and resumable.

Per epoch: for each pair of batches (A for weights, B for the architecture)
    DARTS:        architecture step on B (first or second order), then a weight step on A
    Auto-DeepLab: a weight step on A, then an architecture (alphas + betas) step on B
Architecture steps start after ``arch.start_epoch`` epochs (Auto-DeepLab: 20 of 40). At the end of
each epoch: validation loss / mIoU, the dominant Hessian eigenvalue of the architecture loss on a
fixed batch of B, the decoded architecture, a checkpoint, and the stop rule.
Epochs are numbered from 1; "epoch e" is the state after e finished epochs.

With ``hessian.overlap`` the eigenvalue of epoch e runs on a thread of its own, on a copy of epoch
e's model, while epoch e+1 trains; epoch e's stop check follows when both are done. Each thread
makes the same calls on the same tensors as the sequential loop, so the numbers are the same; a
stop at epoch e discards epoch e+1's unrecorded training. Epoch e's checkpoint is written before
its eigenvalue is known ("eigen_pending"; rewritten complete when the search ends at e); a resume
computes it again.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import random
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import space as spaces
from ..arch.decode import decode
from ..device import resolve_device
from ..errors import NassegError
from ..io import atomic_write_text
from ..space.ops import OPS
from ..layers import Noise, frozen_bn_stats, to_channels_last
from ..supernet import Supernet
from ..train.metrics import ConfusionMatrix
from .architect import first_order_grads, second_order_grads, set_arch_grads
from .config import ArchOptim, HessianConfig, SearchConfig, WeightOptim, dump_job, resolve_space_path
from .data import build_search_data, check_search_data
from .hessian import dominant_eigenvalue
from .rundir import RunDir
from .steps import fixed_structure, frozen, weight_step
from .stop_rules import DartsADA, make_rule


class SearchDiverged(NassegError):
    """A NaN/inf loss or exploding alphas; the last checkpoint is left intact."""


NOT_MEASURED = {"eigenvalue": None, "eigen_seconds": 0.0, "eigen_steps": 0, "eigen_bound": None}


class EigenInFlight:
    """An epoch's eigenvalue fields, computed on a thread of its own (``hessian.overlap``);
    ``result()`` waits for them and says how long it waited."""

    def __init__(self, measure: Callable[[], dict[str, Any]]):
        self._fields: dict[str, Any] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(measure,), name="nasseg-eigenvalue", daemon=True)
        self._thread.start()

    def _run(self, measure: Callable[[], dict[str, Any]]) -> None:
        try:
            self._fields = measure()
        except BaseException as exc:  # re-raised in the search's own thread by result()
            self._error = exc

    def result(self) -> tuple[dict[str, Any], float]:
        start = time.perf_counter()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._fields, time.perf_counter() - start


@dataclass
class SearchResult:
    run_dir: Path
    status: str  # finished | stopped | interrupted (max_epochs reached first)
    epochs_run: int
    arch_epoch: int  # the epoch whose architecture is the answer (arch.yaml)
    reason: str


def cosine_lr(lr: float, lr_min: float, epoch: int, epochs: int) -> float:
    """DARTS schedule: cosine from lr (epoch 1) towards lr_min over ``epochs`` epochs."""
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * (epoch - 1) / epochs)) / 2


def optimizers(model: Supernet, weights: WeightOptim, arch: ArchOptim,
               foreach: bool | None = None) -> tuple[torch.optim.SGD, torch.optim.Adam]:
    """The search's two optimisers: SGD with momentum for the weights, Adam for alphas and betas."""
    return (torch.optim.SGD(model.weight_parameters(), lr=weights.lr, momentum=weights.momentum,
                            weight_decay=weights.weight_decay, foreach=foreach),
            torch.optim.Adam(model.arch_parameters(), lr=arch.lr, betas=tuple(arch.betas),
                             weight_decay=arch.weight_decay, foreach=foreach))


def architecture_eigenpair(model: Supernet, loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor],
                           hessian: HessianConfig, seed: int,
                           start: torch.Tensor | None = None) -> tuple[float, torch.Tensor, int, float]:
    """(eigenvalue, eigenvector, Lanczos steps, Ritz residual bound) of the Hessian of ``loss_fn`` w.r.t.
    ``params`` (the architecture), in train mode with BatchNorm statistics and the weights frozen."""
    # fixed_structure: finite differences replay the ReLU pattern call by call, and a double
    # backward through checkpointed states fails (BN statistics restored in place)
    with frozen_bn_stats(model), frozen(model.weight_parameters()), fixed_structure(model):
        return dominant_eigenvalue(loss_fn, params, iters=hessian.iters, tol=hessian.tol,
                                   generator=torch.Generator().manual_seed(seed), start=start, method=hessian.method,
                                   epsilon=hessian.epsilon, with_residual=True)


class Search:
    def __init__(self, config: SearchConfig, seed: int, run_dir: str | Path, progress: bool = True,
                 space: spaces.SearchSpace | None = None):
        self.config = config
        self.seed = seed
        self.run = RunDir(run_dir)
        self.progress = progress
        random.seed(seed)
        torch.manual_seed(seed)
        self.space = space or spaces.load(resolve_space_path(config))
        self.data = build_search_data(config.data, seed)
        check_search_data(config, self.data, max(self.space.network.strides))
        self.device = resolve_device(config.device)
        net = config.supernet
        self.model = Supernet(self.space, self.data.num_classes, checkpoint_cells=net.checkpoint,
                              prune_below=net.prune_below, checkpoint_max_stride=net.checkpoint_max_stride,
                              lean_saved=net.lean_saved
                              ).to(self.device)
        if net.channels_last:
            self.model = to_channels_last(self.model)
        self.amp = self.device.type == "cuda" and net.amp
        if config.hessian.overlap and any(isinstance(m, Noise) for m in self.model.modules()):
            raise NassegError(f"{config.file}: hessian.overlap with the noise op: its training draws and the "
                              "eigenvalue's fixed draws share one random generator; set hessian.overlap: false")
        if not self.model.segmentation:
            raise NassegError(f"{self.space.file}: network.head is {self.space.network.head.type!r}, a "
                              "classification head; searching on segmentation data needs a dense head (e.g. aspp)")
        self.weight_optimizer, self.arch_optimizer = optimizers(self.model, config.weights, config.arch)
        self.rule = make_rule(config.early_stop, file=config.file, key="early_stop")
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.eigen_steps = 0
        self.eigen_bound: float | None = None  # the Ritz residual ||H v - theta v|| of the last eigenvalue
        self.eigenvector: torch.Tensor | None = None  # the last one, to warm-start the next (CPU, float64)
        batch = config.hessian.batch_size or config.data.batch_size
        self.hessian_batch = tuple(t.to(self.device) for t in self.data.fixed_batch(batch))

    # --- steps --------------------------------------------------------------------------------

    def loss(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y, ignore_index=self.data.ignore_index)

    def autocast(self):
        """bfloat16 autocast on CUDA when supernet.amp is set (no loss scaling needed); else nothing."""
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()

    def arch_step(self, xa, ya, xb, yb) -> None:
        if self.config.algorithm == "darts" and self.config.order == "second":
            lr = self.weight_optimizer.param_groups[0]["lr"]
            grads = second_order_grads(self.model, self.loss, xa, ya, xb, yb, self.weight_optimizer, xi=lr,
                                       r=self.config.arch.fd_radius, difference=self.config.arch.fd)
        else:
            with self.autocast():
                grads = first_order_grads(self.model, self.loss, xb, yb)
        self.arch_optimizer.zero_grad()
        set_arch_grads(self.model, grads)
        self.arch_optimizer.step()

    def weight_step(self, x, y, confusion: ConfusionMatrix) -> float:
        criterion = partial(F.cross_entropy, ignore_index=self.data.ignore_index)
        with self.autocast():
            loss, logits = weight_step(self.model, criterion, x, y, self.weight_optimizer, self.config.weights.grad_clip)
        confusion.update(logits, y)
        return loss

    def check_finite(self, loss: float, step: int) -> None:
        problem = None
        if not math.isfinite(loss):
            problem = f"the training loss is {loss}"
        else:
            for param in (p.detach() for p in self.model.arch_parameters()):
                if not torch.isfinite(param).all():
                    problem = "an architecture parameter is not finite"
                elif param.abs().max() > self.config.alpha_limit:
                    problem = (f"architecture parameters exploded (|alpha| = {float(param.abs().max()):.3g} > "
                               f"alpha_limit {self.config.alpha_limit:g})")
        if problem:
            self.run.log_event("diverged", epoch=self.epoch + 1, step=step, problem=problem)
            raise SearchDiverged(f"search diverged at epoch {self.epoch + 1}, step {step}: {problem}. The checkpoint "
                                 f"of epoch {self.epoch} in {self.run.path} is intact; continue with changed settings, "
                                 "e.g. nasseg search JOB.yaml --resume --set weights.lr=0.0125")

    # --- one epoch ----------------------------------------------------------------------------

    def train_epoch(self, epoch: int, max_steps: int | None = None) -> dict[str, Any]:
        """One epoch of steps; ``max_steps`` ends it early (benchmarks time a part of an epoch)."""
        config = self.config
        lr = cosine_lr(config.weights.lr, config.weights.lr_min, epoch, config.epochs)
        for group in self.weight_optimizer.param_groups:
            group["lr"] = lr
        arch_active = epoch > config.arch.start_epoch
        self.model.train()
        self.data.train.set_epoch(epoch)  # the augmentation draws of both halves
        loader_a, loader_b = self.data.loaders(config.data.batch_size, self.seed, epoch)
        confusion = ConfusionMatrix(self.data.num_classes, self.data.ignore_index)
        losses = []
        steps = min(len(loader_a), len(loader_b), max_steps or len(loader_a))
        bar = tqdm(itertools.islice(zip(loader_a, loader_b), steps), total=steps, leave=False,
                   disable=not self.progress, desc=f"epoch {epoch}/{config.epochs}", unit="step")
        for step, ((xa, ya), (xb, yb)) in enumerate(bar, start=1):
            xa, ya, xb, yb = (t.to(self.device, non_blocking=True) for t in (xa, ya, xb, yb))
            if arch_active and config.algorithm == "darts":
                self.arch_step(xa, ya, xb, yb)
            losses.append(self.weight_step(xa, ya, confusion))
            if arch_active and config.algorithm == "autodeeplab":
                self.arch_step(xa, ya, xb, yb)
            self.check_finite(losses[-1], step)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.4f}")
        return {"epoch": epoch, "train_loss": sum(losses) / max(len(losses), 1),
                "train_miou": confusion.miou(), "lr": lr, "arch_active": arch_active,
                "weight_decay": self.weight_optimizer.param_groups[0]["weight_decay"]}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        confusion = ConfusionMatrix(self.data.num_classes, self.data.ignore_index)
        total, pixels = 0.0, 0
        loader = torch.utils.data.DataLoader(self.data.val, batch_size=self.config.data.val_batch_size)
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device)
            logits = self.model(x)
            total += float(F.cross_entropy(logits, y, ignore_index=self.data.ignore_index, reduction="sum"))
            pixels += int((y != self.data.ignore_index).sum())
            confusion.update(logits, y)
        self.model.train()
        return {"val_loss": total / max(pixels, 1), "val_miou": confusion.miou(),
                "val_pixel_acc": confusion.pixel_accuracy()}

    def eigenvalue(self, model: Supernet | None = None) -> float:
        """Dominant eigenvalue of the Hessian of the architecture (validation) loss w.r.t. all
        alphas and betas jointly, on a fixed batch of B, in train mode with BN statistics frozen;
        of ``model`` (default: the search's own; with hessian.overlap, a copy of it)."""
        model = model or self.model
        start = self.eigenvector if self.config.hessian.warm_start else None
        value, vector, self.eigen_steps, self.eigen_bound = self._top_eigenpair(model, model.arch_parameters(), start)
        self.eigenvector = vector.detach().to("cpu", torch.float64)
        return value

    def measure_eigen(self, model: Supernet) -> dict[str, Any]:
        """The eigenvalue columns of an epoch's metrics row, computed on ``model``."""
        start = time.perf_counter()
        fields = {"eigenvalue": self.eigenvalue(model)}
        if self.config.hessian.blocks:
            fields.update(self.block_eigenvalues(model))
        # an eigenvalue of the Hessian lies within eigen_bound of the recorded value (Ritz residual)
        fields.update(eigen_seconds=time.perf_counter() - start, eigen_steps=self.eigen_steps,  # Lanczos products
                      eigen_bound=self.eigen_bound)
        return fields

    def block_eigenvalues(self, model: Supernet | None = None) -> dict[str, float]:
        """``hessian.blocks`` on a lattice: the dominant eigenvalues of the diagonal blocks of that
        Hessian, over the cell alphas alone and over the network-level betas alone. Each Lanczos run
        starts from its block of this epoch's joint eigenvector (no extra state to checkpoint)."""
        model = model or self.model
        if model.betas is None:
            return {}
        alphas = list(model.alphas.values())
        n_alphas = sum(p.numel() for p in alphas)
        joint = self.eigenvector
        values = {}
        for name, params, part in (("alphas", alphas, slice(0, n_alphas)),
                                   ("betas", [model.betas], slice(n_alphas, None))):
            start = joint[part] if joint is not None and self.config.hessian.warm_start else None
            value, _, steps, _ = self._top_eigenpair(model, params, start)
            self.eigen_steps += steps
            values[f"eigenvalue_{name}"] = value
        return values

    def _top_eigenpair(self, model: Supernet, params: list[torch.Tensor],
                       start: torch.Tensor | None) -> tuple[float, torch.Tensor, int, float]:
        x, y = self.hessian_batch
        return architecture_eigenpair(model, lambda: self.loss(model, x, y), params, self.config.hessian,
                                      self.seed, start)

    def record_architecture(self, epoch: int) -> dict[str, float]:
        """Save alphas/betas and the decoded architecture of this epoch; return op shares."""
        with torch.no_grad():
            payload = {"epoch": epoch,
                       "alphas_raw": {k: v.tolist() for k, v in self.model.alphas.items()},
                       "alphas": {k: [w.tolist() for w in self.model.edge_weights(k)] for k in self.model.alphas},
                       "betas_raw": self.model.betas.tolist() if self.model.betas is not None else None,
                       "betas": {f"{s[0]}_{s[1]}->{t[0]}_{t[1]}": float(w)
                                 for (s, t), w in self.model.transition_weights().items()}}
        self.run.write_arch_weights(epoch, payload)
        arch = decode(self.model, name=f"{self.config.name}_seed{self.seed}_epoch{epoch}",
                      meta={"epoch": epoch, "seed": self.seed, "job": self.config.name})
        arch.save(self.run.epoch_file("arch", epoch, ".yaml"))
        kept = [op for _, _, op in arch.cells["normal"].edges()]
        return {"param_free_share": sum(OPS[op].parameter_free for op in kept) / len(kept),
                "skip_share": sum(op == "skip_connect" for op in kept) / len(kept)}

    # --- checkpoints --------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        ada = self.rule if isinstance(self.rule, DartsADA) else None
        return {"epoch": self.epoch, "seed": self.seed, "model": self.model.state_dict(),
                "weight_optimizer": self.weight_optimizer.state_dict(),
                "arch_optimizer": self.arch_optimizer.state_dict(), "history": self.history,
                "config": self.config.to_dict(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
                "python_rng": list(random.getstate()[1]), "python_rng_version": random.getstate()[0],
                "eigenvector": self.eigenvector,
                "ada": {"history": ada.history, "first_epoch": ada.first_epoch, "rollbacks": ada.rollbacks}
                if ada else None}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.epoch = state["epoch"]
        self.history = list(state["history"])
        self.eigenvector = state.get("eigenvector")
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
        random.setstate((state["python_rng_version"], tuple(state["python_rng"]), None))
        if isinstance(self.rule, DartsADA) and state["ada"]:
            self.rule.history = list(state["ada"]["history"])
            self.rule.first_epoch = state["ada"]["first_epoch"]
            self.rule.rollbacks = state["ada"]["rollbacks"]
        # settings changed on resume (--set) win over the checkpoint's; ADA-raised decay is kept
        saved = state["config"]
        for group in self.weight_optimizer.param_groups:
            if saved["weights"]["weight_decay"] != self.config.weights.weight_decay:
                group["weight_decay"] = self.config.weights.weight_decay
            group["momentum"] = self.config.weights.momentum
        for group in self.arch_optimizer.param_groups:
            group["lr"] = self.config.arch.lr
            group["weight_decay"] = self.config.arch.weight_decay

    def resume(self) -> None:
        if not self.run.has_checkpoint():
            raise NassegError(f"{self.run.path}: nothing to resume (no checkpoints/last.pt)")
        state = self.run.load_checkpoint()
        saved = state["config"]
        for key in ("space", "algorithm"):
            if saved.get(key) != getattr(self.config, key):
                raise NassegError(f"{self.run.path}: cannot resume a {key}={saved.get(key)!r} run with "
                                  f"{key}={getattr(self.config, key)!r}")
        self.load_state_from(state, self.run.file("checkpoints", "last.pt"))
        self.run.log_event("resumed", epoch=self.epoch)

    def load_state_from(self, state: dict[str, Any], source: str | Path) -> None:
        """load_state, with a state that does not fit this search as one line naming ``source``."""
        try:
            self.load_state(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            reason = f"no {e}" if isinstance(e, KeyError) else " ".join(str(e).split())[:200]
            raise NassegError(f"{source}: this checkpoint does not fit the search ({reason})") from None

    def save(self, state: dict[str, Any] | None = None) -> None:
        keep = 2 * self.rule.rule.window + 2 if isinstance(self.rule, DartsADA) else 0  # it looks back two windows
        state = state or self.state()
        self.run.save_checkpoint(state, state["epoch"], keep_epochs=keep)

    # --- the loop -----------------------------------------------------------------------------

    def stop_check(self, epoch: int, eigenvalue: float | None) -> tuple[str, int | None, str]:
        """('continue'|'stop'|'rollback', epoch to return/roll back to, reason)."""
        if eigenvalue is None:
            return "continue", None, ""
        if isinstance(self.rule, DartsADA):
            action = self.rule.observe(epoch, eigenvalue, self.weight_optimizer.param_groups[0]["weight_decay"])
            if action.action == "rollback":
                self._rollback(action.return_epoch, action.weight_decay, action.reason)
            return action.action, action.return_epoch, action.reason
        measured = [(r["epoch"], r["eigenvalue"]) for r in self.history
                    if r.get("eigenvalue") is not None and r["arch_active"]]
        decision = self.rule.check([v for _, v in measured], measured[0][0] if measured else 1)
        return ("stop" if decision.stop else "continue"), decision.return_epoch, decision.reason

    def _rollback(self, epoch: int, weight_decay: float, reason: str) -> None:
        ada_state = (list(self.rule.history), self.rule.first_epoch, self.rule.rollbacks)
        self.load_state(self.run.load_checkpoint(epoch))
        self.rule.history, self.rule.first_epoch, self.rule.rollbacks = ada_state
        for group in self.weight_optimizer.param_groups:
            group["weight_decay"] = weight_decay
        self.run.log_event("rollback", to_epoch=epoch, weight_decay=weight_decay, reason=reason)

    def run_search(self, max_epochs: int | None = None,
                   on_epoch: Callable[[dict[str, Any]], None] | None = None) -> SearchResult:
        """Run until the last epoch (or ``max_epochs``, to simulate an interruption) or a stop."""
        config = self.config
        self.run.claim()
        atomic_write_text(self.run.file("config.yaml"), dump_job(config))
        atomic_write_text(self.run.file("space.yaml"), Path(self.space.file).read_text())
        last = min(config.epochs, max_epochs or config.epochs)
        pending = self._pending_after_resume()
        if pending and not config.hessian.overlap:
            pending, outcome = None, self._complete(pending, on_epoch, last=self.epoch >= last)
            if outcome:
                return outcome
        while self.epoch < last or pending:
            started = time.perf_counter()
            epoch = self.epoch + 1
            row = self._train_and_evaluate(epoch) if self.epoch < last else None
            if pending:  # the previous epoch's eigenvalue ran beside this epoch's training
                completing = time.perf_counter()
                pending, outcome = None, self._complete(pending, on_epoch, last=row is None)
                if outcome:
                    return outcome
                started += time.perf_counter() - completing  # that time is the previous epoch's
            if row is None:
                break
            measure = config.hessian.every and epoch % config.hessian.every == 0 and row["arch_active"]
            row.update(self.record_architecture(epoch))
            self.history.append(row)
            self.epoch = epoch
            if measure and config.hessian.overlap:
                row.update(eigen_pending=True, epoch_seconds=time.perf_counter() - started)  # + the wait, later
                pending = self._save_pending()
                continue
            row.update(self.measure_eigen(self.model) if measure else NOT_MEASURED)
            row["eigen_wait_seconds"] = row["eigen_seconds"]
            row["epoch_seconds"] = time.perf_counter() - started
            action, target, reason = self.stop_check(epoch, row["eigenvalue"])
            self.save()
            outcome = self._after_check(row, action, target, reason, on_epoch)
            if outcome:
                return outcome
        if self.epoch >= config.epochs:
            return self._finish("finished", self.epoch, f"ran all {config.epochs} epochs")
        return SearchResult(self.run.path, "interrupted", self.epoch, self.epoch, "stopped at max_epochs")

    def _train_and_evaluate(self, epoch: int) -> dict[str, Any]:
        row = self.train_epoch(epoch)
        eval_start = time.perf_counter()
        row.update(self.evaluate())
        row["eval_seconds"] = time.perf_counter() - eval_start
        return row

    def _after_check(self, row: dict[str, Any], action: str, target: int | None, reason: str,
                     on_epoch: Callable[[dict[str, Any]], None] | None) -> SearchResult | None:
        self.run.write_metrics(self.history)
        if on_epoch:
            on_epoch(row)
        if action != "stop":
            return None
        self.run.log_event("early_stop", epoch=row["epoch"], return_epoch=target, reason=reason)
        return self._finish("stopped", target, reason)

    # --- hessian.overlap: an epoch's eigenvalue beside the next epoch ---------------------------

    def model_copy(self) -> Supernet:
        """The model's parameters, buffers and layout in a module of their own, without gradients."""
        twin = copy.deepcopy(self.model)
        for param in twin.parameters():
            param.grad = None
        return twin

    def _save_pending(self) -> EigenInFlight:
        """Checkpoint the epoch just recorded, its eigenvalue pending, and start that eigenvalue."""
        self.save()
        return self._start_eigen()

    def _pending_after_resume(self) -> EigenInFlight | None:
        """A resumed checkpoint saved before its epoch's eigenvalue: compute that again (same numbers)."""
        if not (self.history and self.history[-1].get("eigen_pending")):
            return None
        return self._start_eigen()

    def _start_eigen(self) -> EigenInFlight:
        """The last recorded epoch's eigenvalue on a thread of its own, on a copy of the model."""
        return EigenInFlight(partial(self.measure_eigen, self.model_copy()))

    def _complete(self, pending: EigenInFlight, on_epoch: Callable[[dict[str, Any]], None] | None,
                  last: bool) -> SearchResult | None:
        """The last recorded epoch's eigenvalue is in: its row, the stop check, metrics (no rollbacks: the
        job check keeps DARTS-ADA from overlap). When the search ends there (a stop, or ``last``: no epoch
        trained after it) its pending checkpoint, still last.pt, is rewritten with the complete row."""
        fields, waited = pending.result()
        row = self.history[-1]
        del row["eigen_pending"]
        row.update(fields, eigen_wait_seconds=waited, epoch_seconds=row["epoch_seconds"] + waited)
        action, target, reason = self.stop_check(row["epoch"], row["eigenvalue"])
        if action == "stop" or last:
            state = self.run.load_checkpoint()
            state.update(history=self.history, eigenvector=self.eigenvector)
            self.save(state)
        return self._after_check(row, action, target, reason, on_epoch)

    def _finish(self, status: str, arch_epoch: int, reason: str) -> SearchResult:
        source = self.run.epoch_file("arch", arch_epoch, ".yaml")
        atomic_write_text(self.run.file("arch.yaml"), source.read_text())
        total = sum(r["epoch_seconds"] for r in self.history)
        # the time the search spent on the eigenvalue (with hessian.overlap: waiting for it)
        eigen = sum(r.get("eigen_wait_seconds", r["eigen_seconds"]) for r in self.history)
        self.run.write_result({"status": status, "epochs_run": self.epoch, "arch_epoch": arch_epoch,
                               "reason": reason, "seed": self.seed, "space": self.space.name,
                               "algorithm": self.config.algorithm, "order": self.config.order,
                               "final_val_miou": self.history[-1]["val_miou"],
                               "seconds": total, "eigen_share": eigen / total if total else 0.0})
        return SearchResult(self.run.path, status, self.epoch, arch_epoch, reason)
