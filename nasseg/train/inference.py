"""Test-time inference: sliding windows, multi-scale and flip averaging.

Every function takes a model in eval mode and normalised images ``(N, 3, H, W)`` on the model's
device, and returns maps at the input size, so callers never deal with padding or rescaling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..space.blocks import upsample_to


def _window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets covering ``0..size``; the last window is pushed back to end at the border."""
    steps = math.ceil(max(size - window, 0) / stride) + 1
    return sorted({min(i * stride, size - window) for i in range(steps)})


@torch.inference_mode()
def sliding_window_logits(model: nn.Module, image: Tensor, num_classes: int, crop: tuple[int, int],
                          stride_ratio: float = 2 / 3) -> Tensor:
    """Logits ``(N, C, H, W)`` from overlapping ``crop``-sized windows, averaged where they overlap.

    Used when an image is larger than what the model was trained on: the model then sees inputs of
    the training size (its global-pooling context matches training) and memory stays bounded. An
    image smaller than the crop in one dimension is zero-padded there (zero = the mean colour after
    normalisation), as in training; an image that fits in the crop takes one forward pass.
    """
    n, _, h, w = image.shape
    ch, cw = crop
    if h <= ch and w <= cw:
        return model(image)
    ph, pw = max(h, ch), max(w, cw)
    padded = F.pad(image, (0, pw - w, 0, ph - h))  # bottom/right, zeros
    logits = image.new_zeros(n, num_classes, ph, pw)
    count = image.new_zeros(1, 1, ph, pw)
    sh, sw = max(1, math.ceil(ch * stride_ratio)), max(1, math.ceil(cw * stride_ratio))
    for top in _window_starts(ph, ch, sh):
        for left in _window_starts(pw, cw, sw):
            box = (..., slice(top, top + ch), slice(left, left + cw))
            logits[box] += model(padded[box])
            count[box] += 1
    return (logits / count)[..., :h, :w]


@torch.inference_mode()
def predict_logits(model: nn.Module, image: Tensor, num_classes: int, *, scales: Sequence[float] = (1.0,),
                   flip: bool = False, crop: tuple[int, int] | None = None,
                   base_size: tuple[int, int] | None = None) -> Tensor:
    """Class probabilities ``(N, C, H, W)`` at the input size, averaged over scales and flips.

    ``base_size`` is the size scale 1.0 means (default: the input's own size): a model trained on
    images resized to HxW (reduced resolution) sees them at that size, and its predictions are
    still scored at the labels' full resolution.

    Each pass resizes the image by a scale (bilinear), optionally mirrors it, runs the model (with
    sliding windows when ``crop`` is given and the scaled image exceeds it), undoes the mirror and
    resizes the logits back to the input size. We average softmax *probabilities*, not logits, as
    DeepLab's multi-scale evaluation does: logits of different scales are not on a common scale,
    and bounded probabilities keep one over-confident pass from outvoting the others.
    """
    h, w = image.shape[-2:]
    bh, bw = base_size or (h, w)
    total = image.new_zeros(image.shape[0], num_classes, h, w)
    passes = 0
    for scale in scales:
        size = (max(1, round(bh * scale)), max(1, round(bw * scale)))
        scaled = upsample_to(image, size)
        for mirrored in (False, True) if flip else (False,):
            x = scaled.flip(-1) if mirrored else scaled
            logits = sliding_window_logits(model, x, num_classes, crop) if crop is not None else model(x)
            total += upsample_to(logits.flip(-1) if mirrored else logits, (h, w)).softmax(1)
            passes += 1
    return total / passes
