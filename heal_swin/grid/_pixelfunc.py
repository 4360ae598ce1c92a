"""HEALPix pixel functions: NESTED/RING indexing, angles, vectors, neighbours.

Pure, vectorised and exact in integer arithmetic, with healpy's names and argument order
(`nest=True` is the default here, unlike healpy, because the package is NESTED throughout).
numpy in, numpy out; torch in, torch out on the same device (the integer work is done on the host,
where it is fastest for index tables; see `_backend.py`). Python scalars give numpy scalars.

Conventions (Górski et al. 2005): 12 base pixels (faces); inside a face, x grows towards the
north-east and y towards the north-west; the nested index interleaves the bits of x (even bits)
and y (odd bits) below the face number.
"""

from __future__ import annotations

import numpy as np

from ._backend import host_function

__all__ = [
    "is_valid_nside", "check_nside", "nside2order", "order2nside", "nside2npix", "npix2nside",
    "nside2resol", "nside2pixarea", "check_pixels",
    "nest2xyf", "xyf2nest", "ring2xyf", "xyf2ring", "nest2ring", "ring2nest",
    "pix2ang", "ang2pix", "pix2vec", "vec2pix", "ang2vec", "vec2ang", "get_all_neighbours",
]

# Face layout: the ring of each face's southernmost corner (in units of nside) and its phi offset.
_JRLL = np.array([2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4], dtype=np.int64)
_JPLL = np.array([1, 3, 5, 7, 0, 2, 4, 6, 1, 3, 5, 7], dtype=np.int64)
_MAX_ORDER = 29


# --------------------------------------------------------------------------- resolution


def is_valid_nside(nside) -> bool:
    """True when `nside` is a positive power of two no larger than 2**29."""
    try:
        n = int(nside)
    except (TypeError, ValueError):
        return False
    if n != nside or isinstance(nside, bool):
        return False
    return 0 < n <= 2**_MAX_ORDER and (n & (n - 1)) == 0


def check_nside(nside, name: str = "nside") -> int:
    """Return `nside` as an int, or raise ValueError naming the value and the rule."""
    if not is_valid_nside(nside):
        raise ValueError(f"{name}={nside!r} must be a power of two between 1 and 2**{_MAX_ORDER} "
                         "(HEALPix NESTED resolution)")
    return int(nside)


def nside2order(nside) -> int:
    return check_nside(nside).bit_length() - 1


def order2nside(order) -> int:
    if int(order) != order or not 0 <= order <= _MAX_ORDER:
        raise ValueError(f"order={order!r} must be an integer between 0 and {_MAX_ORDER}")
    return 1 << int(order)


def nside2npix(nside) -> int:
    return 12 * check_nside(nside) ** 2


def npix2nside(npix) -> int:
    npix = int(npix)
    nside = int(round(np.sqrt(npix / 12.0))) if npix > 0 else 0
    if npix <= 0 or 12 * nside * nside != npix or not is_valid_nside(nside):
        raise ValueError(f"npix={npix} must be 12·nside² for a power-of-two nside")
    return nside


def nside2pixarea(nside, degrees: bool = False) -> float:
    area = 4.0 * np.pi / nside2npix(nside)
    return area * (180.0 / np.pi) ** 2 if degrees else area


def nside2resol(nside, arcmin: bool = False) -> float:
    """Approximate pixel size: the square root of the pixel area (radians, or arcminutes)."""
    res = float(np.sqrt(nside2pixarea(nside)))
    return res * 180.0 * 60.0 / np.pi if arcmin else res


def check_pixels(nside: int, ipix, name: str = "ipix") -> np.ndarray:
    """Return `ipix` as int64, or raise ValueError when an index lies outside [0, 12·nside²)."""
    ipix = np.asarray(ipix)
    if ipix.size and not np.issubdtype(ipix.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {ipix.dtype}")
    ipix = ipix.astype(np.int64, copy=False)
    npix = nside2npix(nside)
    if ipix.size and (ipix.min() < 0 or ipix.max() >= npix):
        bad = ipix[(ipix < 0) | (ipix >= npix)].ravel()[0]
        raise ValueError(f"{name}={bad} is outside [0, {npix}) for nside={nside}")
    return ipix


# --------------------------------------------------------------------------- bit interleaving


def _spread_bits(v: np.ndarray) -> np.ndarray:
    """Move bit i of v (< 2**29) to bit 2i (Morton code, one axis)."""
    v = v.astype(np.int64, copy=True)
    v = (v | (v << 16)) & 0x0000FFFF0000FFFF
    v = (v | (v << 8)) & 0x00FF00FF00FF00FF
    v = (v | (v << 4)) & 0x0F0F0F0F0F0F0F0F
    v = (v | (v << 2)) & 0x3333333333333333
    v = (v | (v << 1)) & 0x5555555555555555
    return v


def _compact_bits(v: np.ndarray) -> np.ndarray:
    """Inverse of `_spread_bits`: gather the even bits of v."""
    v = v.astype(np.int64, copy=False) & 0x5555555555555555
    v = (v | (v >> 1)) & 0x3333333333333333
    v = (v | (v >> 2)) & 0x0F0F0F0F0F0F0F0F
    v = (v | (v >> 4)) & 0x00FF00FF00FF00FF
    v = (v | (v >> 8)) & 0x0000FFFF0000FFFF
    v = (v | (v >> 16)) & 0x00000000FFFFFFFF
    return v


def _isqrt(v: np.ndarray) -> np.ndarray:
    """floor(sqrt(v)) for non-negative int64, exact."""
    r = np.sqrt(v.astype(np.float64)).astype(np.int64)
    r = np.where(r * r > v, r - 1, r)
    r = np.where((r + 1) * (r + 1) <= v, r + 1, r)
    return r


# --------------------------------------------------------------------------- index conversions


@host_function
def nest2xyf(nside, ipix):
    """NESTED index -> (x, y, face), each int64 of ipix's shape."""
    nside = check_nside(nside)
    ipix = check_pixels(nside, ipix)
    npface = nside * nside
    face = ipix // npface
    p = ipix - face * npface
    return _compact_bits(p), _compact_bits(p >> 1), face


@host_function
def xyf2nest(nside, x, y, face):
    """(x, y, face) -> NESTED index; x, y in [0, nside), face in [0, 12)."""
    nside = check_nside(nside)
    x, y, face = (np.asarray(a, dtype=np.int64) for a in (x, y, face))
    _check_xyf(nside, x, y, face)
    return face * (nside * nside) + _spread_bits(x) + (_spread_bits(y) << 1)


def _check_xyf(nside, x, y, face):
    for name, a, hi in (("x", x, nside), ("y", y, nside), ("face", face, 12)):
        if a.size and (a.min() < 0 or a.max() >= hi):
            raise ValueError(f"{name} must lie in [0, {hi}) for nside={nside}, got {a.min()}..{a.max()}")


def _xyf2loc(nside, x, y, face):
    """Ring number `jr` (1 … 4nside−1), pixels in that ring's quarter `nr`, phi position `jp`
    (1-based within the ring) and the ring's half-pixel shift `kshift`."""
    jr = _JRLL[face] * nside - x - y - 1
    north = jr < nside
    south = jr > 3 * nside
    nr = np.where(north, jr, np.where(south, 4 * nside - jr, nside))
    kshift = np.where(north | south, 0, (jr - nside) & 1)
    jp = (_JPLL[face] * nr + x - y + 1 + kshift) // 2
    jp = np.where(jp > 4 * nside, jp - 4 * nside, jp)
    jp = np.where(jp < 1, jp + 4 * nside, jp)
    return jr, nr, jp, kshift


@host_function
def xyf2ring(nside, x, y, face):
    """(x, y, face) -> RING index."""
    nside = check_nside(nside)
    x, y, face = (np.asarray(a, dtype=np.int64) for a in (x, y, face))
    _check_xyf(nside, x, y, face)
    jr, nr, jp, _ = _xyf2loc(nside, x, y, face)
    ncap = 2 * nside * (nside - 1)
    npix = 12 * nside * nside
    first = np.where(jr < nside, 2 * nr * (nr - 1),
                     np.where(jr > 3 * nside, npix - 2 * nr * (nr + 1), ncap + (jr - nside) * 4 * nside))
    return first + jp - 1


@host_function
def ring2xyf(nside, ipix):
    """RING index -> (x, y, face)."""
    nside = check_nside(nside)
    ipix = check_pixels(nside, ipix)
    shape = ipix.shape
    ipix = ipix.reshape(-1)
    npix = 12 * nside * nside
    ncap = 2 * nside * (nside - 1)
    nl2 = 2 * nside
    iring = np.empty_like(ipix)
    iphi = np.empty_like(ipix)
    nr = np.empty_like(ipix)
    kshift = np.zeros_like(ipix)
    face = np.empty_like(ipix)

    # Each region is computed on its own pixels only: three times less work than evaluating every
    # formula everywhere and selecting afterwards.
    north = np.flatnonzero(ipix < ncap)
    p = ipix[north]
    ring = (1 + _isqrt(1 + 2 * p)) >> 1
    phi = p + 1 - 2 * ring * (ring - 1)
    iring[north], iphi[north], nr[north] = ring, phi, ring
    face[north] = (phi - 1) // ring

    south = np.flatnonzero(ipix >= npix - ncap)
    p = npix - ipix[south]
    ring = (1 + _isqrt(2 * p - 1)) >> 1
    phi = 4 * ring + 1 - (p - 2 * ring * (ring - 1))
    iring[south], iphi[south], nr[south] = 4 * nside - ring, phi, ring
    face[south] = 8 + (phi - 1) // ring

    belt = np.flatnonzero((ipix >= ncap) & (ipix < npix - ncap))
    p = ipix[belt] - ncap
    tmp = p // (4 * nside)
    ring = tmp + nside
    phi = p - tmp * 4 * nside + 1
    ire = tmp + 1
    irm = nl2 + 2 - ire
    ifm = (phi - ire // 2 + nside - 1) // nside
    ifp = (phi - irm // 2 + nside - 1) // nside
    iring[belt], iphi[belt], nr[belt] = ring, phi, nside
    kshift[belt] = (ring + nside) & 1
    face[belt] = np.where(ifp == ifm, ifp | 4, np.where(ifp < ifm, ifp, ifm + 8))

    irt = iring - _JRLL[face] * nside + 1
    ipt = 2 * iphi - _JPLL[face] * nr - kshift - 1
    ipt = np.where(ipt >= nl2, ipt - 8 * nside, ipt)
    return ((ipt - irt) >> 1).reshape(shape), ((-ipt - irt) >> 1).reshape(shape), face.reshape(shape)


def nest2ring(nside, ipix):
    """NESTED -> RING index."""
    return xyf2ring(nside, *nest2xyf(nside, ipix))


def ring2nest(nside, ipix):
    """RING -> NESTED index."""
    return xyf2nest(nside, *ring2xyf(nside, ipix))


# --------------------------------------------------------------------------- angles and vectors


def _pix2zphi(nside, ipix, nest):
    """Pixel centres as (z = cos θ, sin θ, φ), float64, computed without cancellation near poles."""
    x, y, face = nest2xyf(nside, ipix) if nest else ring2xyf(nside, ipix)
    jr, nr, jp, kshift = _xyf2loc(nside, x, y, face)
    npix = 12 * nside * nside
    polar_tmp = nr.astype(np.float64) ** 2 * (4.0 / npix)  # = 1 − |z| in the caps
    north = jr < nside
    south = jr > 3 * nside
    z = np.where(north, 1.0 - polar_tmp,
                 np.where(south, polar_tmp - 1.0, (2 * nside - jr) * (2.0 / (3.0 * nside))))
    sth = np.where(north | south, np.sqrt(polar_tmp * (2.0 - polar_tmp)), np.sqrt((1.0 - z) * (1.0 + z)))
    phi = (jp - (kshift + 1) * 0.5) * (0.5 * np.pi / nr)
    return z, sth, phi


@host_function
def pix2ang(nside, ipix, nest: bool = True, lonlat: bool = False):
    """Pixel centres -> (theta, phi) in radians (colatitude, longitude in [0, 2π)).

    With lonlat=True, returns (longitude, latitude) in degrees, as healpy does."""
    nside = check_nside(nside)
    z, sth, phi = _pix2zphi(nside, ipix, nest)
    theta = np.arctan2(sth, z)
    if lonlat:
        return np.degrees(phi), 90.0 - np.degrees(theta)
    return theta, phi


@host_function
def pix2vec(nside, ipix, nest: bool = True):
    """Pixel centres -> unit vectors (x, y, z), each float64 of ipix's shape."""
    nside = check_nside(nside)
    z, sth, phi = _pix2zphi(nside, ipix, nest)
    return sth * np.cos(phi), sth * np.sin(phi), z


def _zphi2pix(nside, z, sth, phi, nest):
    """Pixel containing (z, φ); `sth` = sin θ, used near the poles for precision."""
    za = np.abs(z)
    tt = np.mod(phi * (2.0 / np.pi), 4.0)  # in [0, 4)
    tt = np.where(tt >= 4.0, 0.0, tt)

    # Equatorial belt, |z| <= 2/3.
    t1 = nside * (0.5 + tt)
    t2 = nside * (z * 0.75)
    jp = np.floor(t1 - t2).astype(np.int64)
    jm = np.floor(t1 + t2).astype(np.int64)
    ifp = jp // nside
    ifm = jm // nside
    face_e = np.where(ifp == ifm, ifp | 4, np.where(ifp < ifm, ifp, ifm + 8))
    x_e = jm & (nside - 1)
    y_e = nside - (jp & (nside - 1)) - 1

    # Polar caps.
    ntt = np.minimum(tt.astype(np.int64), 3)
    tp = tt - ntt
    near_pole = za > 0.99
    with np.errstate(invalid="ignore", divide="ignore"):
        tmp = np.where(near_pole, nside * sth / np.sqrt((1.0 + za) / 3.0),
                       nside * np.sqrt(3.0 * np.maximum(1.0 - za, 0.0)))
    jp_p = np.minimum(np.floor(tp * tmp).astype(np.int64), nside - 1)
    jm_p = np.minimum(np.floor((1.0 - tp) * tmp).astype(np.int64), nside - 1)
    up = z >= 0
    face_p = np.where(up, ntt, ntt + 8)
    x_p = np.where(up, nside - jm_p - 1, jp_p)
    y_p = np.where(up, nside - jp_p - 1, jm_p)

    belt = za <= 2.0 / 3.0
    x = np.where(belt, x_e, x_p)
    y = np.where(belt, y_e, y_p)
    face = np.where(belt, face_e, face_p)
    return xyf2nest(nside, x, y, face) if nest else xyf2ring(nside, x, y, face)


def _check_finite(name, *arrays):
    for a in arrays:
        if a.size and not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be finite (got NaN or inf)")


@host_function
def ang2pix(nside, theta, phi, nest: bool = True, lonlat: bool = False):
    """(theta, phi) in radians -> pixel index containing that direction.

    With lonlat=True, the inputs are (longitude, latitude) in degrees."""
    nside = check_nside(nside)
    theta, phi = np.broadcast_arrays(np.asarray(theta, np.float64), np.asarray(phi, np.float64))
    if lonlat:
        theta, phi = np.radians(90.0 - phi), np.radians(theta)
    _check_finite("theta/phi", theta, phi)
    if theta.size and (theta.min() < 0 or theta.max() > np.pi):
        raise ValueError(f"theta must lie in [0, π], got {theta.min()}..{theta.max()}")
    return _zphi2pix(nside, np.cos(theta), np.sin(theta), phi, nest)


@host_function
def vec2pix(nside, x, y, z, nest: bool = True):
    """Direction vectors (need not be unit) -> pixel index."""
    nside = check_nside(nside)
    x, y, z = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (x, y, z)))
    _check_finite("vector", x, y, z)
    # Same rounding as healpy, so that directions exactly on a pixel boundary agree with it.
    norm = np.sqrt(x * x + y * y + z * z)
    if norm.size and norm.min() == 0:
        raise ValueError("vec2pix got a zero-length vector")
    inv = 1.0 / norm
    return _zphi2pix(nside, z * inv, np.sqrt(x * x + y * y) * inv, np.arctan2(y, x), nest)


@host_function
def ang2vec(theta, phi, lonlat: bool = False):
    """(theta, phi) -> unit vectors (x, y, z)."""
    theta, phi = np.broadcast_arrays(np.asarray(theta, np.float64), np.asarray(phi, np.float64))
    if lonlat:
        theta, phi = np.radians(90.0 - phi), np.radians(theta)
    st = np.sin(theta)
    return st * np.cos(phi), st * np.sin(phi), np.cos(theta)


@host_function
def vec2ang(x, y, z, lonlat: bool = False):
    """Direction vectors -> (theta, phi), phi in [0, 2π)."""
    x, y, z = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (x, y, z)))
    theta = np.arctan2(np.hypot(x, y), z)
    phi = np.mod(np.arctan2(y, x), 2 * np.pi)
    if lonlat:
        return np.degrees(phi), 90.0 - np.degrees(theta)
    return theta, phi


# --------------------------------------------------------------------------- neighbours

# Offsets of the 8 neighbours in (x, y), in healpy's order: SW, W, NW, N, NE, E, SE, S.
_NB_DX = np.array([-1, -1, 0, 1, 1, 1, 0, -1], dtype=np.int64)
_NB_DY = np.array([0, 1, 1, 1, 0, -1, -1, -1], dtype=np.int64)
# Face across each edge/corner, indexed by [4 + dx_face + 3·dy_face, face] (dx_face, dy_face in −1…1);
# −1 where no face lies there (the corners where only three faces meet).
_NB_FACE = np.array([
    [8, 9, 10, 11, -1, -1, -1, -1, 10, 11, 8, 9],   # x-, y-  (S)
    [5, 6, 7, 4, 8, 9, 10, 11, 9, 10, 11, 8],       # y-      (SE)
    [-1, -1, -1, -1, 5, 6, 7, 4, -1, -1, -1, -1],   # x+, y-  (E)
    [4, 5, 6, 7, 11, 8, 9, 10, 11, 8, 9, 10],       # x-      (SW)
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],         # same face
    [1, 2, 3, 0, 0, 1, 2, 3, 5, 6, 7, 4],           # x+      (NE)
    [-1, -1, -1, -1, 7, 4, 5, 6, -1, -1, -1, -1],   # x-, y+  (W)
    [3, 0, 1, 2, 3, 0, 1, 2, 4, 5, 6, 7],           # y+      (NW)
    [2, 3, 0, 1, -1, -1, -1, -1, 0, 1, 2, 3],       # x+, y+  (N)
], dtype=np.int64)
# How the target face's chart is oriented relative to the source's, per [direction, face row]
# (row = face // 4: north, equator, south). Bit 1: x -> nside−1−x; bit 2: y -> nside−1−y;
# bit 4: swap x and y (applied in that order).
_NB_SWAP = np.array([
    [0, 0, 3], [0, 0, 6], [0, 0, 0], [0, 0, 5], [0, 0, 0],
    [5, 0, 0], [0, 0, 0], [6, 0, 0], [3, 0, 0],
], dtype=np.int64)


def _neighbour_xyf(nside, x, y, face):
    """The 8 neighbours of (x, y, face) as (x, y, face) arrays of shape (8, …); face −1 where none."""
    nx = x[None] + _NB_DX.reshape((8,) + (1,) * x.ndim)
    ny = y[None] + _NB_DY.reshape((8,) + (1,) * y.ndim)
    dxf = np.where(nx < 0, -1, np.where(nx >= nside, 1, 0))
    dyf = np.where(ny < 0, -1, np.where(ny >= nside, 1, 0))
    nx = nx - dxf * nside
    ny = ny - dyf * nside
    direction = 4 + dxf + 3 * dyf
    fb = np.broadcast_to(face[None], direction.shape)
    nface = _NB_FACE[direction, fb]
    bits = _NB_SWAP[direction, fb // 4]
    nx = np.where(bits & 1, nside - nx - 1, nx)
    ny = np.where(bits & 2, nside - ny - 1, ny)
    swap = (bits & 4) != 0
    nx, ny = np.where(swap, ny, nx), np.where(swap, nx, ny)
    return nx, ny, nface


@host_function
def get_all_neighbours(nside, ipix, nest: bool = True):
    """The 8 neighbours of each pixel, shape (8,) + ipix.shape, in healpy's order
    SW, W, NW, N, NE, E, SE, S; −1 where a neighbour does not exist (8 corner pixels)."""
    nside = check_nside(nside)
    x, y, face = nest2xyf(nside, ipix) if nest else ring2xyf(nside, ipix)
    nx, ny, nface = _neighbour_xyf(nside, np.asarray(x), np.asarray(y), np.asarray(face))
    ok = nface >= 0
    safe = np.where(ok, nface, 0)
    out = xyf2nest(nside, nx, ny, safe) if nest else xyf2ring(nside, nx, ny, safe)
    return np.where(ok, out, -1)
