"""Data: WoodScape / SynWoodScape readers, the synthetic WoodScape-format generator, projected
datasets, augmentation, class tables and splits; `heal_swin.data.digits`: handwritten digits on the sphere
(the rotated-digits benchmark; needs scikit-learn, imported on use)."""

from .augment import Augment, flip_camera, quarter_turn_permutation
from .classes import (PAPER_SYNWOODSCAPE_8, SYNWOODSCAPE_CLASSES, WOODSCAPE_CLASSES, WOODSCAPE_COLORS,
                      class_lut, colorize)
from .datasets import IMAGENET_MEAN, IMAGENET_STD, TASKS, UNKNOWN_LABELS, FlatDataset, HealpixDataset
from .splits import split_frames
from .woodscape import CAMERAS, DatasetError, Sample, WoodScapeTree, check_dataset

__all__ = ["Augment", "CAMERAS", "DatasetError", "FlatDataset", "HealpixDataset", "IMAGENET_MEAN", "IMAGENET_STD",
           "PAPER_SYNWOODSCAPE_8", "SYNWOODSCAPE_CLASSES", "Sample", "TASKS", "UNKNOWN_LABELS", "WOODSCAPE_CLASSES",
           "WOODSCAPE_COLORS", "WoodScapeTree", "check_dataset", "class_lut", "colorize", "flip_camera",
           "quarter_turn_permutation", "split_frames"]
