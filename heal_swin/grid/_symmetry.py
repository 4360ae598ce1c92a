"""Rotations of HEALPix maps: the grid's own symmetries as exact pixel permutations, any other rotation
by nearest-pixel or bilinear resampling.

Convention: a rotation R moves a map's content, (R·x)(v) = x(R⁻¹ v), so a feature at direction c
appears at R c afterwards. Every function returns local NESTED indices over `base_pixels` (the map
layout of the package), −1 where the source direction falls on a face that the set does not hold.

    perm = symmetry_permutation(nside, polar_turn_matrix(1), range(8))     # exact: rotated = x[..., perm]
    idx = nearest_rotation_index(nside, R, range(12))               # any R: rotated = x[..., idx]
    idx, w = bilinear_rotation_weights(nside, R, range(12))         # any R: sum_k w[k] * x[..., idx[k]]
"""

from __future__ import annotations

import math

import numpy as np

from ._faces import base_pixel_indices, check_base_pixels, global_to_local
from ._interp import get_interp_weights
from ._pixelfunc import check_nside, pix2vec, vec2ang, vec2pix

__all__ = ["polar_turn_matrix", "equatorial_flip", "grid_symmetries", "rotation_angle", "is_symmetry",
           "symmetry_permutation", "nearest_rotation_index", "bilinear_rotation_weights"]


def polar_turn_matrix(k: int = 1) -> np.ndarray:
    """The rotation by k·90° about the polar (z) axis: a symmetry of every face set closed under it."""
    c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][int(k) % 4]
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def equatorial_flip(phi_deg: float) -> np.ndarray:
    """The 180° rotation about the equatorial axis at longitude phi_deg (a symmetry of the full sphere
    for multiples of 45°: it swaps the north and south faces)."""
    a = np.array([math.cos(math.radians(phi_deg)), math.sin(math.radians(phi_deg)), 0.0])
    out = 2 * np.outer(a, a) - np.eye(3)
    out[np.abs(out) < 1e-15] = 0.0
    return out


def grid_symmetries(nside: int, base_pixels) -> dict:
    """{name: matrix} of the grid symmetries this face set keeps: the polar turns by 90°, 180°, 270° and
    the flips about the equatorial axes at 0°, 45°, 90° (full sphere only)."""
    candidates = {f"polar turn {90 * k}°": polar_turn_matrix(k) for k in (1, 2, 3)}
    candidates.update({f"flip about {p}°": equatorial_flip(p) for p in (0, 45, 90)})
    return {name: m for name, m in candidates.items() if is_symmetry(nside, m, base_pixels)}


def rotation_angle(matrix) -> float:
    """The angle of a rotation matrix, in degrees in [0, 180]."""
    c = (np.trace(np.asarray(matrix, dtype=np.float64)) - 1) / 2
    return math.degrees(math.acos(min(1.0, max(-1.0, c))))


def _source_vectors(nside: int, matrix, base_pixels):
    """R⁻¹ v for the centre v of every local pixel: (N, 3)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 3) or not np.allclose(m @ m.T, np.eye(3), atol=1e-9) or np.linalg.det(m) < 0:
        raise ValueError(f"rotation {m.tolist()} must be a 3×3 rotation matrix (orthogonal, det +1)")
    v = np.stack(pix2vec(nside, base_pixel_indices(nside, base_pixels), nest=True), axis=1)
    return v @ m                       # rows: (R^T v)^T, and R^T = R⁻¹


def _permutation_or_none(nside: int, matrix, base_pixels):
    nside, faces = check_nside(nside), check_base_pixels(base_pixels)
    src = _source_vectors(nside, matrix, faces)
    glob = vec2pix(nside, *src.T, nest=True)
    centre = np.stack(pix2vec(nside, glob, nest=True), axis=1)
    if np.abs(centre - src).max() > 1e-9:
        return None                    # centres do not land on centres: not a grid symmetry
    local = np.asarray(global_to_local(nside, faces, glob))
    if (local < 0).any():
        return None                    # the face set is not closed under it
    return local


def is_symmetry(nside: int, matrix, base_pixels) -> bool:
    """Whether R maps this face set's pixel centres onto its pixel centres."""
    return _permutation_or_none(nside, matrix, base_pixels) is not None


def symmetry_permutation(nside: int, matrix, base_pixels) -> np.ndarray:
    """The exact map of a grid symmetry R: (R·x)[..., p] = x[..., perm[p]], (N,) int64; raises when R maps
    a pixel centre off the grid or off the face set."""
    perm = _permutation_or_none(nside, matrix, base_pixels)
    if perm is None:
        raise ValueError(f"rotation {np.round(np.asarray(matrix), 6).tolist()} is not a symmetry of the nside-"
                         f"{nside} grid over faces {list(check_base_pixels(base_pixels))}: it must map every pixel "
                         "centre onto a pixel centre of the same face set (polar turns by 90°, and on the full "
                         "sphere the flips about equatorial axes at multiples of 45°)")
    return perm


def nearest_rotation_index(nside: int, matrix, base_pixels) -> np.ndarray:
    """(R·x)[..., p] ≈ x[..., idx[p]]: the pixel containing R⁻¹ p, (N,) int64, −1 off the face set."""
    nside, faces = check_nside(nside), check_base_pixels(base_pixels)
    src = _source_vectors(nside, matrix, faces)
    return np.asarray(global_to_local(nside, faces, vec2pix(nside, *src.T, nest=True)))


def bilinear_rotation_weights(nside: int, matrix, base_pixels):
    """(R·x)[..., p] ≈ Σ_k w[k, p] x[..., idx[k, p]]: healpy's bilinear interpolation at R⁻¹ p.
    Returns idx (4, N) int64 (−1 off the face set, with weight 0 there) and w (4, N) float64."""
    nside, faces = check_nside(nside), check_base_pixels(base_pixels)
    theta, phi = vec2ang(*_source_vectors(nside, matrix, faces).T)
    glob, w = get_interp_weights(nside, theta, phi, nest=True)
    idx = np.asarray(global_to_local(nside, faces, glob))
    return idx, np.where(idx >= 0, w, 0.0)
