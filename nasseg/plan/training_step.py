"""The memory of a training job's iterations, traced on ``meta`` tensors (nasseg/train/trainer.py).

Phases:

* ``training step``: ``Trainer.step``: forward, the segmentation loss over every output, the
  gradients of the previous step set to None only after the forward (so they are alive during it),
  backward, gradient clipping, the SGD update; steady state (``warm``) with the momentum buffers of
  the step before, ``warm=False`` the first step of a process;
* ``validation``: one image of ``nasseg.train.evaluate`` (batch 1, resized to ``data.size``, the
  probabilities at the label's stored size), when ``warm``.

Not modelled: mixed precision on CUDA (``amp``: activations planned in float32, an upper bound) and
data-parallel workers (``--workers``).
"""

from __future__ import annotations

import torch

from ..layers import to_channels_last
from ..models import build
from ..train.config import TrainConfig
from ..train.inference import predict_logits
from ..train.losses import as_outputs, loss_weights_for, segmentation_loss
from .budget import MemoryPlan
from .shapes import DataShapes, training_shapes
from .simulation import META, SavedCounter, meta_batch, on_meta, simulate


class TrainingStepTrace:
    """A training job's model, optimiser and batch on ``meta``, and its phases."""

    def __init__(self, config: TrainConfig, shapes: DataShapes, batch: int, device: str):
        self.config, self.shapes = config, shapes
        self.model = on_meta(lambda: build(config.model, shapes.num_classes, **config.model_args))
        if device.startswith("cuda"):  # the trainer's NHWC on CUDA
            self.model = on_meta(lambda: to_channels_last(self.model))
        o = config.optim
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum,
                                         weight_decay=o.weight_decay, nesterov=o.nesterov,
                                         foreach=device.startswith("cuda"))
        self.image, self.label = meta_batch(batch, shapes.train_size)
        self.saved = SavedCounter([*self.model.parameters(), *self.model.buffers(), self.image])

    def inputs(self) -> list[torch.Tensor]:
        return [self.image, self.label]

    def warm_up(self) -> None:
        """Gradients and momentum as the previous iteration leaves them."""
        for param in self.model.parameters():
            param.grad = torch.zeros_like(param)
        self.optimizer.step()

    def step(self) -> None:
        """``Trainer.step`` on one batch."""
        self.model.train()
        with self.saved.counting():
            outputs = as_outputs(self.model(self.image))
            weights = loss_weights_for(self.model, len(outputs), self.config.loss_weights)
            loss, _ = segmentation_loss(outputs, self.label, weights, self.shapes.ignore_index)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.config.optim.grad_clip if self.config.optim.grad_clip > 0 else float("inf")
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()

    def validation(self) -> None:
        """One image of ``evaluate``: probabilities at the stored size, then the prediction."""
        self.model.eval()
        image = torch.empty(1, 3, *self.shapes.label_size, device=META)
        probs = predict_logits(self.model, image, self.shapes.num_classes, base_size=self.config.data.size)
        probs.argmax(1)
        self.model.train()


def plan_training(config: TrainConfig, device: str = "cpu", *, batch: int | None = None, warm: bool = True,
                  shapes: DataShapes | None = None) -> MemoryPlan:
    """The predicted peak memory of ``config``'s training iterations on ``device`` at ``batch``
    (default ``data.batch_size``)."""
    batch = batch or config.data.batch_size
    shapes = shapes or training_shapes(config.data)
    trace = TrainingStepTrace(config, shapes, batch, device)
    phases = [("training step", trace.step)] + ([("validation", trace.validation)] if warm else [])
    notes = ("amp not modelled: activations planned in float32 (an upper bound)",) \
        if config.amp and device.startswith("cuda") else ()
    return simulate(trace, device, phases, warm=warm, job=config.name, kind="training", batch=batch,
                    input_size=shapes.train_size, notes=notes)
