"""Augmentation that keeps the geometry exact.

- Photometric transforms (albumentations) on the fisheye image before projection.
- Rotation about the optical axis inside the projection: the sampling map is rotated, so the image
  is interpolated once and the labels stay exact. A flat image (`FlatDataset`) gets the same roll as its
  fisheye frame re-rendered through the calibration (`data.pose.render_mounted`), also interpolated once.
- Quarter turns about the sphere's pole: pure face permutations of the projected maps (the HEALPix
  grid is symmetric under them), for any set of faces closed under them (0–7, 0–11, …).
- Horizontal flip through the calibration: the image is mirrored and so is the camera (cx_offset
  negated, φ mirrored, the extrinsics mirrored left–right), so the sphere sees the mirrored world.

Geometric image transforms (crops, warps) are not offered: they would break the calibration.
Every random choice comes from the generator the dataset passes in, seeded per (seed, epoch,
sample index), so runs are reproducible whatever the number of data-loader workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import grid
from ..cameras import KannalaBrandtCamera, RadialPolyCamera, rotation_to_quaternion

__all__ = ["Augment", "build_photometric", "flip_camera", "hflip_item", "axis_rotation",
           "quarter_turn_permutation", "rotate_quarter_turns"]


def build_photometric(spec):
    """[{"name": "RandomBrightnessContrast", "p": 0.5, **kwargs}, …] -> an albumentations Compose."""
    if not spec:
        return None
    import albumentations as A

    transforms = []
    for i, entry in enumerate(spec):
        entry = dict(entry)
        name = entry.pop("name", None)
        cls = getattr(A, str(name), None)
        if cls is None or not isinstance(cls, type):
            raise ValueError(f"augment.photometric[{i}].name={name!r} is not an albumentations transform")
        try:
            transforms.append(cls(**entry))
        except (TypeError, ValueError) as err:
            raise ValueError(f"augment.photometric[{i}] ({name}): {err}") from None
    return A.Compose(transforms)


def flip_camera(camera):
    """The camera that sees the horizontally mirrored image: cx offset negated (φ → π − φ), and the
    pose mirrored left–right in the vehicle frame (y → −y), so a rig stays a rig."""
    mirror_cam = np.diag([-1.0, 1.0, 1.0])
    mirror_veh = np.diag([1.0, -1.0, 1.0])
    rot = mirror_veh @ np.asarray(camera.rotation) @ mirror_cam
    t = np.asarray(camera.translation) * [1.0, -1.0, 1.0]
    q = rotation_to_quaternion(rot)
    if isinstance(camera, RadialPolyCamera):
        return RadialPolyCamera(k=camera.k, cx_offset=-camera.cx_offset, cy_offset=camera.cy_offset,
                                width=camera.width, height=camera.height, aspect_ratio=camera.aspect_ratio,
                                quaternion=q, translation=t, name=camera.name)
    if isinstance(camera, KannalaBrandtCamera):
        return KannalaBrandtCamera(fx=camera.fx, fy=camera.fy, cx=camera.width - 1 - camera.cx, cy=camera.cy,
                                   k=camera.k, width=camera.width, height=camera.height, quaternion=q,
                                   translation=t, name=camera.name)
    raise TypeError(f"cannot flip a {type(camera).__name__}")


def hflip_item(item: dict) -> dict:
    """Mirror image / labels / depth left–right and the camera with them."""
    out = dict(item)
    for key in ("image", "labels", "depth"):
        if key in item:
            out[key] = np.ascontiguousarray(item[key][:, ::-1])
    out["camera"] = flip_camera(item["camera"])
    return out


def axis_rotation(axis, angle: float) -> np.ndarray:
    """Rotation matrix by `angle` (radians) about `axis` (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def quarter_turn_permutation(nside: int, base_pixels, k: int) -> np.ndarray:
    """Permutation `perm` (N,) with rotated[i] = original[perm[i]] for a rotation of the sphere by
    k·90° about its pole: the map seen by a grid turned by k·90° (sampling at R·v). Each face
    moves to its neighbour in the same row, pixels inside a face keep their place."""
    faces = grid.check_base_pixels(base_pixels)
    nside = grid.check_nside(nside)
    k = int(k) % 4
    source = [4 * (f // 4) + (f % 4 + k) % 4 for f in faces]
    missing = sorted(set(source) - set(faces))
    if missing:
        raise ValueError(f"base_pixels={list(faces)} are not closed under quarter turns about the pole "
                         f"(need faces {missing}); use whole rows, e.g. 0–7 or 0–11")
    return grid.polar_turn(nside, faces, -k)            # sampling at R·v moves the content by R⁻¹


def rotate_quarter_turns(values, perm):
    """Apply a permutation from `quarter_turn_permutation` to (..., N) arrays or tensors."""
    return values[..., perm]


@dataclass
class Augment:
    """Augmentation settings (plain values, from the config).

    photometric: albumentations transforms as [{"name": …, "p": …, **kwargs}]; applied to the image.
    rotate_deg: rotation about the optical axis, uniform in ±rotate_deg, inside the projection (flat
        images: the fisheye frame rendered rolled).
    quarter_turns: random k·90° turn about the sphere's pole, as a face permutation.
    hflip: probability of a horizontal flip through the calibration.
    """

    photometric: list = field(default_factory=list)
    rotate_deg: float = 0.0
    quarter_turns: bool = False
    hflip: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.hflip <= 1.0:
            raise ValueError(f"augment.hflip={self.hflip} must be a probability in [0, 1]")
        if not 0.0 <= self.rotate_deg <= 180.0:
            raise ValueError(f"augment.rotate_deg={self.rotate_deg} must lie in [0, 180]")
        self._photometric = build_photometric(self.photometric)

    def fisheye(self, item: dict, rng: np.random.Generator) -> dict:
        """Photometric changes and the flip, on the fisheye image before projection."""
        if self._photometric is not None:
            self._photometric.set_random_seed(int(rng.integers(2**31)))
            item = dict(item, image=self._photometric(image=item["image"])["image"])
        if self.hflip and rng.random() < self.hflip:
            item = hflip_item(item)
        return item

    def rotation(self, camera, orientation: str, rng: np.random.Generator) -> np.ndarray | None:
        """A grid rotation about the camera's optical axis, in the sphere's frame, or None."""
        if not self.rotate_deg:
            return None
        angle = np.radians(rng.uniform(-self.rotate_deg, self.rotate_deg))
        axis = [0.0, 0.0, 1.0] if orientation == "camera" else np.asarray(camera.rotation) @ [0.0, 0.0, 1.0]
        return axis_rotation(axis, angle)

    def turns(self, rng: np.random.Generator) -> int:
        return int(rng.integers(4)) if self.quarter_turns else 0
