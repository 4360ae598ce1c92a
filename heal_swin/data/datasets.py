"""Datasets: WoodScape-format trees projected onto HEALPix (or resized, for the flat baseline).

    ds = HealpixDataset("data/synthetic", task="segmentation", nside=64, base_pixels=range(8), split="train")
    item = ds[0]   # {"image": float32 (C, N), "labels": int64 (N,), "valid": bool (N,), "camera": "FV", "stem": …}

N = len(base_pixels)·nside², NESTED. Images are normalised by mean/std given in 0–255 units
(mean 0, std 1 feeds raw values, as the original paper did); pixels that do not see the image are 0.
Labels outside the image are `ignore_index` (or 0 = void with outside="void", the paper's
convention); depth outside the image or not finite is NaN and not valid.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import grid
from ..projection import FisheyeToHealpix, RigToHealpix, load_checked_arrays, save_checked_arrays
from .augment import Augment, quarter_turn_permutation
from .pose import check_mount, mount_rotation, render_mounted
from .classes import LUT_SIZE, class_lut, unknown_label_ids
from .splits import SPLITS, split_frames
from .woodscape import DatasetError, WoodScapeTree

__all__ = ["HealpixDataset", "FlatDataset", "IMAGENET_MEAN", "IMAGENET_STD", "TASKS", "UNKNOWN_LABELS"]

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
TASKS = ("segmentation", "depth", "classification")
# what a WoodScape-format tree can be trained for: its labels are per pixel
WOODSCAPE_TASKS = ("segmentation", "depth")
# What a label id beyond the dataset's class table does: stop with a DatasetError naming the file,
# or become ignore_index (counted in the log, once per file).
UNKNOWN_LABELS = ("error", "ignore")
_log = logging.getLogger(__name__)


class _WoodScapeDataset(Dataset):
    """What the HEALPix and flat datasets share: the tree, the split, classes, augmentation seeds."""

    def __init__(self, root, task, split, cameras, transform, split_fractions, split_seed, group_size,
                 test_set, class_names, class_merge, ignore_index, mean, std, seed, rig=False,
                 unknown_labels="error", mount=(0.0, 0.0, 0.0)):
        if task not in WOODSCAPE_TASKS:
            raise ValueError(f"task={task!r} must be one of {WOODSCAPE_TASKS} for a WoodScape-format tree (its "
                             "labels are per pixel; classification takes spheres of digits)")
        if unknown_labels not in UNKNOWN_LABELS:
            raise ValueError(f"unknown_labels={unknown_labels!r} must be one of {UNKNOWN_LABELS}")
        self.unknown_labels = unknown_labels
        self.mount = check_mount(mount, "mount")
        self._mount_rotation = mount_rotation(*self.mount)
        self._reported: set[str] = set()
        if split not in SPLITS + ("all",):
            raise ValueError(f"split={split!r} must be one of {SPLITS + ('all',)}")
        self.task = task
        self.tree = WoodScapeTree(root, cameras, test_set=test_set)
        self.transform = transform if transform is None or isinstance(transform, Augment) else Augment(**transform)
        self.ignore_index = int(ignore_index)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1)
        if np.any(self.std <= 0):
            raise ValueError(f"std={list(std)} must be positive")
        self.seed = int(seed)
        self.epoch = 0
        self.split = split
        frames = self.tree.frames
        chosen = set(frames if split == "all" else
                     split_frames(frames, split_fractions, split_seed, group_size)[split])
        samples = [s for s in self.tree.samples if s.frame in chosen]
        if rig:
            by_frame: dict[str, dict] = {}
            for s in samples:
                by_frame.setdefault(s.frame, {})[s.camera] = s
            self.items = [by_frame[f] for f in sorted(by_frame) if len(by_frame[f]) == len(self.tree.cameras)]
        else:
            self.items = samples
        if not self.items:
            raise DatasetError(f"{self.tree.root}: split {split!r} has no samples (cameras "
                               f"{list(self.tree.cameras)}, {len(frames)} frames in the tree)")
        self.class_names = tuple(class_names or self.tree.class_names)
        # Every id a 16-bit label file can hold has an entry: ids beyond the class table are caught
        # (or ignored, as asked) before the table is applied, never an IndexError.
        self.lut = class_lut(self.tree.class_names, self.class_names, class_merge, ignore_index=ignore_index,
                             size=LUT_SIZE)
        self._lut_digest = hashlib.sha256(self.lut.tobytes()).hexdigest()

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Reseeds the augmentation: item i of epoch e always draws the same random numbers."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def map_labels(self, labels: np.ndarray, path) -> np.ndarray:
        """Source class ids of the label file `path` -> target ids (int64), by the class table; ids
        beyond the table raise DatasetError, or with unknown_labels="ignore" become ignore_index
        (logged once per file with their pixel count)."""
        names = self.tree.class_names
        unknown = unknown_label_ids(labels, len(names))
        if len(unknown):
            shown = ", ".join(str(int(i)) for i in unknown[:8]) + (", …" if len(unknown) > 8 else "")
            table = f"the {len(names)} classes of {self.tree.root} (ids 0–{len(names) - 1}: {', '.join(names)})"
            if self.unknown_labels == "error":
                raise DatasetError(f"{path}: label ids {shown} are not in the class table, {table}; fix the file, "
                                   "or set data.unknown_labels=ignore to train with them as ignore_index")
            if str(path) not in self._reported:
                self._reported.add(str(path))
                count = int(np.count_nonzero((labels < 0) | (labels >= len(names))))
                _log.warning("%s: %d pixels with label ids %s beyond %s set to ignore_index=%d "
                             "(data.unknown_labels=ignore)", path, count, shown, table, self.ignore_index)
        return self.lut[np.clip(labels, 0, len(self.lut) - 1)] if len(unknown) else self.lut[labels]

    def frame(self, sample, labels: bool | None = None, depth: bool | None = None) -> dict:
        """One fisheye frame of the tree as the dataset sees it: labels as target class ids, and, with a
        `mount` other than (0, 0, 0), rendered as the camera turned so on its mount would see it
        (`data.pose.render_mounted`; evaluation scores its truth in the same frame)."""
        labels = self.task == "segmentation" if labels is None else labels
        depth = self.task == "depth" if depth is None else depth
        item = self.tree.load(sample, labels=labels, depth=depth)
        if "labels" in item:
            item["labels"] = self.map_labels(item["labels"], sample.labels)
        return render_mounted(item, self._mount_rotation, self.ignore_index)

    def _load(self, sample, rng):
        item = self.frame(sample)
        if self.transform is not None:
            item = self.transform.fisheye(item, rng)
        return item


class HealpixDataset(_WoodScapeDataset):
    """A WoodScape-format tree projected onto HEALPix base pixels.

    Each item: `image` float32 (C, N), `labels` int64 (N,) (segmentation) or `depth` float32 (N,)
    (depth, metres along the ray), `valid` bool (N,) (sees the image; for depth also a finite
    depth), `camera` (name, or "rig"), `stem`. rig=True fuses the four cameras of a frame onto one
    sphere in the vehicle frame (default faces 0–11); sampling maps are cached per calibration;
    `sample_cache` (a folder) keeps projected samples on disk when no augmentation is set.
    """

    def __init__(self, root, task: str = "segmentation", nside: int = 64, base_pixels=range(8),
                 split: str = "train", cameras=None, orientation: str = "camera", transform=None, *,
                 rig: bool = False, split_fractions=(0.8, 0.1, 0.1), split_seed: int = 0, group_size: int = 1,
                 test_set: bool = False, class_names=None, class_merge=None, ignore_index: int = 255,
                 outside: str = "ignore", mean=IMAGENET_MEAN, std=IMAGENET_STD, max_depth: float | None = None,
                 cache_dir=None, sample_cache=None, seed: int = 0, unknown_labels: str = "error",
                 mount=(0.0, 0.0, 0.0)):
        super().__init__(root, task, split, cameras, transform, split_fractions, split_seed, group_size,
                         test_set, class_names, class_merge, ignore_index, mean, std, seed, rig, unknown_labels,
                         mount)
        self.nside = grid.check_nside(nside)
        if rig and orientation != "vehicle":
            orientation = "vehicle"
        self.base_pixels = grid.check_base_pixels(base_pixels)
        if orientation not in ("camera", "vehicle"):
            raise ValueError(f"orientation={orientation!r} must be 'camera' or 'vehicle'")
        if outside not in ("ignore", "void"):
            raise ValueError(f"outside={outside!r} must be 'ignore' (ignore_index) or 'void' (class 0)")
        self.orientation = orientation
        self.rig = rig
        self.outside_fill = self.ignore_index if outside == "ignore" else 0
        self.max_depth = max_depth
        self.cache_dir = cache_dir
        self.sample_cache = Path(sample_cache) if sample_cache else None
        if self.transform is not None and self.transform.quarter_turns:
            quarter_turn_permutation(self.nside, self.base_pixels, 1)  # fails early for unclosed faces

    @property
    def npix(self) -> int:
        return len(self.base_pixels) * self.nside**2

    def __repr__(self) -> str:
        return (f"HealpixDataset(root={str(self.tree.root)!r}, task={self.task!r}, split={self.split!r}, "
                f"items={len(self)}, nside={self.nside}, base_pixels={list(self.base_pixels)}, "
                f"orientation={self.orientation!r}, rig={self.rig})")

    def _projector(self, camera, rotation):
        # A random rotation makes a one-off map: build it without filling the shared caches.
        return FisheyeToHealpix(camera, self.nside, self.base_pixels, self.orientation, rotation=rotation,
                                ignore_index=self.ignore_index, cache_dir=self.cache_dir,
                                cache=rotation is None)

    def _project_one(self, sample, rng, rotation=None):
        item = self._load(sample, rng)
        if rotation is None and self.transform is not None:
            rotation = self.transform.rotation(item["camera"], self.orientation, rng)
        proj = self._projector(item["camera"], rotation)
        out = {"image": proj.project_image(item["image"]), "valid": proj.valid_mask.copy()}
        if self.task == "segmentation":
            out["labels"] = proj.project_labels(item["labels"], fill=self.outside_fill)
        else:
            out["depth"] = proj.project_depth(item["depth"])
        return out

    def _project_rig(self, frame_samples, rng, rotation=None):
        items = {cam: self._load(s, rng) for cam, s in sorted(frame_samples.items())}
        rig = RigToHealpix({c: it["camera"] for c, it in items.items()}, self.nside, self.base_pixels,
                           ignore_index=self.ignore_index, cache_dir=self.cache_dir, rotation=rotation)
        out = {"image": rig.project_images({c: it["image"] for c, it in items.items()}),
               "valid": rig.valid_mask.copy()}
        if self.task == "segmentation":
            out["labels"] = rig.project_labels({c: it["labels"] for c, it in items.items()}, fill=self.outside_fill)
        else:
            out["depth"] = rig.project_depth({c: it["depth"] for c, it in items.items()})
        return out

    def _cache_path(self, index: int) -> Path | None:
        if self.sample_cache is None or self.transform is not None:
            return None
        entry = self.items[index]
        samples = sorted(entry.values(), key=lambda s: s.stem) if self.rig else [entry]
        # The files' sizes and modification times: an edited image, label or calibration is re-projected.
        files = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for s in samples
                 for p in (s.image, s.calibration, s.labels, s.depth) if p is not None and p.exists()]
        key = "|".join(map(str, [files, self.task, self.nside, self.base_pixels, self.orientation, self.rig,
                                 self.outside_fill, self._lut_digest, self.mount, 3]))
        name = f"{samples[0].stem}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"
        return self.sample_cache / name

    def _cached_shapes(self) -> dict:
        """{name: (shape, dtype)} of a projected sample as the sample cache holds it."""
        n = self.npix
        out = {"image": ((3, n), np.float32), "valid": ((n,), np.bool_)}
        if self.task == "segmentation":
            out["labels"] = ((n,), np.int64)
        else:
            out["depth"] = ((n,), np.float32)
        return out

    def __getitem__(self, index: int) -> dict:
        entry = self.items[index]
        cache = self._cache_path(index)
        # A damaged, edited or foreign cache file is reported, re-projected and replaced.
        out = load_checked_arrays(cache, self._cached_shapes()) if cache is not None else None
        rng = self._rng(index)
        if out is None:
            out = self._project_rig(entry, rng) if self.rig else self._project_one(entry, rng)
            if cache is not None:
                try:
                    save_checked_arrays(cache, out)
                except OSError:
                    pass  # a read-only or full cache folder only costs re-projection
        k = self.transform.turns(rng) if self.transform is not None else 0
        return self._tensors(out, entry, k)

    def rotated(self, index: int, rotation) -> dict:
        """Item `index` with its sphere content turned by the rotation R (3×3, in the sphere's frame):
        (R·x)(v) = x(R⁻¹ v), for every map of the item (image, labels or depth, valid). The fisheye image is
        projected through the turned grid, so the rotated item is as exact as the upright one (one
        interpolation, labels nearest), and sphere pixels whose turned direction leaves the image are invalid.
        A rig item is the four cameras turned together (each sphere pixel from the camera that sees its
        turned direction best, as upright). Augmentation other than photometric is not applied."""
        r = np.asarray(rotation, dtype=np.float64)
        entry = self.items[index]
        if self.rig:
            return self._tensors(self._project_rig(entry, self._rng(index), rotation=r.T), entry, 0)
        return self._tensors(self._project_one(entry, self._rng(index), rotation=r.T), entry, 0)

    def _tensors(self, out: dict, entry, turns: int) -> dict:
        """A projected sample -> the item: depth validity, normalisation, quarter turns, tensors."""
        valid = out["valid"]
        if self.task == "depth":
            ok = np.isfinite(out["depth"])
            if self.max_depth is not None:
                ok &= out["depth"] <= self.max_depth
            valid = valid & ok
        image = (out["image"] - self.mean) / self.std
        image *= out["valid"]
        result = {"image": image.astype(np.float32), "valid": valid}
        if self.task == "segmentation":
            result["labels"] = out["labels"].astype(np.int64)
        else:
            result["depth"] = out["depth"].astype(np.float32)
        if turns:
            perm = quarter_turn_permutation(self.nside, self.base_pixels, turns)
            result = {key: value[..., perm] for key, value in result.items()}
        tensors = {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in result.items()}
        tensors["camera"] = "rig" if self.rig else entry.camera
        tensors["stem"] = (sorted(entry.values(), key=lambda s: s.camera)[0].frame if self.rig else entry.stem)
        return tensors


class FlatDataset(_WoodScapeDataset):
    """The same tree for the flat baseline: images, labels and depth resized to `size` = (H, W)
    (the original's flat baseline used 640×768), labels and depth with nearest neighbours; the
    calibration is resized with them (`camera_for(index)`), so predictions can be compared with
    the sphere models on the same fisheye pixels. Items: image float32 (C, H, W), labels int64
    (H, W) or depth float32 (H, W), valid bool (H, W), camera, stem. `rotate_deg` augmentation
    re-renders the fisheye frame rolled about the optical axis (`data.pose.render_mounted`)."""

    def __init__(self, root, task: str = "segmentation", size=(640, 768), split: str = "train", cameras=None,
                 transform=None, *, split_fractions=(0.8, 0.1, 0.1), split_seed: int = 0, group_size: int = 1,
                 test_set: bool = False, class_names=None, class_merge=None, ignore_index: int = 255,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, max_depth: float | None = None, seed: int = 0,
                 unknown_labels: str = "error", mount=(0.0, 0.0, 0.0)):
        super().__init__(root, task, split, cameras, transform, split_fractions, split_seed, group_size,
                         test_set, class_names, class_merge, ignore_index, mean, std, seed,
                         unknown_labels=unknown_labels, mount=mount)
        h, w = (int(v) for v in size)
        if h < 8 or w < 8:
            raise ValueError(f"size={list(size)} must be (height, width), each at least 8")
        self.size = (h, w)
        self.max_depth = max_depth
        if self.transform is not None and self.transform.quarter_turns:
            raise ValueError("FlatDataset: quarter_turns act on the sphere's faces; a flat image takes rotate_deg "
                             "(its fisheye frame rolled about the optical axis), photometric and hflip augmentation")

    def camera_for(self, index: int):
        """The calibration of item `index`, resized to the dataset's size."""
        return self.tree.camera(self.items[index]).resized(self.size[1], self.size[0])

    def __getitem__(self, index: int) -> dict:
        import cv2

        sample = self.items[index]
        rng = self._rng(index)
        item = self._load(sample, rng)
        if self.transform is not None and self.transform.rotate_deg:
            # the frame re-rendered as the camera rolled on its mount: image bilinear, labels nearest, once
            roll = self.transform.rotation(item["camera"], "camera", rng)
            item = render_mounted(item, roll, self.ignore_index, cache=False)
        h, w = self.size
        image = cv2.resize(item["image"], (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        image = (image.reshape(-1, image.shape[-1]).T - self.mean) / self.std
        out = {"image": torch.from_numpy(np.ascontiguousarray(image.reshape(-1, h, w), dtype=np.float32))}
        valid = np.ones((h, w), dtype=bool)
        if "seen" in item:                    # a turned frame: pixels without content are not scored
            valid &= cv2.resize(item["seen"].astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        if self.task == "segmentation":
            labels = cv2.resize(item["labels"].astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST)
            out["labels"] = torch.from_numpy(labels.astype(np.int64))
        else:
            depth = cv2.resize(item["depth"], (w, h), interpolation=cv2.INTER_NEAREST)
            valid &= np.isfinite(depth)
            if self.max_depth is not None:
                valid &= depth <= self.max_depth
            out["depth"] = torch.from_numpy(np.where(np.isfinite(depth), depth, np.nan).astype(np.float32))
        out["valid"] = torch.from_numpy(valid)
        out["camera"] = sample.camera
        out["stem"] = sample.stem
        return out
