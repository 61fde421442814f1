"""Segmentation metrics from a confusion matrix accumulated over a whole split.

mIoU is computed from the summed confusion matrix (not an average of per-image IoUs):
IoU_c = TP / (TP + FP + FN), averaged over the classes that occur (in labels or predictions).
"""

from __future__ import annotations

import torch


class ConfusionMatrix:
    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # rows: truth

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """prediction: class ids or logits (N, C, H, W); target: (N, H, W) with ignore pixels."""
        if prediction.dim() == target.dim() + 1:
            prediction = prediction.argmax(1)
        keep = target != self.ignore_index
        index = target[keep].to(torch.int64) * self.num_classes + prediction[keep].to(torch.int64)
        self.matrix += torch.bincount(index, minlength=self.num_classes ** 2).view(self.num_classes, -1).cpu()

    def iou(self) -> torch.Tensor:
        """Per-class IoU; NaN for classes absent from both labels and predictions."""
        m = self.matrix.double()
        tp = m.diag()
        union = m.sum(0) + m.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))

    def miou(self) -> float:
        iou = self.iou()
        present = ~torch.isnan(iou)
        return float(iou[present].mean()) if present.any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(self.matrix.diag().sum() / total) if total else float("nan")
