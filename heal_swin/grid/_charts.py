"""Face charts and their transitions: pixel coordinates beyond a face's edge.

A face's chart gives its pixels integer coordinates (x, y) in [0, nside)², x towards the
north-east, y towards the north-west. Extending the chart across an edge or a corner reaches the
neighbouring face, whose own chart may be rotated by a multiple of 90° relative to this one (never
mirrored; rotated only around the poles, where four faces meet). The face-to-face tables live in
`_pixelfunc` (`_NB_FACE`, `_NB_SWAP`); this module applies them to offsets larger than one pixel
and states them as chart transitions (neighbour face, quarter-turns), the data of a gauge.
"""

from __future__ import annotations

import numpy as np

from ._pixelfunc import _NB_FACE, _NB_SWAP, check_nside

__all__ = ["chart_neighbour", "extended_xyf", "face_transitions", "turn_xy"]


def extended_xyf(nside: int, x, y, face):
    """Map chart coordinates of `face`, possibly outside [0, nside), onto the face that lies there.

    x, y: int arrays with −nside ≤ x, y < 2·nside (at most one face away in each axis).
    Returns (x', y', face') with x', y' in [0, nside) in face' 's own chart, and face' = −1 where
    no face lies there (beyond the corners where only three faces meet; x', y' are then
    meaningless). Transitions are rigid (rotations of the square by multiples of 90°, see
    `face_transitions`), so a step along an axis in the source chart is a step between HEALPix
    neighbours in the target face.
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


# Counter-clockwise quarter-turns of each `_NB_SWAP` code: a chart vector (vx, vy) of the source
# becomes R^k (vx, vy) in the target, R = [[0, -1], [1, 0]]. Code 0: identity; 3 (flip x and y): a
# half turn; 5 (flip x, then swap): (vx, vy) -> (vy, -vx), three turns; 6 (flip y, then swap):
# (vx, vy) -> (-vy, vx), one turn. No code is a mirror (1, 2, 4 and 7 never occur).
_SWAP_TURNS = {0: 0, 3: 2, 5: 3, 6: 1}


def _transition_tables():
    face = np.empty((12, 3, 3), dtype=np.int64)
    turns = np.empty((12, 3, 3), dtype=np.int64)
    for f in range(12):
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                direction = 4 + dx + 3 * dy
                code = int(_NB_SWAP[direction, f // 4])
                if code not in _SWAP_TURNS:
                    raise AssertionError(f"_NB_SWAP[{direction}, {f // 4}]={code} is not a rotation")
                face[f, dx + 1, dy + 1] = _NB_FACE[direction, f]
                turns[f, dx + 1, dy + 1] = _SWAP_TURNS[code] if face[f, dx + 1, dy + 1] >= 0 else -1
    face.flags.writeable = turns.flags.writeable = False
    return face, turns


_TRANSITION_FACE, _TRANSITION_TURNS = _transition_tables()


def face_transitions():
    """The chart transitions of the 12 faces: (neighbour, turns), int64 arrays of shape (12, 3, 3).

    neighbour[f, dx + 1, dy + 1] is the face that lies beyond face f's chart in the direction
    (dx, dy) ∈ {−1, 0, 1}² (dx along x = north-east, dy along y = north-west; (1, 0) is the NE
    edge, (1, 1) the north corner), −1 where none lies there (the 8 vertices where three faces
    meet). turns[f, dx + 1, dy + 1] = k ∈ {0, 1, 2, 3}: a vector of f's chart is R^k of it in the
    neighbour's chart (k counter-clockwise quarter-turns), −1 where there is no neighbour.
    Transitions are rotations only. Read-only arrays.
    """
    return _TRANSITION_FACE, _TRANSITION_TURNS


def chart_neighbour(face, dx, dy):
    """Vectorised `face_transitions` lookup: (neighbour face, quarter-turns k) of `face` in the
    direction (dx, dy) ∈ {−1, 0, 1}²; (−1, −1) where no face lies there. Scalars in, scalars out."""
    face, dx, dy = (np.asarray(a, dtype=np.int64) for a in (face, dx, dy))
    if face.size and (face.min() < 0 or face.max() > 11):
        raise ValueError(f"face must lie in 0–11, got {face.min()}..{face.max()}")
    for name, d in (("dx", dx), ("dy", dy)):
        if d.size and (d.min() < -1 or d.max() > 1):
            raise ValueError(f"{name} must lie in {{-1, 0, 1}}, got {d.min()}..{d.max()}")
    nb, k = _TRANSITION_FACE[face, dx + 1, dy + 1], _TRANSITION_TURNS[face, dx + 1, dy + 1]
    if nb.ndim == 0:
        return int(nb), int(k)
    return nb, k


def turn_xy(nside: int, x, y, k):
    """Chart coordinates after turning the chart k quarter-turns counter-clockwise about the face
    centre: (x, y) -> R^k (x − c, y − c) + c, c = (nside − 1) / 2. One turn: (x, y) -> (nside − 1 − y, x).
    Works for coordinates outside [0, nside) too (padding cells map to padding cells)."""
    x, y, k = (np.asarray(a, dtype=np.int64) for a in (x, y, k))
    x, y, k = np.broadcast_arrays(x, y, k)
    k = np.mod(k, 4)
    m = nside - 1
    x1, y1 = m - y, x          # one turn
    x2, y2 = m - x, m - y      # two
    x3, y3 = y, m - x          # three
    ox = np.choose(k, [x, x1, x2, x3])
    oy = np.choose(k, [y, y1, y2, y3])
    return ox, oy
