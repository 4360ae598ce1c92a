"""Class tables: names and display colours (RGB)."""

from __future__ import annotations

import numpy as np

# WoodScape semantic segmentation, 10 classes (id = position).
WOODSCAPE_CLASSES = ("void", "road", "lanemarks", "curb", "person", "rider", "vehicles", "bicycle",
                     "motorcycle", "traffic_sign")
WOODSCAPE_COLORS = np.array([
    [0, 0, 0],        # void
    [128, 64, 128],   # road
    [255, 255, 255],  # lanemarks
    [244, 35, 232],   # curb
    [220, 20, 60],    # person
    [255, 0, 0],      # rider
    [0, 0, 142],      # vehicles
    [119, 11, 32],    # bicycle
    [0, 0, 230],      # motorcycle
    [220, 220, 0],    # traffic_sign
], dtype=np.uint8)


def colorize(labels: np.ndarray, colors: np.ndarray = WOODSCAPE_COLORS, ignore_index: int = 255,
             ignore_color=(40, 40, 40)) -> np.ndarray:
    """Integer labels (...) -> uint8 RGB (..., 3); ids outside the table or `ignore_index` get
    `ignore_color`."""
    labels = np.asarray(labels)
    table = np.concatenate([colors, np.asarray([ignore_color], dtype=np.uint8)])
    idx = np.where((labels >= 0) & (labels < len(colors)) & (labels != ignore_index), labels, len(colors))
    return table[idx]
