"""Several cameras of a rig on one sphere, in the vehicle frame.

Each sphere pixel takes the camera that sees it closest to that camera's optical axis (the least
distorted view). Directions only: the metres between the cameras are ignored, which is accurate
for everything but the nearest objects.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .. import grid
from ._sampling import FisheyeToHealpix

__all__ = ["RigToHealpix"]


class RigToHealpix:
    """rig = RigToHealpix({"FV": cam_fv, "RV": cam_rv, …}, nside=64, base_pixels=range(12))
    rig.project_images({"FV": img, …}) -> float32 (C, N); project_labels / project_depth likewise;
    rig.source -> int64 (N,): index into rig.names of the camera used, −1 where none sees.
    `rotation` (3 × 3) turns the grid before sampling, as `FisheyeToHealpix`'s: the pixel at direction v
    shows what the rig sees at rotation · v, fused by the same rule (so `rotation=Rᵀ` draws the rig's sphere
    turned by R, as if every camera were turned by R)."""

    def __init__(self, cameras: Mapping, nside: int, base_pixels=range(12), ignore_index: int = 255,
                 cache_dir=None, rotation=None):
        if not cameras:
            raise ValueError("RigToHealpix needs at least one camera")
        self.names = list(cameras)
        self.nside = grid.check_nside(nside)
        self.base_pixels = grid.check_base_pixels(base_pixels)
        self.ignore_index = ignore_index
        self.projectors = [FisheyeToHealpix(cameras[n], nside, self.base_pixels, orientation="vehicle",
                                            rotation=rotation, ignore_index=ignore_index, cache_dir=cache_dir,
                                            cache=rotation is None) for n in self.names]
        dirs = np.stack(grid.pix2vec(self.nside, grid.base_pixel_indices(self.nside, self.base_pixels)), -1)
        if rotation is not None:
            dirs = dirs @ np.asarray(rotation, dtype=np.float64).T          # the directions the pixels show
        cos = np.stack([dirs @ (np.asarray(cameras[n].rotation) @ [0.0, 0.0, 1.0]) for n in self.names])
        cos = np.where(np.stack([p.valid_mask for p in self.projectors]), cos, -np.inf)
        best = cos.argmax(0)
        self.source = np.where(np.isfinite(cos.max(0)), best, -1)
        self.valid_mask = self.source >= 0

    def __repr__(self) -> str:
        return (f"RigToHealpix(cameras={self.names}, nside={self.nside}, base_pixels={list(self.base_pixels)}, "
                f"valid={self.valid_mask.mean():.1%})")

    def coverage(self) -> dict[str, float]:
        """Fraction of the sphere pixels each camera sees, and the fused total."""
        out = {n: float(p.valid_mask.mean()) for n, p in zip(self.names, self.projectors)}
        out["rig"] = float(self.valid_mask.mean())
        return out

    def _fuse(self, per_camera: list[np.ndarray], fill) -> np.ndarray:
        out = np.full_like(per_camera[0], fill)
        for i, values in enumerate(per_camera):
            sel = self.source == i
            out[..., sel] = values[..., sel]
        return out

    def _check(self, maps: Mapping, what: str):
        missing = [n for n in self.names if n not in maps]
        if missing:
            raise ValueError(f"{what}: missing cameras {missing} (the rig has {self.names})")

    def project_images(self, images: Mapping) -> np.ndarray:
        self._check(images, "images")
        return self._fuse([p.project_image(images[n]) for n, p in zip(self.names, self.projectors)], 0.0)

    def project_labels(self, labels: Mapping, fill: int | None = None) -> np.ndarray:
        self._check(labels, "labels")
        fill = self.ignore_index if fill is None else fill
        return self._fuse([p.project_labels(labels[n], fill) for n, p in zip(self.names, self.projectors)], fill)

    def project_depth(self, depths: Mapping) -> np.ndarray:
        self._check(depths, "depth")
        return self._fuse([p.project_depth(depths[n]) for n, p in zip(self.names, self.projectors)], np.nan)
