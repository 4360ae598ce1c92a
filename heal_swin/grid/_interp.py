"""Rings of the HEALPix grid and bilinear interpolation between pixel centres (healpy's
`get_interp_weights`): two iso-latitude rings bracket θ, two pixels of each ring bracket φ."""

from __future__ import annotations

import numpy as np

from ._backend import host_function
from ._pixelfunc import check_nside, ring2nest

__all__ = ["ring_info", "ring_above", "get_interp_weights"]


def ring_info(nside: int, ring):
    """Per ring number (1 … 4·nside−1): first RING index, pixel count, colatitude θ, and whether the
    ring's first pixel sits half a pixel east of φ = 0."""
    nside = check_nside(nside)
    ring = np.asarray(ring, dtype=np.int64)
    npix = 12 * nside * nside
    ncap = 2 * nside * (nside - 1)
    north_ring = np.where(ring > 2 * nside, 4 * nside - ring, ring)
    cap = north_ring < nside
    tmp = north_ring.astype(np.float64) ** 2 * (4.0 / npix)
    z_belt = (2 * nside - north_ring) * (2.0 / (3.0 * nside))
    cos_t = np.where(cap, 1.0 - tmp, z_belt)
    sin_t = np.where(cap, np.sqrt(tmp * (2.0 - tmp)), np.sqrt(np.maximum((1.0 - z_belt) * (1.0 + z_belt), 0.0)))
    theta = np.arctan2(sin_t, cos_t)
    count = np.where(cap, 4 * north_ring, 4 * nside)
    shifted = np.where(cap, True, ((north_ring - nside) & 1) == 0)
    start = np.where(cap, 2 * north_ring * (north_ring - 1), ncap + (north_ring - nside) * 4 * nside)
    south = north_ring != ring
    theta = np.where(south, np.pi - theta, theta)
    start = np.where(south, npix - start - count, start)
    return start, count, theta, shifted


def ring_above(nside: int, z):
    """Number of the ring just north of (or on) height z = cos θ; 0 above the first ring."""
    z = np.asarray(z, dtype=np.float64)
    za = np.abs(z)
    belt = np.floor(nside * (2.0 - 1.5 * z)).astype(np.int64)
    cap = np.floor(nside * np.sqrt(3.0 * np.maximum(1.0 - za, 0.0))).astype(np.int64)
    cap = np.where(z > 0, cap, 4 * nside - cap - 1)
    return np.where(za <= 2.0 / 3.0, belt, cap)


def _pair_in_ring(nside, ring, phi):
    """The two pixels of `ring` that bracket φ, and the weight of the second."""
    start, count, theta, shifted = ring_info(nside, np.clip(ring, 1, 4 * nside - 1))
    dphi = 2.0 * np.pi / count
    half = 0.5 * shifted
    i1 = np.floor(phi / dphi - half).astype(np.int64)
    w = (phi - (i1 + half) * dphi) / dphi
    i2 = i1 + 1
    i1 = np.where(i1 < 0, i1 + count, i1)
    i2 = np.where(i2 >= count, i2 - count, i2)
    return start + i1, start + i2, 1.0 - w, w, theta


@host_function
def get_interp_weights(nside, theta, phi, nest: bool = True):
    """Bilinear interpolation on the sphere: 4 pixel indices and their weights, each of shape
    (4,) + theta.shape; weights sum to one. Same pixels and weights as healpy."""
    nside = check_nside(nside)
    theta, phi = np.broadcast_arrays(np.asarray(theta, np.float64), np.asarray(phi, np.float64))
    phi = np.mod(phi, 2.0 * np.pi)
    npix = 12 * nside * nside
    ir1 = ring_above(nside, np.cos(theta))
    ir2 = ir1 + 1
    p0, p1, w0, w1, theta1 = _pair_in_ring(nside, ir1, phi)
    p2, p3, w2, w3, theta2 = _pair_in_ring(nside, ir2, phi)

    top = ir1 == 0
    bottom = ir2 == 4 * nside
    with np.errstate(invalid="ignore", divide="ignore"):
        wt_top = theta / theta2
        wt_bot = (theta - theta1) / (np.pi - theta1)
        wt_mid = (theta - theta1) / (theta2 - theta1)

    # Above the first ring, the 4 pixels of ring 1 share the pole's weight; below the last,
    # likewise for the last ring.
    fac_top = (1.0 - wt_top) * 0.25
    fac_bot = wt_bot * 0.25
    with np.errstate(invalid="ignore"):  # the unused branches of np.where may hold NaN
        wgt = np.stack([
            np.where(top, fac_top, np.where(bottom, w0 * (1 - wt_bot) + fac_bot, w0 * (1 - wt_mid))),
            np.where(top, fac_top, np.where(bottom, w1 * (1 - wt_bot) + fac_bot, w1 * (1 - wt_mid))),
            np.where(top, w2 * wt_top + fac_top, np.where(bottom, fac_bot, w2 * wt_mid)),
            np.where(top, w3 * wt_top + fac_top, np.where(bottom, fac_bot, w3 * wt_mid)),
        ])
    pix = np.stack([
        np.where(top, (p2 + 2) & 3, p0),
        np.where(top, (p3 + 2) & 3, p1),
        np.where(bottom, ((p0 + 2) & 3) + npix - 4, p2),
        np.where(bottom, ((p1 + 2) & 3) + npix - 4, p3),
    ])
    if nest:
        pix = ring2nest(nside, pix)
    return pix, wgt
