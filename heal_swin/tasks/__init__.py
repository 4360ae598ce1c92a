"""Tasks: losses and metrics for segmentation and depth (masked, per class, mergeable over ranks)."""

from .depth import DepthLoss, DepthMetrics, from_prediction, to_target
from .segmentation import PAPER_WOODSCAPE_CLASS_WEIGHTS, ConfusionMatrix, SegmentationLoss

__all__ = ["ConfusionMatrix", "DepthLoss", "DepthMetrics", "PAPER_WOODSCAPE_CLASS_WEIGHTS", "SegmentationLoss",
           "from_prediction", "to_target"]
