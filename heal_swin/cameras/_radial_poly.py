"""WoodScape ``radial_poly`` fisheye model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._base import CalibrationError, Camera, _horner, check_float, check_size

__all__ = ["RadialPolyCamera"]


class RadialPolyCamera(Camera):
    """WoodScape ``radial_poly`` camera.

    ρ(θ) = k1·θ + k2·θ² + k3·θ³ + k4·θ⁴ (pixels, θ in radians), principal point
    cx = cx_offset + width/2 − 0.5, cy = cy_offset + height/2 − 0.5, and

        u = ρ(θ)·cos φ + cx,      v = ρ(θ)·sin φ · aspect_ratio + cy.

    Args:
        k: (k1, ..., k4); fewer than four coefficients are padded with zeros (poly_order < 4).
            k1 must be > 0.
        cx_offset, cy_offset: principal point offset from the image centre, pixels.
        width, height: image size, pixels.
        aspect_ratio: vertical / horizontal pixel scale, > 0.
        quaternion: camera -> vehicle rotation (x, y, z, w), scalar last, norm within 1e-3 of 1.
        translation: camera position in the vehicle frame (x, y, z), metres.
        name: camera name, e.g. "FV".
    """

    model = "radial_poly"

    def __init__(
        self,
        k: Sequence[float],
        cx_offset: float,
        cy_offset: float,
        width: int,
        height: int,
        aspect_ratio: float = 1.0,
        quaternion: Sequence[float] = (0.0, 0.0, 0.0, 1.0),
        translation: Sequence[float] = (0.0, 0.0, 0.0),
        name: str = "",
    ) -> None:
        super().__init__(width, height, quaternion, translation, name)
        if isinstance(k, np.ndarray):
            k = k.tolist()
        if isinstance(k, str) or not isinstance(k, Sequence) or not 1 <= len(k) <= 4:
            raise CalibrationError(f"k={k!r} must be a sequence of 1 to 4 numbers (k1, ..., k4)")
        # k1 > 0: ρ must start increasing at the optical axis, otherwise nothing is invertible
        ks = [check_float(c, f"k{i + 1}", positive=(i == 0)) for i, c in enumerate(k)]
        self._k = tuple(ks + [0.0] * (4 - len(ks)))
        self._cx_offset = check_float(cx_offset, "cx_offset")
        self._cy_offset = check_float(cy_offset, "cy_offset")
        self._aspect_ratio = check_float(aspect_ratio, "aspect_ratio", positive=True)
        self._finish_init()

    @property
    def k(self) -> tuple[float, float, float, float]:
        return self._k

    @property
    def cx_offset(self) -> float:
        return self._cx_offset

    @property
    def cy_offset(self) -> float:
        return self._cy_offset

    @property
    def aspect_ratio(self) -> float:
        return self._aspect_ratio

    @property
    def cx(self) -> float:
        return self._cx_offset + self.width / 2 - 0.5

    @property
    def cy(self) -> float:
        return self._cy_offset + self.height / 2 - 0.5

    def rho(self, theta):
        """ρ(θ) in pixels for an array/tensor of incidence angles θ (radians), any shape."""
        return _horner(self._coeffs, theta)

    def _radius_coeffs(self) -> tuple[float, ...]:
        return (0.0, *self._k)

    @property
    def _scale(self) -> tuple[float, float]:
        return 1.0, self._aspect_ratio

    @property
    def _center(self) -> tuple[float, float]:
        return self.cx, self.cy

    def _intrinsic_dict(self) -> dict:
        k1, k2, k3, k4 = self._k
        return {
            "aspect_ratio": self._aspect_ratio,
            "cx_offset": self._cx_offset,
            "cy_offset": self._cy_offset,
            "height": self.height,
            "width": self.width,
            "k1": k1,
            "k2": k2,
            "k3": k3,
            "k4": k4,
            "model": self.model,
            "poly_order": 4,
        }

    def resized(self, width: int, height: int) -> "RadialPolyCamera":
        """Same camera for the image resized to (width, height).

        With sx = width/W, sy = height/H and u' + 0.5 = (u + 0.5)·sx: k' = k·sx,
        aspect' = aspect·sy/sx, cx_offset' = cx_offset·sx, cy_offset' = cy_offset·sy.
        """
        width = check_size(width, "width")
        height = check_size(height, "height")
        sx, sy = width / self.width, height / self.height
        return RadialPolyCamera(
            k=tuple(c * sx for c in self._k),
            cx_offset=self._cx_offset * sx,
            cy_offset=self._cy_offset * sy,
            width=width,
            height=height,
            aspect_ratio=self._aspect_ratio * sy / sx,
            quaternion=self.quaternion,
            translation=tuple(self.translation),
            name=self.name,
        )
