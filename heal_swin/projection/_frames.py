"""Which way the sphere faces: the frame of the HEALPix directions relative to a camera.

`camera`: north pole = optical axis, φ = 0 towards image right, φ = 90° towards image down (the
original HEAL-SWIN frame). `vehicle`: the directions are in the vehicle frame (ISO 8855: x forward,
y left, z up); the camera's extrinsic rotation maps them into the camera, so every camera of a rig
lands on one shared sphere (directions only: the few metres between the cameras are ignored).
"""

from __future__ import annotations

import numpy as np

ORIENTATIONS = ("camera", "vehicle")


def check_rotation(rotation, name: str = "rotation") -> np.ndarray | None:
    """Return `rotation` as a float64 (3, 3) proper rotation matrix, or None."""
    if rotation is None:
        return None
    r = np.asarray(rotation, dtype=np.float64)
    if r.shape != (3, 3) or not np.all(np.isfinite(r)):
        raise ValueError(f"{name} must be a finite 3×3 matrix, got shape {r.shape}")
    err = np.abs(r @ r.T - np.eye(3)).max()
    if err > 1e-6 or np.linalg.det(r) < 0:
        raise ValueError(f"{name} must be a proper rotation (R·Rᵀ = I within 1e-6, det = +1); "
                         f"|R·Rᵀ − I| = {err:.2g}, det = {np.linalg.det(r):.3f}")
    return r


def sphere_to_camera(camera, orientation: str = "camera", rotation=None) -> np.ndarray:
    """The matrix M with r_camera = M · v for a HEALPix direction v of the given orientation.

    `rotation` rotates the grid before sampling: the sphere pixel at direction v shows what the
    camera sees at direction rotation · v (in the orientation's frame)."""
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation={orientation!r} must be one of {ORIENTATIONS}")
    m = np.eye(3) if orientation == "camera" else np.asarray(camera.rotation, dtype=np.float64).T
    r = check_rotation(rotation)
    return m if r is None else m @ r
