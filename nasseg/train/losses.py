"""Segmentation losses for models with one or several outputs.

Multi-output models (ICNet's cascade at 1/16, 1/8, 1/4; a DARTS auxiliary head) return a list in
training mode, the main output last, and declare their weights as ``output_loss_weights``. An
output smaller than the label is compared with a nearest-downsampled label, as ICNet's cascade
label guidance does (upsampling the logits instead would blur the coarse branches' task).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import NassegError


def as_outputs(output: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """A model's training-mode output(s) as a list of N x C x H x W logits."""
    outputs = [output] if isinstance(output, Tensor) else list(output)
    if any(out.dim() != 4 for out in outputs):
        raise NassegError("the model is a classification network (one score per class and image, not a map per "
                          "pixel); segmentation training needs a segmentation model (for an ArchSpec chain: "
                          "model_args kind seg, the default)")
    return outputs


def loss_weights_for(model: nn.Module, n_outputs: int, configured: Sequence[float] | None) -> tuple[float, ...]:
    """The job's weights, else the model's ``output_loss_weights``; one per output."""
    weights = configured if configured is not None else getattr(model, "output_loss_weights", None)
    if weights is None and n_outputs == 1:
        weights = (1.0,)
    if weights is None or len(weights) != n_outputs:
        raise NassegError(f"{type(model).__name__} returns {n_outputs} outputs in training mode; "
                          f"set loss_weights to {n_outputs} numbers (got {weights})")
    return tuple(float(w) for w in weights)


def resize_label(label: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest-neighbour label resize (pixel-centre aligned), ignore values kept as they are."""
    h, w = label.shape[-2:]
    if (h, w) == tuple(size):
        return label
    rows = ((torch.arange(size[0], device=label.device) + 0.5) * h / size[0]).long()
    cols = ((torch.arange(size[1], device=label.device) + 0.5) * w / size[1]).long()
    return label[..., rows[:, None], cols[None, :]]


def segmentation_loss(outputs: list[Tensor], label: Tensor, weights: Sequence[float],
                      ignore_index: int) -> tuple[Tensor, list[Tensor]]:
    """Weighted sum of pixel cross-entropies, and the individual (unweighted) terms."""
    terms = []
    for logits in outputs:
        target = resize_label(label, logits.shape[-2:]) if logits.dim() == 4 else label
        if bool((target == ignore_index).all()):  # e.g. a crop of padding only: mean over 0 = NaN
            terms.append(logits.float().sum() * 0.0)
        else:
            terms.append(F.cross_entropy(logits.float(), target, ignore_index=ignore_index))
    total = sum(w * t for w, t in zip(weights, terms))
    return total, terms
