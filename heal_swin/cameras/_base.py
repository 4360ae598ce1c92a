"""Camera base class: a radially symmetric fisheye model with a polynomial radius r(θ).

Both supported models map a ray at incidence angle θ and azimuth φ to

    u = sx · r(θ) · cos φ + cx,      v = sy · r(θ) · sin φ + cy,

with r a polynomial in θ (WoodScape ``radial_poly``: r = ρ in pixels, sx = 1, sy = aspect_ratio;
OpenCV fisheye / Kannala–Brandt: r = θ_d, sx = fx, sy = fy). The base class therefore owns the whole
projection, its numerical inverse and the validation helpers; subclasses only state their
coefficients, scales, principal point and file layout.

Frames: camera rays follow OpenCV (x right, y down, z forward); θ = atan2(√(x²+y²), z),
φ = atan2(y, x). Pixel centres sit at integer (u, v).
"""

from __future__ import annotations

import abc
import hashlib
import json
import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["CalibrationError", "Camera"]

# Samples of the r(θ) table that seeds the Newton inverse. Linear interpolation on this grid is
# already accurate to ~1e-7 rad, so a few Newton steps reach machine precision.
_TABLE_SIZE = 4096
_NEWTON_STEPS = 3
_QUATERNION_NORM_TOL = 1e-3


class CalibrationError(ValueError):
    """Invalid calibration value; the message names the source, the dotted field, the value and the rule."""


# --------------------------------------------------------------------------------------------------
# validation helpers (shared by the constructors and the JSON loader, so each rule is written once)
# --------------------------------------------------------------------------------------------------


def _short_repr(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(source: str, field: str, value, rule: str):
    prefix = f"{source}: " if source else ""
    raise CalibrationError(f"{prefix}{field}={_short_repr(value)} {rule}")


def _is_number(value) -> bool:
    # bool is an int subclass, but `true` in a calibration file is a mistake, not 1.
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_float(value, field: str, source: str = "", *, positive: bool = False) -> float:
    """Return ``value`` as a finite float (> 0 if ``positive``) or raise CalibrationError."""
    rule = "must be a finite number > 0" if positive else "must be a finite number"
    if not _is_number(value) or not math.isfinite(float(value)):
        _fail(source, field, value, rule)
    if positive and float(value) <= 0:
        _fail(source, field, value, rule)
    return float(value)


def check_size(value, field: str, source: str = "") -> int:
    """Return a positive integer; integral floats such as 966.0 are accepted."""
    if (
        not _is_number(value)
        or not math.isfinite(float(value))
        or float(value) != math.floor(float(value))
        or float(value) <= 0
    ):
        _fail(source, field, value, "must be a positive integer")
    return int(value)


def check_vector(value, n: int, field: str, source: str = "") -> tuple[float, ...]:
    """Return ``n`` finite floats from a list/tuple/1-d array or raise CalibrationError."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != n
        or not all(_is_number(x) and math.isfinite(float(x)) for x in value)
    ):
        _fail(source, field, value, f"must be a list of {n} finite numbers")
    return tuple(float(x) for x in value)


def check_quaternion(value, field: str, source: str = "") -> tuple[float, float, float, float]:
    """Return a (x, y, z, w) quaternion whose norm is within 1e-3 of 1."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 4
        or not all(_is_number(x) and math.isfinite(float(x)) for x in value)
    ):
        _fail(source, field, value, "must be a list of 4 finite numbers (x, y, z, w; scalar last)")
    q = tuple(float(x) for x in value)
    norm = math.sqrt(sum(x * x for x in q))
    if abs(norm - 1.0) > _QUATERNION_NORM_TOL:
        _fail(
            source,
            field,
            value,
            f"has norm {norm:.6g}; it must be a unit quaternion (norm within {_QUATERNION_NORM_TOL:g} of 1)",
        )
    return q  # type: ignore[return-value]


def check_name(value, field: str = "name", source: str = "") -> str:
    if not isinstance(value, str):
        _fail(source, field, value, "must be a string")
    return value


def quaternion_to_rotation(q: Sequence[float]) -> np.ndarray:
    """(x, y, z, w) quaternion, scalar last, normalised here -> float64 (3, 3) rotation matrix."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotation_to_quaternion(r) -> tuple[float, float, float, float]:
    """float (3, 3) rotation matrix -> unit quaternion (x, y, z, w), scalar last, w >= 0."""
    r = np.asarray(r, dtype=np.float64)
    # Shepperd's method: divide by the largest of the four candidate components, for stability.
    diag = np.array([r[0, 0], r[1, 1], r[2, 2]])
    candidates = [1 + diag.sum(), 1 + 2 * diag[0] - diag.sum(), 1 + 2 * diag[1] - diag.sum(),
                  1 + 2 * diag[2] - diag.sum()]
    i = int(np.argmax(candidates))
    s = 2.0 * np.sqrt(candidates[i])
    if i == 0:
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, s / 4]
    elif i == 1:
        q = [s / 4, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
    elif i == 2:
        q = [(r[0, 1] + r[1, 0]) / s, s / 4, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
    else:
        q = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, s / 4, (r[1, 0] - r[0, 1]) / s]
    q = np.asarray(q) / np.linalg.norm(q)
    return tuple(float(c) for c in (q if q[3] >= 0 else -q))


# --------------------------------------------------------------------------------------------------
# polynomial helpers
# --------------------------------------------------------------------------------------------------


def _horner(coeffs: Sequence[float], t):
    """Σ coeffs[i] · t**i for numpy arrays or torch tensors (coeffs ascending, Python floats)."""
    acc = t * 0.0 + coeffs[-1]
    for c in reversed(coeffs[:-1]):
        acc = acc * t + c
    return acc


def _derivative(coeffs: Sequence[float]) -> tuple[float, ...]:
    return tuple(i * c for i, c in enumerate(coeffs))[1:] or (0.0,)


def first_turning_point(coeffs: Sequence[float]) -> float:
    """First θ in (0, π] where the polynomial Σ coeffs[i]·θ^i stops increasing, else π.

    Assumes the derivative is positive at θ = 0. The smallest real positive root of the derivative
    is polished by Newton steps, so max_theta is exact to rounding.
    """
    d = np.array(_derivative(coeffs), dtype=np.float64)
    nz = np.nonzero(d)[0]
    if len(nz) == 0:
        return math.pi
    d = d[: nz[-1] + 1]
    if len(d) == 1:
        return math.pi
    roots = np.roots(d[::-1])
    real = roots[np.abs(roots.imag) <= 1e-9 * np.maximum(1.0, np.abs(roots))].real
    candidates = np.sort(real[(real > 0) & (real <= math.pi + 1e-9)])
    if len(candidates) == 0:
        return math.pi
    root = float(candidates[0])
    dd = _derivative(tuple(d))
    for _ in range(3):
        slope = float(_horner(dd, root))
        if slope == 0:
            break
        root -= float(_horner(tuple(d), root)) / slope
    return min(root, math.pi)


# --------------------------------------------------------------------------------------------------
# array helpers: one code path for numpy (float64) and torch (input dtype and device)
# --------------------------------------------------------------------------------------------------


def _prepare(x, last: int, name: str):
    """Return (xp, array, out_dtype): xp is numpy (float64) or torch (float32/float64 compute)."""
    if isinstance(x, torch.Tensor):
        xp = torch
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        out_dtype = x.dtype
        if x.dtype not in (torch.float32, torch.float64):
            # half precision cannot resolve pixel positions; compute in float32 and cast back
            x = x.float()
    else:
        xp = np
        x = np.asarray(x, dtype=np.float64)
        out_dtype = np.float64
    if x.ndim == 0 or x.shape[-1] != last:
        raise ValueError(f"{name} must have shape (..., {last}), got {tuple(x.shape)}")
    return xp, x, out_dtype


def _finish(xp, out, out_dtype):
    return out.to(out_dtype) if xp is torch else out


# --------------------------------------------------------------------------------------------------
# the camera base class
# --------------------------------------------------------------------------------------------------


class Camera(abc.ABC):
    """A calibrated fisheye camera: rays (camera frame) <-> pixels, plus extrinsics and image size.

    Attributes: ``name`` (str), ``width``/``height`` (int, pixels), ``rotation`` (float64 (3, 3),
    camera -> vehicle, from the scalar-last quaternion), ``translation`` (float64 (3,), metres),
    ``quaternion`` (the (x, y, z, w) values as given), ``max_theta`` (radians; end of the range
    where the radial mapping is strictly increasing, at most π).

    Both projection methods accept numpy arrays (computed and returned in float64) and torch tensors
    (computed with torch ops in the tensor's float dtype, on its device; ``ray_to_pixel`` is
    differentiable). Subclasses are immutable value objects.
    """

    model: str = ""

    def __init__(self, width, height, quaternion, translation, name) -> None:
        self._width = check_size(width, "width")
        self._height = check_size(height, "height")
        self._quaternion = check_quaternion(quaternion, "quaternion")
        self._translation = np.array(check_vector(translation, 3, "translation"), dtype=np.float64)
        self._translation.flags.writeable = False
        self._rotation = quaternion_to_rotation(self._quaternion)
        self._rotation.flags.writeable = False
        self._name = check_name(name, "name")
        self._table_cache: dict = {}

    def _finish_init(self) -> None:
        """Derive max_theta and the inverse table once the subclass has set its intrinsics."""
        coeffs = self._radius_coeffs()
        self._coeffs = tuple(float(c) for c in coeffs)
        self._dcoeffs = _derivative(self._coeffs)
        self._max_theta = first_turning_point(self._coeffs)
        theta = np.linspace(0.0, self._max_theta, _TABLE_SIZE)
        radius = _horner(self._coeffs, theta)
        if not np.all(np.diff(radius) > 0):
            raise ValueError(f"{self!r}: radial mapping is not strictly increasing on [0, max_theta]")
        self._theta_table = theta
        self._radius_table = radius
        self._max_radius = float(radius[-1])

    # ---- subclass hooks ---------------------------------------------------------------------------

    @abc.abstractmethod
    def _radius_coeffs(self) -> tuple[float, ...]:
        """Ascending coefficients c of r(θ) = Σ c_i θ^i (c_0 = 0)."""

    @property
    @abc.abstractmethod
    def _scale(self) -> tuple[float, float]:
        """(sx, sy): image offsets are (sx·r·cos φ, sy·r·sin φ)."""

    @property
    @abc.abstractmethod
    def _center(self) -> tuple[float, float]:
        """(cx, cy): pixel position of the optical axis."""

    @abc.abstractmethod
    def _intrinsic_dict(self) -> dict:
        """The ``intrinsic`` section of the WoodScape-format dict."""

    @abc.abstractmethod
    def resized(self, width: int, height: int) -> "Camera":
        """The same camera for the image resized to (width, height): u' + 0.5 = (u + 0.5)·width/W."""

    # ---- read-only attributes ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def width(self) -> int:
        return self._width

    @property
    def height(self) -> int:
        return self._height

    @property
    def quaternion(self) -> tuple[float, float, float, float]:
        return self._quaternion

    @property
    def rotation(self) -> np.ndarray:
        return self._rotation

    @property
    def translation(self) -> np.ndarray:
        return self._translation

    @property
    def max_theta(self) -> float:
        return self._max_theta

    # ---- projection -------------------------------------------------------------------------------

    def _tables(self, like: torch.Tensor):
        key = (like.device, like.dtype)
        if key not in self._table_cache:
            self._table_cache[key] = (
                torch.as_tensor(self._theta_table, dtype=like.dtype, device=like.device),
                torch.as_tensor(self._radius_table, dtype=like.dtype, device=like.device),
            )
        return self._table_cache[key]

    def _theta_from_radius(self, xp, r):
        """θ with r(θ) = r for r in [0, r(max_theta)]: table interpolation + bracketed Newton."""
        if xp is np:
            th_tab, r_tab = self._theta_table, self._radius_table
            idx = np.searchsorted(r_tab, r, side="right") - 1
        else:
            th_tab, r_tab = self._tables(r)
            flat = r.reshape(-1).contiguous()
            idx = torch.searchsorted(r_tab, flat, side="right").reshape(r.shape) - 1
        idx = xp.clip(idx, 0, len(self._theta_table) - 2)
        t0, t1 = th_tab[idx], th_tab[idx + 1]
        r0, r1 = r_tab[idx], r_tab[idx + 1]
        theta = t0 + (r - r0) * (t1 - t0) / (r1 - r0)
        for _ in range(_NEWTON_STEPS):
            residual = _horner(self._coeffs, theta) - r
            slope = _horner(self._dcoeffs, theta)
            pos = slope > 0
            step = xp.where(pos, residual / xp.where(pos, slope, 1.0), 0.0)
            # the table interval brackets the root, which keeps Newton safe where r'(θ) -> 0
            theta = xp.clip(theta - step, t0, t1)
        return theta

    def ray_to_pixel(self, rays):
        """rays (..., 3) camera frame (x right, y down, z forward; any length) -> (..., 2) (u, v).

        NaN (both u and v) where θ > max_theta or the ray is zero or non-finite.
        """
        xp, rays, out_dtype = _prepare(rays, 3, "rays")
        x, y, z = rays[..., 0], rays[..., 1], rays[..., 2]
        ok = xp.isfinite(x) & xp.isfinite(y) & xp.isfinite(z) & ((x != 0) | (y != 0) | (z != 0))
        # invalid rays are replaced by the optical axis so they neither warn nor poison gradients;
        # dividing by the largest component keeps x² + y² clear of overflow and underflow
        scale = xp.maximum(xp.maximum(xp.abs(x), xp.abs(y)), xp.abs(z))
        scale = xp.where(ok, scale, 1.0)
        x = xp.where(ok, x, 0.0) / scale
        y = xp.where(ok, y, 0.0) / scale
        z = xp.where(ok, z, 1.0) / scale
        rho2 = x * x + y * y
        off_axis = rho2 > 0
        # double `where` keeps sqrt and the division away from 0 so the gradient stays finite
        rho = xp.where(off_axis, xp.sqrt(xp.where(off_axis, rho2, 1.0)), 0.0)
        theta = xp.arctan2(rho, z)
        r = _horner(self._coeffs, theta)
        # g = r(θ)/ρ maps (x, y) to the radial offset; on the axis it tends to r'(0)/z.
        g = xp.where(
            off_axis,
            r / xp.where(off_axis, rho, 1.0),
            self._dcoeffs[0] / xp.where(off_axis, 1.0, z),
        )
        # φ = atan2(0, 0) = 0 on the axis: a backward ray (θ = π) lands at (cx + sx·r(π), cy)
        on_axis_r = xp.where(off_axis, 0.0, r)
        sx, sy = self._scale
        cx, cy = self._center
        u = cx + sx * (x * g + on_axis_r)
        v = cy + sy * (y * g)
        uv = xp.stack([u, v], -1)
        valid = ok & (theta <= self._max_theta)
        return _finish(xp, xp.where(valid[..., None], uv, float("nan")), out_dtype)

    def pixel_to_ray(self, uv):
        """uv (..., 2) pixel coordinates (u, v) -> (..., 3) unit rays in the camera frame.

        NaN where the normalised radius exceeds r(max_theta) or the input is non-finite.
        """
        xp, uv, out_dtype = _prepare(uv, 2, "uv")
        u, v = uv[..., 0], uv[..., 1]
        ok = xp.isfinite(u) & xp.isfinite(v)
        sx, sy = self._scale
        cx, cy = self._center
        a = xp.where(ok, (u - cx) / sx, 0.0)
        b = xp.where(ok, (v - cy) / sy, 0.0)
        r2 = a * a + b * b
        off_axis = r2 > 0
        r = xp.where(off_axis, xp.sqrt(xp.where(off_axis, r2, 1.0)), 0.0)
        valid = ok & (r <= self._max_radius)
        theta = self._theta_from_radius(xp, xp.where(valid, r, 0.0))
        s = xp.sin(theta) / xp.where(off_axis, r, 1.0)
        ray = xp.stack([a * s, b * s, xp.cos(theta)], -1)
        return _finish(xp, xp.where(valid[..., None], ray, float("nan")), out_dtype)

    # ---- serialisation and identity ---------------------------------------------------------------

    def to_dict(self) -> dict:
        """WoodScape-format dict: {"extrinsic": {...}, "intrinsic": {...}, "name": str}."""
        return {
            "extrinsic": {
                "quaternion": list(self._quaternion),
                "translation": [float(t) for t in self._translation],
            },
            "intrinsic": self._intrinsic_dict(),
            "name": self._name,
        }

    def fingerprint(self) -> str:
        """Hex sha256 of the model type, intrinsics, extrinsics and size (the name is not included)."""
        d = self.to_dict()
        payload = {"model": self.model, "intrinsic": d["intrinsic"], "extrinsic": d["extrinsic"]}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self._name!r}, model={self.model!r}, "
            f"size={self._width}x{self._height}, max_theta={math.degrees(self._max_theta):.1f}deg)"
        )
