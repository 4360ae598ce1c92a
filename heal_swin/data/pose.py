"""The camera turned on its mount: a fisheye frame rendered as the same camera, rotated about its own
axes, would see it (image bilinear, labels and depth nearest, through the calibration).

    m = mount_rotation(roll=30)                 # 3×3: the turned camera's axes in the original camera frame
    item = render_mounted(frame, m)      # frame: {image, labels (class ids) | depth, camera}; same size out

Axes are the OpenCV camera frame's (x right, y down, z forward = optical axis): roll about z, pitch about x,
yaw about y, in degrees, applied in that order (roll, then pitch, then yaw, each about the turned camera's own
axis). A pixel of the turned camera whose ray leaves the original image (or its model's field of view) has
no content: image 0, labels `ignore_index`, depth NaN, so it is never scored. The identity returns the item
unchanged (no resampling). For HEALPix inputs the roll about the optical axis is also offered exactly,
inside the projection (`augment.rotate_deg`); this module is what a flat image needs, and what
`data.mount_deg` uses for every model alike.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["mount_rotation", "render_mounted", "check_mount"]

_RAYS: dict = {}        # camera fingerprint -> (H, W, 3) float32 tensor: the rays of its pixel centres
_MAPS: dict = {}        # (camera fingerprint, rotation) -> (map_u, map_v, seen): fixed mounts (data.mount_deg)


def check_mount(mount, key: str = "data.mount_deg") -> tuple[float, float, float]:
    """(roll, pitch, yaw) in degrees; ValueError naming `key`, the value and the rule otherwise."""
    try:
        values = [float(v) for v in mount]
    except (TypeError, ValueError):
        values = []
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{key}={mount!r} must be [roll, pitch, yaw]: three finite angles in degrees")
    roll, pitch, yaw = values
    if not -180 <= roll <= 180 or not -90 <= pitch <= 90 or not -90 <= yaw <= 90:
        raise ValueError(f"{key}={mount!r}: roll must lie in [-180, 180] degrees, pitch and yaw in [-90, 90]")
    return roll, pitch, yaw


def _about(axis: int, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def mount_rotation(roll: float = 0.0, pitch: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    """3×3 float64: the camera turned by `roll` about its optical axis (z), then `pitch` about its x axis,
    then `yaw` about its y axis (degrees). Its columns are the turned camera's axes in the original frame,
    so a ray r of the turned camera points along M·r for the original one."""
    check_mount((roll, pitch, yaw), "mount")
    return _about(2, roll) @ _about(0, pitch) @ _about(1, yaw)


def _remember(cache: dict, key, value, size: int):
    cache[key] = value
    if len(cache) > size:                     # a few calibrations (and mounts) per tree; never unbounded
        cache.pop(next(iter(cache)))
    return value


def _source_map(cam, m: np.ndarray, cache: bool):
    """(map_u, map_v) float32 (H, W) for cv2.remap and `seen` (H, W): where each pixel of the turned camera
    finds its content in the original image. float32 torch for the projection (a third of float64 numpy's
    time; the coordinates stay within 1e-3 pixel)."""
    import torch

    fp = cam.fingerprint()
    key = (fp, m.round(12).tobytes())
    if cache and key in _MAPS:
        return _MAPS[key]
    h, w = int(cam.height), int(cam.width)
    if fp not in _RAYS:
        vv, uu = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
        rays = np.asarray(cam.pixel_to_ray(np.stack([uu, vv], -1)), dtype=np.float64)
        _remember(_RAYS, fp, torch.from_numpy(rays.astype(np.float32)), 8)
    uv = cam.ray_to_pixel(_RAYS[fp] @ torch.from_numpy(m.T.astype(np.float32))).numpy()
    u, v = uv[..., 0], uv[..., 1]
    seen = np.isfinite(u) & np.isfinite(v) & (u > -0.5) & (u < w - 0.5) & (v > -0.5) & (v < h - 0.5)
    out = (np.where(seen, u, -1.0).astype(np.float32), np.where(seen, v, -1.0).astype(np.float32), seen)
    return _remember(_MAPS, key, out, 32) if cache else out


def render_mounted(item: dict, rotation, ignore_index: int = 255, cache: bool = True) -> dict:
    """`item` (a fisheye frame: image (H, W, C), labels (H, W) as target class ids and/or depth (H, W),
    camera) as the camera turned by `rotation` (`mount_rotation`) sees it; labels come back int64 with
    `ignore_index` where there is no content, and `seen` (H, W) bool says which pixels have it. `cache`
    keeps the source map of a fixed mount (per calibration); random ones (augmentation) pass False."""
    import cv2

    m = np.asarray(rotation, dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"rotation has shape {m.shape}; expected (3, 3)")
    if np.allclose(m, np.eye(3), atol=1e-12):
        return item
    cam = item["camera"]
    h, w = int(cam.height), int(cam.width)
    map_u, map_v, seen = _source_map(cam, m, cache)
    out = dict(item, seen=seen)
    border = dict(borderMode=cv2.BORDER_REPLICATE)       # edge pixels in the half-pixel rim; unseen ones zeroed below
    image = cv2.remap(np.ascontiguousarray(item["image"]), map_u, map_v, cv2.INTER_LINEAR, **border)
    out["image"] = np.where(seen.reshape(h, w, *([1] * (image.ndim - 2))), image, 0).astype(item["image"].dtype)
    if "labels" in item:
        labels = cv2.remap(np.ascontiguousarray(item["labels"]).astype(np.float32), map_u, map_v,
                           cv2.INTER_NEAREST, **border)
        out["labels"] = np.where(seen, labels, ignore_index).astype(np.int64)
    if "depth" in item:
        depth = cv2.remap(np.ascontiguousarray(item["depth"], dtype=np.float32), map_u, map_v, cv2.INTER_NEAREST,
                          **border)
        out["depth"] = np.where(seen, depth, np.nan).astype(np.float32)
    return out
