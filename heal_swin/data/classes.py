"""Class tables: names and display colours (RGB)."""

from __future__ import annotations

import numpy as np

# WoodScape semantic segmentation, 10 classes (id = position).
WOODSCAPE_CLASSES = ("void", "road", "lanemarks", "curb", "person", "rider", "vehicles", "bicycle",
                     "motorcycle", "traffic_sign")
# Cityscapes-like display colours, except two that figures could not show: lane marks were white
# (invisible on a white figure, a swatch on white paper) and motorcycles a second dark blue beside
# vehicles (CIE76 ΔE 40); both now stay ≥ 50 ΔE from white and from every other class.
WOODSCAPE_COLORS = np.array([
    [0, 0, 0],        # void
    [128, 64, 128],   # road
    [0, 255, 127],    # lanemarks
    [244, 35, 232],   # curb
    [220, 20, 60],    # person
    [255, 0, 0],      # rider
    [0, 0, 142],      # vehicles
    [119, 11, 32],    # bicycle
    [0, 190, 255],    # motorcycle
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


# SynWoodScape: background (void) + 24 CARLA classes, id = position.
SYNWOODSCAPE_CLASSES = ("void", "building", "fence", "other", "pedestrian", "pole", "road line", "road",
                        "sidewalk", "vegetation", "four-wheeler vehicle", "wall", "traffic sign", "sky",
                        "ground", "bridge", "rail track", "guard rail", "traffic light", "water", "terrain",
                        "two-wheeler vehicle", "static", "dynamic", "ego-vehicle")

# The original HEAL-SWIN paper's 8-class SynWoodScape merge; every other class becomes void.
PAPER_SYNWOODSCAPE_8 = ("void", "building", "road line", "road", "sidewalk", "four-wheeler vehicle", "sky",
                        "ego-vehicle")


# Entries of a dataset's lookup table: every id a 16-bit label file can hold.
LUT_SIZE = 2**16


def unknown_label_ids(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The distinct ids in `labels` that are not class ids 0 … num_classes − 1 (sorted)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = labels.min(), labels.max()
    if lo >= 0 and hi < num_classes:  # the common case, without a sort of the whole map
        return np.zeros(0, dtype=np.int64)
    ids = np.unique(labels)
    return ids[(ids < 0) | (ids >= num_classes)].astype(np.int64)


def class_lut(source: tuple[str, ...], target: tuple[str, ...], mapping: dict[str, str] | None = None,
              default: str = "void", ignore_index: int = 255, size: int = 256) -> np.ndarray:
    """A lookup table (size,) int64 from source class ids to target class ids.

    A source class goes to `mapping[name]` if given, else to the target class of the same name,
    else to `default`. Ids beyond the source table map to `ignore_index` (datasets check for them
    first: `unknown_label_ids`). Errors name the class."""
    mapping = dict(mapping or {})
    for src, dst in mapping.items():
        if src not in source:
            raise ValueError(f"class merge: source class {src!r} is not one of {list(source)}")
        if dst not in target:
            raise ValueError(f"class merge: {src!r} -> {dst!r}, but {dst!r} is not one of {list(target)}")
    if default not in target:
        raise ValueError(f"class merge: default class {default!r} is not one of {list(target)}")
    if size < len(source):
        raise ValueError(f"class table: size={size} is smaller than the {len(source)} source classes")
    lut = np.full(size, ignore_index, dtype=np.int64)
    for i, name in enumerate(source):
        lut[i] = target.index(mapping.get(name, name if name in target else default))
    return lut
