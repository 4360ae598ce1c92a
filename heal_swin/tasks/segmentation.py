"""Semantic segmentation: class-weighted cross-entropy and confusion-matrix metrics.

Pixels whose label is `ignore_index` (outside the image, by default) are left out of the loss and
the metrics. Metrics accumulate a confusion matrix, so they are exact over a whole split (not an
average of per-batch figures) and reduce over DDP ranks by summing one tensor.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SegmentationLoss", "ConfusionMatrix", "PAPER_WOODSCAPE_CLASS_WEIGHTS", "METRICS"]

# The scalar figures of `ConfusionMatrix.summary()` that can select a checkpoint, with the
# direction that is better.
METRICS = {"miou": "max", "accuracy": "max"}

# The original paper's WoodScape class weights (void … traffic_sign).
PAPER_WOODSCAPE_CLASS_WEIGHTS = (0.349, 0.444, 0.899, 1.154, 1.319, 1.706, 0.731, 1.244, 1.689, 2.364)


class SegmentationLoss(nn.Module):
    """Cross-entropy over valid pixels. logits (B, K, ...) and labels (B, ...) int64 (sphere maps
    (B, K, N) or images (B, K, H, W)); `class_weights` (K,) or None; mean over valid pixels,
    weighted as torch's cross-entropy weights them."""

    def __init__(self, num_classes: int, class_weights=None, ignore_index: int = 255, label_smoothing: float = 0.0):
        super().__init__()
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)
        if class_weights is not None:
            w = torch.as_tensor(class_weights, dtype=torch.float32)
            if w.shape != (self.num_classes,) or torch.any(w < 0):
                raise ValueError(f"class_weights has {tuple(w.shape)} entries (or a negative one); expected "
                                 f"{self.num_classes} non-negative weights")
            self.register_buffer("class_weights", w, persistent=False)
        else:
            self.class_weights = None

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[1]} channels; expected {self.num_classes} classes")
        weight = None if self.class_weights is None else self.class_weights.to(logits.dtype)
        return F.cross_entropy(logits.float(), labels.long(), weight=None if weight is None else weight.float(),
                               ignore_index=self.ignore_index, label_smoothing=self.label_smoothing)


class ConfusionMatrix:
    """Accumulates counts[true, predicted] over valid pixels; IoU, mIoU, accuracy from them.

    `update(pred, labels, valid=None)`: pred and labels int (same shape); valid (bool, same shape)
    restricts further (e.g. to the fisheye pixels the chosen faces cover)."""

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names=None, device=None):
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.class_names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(num_classes))
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        pred = torch.as_tensor(pred).to(self.counts.device).long().reshape(-1)
        labels = torch.as_tensor(labels).to(self.counts.device).long().reshape(-1)
        keep = (labels != self.ignore_index) & (labels >= 0) & (labels < self.num_classes)
        if valid is not None:
            keep &= torch.as_tensor(valid).to(self.counts.device).reshape(-1).bool()
        k = self.num_classes
        idx = labels[keep] * k + pred[keep].clamp(0, k - 1)
        self.counts += torch.bincount(idx, minlength=k * k).reshape(k, k)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.counts += other.counts.to(self.counts.device)

    def all_reduce(self) -> None:
        """Sum the counts over DDP ranks (no-op outside torch.distributed)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.counts)

    def iou(self) -> np.ndarray:
        """Per-class IoU (K,); NaN for classes absent from both labels and predictions."""
        c = self.counts.double().cpu().numpy()
        tp = np.diag(c)
        denom = c.sum(0) + c.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, tp / denom, np.nan)

    def summary(self) -> dict:
        """mIoU (mean over classes with a defined IoU), pixel accuracy, per-class IoU by name."""
        iou = self.iou()
        c = self.counts.double().cpu().numpy()
        total = c.sum()
        return {
            "miou": float(np.nanmean(iou)) if np.any(np.isfinite(iou)) else float("nan"),
            "accuracy": float(np.trace(c) / total) if total else float("nan"),
            "pixels": int(total),
            "iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(self.class_names, iou)},
        }
