"""Face charts and their transitions: pixel coordinates beyond a face's edge.

A face's chart gives its pixels integer coordinates (x, y) in [0, nside)², x towards the
north-east, y towards the north-west. Extending the chart across an edge or a corner reaches the
neighbouring face, whose own chart may be rotated or mirrored relative to this one (only around
the poles, where four faces meet). The face-to-face tables live in `_pixelfunc` (`_NB_FACE`,
`_NB_SWAP`); this module only applies them to offsets larger than one pixel.
"""

from __future__ import annotations

import numpy as np

from ._pixelfunc import _NB_FACE, _NB_SWAP, check_nside

__all__ = ["extended_xyf"]


def extended_xyf(nside: int, x, y, face):
    """Map chart coordinates of `face`, possibly outside [0, nside), onto the face that lies there.

    x, y: int arrays with −nside ≤ x, y < 2·nside (at most one face away in each axis).
    Returns (x', y', face') with x', y' in [0, nside) in face' 's own chart, and face' = −1 where
    no face lies there (beyond the corners where only three faces meet; x', y' are then
    meaningless). Transitions are rigid (rotations and mirrors of the square), so a step along an
    axis in the source chart is a step between HEALPix neighbours in the target face.
    """
    nside = check_nside(nside)
    x, y, face = (np.asarray(a, dtype=np.int64) for a in (x, y, face))
    x, y, face = np.broadcast_arrays(x, y, face)
    for name, a in (("x", x), ("y", y)):
        if a.size and (a.min() < -nside or a.max() >= 2 * nside):
            raise ValueError(f"{name} must lie in [-nside, 2·nside) = [{-nside}, {2 * nside}), "
                             f"got {a.min()}..{a.max()}")
    dxf = np.where(x < 0, -1, np.where(x >= nside, 1, 0))
    dyf = np.where(y < 0, -1, np.where(y >= nside, 1, 0))
    lx = x - dxf * nside
    ly = y - dyf * nside
    direction = 4 + dxf + 3 * dyf
    target = _NB_FACE[direction, face]
    bits = _NB_SWAP[direction, face // 4]
    lx = np.where(bits & 1, nside - 1 - lx, lx)
    ly = np.where(bits & 2, nside - 1 - ly, ly)
    swap = (bits & 4) != 0
    return np.where(swap, ly, lx), np.where(swap, lx, ly), target
