"""The memory of a search job's steps, traced on ``meta`` tensors: nothing is allocated or computed.

The supernet, its optimisers and the batches are built as :class:`nasseg.search.Search` builds them,
and each phase calls the search engine's own step functions (``steps.weight_step``, the architects'
``first_order_grads`` / ``second_order_grads``, ``hessian.make_hvp``) in the order the loop calls
them (nasseg/search/loop.py), so the trace holds what a real step holds:

* steady state (``warm``, the default): the weight gradients of the previous weight step, the SGD
  momentum and the Adam moments exist when a step starts, as from the second step of a search on;
  ``warm=False`` plans the first step of a fresh process (what ``nasseg bench`` measures);
* ``architecture step`` and ``weight step``, in the algorithm's order (DARTS: architecture first);
* ``eigenvalue`` (when ``hessian.every`` > 0): the base gradient pass and one Hessian-vector product
  on the Hessian batch, with the weights frozen and the structure fixed (checkpointing off!) as
  ``Search.eigenvalue`` runs them; later Lanczos steps repeat the product and hold no more memory
  (the first one already turns the recorded ReLU masks into floats);
* ``validation``: one no-grad batch of ``data.val_batch_size`` in eval mode;
* with ``hessian.overlap`` the eigenvalue's phase is planned beside the largest other one
  (:func:`beside_training`).

Architecture steps are planned as active (after ``arch.start_epoch``), ``supernet.prune_below`` as
pruning nothing (its savings depend on the alphas), ``supernet.amp`` not at all (float32 throughout).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import torch
import torch.nn.functional as F

from .. import space as spaces
from ..layers import frozen_bn_stats, to_channels_last
from ..search.architect import first_order_grads, second_order_grads, set_arch_grads
from ..search.config import SearchConfig, resolve_space_path
from ..search.hessian import make_hvp
from ..search.loop import optimizers
from ..search.steps import fixed_structure, frozen, weight_step
from ..supernet import Supernet
from .budget import MemoryPlan, Phase
from .shapes import DataShapes, search_shapes
from .simulation import META, SavedCounter, meta_batch, on_meta, simulate


class SearchStepTrace:
    """A search's model, optimisers and batches on ``meta``, and its phases (module docstring)."""

    def __init__(self, config: SearchConfig, shapes: DataShapes, batch: int, checkpoint: bool,
                 device: str, space: spaces.SearchSpace | None = None):
        self.config, self.shapes = config, shapes
        space = space or spaces.load(resolve_space_path(config))
        max_stride = config.supernet.checkpoint_max_stride if checkpoint else None
        self.model = on_meta(lambda: Supernet(space, shapes.num_classes, checkpoint_cells=checkpoint,
                                              checkpoint_max_stride=max_stride,
                                              lean_saved=config.supernet.lean_saved))
        if config.supernet.channels_last:
            self.model = on_meta(lambda: to_channels_last(self.model))
        # foreach: torch's default on CUDA (one multi-tensor update, its temporaries); meta tensors need it said
        self.weight_optimizer, self.arch_optimizer = optimizers(self.model, config.weights, config.arch,
                                                                foreach=device.startswith("cuda"))
        dense = self.model.segmentation
        self.xa, self.ya = meta_batch(batch, shapes.train_size, dense)
        self.xb, self.yb = meta_batch(batch, shapes.train_size, dense)
        self.xh, self.yh = meta_batch(config.hessian.batch_size or batch, shapes.train_size, dense)
        self.saved = SavedCounter([*self.model.parameters(), *self.model.buffers(), self.xa])

    def loss(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y, ignore_index=self.shapes.ignore_index)

    def inputs(self) -> list[torch.Tensor]:
        return [self.xa, self.ya, self.xb, self.yb, self.xh, self.yh]

    def warm_up(self) -> None:
        """Gradients and optimiser state as a previous step leaves them."""
        for param in [*self.model.weight_parameters(), *self.model.arch_parameters()]:
            param.grad = torch.zeros_like(param)
        self.weight_optimizer.step()
        self.arch_optimizer.step()

    def arch_step(self) -> None:
        """``Search.arch_step``: the architecture gradient, then one Adam step."""
        config = self.config
        if config.algorithm == "darts" and config.order == "second":
            grads = second_order_grads(self.model, self.loss, self.xa, self.ya, self.xb, self.yb,
                                       self.weight_optimizer, xi=config.weights.lr, r=config.arch.fd_radius,
                                       difference=config.arch.fd)
        else:
            grads = first_order_grads(self.model, self.loss, self.xb, self.yb)
        self.arch_optimizer.zero_grad()
        set_arch_grads(self.model, grads)
        self.arch_optimizer.step()

    def weight_step(self) -> None:
        """``Search.weight_step``: one SGD step of the weights (forward + backward + clip + update)."""
        criterion = partial(F.cross_entropy, ignore_index=self.shapes.ignore_index)
        with self.saved.counting():
            weight_step(self.model, criterion, self.xa, self.ya, self.weight_optimizer, self.config.weights.grad_clip)

    def eigenvalue(self) -> None:
        """``Search.eigenvalue``'s passes: the gradient at the base point and one product."""
        hessian = self.config.hessian
        model, arch = self.model, self.model.arch_parameters()
        with frozen_bn_stats(model), frozen(model.weight_parameters()), fixed_structure(model):
            hvp = make_hvp(lambda: self.loss(model, self.xh, self.yh), arch, method=hessian.method,
                           epsilon=hessian.epsilon)
            vector = torch.zeros(sum(p.numel() for p in arch), device=META)
            hvp(vector)

    @torch.no_grad()
    def validation(self) -> None:
        """One batch of ``Search.evaluate``."""
        x, y = meta_batch(self.config.data.val_batch_size, self.shapes.val_size, self.model.segmentation)
        self.model.eval()
        F.cross_entropy(self.model(x), y, ignore_index=self.shapes.ignore_index, reduction="sum")
        self.model.train()


def plan_search(config: SearchConfig, device: str = "cpu", *, batch: int | None = None,
                checkpoint: bool | None = None, warm: bool = True, shapes: DataShapes | None = None,
                space: spaces.SearchSpace | None = None) -> MemoryPlan:
    """The predicted peak memory of ``config``'s search steps on ``device`` (``cpu`` / ``cuda``), at
    ``batch`` (default ``data.batch_size``) and with ``checkpoint`` (default ``supernet.checkpoint``).
    ``warm=False``: the first step of a process, without the epoch-end phases. ``shapes`` and
    ``space`` replace what the job's data and space say (as ``Search(space=...)`` takes a space)."""
    batch = batch or config.data.batch_size
    checkpoint = config.supernet.checkpoint if checkpoint is None else checkpoint
    shapes = shapes or search_shapes(config.data)
    trace = SearchStepTrace(config, shapes, batch, checkpoint, device, space)
    phases = [("architecture step", trace.arch_step), ("weight step", trace.weight_step)]
    if config.algorithm == "autodeeplab":  # the weight step first
        phases.reverse()
    if warm and config.hessian.every:
        phases.append(("eigenvalue", trace.eigenvalue))
    if warm:
        phases.append(("validation", trace.validation))
    notes = []
    if config.supernet.prune_below:
        notes.append("supernet.prune_below planned as pruning nothing (an upper bound)")
    if checkpoint and config.supernet.checkpoint_max_stride:
        notes.append(f"supernet.checkpoint_max_stride: {config.supernet.checkpoint_max_stride}: the states at "
                     "coarser strides are not recomputed")
    if config.supernet.amp and device.startswith("cuda"):
        notes.append("supernet.amp not modelled: activations planned in float32 (an upper bound)")
    plan = simulate(trace, device, phases, warm=warm, checkpoint=checkpoint, job=config.name, kind="search",
                    batch=batch, input_size=shapes.train_size, notes=tuple(notes))
    return beside_training(plan) if warm and config.hessian.every and config.hessian.overlap else plan


def beside_training(plan: MemoryPlan) -> MemoryPlan:
    """``hessian.overlap``: the eigenvalue runs on its own thread during the next epoch's phases, on a
    copy of the model (parameters and buffers, no gradients). Its phase becomes the largest other phase
    plus the eigenvalue's own bytes and that copy."""
    eigen = next(phase for phase in plan.phases if phase.name == "eigenvalue")
    others = [phase for phase in plan.phases if phase is not eigen]
    largest = max(others, key=lambda phase: phase.peak)
    own = eigen.peak - plan.runtime - plan.baseline - plan.state
    together = Phase("eigenvalue beside the step",
                     largest.peak + own + plan.weights, largest.bookkeeping + eigen.bookkeeping)
    return dataclasses.replace(plan, phases=(*others, together),
                               notes=(*plan.notes, f"hessian.overlap: the eigenvalue's phase runs beside the "
                                                   f"{largest.name}, with a copy of the model"))
