"""OpenCV fisheye (Kannala–Brandt) model and its fit to a WoodScape ``radial_poly`` camera."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ._base import Camera, check_float, check_size, check_vector
from ._radial_poly import RadialPolyCamera

__all__ = ["KannalaBrandtCamera", "fit_kannala_brandt"]


class KannalaBrandtCamera(Camera):
    """OpenCV fisheye (Kannala–Brandt) camera, no skew.

    θ_d = θ·(1 + k1·θ² + k2·θ⁴ + k3·θ⁶ + k4·θ⁸) and

        u = fx·θ_d·cos φ + cx,      v = fy·θ_d·sin φ + cy,

    identical to ``cv2.fisheye.projectPoints`` for θ < 90°; here θ = atan2(√(x²+y²), z), so rays
    behind the image plane (θ ≥ 90°) project too, up to ``max_theta``.

    Calibration file layout (a heal_swin extension of the WoodScape JSON): ``intrinsic`` holds
    ``"model": "kannala_brandt"``, ``fx``, ``fy`` (> 0), ``cx``, ``cy`` (pixels, centres at integer
    coordinates), ``k1``..``k4`` and ``width``, ``height``; ``extrinsic`` and ``name`` as for
    ``radial_poly``.
    """

    model = "kannala_brandt"

    def __init__(
        self,
        fx: float,
        fy: float,
        cx: float,
        cy: float,
        k: Sequence[float],
        width: int,
        height: int,
        quaternion: Sequence[float] = (0.0, 0.0, 0.0, 1.0),
        translation: Sequence[float] = (0.0, 0.0, 0.0),
        name: str = "",
    ) -> None:
        super().__init__(width, height, quaternion, translation, name)
        self._fx = check_float(fx, "fx", positive=True)
        self._fy = check_float(fy, "fy", positive=True)
        self._cx = check_float(cx, "cx")
        self._cy = check_float(cy, "cy")
        self._k = check_vector(k, 4, "k")
        self._finish_init()

    @property
    def fx(self) -> float:
        return self._fx

    @property
    def fy(self) -> float:
        return self._fy

    @property
    def cx(self) -> float:
        return self._cx

    @property
    def cy(self) -> float:
        return self._cy

    @property
    def k(self) -> tuple[float, float, float, float]:
        return self._k  # type: ignore[return-value]

    @property
    def camera_matrix(self) -> np.ndarray:
        """float64 (3, 3) OpenCV K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]."""
        return np.array([[self._fx, 0.0, self._cx], [0.0, self._fy, self._cy], [0.0, 0.0, 1.0]])

    def _radius_coeffs(self) -> tuple[float, ...]:
        k1, k2, k3, k4 = self._k
        return (0.0, 1.0, 0.0, k1, 0.0, k2, 0.0, k3, 0.0, k4)

    @property
    def _scale(self) -> tuple[float, float]:
        return self._fx, self._fy

    @property
    def _center(self) -> tuple[float, float]:
        return self._cx, self._cy

    def _intrinsic_dict(self) -> dict:
        k1, k2, k3, k4 = self._k
        return {
            "cx": self._cx,
            "cy": self._cy,
            "fx": self._fx,
            "fy": self._fy,
            "height": self.height,
            "width": self.width,
            "k1": k1,
            "k2": k2,
            "k3": k3,
            "k4": k4,
            "model": self.model,
        }

    def resized(self, width: int, height: int) -> "KannalaBrandtCamera":
        """Same camera for the image resized to (width, height).

        With sx = width/W, sy = height/H: fx' = fx·sx, fy' = fy·sy, cx' = (cx + 0.5)·sx − 0.5,
        cy' = (cy + 0.5)·sy − 0.5; the distortion coefficients are unchanged.
        """
        width = check_size(width, "width")
        height = check_size(height, "height")
        sx, sy = width / self.width, height / self.height
        return KannalaBrandtCamera(
            fx=self._fx * sx,
            fy=self._fy * sy,
            cx=(self._cx + 0.5) * sx - 0.5,
            cy=(self._cy + 0.5) * sy - 0.5,
            k=self._k,
            width=width,
            height=height,
            quaternion=self.quaternion,
            translation=tuple(self.translation),
            name=self.name,
        )


def fit_kannala_brandt(cam: RadialPolyCamera, fov_deg: float = 170.0) -> tuple[KannalaBrandtCamera, float]:
    """Fit an OpenCV fisheye camera to a ``radial_poly`` camera within a field of view.

    Linear least squares of f·θ + f·k1·θ³ + … + f·k4·θ⁹ against ρ(θ) on dense θ in [0, fov/2];
    fx = f, fy = f·aspect_ratio, with the same principal point, size, extrinsics and name.

    Args:
        cam: the WoodScape camera.
        fov_deg: full field of view in degrees, 0 < fov_deg < 180 (OpenCV's model cannot cover
            180° or more).

    Returns:
        (camera, max_err_px): the fitted camera and the largest pixel distance between the two
        cameras' projections of rays over θ in [0, fov/2] and all azimuths.
    """
    if not isinstance(cam, RadialPolyCamera):
        raise TypeError(f"cam must be a RadialPolyCamera, got {type(cam).__name__}")
    fov = float(fov_deg) if isinstance(fov_deg, (int, float)) and not isinstance(fov_deg, bool) else math.nan
    if not 0.0 < fov < 180.0:
        raise ValueError(
            f"fov_deg={fov_deg!r} must satisfy 0 < fov_deg < 180 "
            "(OpenCV's fisheye model cannot represent a field of view of 180 degrees or more)"
        )
    half = math.radians(fov) / 2.0
    if half > cam.max_theta:
        raise ValueError(
            f"fov_deg={fov_deg!r} reaches beyond {cam!r}: its radial polynomial turns over at "
            f"{math.degrees(cam.max_theta):.2f} deg from the axis"
        )
    theta = np.linspace(0.0, half, 4001)
    design = np.stack([theta ** (2 * i + 1) for i in range(5)], axis=1)
    # column scaling keeps the normal equations well conditioned for θ⁹ next to θ
    norms = np.linalg.norm(design, axis=0)
    coef, *_ = np.linalg.lstsq(design / norms, cam.rho(theta), rcond=None)
    coef = coef / norms
    f = float(coef[0])
    if not f > 0:
        raise ValueError(f"fit for fov_deg={fov_deg!r} gave a non-positive focal length f={f:.6g}")
    kb = KannalaBrandtCamera(
        fx=f,
        fy=f * cam.aspect_ratio,
        cx=cam.cx,
        cy=cam.cy,
        k=tuple(float(c) / f for c in coef[1:]),
        width=cam.width,
        height=cam.height,
        quaternion=cam.quaternion,
        translation=tuple(cam.translation),
        name=cam.name,
    )
    if kb.max_theta < half:
        raise ValueError(
            f"fov_deg={fov_deg!r}: the fitted Kannala-Brandt polynomial turns over at "
            f"{math.degrees(kb.max_theta):.2f} deg, inside the fitted range; use a smaller fov_deg"
        )
    t, p = np.meshgrid(np.linspace(0.0, half, 1001), np.linspace(0.0, 2 * np.pi, 73), indexing="ij")
    rays = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], axis=-1)
    err = np.linalg.norm(kb.ray_to_pixel(rays) - cam.ray_to_pixel(rays), axis=-1)
    return kb, float(np.max(err))
