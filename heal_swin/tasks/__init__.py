"""Tasks: losses and metrics for segmentation, depth and classification (masked, per class, mergeable over
ranks)."""

from .classification import METRICS as _CLASSIFICATION_METRICS
from .classification import ClassificationLoss, ClassificationMetrics
from .depth import METRICS as _DEPTH_METRICS
from .depth import DepthLoss, DepthMetrics, from_prediction, to_target
from .segmentation import METRICS as _SEGMENTATION_METRICS
from .segmentation import PAPER_WOODSCAPE_CLASS_WEIGHTS, ConfusionMatrix, SegmentationLoss

# task -> {metric name: "max" | "min"}: the figures an evaluation reports (on the sphere, the flat
# grid and in the fisheye) that can pick the best checkpoint (`train.metric`), and which way is better.
TASK_METRICS = {"segmentation": dict(_SEGMENTATION_METRICS), "depth": dict(_DEPTH_METRICS),
                "classification": dict(_CLASSIFICATION_METRICS)}

__all__ = ["ClassificationLoss", "ClassificationMetrics", "ConfusionMatrix", "DepthLoss", "DepthMetrics",
           "PAPER_WOODSCAPE_CLASS_WEIGHTS", "SegmentationLoss", "TASK_METRICS", "from_prediction", "to_target"]
