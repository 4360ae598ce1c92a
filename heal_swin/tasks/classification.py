"""Classification, the invariant task: one label per sample (a sphere of one digit), cross-entropy, and
accuracy from a confusion matrix over samples (exact over a split, summed over DDP ranks like the
segmentation metrics).
"""

from __future__ import annotations

import numpy as np
import torch

from .segmentation import ConfusionMatrix, SegmentationLoss

__all__ = ["ClassificationLoss", "ClassificationMetrics", "METRICS"]

# The scalar figures of `ClassificationMetrics.summary()` that can select a checkpoint, and which way is better.
METRICS = {"accuracy": "max", "balanced_accuracy": "max"}


class ClassificationLoss(SegmentationLoss):
    """Cross-entropy of logits (B, K) against labels (B,) int64, `class_weights` (K,) or None, labels equal to
    `ignore_index` left out: the segmentation loss on one "pixel" per sample."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 2 or labels.shape != logits.shape[:1]:
            raise ValueError(f"classification takes logits (B, K) and labels (B,); got {tuple(logits.shape)} and "
                             f"{tuple(labels.shape)}")
        return super().forward(logits, labels)


class ClassificationMetrics(ConfusionMatrix):
    """counts[true, predicted] over samples: `update(pred (B,), labels (B,), valid=None)`; `summary()` gives
    accuracy, balanced accuracy (the mean of the per-class accuracies over the classes present), the
    per-class accuracy (recall) by name and the number of samples."""

    def summary(self) -> dict:
        c = self.counts.double().cpu().numpy()
        total, per_class = c.sum(), c.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(per_class > 0, np.diag(c) / per_class, np.nan)
        return {
            "accuracy": float(np.trace(c) / total) if total else float("nan"),
            "balanced_accuracy": float(np.nanmean(recall)) if np.any(per_class > 0) else float("nan"),
            "samples": int(total),
            "per_class_accuracy": {name: (None if np.isnan(v) else float(v))
                                   for name, v in zip(self.class_names, recall)},
        }
