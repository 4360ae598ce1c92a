"""Incidence geometry of a camera's image: the angle of every pixel's ray from the optical axis, the
rings of that angle the fisheye metrics are split into, and the solid angle each pixel sees.

    theta = incidence_angle(cam)       # float64 (H, W) degrees, NaN where the model has no ray
    ring = incidence_ring(cam)         # int8 (H, W): index into INCIDENCE_RINGS, -1 outside every ring
    omega = pixel_solid_angle(cam)     # float64 (H, W) steradians
"""

from __future__ import annotations

import numpy as np

__all__ = ["INCIDENCE_RINGS", "incidence_angle", "incidence_ring", "ring_label", "pixel_solid_angle"]

# Rings of the incidence angle θ (degrees from the optical axis) that the fisheye metrics are also
# split into: name -> [lo, hi). Names are plain identifiers so they pass as TensorBoard / MLflow
# metric keys; the last ring holds everything beyond 90°, where a flat image is most distorted.
INCIDENCE_RINGS = {"theta_0_30": (0.0, 30.0), "theta_30_60": (30.0, 60.0), "theta_60_90": (60.0, 90.0),
                   "theta_90_plus": (90.0, 180.0)}


def _pixel_grid(camera) -> tuple[np.ndarray, np.ndarray]:
    w, h = int(camera.width), int(camera.height)
    vv, uu = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    return uu, vv


def _rays(camera, uu: np.ndarray, vv: np.ndarray) -> np.ndarray:
    uv = np.stack([uu, vv], axis=-1).reshape(-1, 2)
    return np.asarray(camera.pixel_to_ray(uv), dtype=np.float64)


def incidence_angle(camera) -> np.ndarray:
    """float64 (H, W): the incidence angle θ in degrees of every pixel centre of `camera`'s image
    (cos θ = the z component of its ray in the camera frame); NaN where the model has no ray."""
    uu, vv = _pixel_grid(camera)
    rays = _rays(camera, uu, vv)
    with np.errstate(invalid="ignore"):
        return np.degrees(np.arccos(np.clip(rays[:, 2], -1.0, 1.0))).reshape(uu.shape)


def incidence_ring(camera, rings=INCIDENCE_RINGS) -> np.ndarray:
    """int8 (H, W): the index of the ring of `rings` (name -> [lo, hi) degrees) each pixel of
    `camera`'s image falls in; -1 where it has no ray or lies in no ring."""
    theta = incidence_angle(camera)
    out = np.full(theta.shape, -1, dtype=np.int8)
    for r, (lo, hi) in enumerate(rings.values()):
        out[(theta >= lo) & (theta < hi)] = r
    return out


def ring_label(name: str) -> str:
    """A ring's name as people read it: 'theta_30_60' -> '30–60°', 'theta_90_plus' -> '> 90°'."""
    lo, hi = INCIDENCE_RINGS[name]
    return f"> {lo:g}°" if hi >= 180 else f"{lo:g}–{hi:g}°"


def pixel_solid_angle(camera) -> np.ndarray:
    """float64 (H, W): the solid angle (sr) of every pixel, |∂r/∂u × ∂r/∂v| by central differences
    of the camera's rays over one pixel; NaN where the model has no ray."""
    uu, vv = _pixel_grid(camera)
    ru = _rays(camera, uu + 0.5, vv) - _rays(camera, uu - 0.5, vv)
    rv = _rays(camera, uu, vv + 0.5) - _rays(camera, uu, vv - 0.5)
    return np.linalg.norm(np.cross(ru, rv), axis=1).reshape(uu.shape)
