"""Index tables for window attention on the nested HEALPix sequence.

A window of `window_size` = 4^k consecutive NESTED tokens is a √ws × √ws square of one face
(when ws ≤ nside²). This module builds, as pure vectorised functions memoised by their arguments:

- the 2-D layout of a window and the relative-position index of a bias table over it;
- shift tables: a permutation of the token sequence applied before window attention and undone
  after it, with a label per slot of the shifted sequence (two tokens of a window may attend to
  each other only when their labels agree).

Three shift strategies:

- `nest_roll_shift`: roll the nested sequence (the original HEAL-SWIN's `nest_roll`).
- `ring_shift`: move each pixel along its iso-latitude ring (the original's `ring_shift`),
  generalised to any set of faces and identical to the original on faces 0–7.
- `grid_shift`: half a window along both axes of the face charts, seam-exact. Shifted windows
  are centred on the corners of the regular windows; a window that straddles a face edge or
  corner takes the geometrically adjacent pixels of the neighbouring faces in the owner face's
  chart orientation. Only windows that are incomplete (at the 8 corners where three faces meet,
  and along the border of a partial set of faces) are packed together, each piece with its own
  label.

`symmetric_grid_shift` is `grid_shift` with a layout that commutes with the grid's 90° polar
turns (`polar_turn`): windows across seams laid out by a turn-invariant rule, pieces moved by
translations only.

All returned arrays are read-only; tables are permutations checked against their inverses.
"""

from __future__ import annotations

import functools
import heapq
from typing import NamedTuple

import numpy as np

from ._charts import extended_xyf
from ._faces import base_pixel_indices, check_base_pixels
from ._pixelfunc import _compact_bits, _spread_bits, check_nside, nest2ring, ring2nest, xyf2nest

__all__ = [
    "ShiftTable", "is_valid_window_size", "check_window_size", "window_layout",
    "relative_position_index", "window_mask", "invert_permutation", "check_permutation",
    "nest_roll_shift", "ring_shift", "grid_shift", "original_grid_shift", "SHIFT_STRATEGIES",
    "symmetric_grid_shift", "polar_turn",
]

SHIFT_STRATEGIES = ("nest_roll", "ring_shift", "grid_shift", "nest_grid_shift")


class ShiftTable(NamedTuple):
    """A shift of the token sequence: `shifted = x[..., index, :]`, `x = shifted[..., inverse, :]`.

    index: int64 (N,), the source position of every slot of the shifted sequence.
    inverse: int64 (N,), the slot that holds every source position.
    labels: int32 (N,), per slot; tokens of one window attend to each other only when their
        labels agree (0 everywhere means no mask).
    """

    index: np.ndarray
    inverse: np.ndarray
    labels: np.ndarray


def _frozen(*arrays):
    for a in arrays:
        a.flags.writeable = False
    return arrays if len(arrays) > 1 else arrays[0]


# --------------------------------------------------------------------------- windows


def is_valid_window_size(window_size) -> bool:
    """True when `window_size` is a power of 4 (a square of nested pixels), 1 included."""
    try:
        n = int(window_size)
    except (TypeError, ValueError):
        return False
    if n != window_size or isinstance(window_size, bool) or n < 1:
        return False
    return (n & (n - 1)) == 0 and (n.bit_length() - 1) % 2 == 0


def check_window_size(window_size, name: str = "window_size") -> int:
    """Return the side √window_size, or raise naming the value and the rule."""
    if not is_valid_window_size(window_size):
        raise ValueError(f"{name}={window_size!r} must be a power of 4 (square nested window)")
    return 1 << ((int(window_size).bit_length() - 1) // 2)


@functools.lru_cache(maxsize=None)
def window_layout(window_size: int):
    """(row, col) of every nested slot of a window in the original HEAL-SWIN's 2-D layout.

    Children 0, 1, 2, 3 of a parent sit at (row, col) = (0, 1), (0, 0), (1, 1), (1, 0) of its
    2 × 2 block, recursively: row = the chart's y, col = side − 1 − the chart's x.
    """
    side = check_window_size(window_size)
    slot = np.arange(window_size, dtype=np.int64)
    return _frozen(_compact_bits(slot >> 1), side - 1 - _compact_bits(slot))


@functools.lru_cache(maxsize=None)
def relative_position_index(window_size: int, table_window_size: int | None = None) -> np.ndarray:
    """Index (ws, ws) into a flat bias table of ((2·side − 1)², heads) rows, side = √table_ws.

    The row for two tokens with layout offset (dr, dc) is (dr + side − 1)·(2·side − 1) +
    (dc + side − 1), as in the original. A window smaller than the table's (a stage with fewer
    tokens than the configured window) indexes the table's centre.
    """
    side = check_window_size(table_window_size or window_size, "table_window_size")
    if check_window_size(window_size) > side:
        raise ValueError(f"window_size={window_size} exceeds the bias table's window "
                         f"{table_window_size}")
    row, col = window_layout(window_size)
    dr = row[:, None] - row[None, :] + side - 1
    dc = col[:, None] - col[None, :] + side - 1
    return _frozen(dr * (2 * side - 1) + dc)


def window_mask(labels: np.ndarray, window_size: int) -> np.ndarray:
    """Labels per slot (N,) -> bool (N/ws, ws, ws), True where two tokens may attend."""
    lab = np.asarray(labels).reshape(-1, window_size)
    return lab[:, :, None] == lab[:, None, :]


# --------------------------------------------------------------------------- permutations


def invert_permutation(index: np.ndarray) -> np.ndarray:
    inverse = np.empty_like(index)
    inverse[index] = np.arange(index.size, dtype=index.dtype)
    return inverse


def check_permutation(index: np.ndarray, inverse: np.ndarray, what: str) -> None:
    """Raise RuntimeError unless `index` is a permutation of 0 … N−1 and `inverse` undoes it."""
    n = index.size
    seen = np.zeros(n, dtype=bool)
    ok = index.min(initial=0) >= 0 and index.max(initial=-1) < n
    if ok:
        seen[index] = True
        ok = bool(seen.all())
    ok = ok and inverse.size == n and np.array_equal(index[inverse], np.arange(n))
    if not ok:
        raise RuntimeError(f"{what}: the shift is not a permutation of {n} tokens (a bug)")


def _table(index, labels, what) -> ShiftTable:
    index = np.ascontiguousarray(index, dtype=np.int64)
    inverse = invert_permutation(index)
    check_permutation(index, inverse, what)
    return ShiftTable(*_frozen(index, inverse, np.ascontiguousarray(labels, dtype=np.int32)))


@functools.lru_cache(maxsize=64)
def nest_roll_shift(n_tokens: int, window_size: int, shift_size: int) -> ShiftTable:
    """Roll the nested sequence by −shift_size (the original's `nest_roll`).

    Labels: 0 on [0, N−ws), 1 on [N−ws, N−shift), 2 on [N−shift, N), so the last window keeps
    the wrapped-around tokens apart from the rest.
    """
    if not 0 < shift_size <= window_size <= n_tokens:
        raise ValueError(f"nest_roll needs 0 < shift_size={shift_size} ≤ window_size={window_size}"
                         f" ≤ tokens={n_tokens}")
    pos = np.arange(n_tokens, dtype=np.int64)
    labels = np.where(pos < n_tokens - window_size, 0, np.where(pos < n_tokens - shift_size, 1, 2))
    return _table((pos + shift_size) % n_tokens, labels, f"nest_roll(N={n_tokens}, shift={shift_size})")


# Where the original fills the pixels of an equatorial face whose ring predecessor lies outside
# the used faces: from the pixels that the face to its west lost.
_RING_DONOR = {4: 7, 5: 4, 6: 5, 7: 6}


@functools.lru_cache(maxsize=64)
def ring_shift(nside: int, base_pixels, shift_size: int) -> ShiftTable:
    """Move every pixel `shift_size` steps along the RING order of the full sphere.

    Slot p of the shifted map takes the pixel whose RING index is `shift_size` below p's (so a
    ring's first pixels take the previous ring's last ones). Where that pixel lies outside the
    used faces, the slot gets label (its face + 1) and is filled with a pixel that lost its own
    slot: first, for an equatorial face, from the face to its west; then all remaining ones in
    ascending order. On faces 0–7 this is exactly the original's table; it works for any set.
    """
    nside = check_nside(nside)
    faces = check_base_pixels(base_pixels)
    npface = nside * nside
    npix = 12 * npface
    glob = base_pixel_indices(nside, faces)
    n = glob.size
    lookup = np.full(12, -1, dtype=np.int64)
    lookup[list(faces)] = np.arange(len(faces))

    src = ring2nest(nside, (nest2ring(nside, glob) - int(shift_size)) % npix)
    slot_of_src = lookup[src // npface]
    index = np.where(slot_of_src >= 0, slot_of_src * npface + src % npface, -1)
    outside = index < 0
    pos_face = glob // npface
    labels = np.where(outside, pos_face + 1, 0)

    used = np.zeros(n, dtype=bool)
    used[index[~outside]] = True
    lost = {f: np.flatnonzero(~used[s * npface:(s + 1) * npface]) + s * npface
            for s, f in enumerate(faces)}

    taken = {}
    for f in faces:
        donor = _RING_DONOR.get(f)
        if donor is None or donor not in lost:
            continue
        slots = np.flatnonzero(outside & (pos_face == f))
        k = min(slots.size, lost[donor].size)
        index[slots[:k]] = lost[donor][:k]
        outside[slots[:k]] = False
        taken[donor] = k
    pool = [lost[d][k:] for d, k in taken.items()] + [lost[f] for f in faces if f not in taken]
    pool = np.concatenate(pool) if pool else np.empty(0, np.int64)
    rest = np.flatnonzero(outside)
    if rest.size != pool.size:  # cannot happen for a permutation of the sphere; kept as a guard
        raise RuntimeError(f"ring_shift(nside={nside}, faces={faces}): {rest.size} slots for "
                           f"{pool.size} pixels (a bug)")
    index[rest] = pool
    return _table(index, labels, f"ring_shift(nside={nside}, faces={faces}, shift={shift_size})")


# --------------------------------------------------------------------------- grid shift

# The 8 symmetries of the square, as maps of window coordinates (u, v) with side s.
_DIHEDRAL = (
    lambda u, v, s: (u, v), lambda u, v, s: (s - 1 - u, v), lambda u, v, s: (u, s - 1 - v),
    lambda u, v, s: (s - 1 - u, s - 1 - v), lambda u, v, s: (v, u), lambda u, v, s: (s - 1 - v, u),
    lambda u, v, s: (v, s - 1 - u), lambda u, v, s: (s - 1 - v, s - 1 - u),
)
_TRANSLATIONS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1))


def _placements(quads: tuple[tuple[int, int], ...]):
    """Rigid moves (dihedral d, translation t) that keep a set of quadrants inside the window,
    untransformed first; yields (d, t, occupied-bits)."""
    seen = set()
    for d, fn in enumerate(_DIHEDRAL):
        moved = [fn(qu, qv, 2) for qu, qv in quads]
        for tu, tv in _TRANSLATIONS:
            qs = [(qu + tu, qv + tv) for qu, qv in moved]
            if all(0 <= a <= 1 and 0 <= b <= 1 for a, b in qs):
                bits = sum(1 << (a + 2 * b) for a, b in qs)
                if bits not in seen:
                    seen.add(bits)
                    yield d, (tu, tv), bits


def _corner_windows(nside: int, faces: tuple[int, ...], window_size: int, what: str, symmetric: bool = False):
    """The shifted windows of `grid_shift` and `symmetric_grid_shift`: one per corner of the
    regular window grid on the sphere, laid out in the chart of its owner face.

    Returns (src, quad_valid, owner, kx, ky): src int64 (W, ws), the local token of every window
    slot (−1 where no used face lies); quad_valid bool (W, 4, ws/4), per quadrant; owner, kx, ky
    int64 (W,), the owner face and the corner's position in its window grid. The owner is the
    lowest face at the corner, or with `symmetric`, the first by (ring, ky, kx, face).
    """
    side = check_window_size(window_size)
    if not 2 <= side <= nside:
        raise ValueError(f"grid_shift needs a window inside one face and at least 2 × 2: "
                         f"window_size={window_size} with nside={nside} (need 4 ≤ ws ≤ nside²)")
    half, m, npface = side // 2, nside // side, nside * nside
    quarter = window_size // 4
    slot = np.arange(window_size, dtype=np.int64)
    u, v = _compact_bits(slot), _compact_bits(slot >> 1)

    # Candidate windows: every face × every corner (kx, ky) ∈ [0, m]² of its window grid.
    k = np.arange(m + 1, dtype=np.int64)
    cf, cky, ckx = (a.ravel() for a in np.meshgrid(np.asarray(faces, np.int64), k, k, indexing="ij"))
    if symmetric:
        # A polar turn moves face f to the next face of its ring and keeps chart coordinates, so
        # it keeps (ring, ky, kx): the owner it picks for a turned window is the turned owner.
        # Only the pole windows, which a turn maps onto themselves, tie on it (broken by face).
        order = np.lexsort((cf, ckx, cky, cf // 4))
        cf, cky, ckx = cf[order], cky[order], ckx[order]
    sx, sy, sf = extended_xyf(nside, ckx[:, None] * side - half + u, cky[:, None] * side - half + v,
                              cf[:, None])
    glob = np.where(sf >= 0, xyf2nest(nside, sx, sy, np.maximum(sf, 0)), -1)

    # One window per corner on the sphere: the 4 (or 3) pixels around a corner identify it.
    centre = _spread_bits(np.array([half - 1, half, half - 1, half])) \
        + (_spread_bits(np.array([half - 1, half - 1, half, half])) << 1)
    _, first = np.unique(np.sort(glob[:, centre], axis=1), axis=0, return_index=True)
    keep = np.sort(first)
    glob = glob[keep]

    lookup = np.full(12, -1, dtype=np.int64)
    lookup[list(faces)] = np.arange(len(faces))
    slot_face = np.where(glob >= 0, lookup[np.maximum(glob, 0) // npface], -1)
    src = np.where(slot_face >= 0, slot_face * npface + glob % npface, -1)
    quad_valid = (src >= 0).reshape(len(src), 4, quarter)
    if not np.array_equal(quad_valid.all(-1), quad_valid.any(-1)):
        raise RuntimeError(f"{what}: a window quadrant straddles a face edge (a bug)")
    return src, quad_valid, cf[keep], ckx[keep], cky[keep]


@functools.lru_cache(maxsize=64)
def grid_shift(nside: int, base_pixels, window_size: int) -> ShiftTable:
    """Shift by half a window along both chart axes, seam-exact, on any set of faces.

    Every corner of the regular window grid (on the sphere, not per face) becomes the centre of
    a shifted window, laid out in the chart of the lowest face that contains that corner and
    extended across its edges with the neighbouring faces' pixels (rotated where the charts
    are). Complete windows keep label 0. Incomplete ones (where only three faces meet, or a
    neighbour is not among `base_pixels`) are packed into the remaining windows by rigid moves
    of whole quadrants, each piece with its own label; the pixels of a piece keep their 2-D
    adjacency. Needs 2 ≤ √window_size ≤ nside. Not equivariant to the grid's polar turns (see
    `symmetric_grid_shift`).
    """
    nside = check_nside(nside)
    faces = check_base_pixels(base_pixels)
    side = check_window_size(window_size)
    what = f"grid_shift(nside={nside}, faces={faces}, window_size={window_size})"
    src, quad_valid, _, _, _ = _corner_windows(nside, faces, window_size, what)
    half, npface = side // 2, nside * nside
    slot = np.arange(window_size, dtype=np.int64)
    u, v = _compact_bits(slot), _compact_bits(slot >> 1)
    full = quad_valid.all((1, 2))
    n_tokens = len(faces) * npface
    n_bins = n_tokens // window_size - int(full.sum())

    bin_src = np.full((n_bins, window_size), -1, dtype=np.int64)
    bin_lab = np.zeros((n_bins, window_size), dtype=np.int64)
    occupied = [0] * n_bins
    # Open bins by occupied-quadrant pattern (1 … 14), each a min-heap of bin numbers.
    by_pattern: dict[int, list[int]] = {p: [] for p in range(1, 15)}
    opened = 0
    label = 0

    def put(b, row, quads, d, t, lab):
        for qu, qv in quads:
            sel = (u // half == qu) & (v // half == qv)
            uu, vv = _DIHEDRAL[d](u[sel], v[sel], side)
            dst = _spread_bits(uu + t[0] * half) + (_spread_bits(vv + t[1] * half) << 1)
            bin_src[b, dst] = src[row, sel]
            bin_lab[b, dst] = lab

    def occupy(b, bits):
        occupied[b] |= bits
        if occupied[b] != 15:
            heapq.heappush(by_pattern[occupied[b]], b)

    partial = np.flatnonzero(~full)
    counts = quad_valid[partial].all(-1).sum(1)
    deferred = []
    for row in partial[np.argsort(-counts, kind="stable")]:
        qmask = quad_valid[row].all(-1)
        quads = tuple((q % 2, q // 2) for q in range(4) if qmask[q])
        label += 1
        best = None
        for d, t, bits in _placements(quads):
            for pattern, heap in by_pattern.items():
                if heap and not pattern & bits and (best is None or heap[0] < best[0]):
                    best = (heap[0], pattern, d, t, bits)
            if best is not None:
                break
        if best is not None:
            b, pattern, d, t, bits = best
            heapq.heappop(by_pattern[pattern])
            put(b, row, quads, d, t, label)
            occupy(b, bits)
        elif opened < n_bins:
            put(opened, row, quads, 0, (0, 0), label)
            occupy(opened, sum(1 << (qu + 2 * qv) for qu, qv in quads))
            opened += 1
        else:
            deferred.append((row, quads))
    # Pieces that fit nowhere whole go quadrant by quadrant into the free quadrants, translated.
    free = [(b, q) for b in range(n_bins) for q in range(4) if not occupied[b] >> q & 1]
    pieces = [(row, qd) for row, quads in deferred for qd in quads]
    if len(free) != len(pieces):
        raise RuntimeError(f"{what}: {len(pieces)} quadrants for {len(free)} free places (a bug)")
    for (b, q), (row, (qu, qv)) in zip(free, pieces):
        label += 1
        put(b, row, ((qu, qv),), 0, (q % 2 - qu, q // 2 - qv), label)

    index = np.concatenate([src[full].ravel(), bin_src.ravel()])
    labels = np.concatenate([np.zeros(int(full.sum()) * window_size, np.int64), bin_lab.ravel()])
    return _table(index, labels, what)


# --------------------------------------------------------------------------- polar-turn symmetric grid shift


def _closed_under_turns(faces: tuple[int, ...]) -> bool:
    return all(4 * (f // 4) + (f + 1) % 4 in faces for f in faces)


@functools.lru_cache(maxsize=64)
def polar_turn(nside: int, base_pixels, turns: int = 1) -> np.ndarray:
    """The local NESTED token map of the grid's turn by turns·90° about the polar axis.

    The turn moves face f to face 4·(f // 4) + (f + turns) mod 4 (the next face of its ring, as
    a rotation by +90° about z does) and keeps the nested index inside the face, so
    `(g·x)[..., p] = x[..., index[p]]`. Needs a set of faces that the turn maps onto itself
    (each ring's four faces all or none). Returns int64 (N,), read-only.
    """
    nside = check_nside(nside)
    faces = check_base_pixels(base_pixels)
    if not _closed_under_turns(faces):
        raise ValueError(f"base_pixels={faces}: a polar turn maps these faces outside the set (use "
                         "each ring's four faces, 0–3, 4–7, 8–11, all or none)")
    npface = nside * nside
    lookup = np.full(12, -1, dtype=np.int64)
    lookup[list(faces)] = np.arange(len(faces))
    source = np.array([4 * (f // 4) + (f - turns) % 4 for f in faces], dtype=np.int64)
    index = (lookup[source][:, None] * npface + np.arange(npface, dtype=np.int64)).ravel()
    return _frozen(index)


def _split_piece(bits: int) -> tuple[int, ...]:
    """A piece's quadrants (bits q = qu + 2·qv) in two parts: an L of three keeps the domino of
    its corner quadrant (the one beside both others) and the lower-numbered arm; a domino or a
    diagonal pair falls into single quadrants."""
    quads = [q for q in range(4) if bits >> q & 1]
    if len(quads) == 3:
        corner = next(q for q in quads if all(bin(q ^ r).count("1") == 1 for r in quads if r != q))
        arm = min(q for q in quads if q != corner)
        return (1 << corner) | (1 << arm), bits & ~((1 << corner) | (1 << arm))
    return tuple(1 << q for q in quads)


def _translations(bits: int):
    """(moved bits, (tu, tv)) for every translation by whole quadrants that keeps `bits` inside
    the 2 × 2 window, the untranslated one first."""
    for tu, tv in _TRANSLATIONS:
        moved = 0
        for q in range(4):
            if bits >> q & 1:
                qu, qv = q % 2 + tu, q // 2 + tv
                if not (0 <= qu <= 1 and 0 <= qv <= 1):
                    break
                moved |= 1 << (qu + 2 * qv)
        else:
            yield moved, (tu, tv)


@functools.lru_cache(maxsize=64)
def symmetric_grid_shift(nside: int, base_pixels, window_size: int) -> ShiftTable:
    """`grid_shift` with a layout that commutes with the grid's 90° polar turns.

    The same windows (half a window along both chart axes, seam-exact), but:

    - a window across a seam is laid out in the chart of its first face by (ring, corner row,
      corner column, face) instead of the lowest face, a rule that the turn (which moves every
      face to the next of its ring and keeps chart coordinates) carries along; the lowest-face
      rule does not where a ring wraps (the seams 3|0, 11|8 and the vertices beside them);
    - the pieces of incomplete windows move by translations of whole quadrants only, never turned
      or mirrored, so the 2-D offsets between their tokens are those of the chart; a piece that
      does not fit whole is split (an L into a domino and a quadrant, a domino into quadrants) in
      the same way as every piece of its class (ring, corner, quadrants), the class that a turn
      maps onto itself; each part gets its own label.

    On a set of faces that the turn maps onto itself (`polar_turn`), every window and every
    piece then maps onto one with the same offsets between its tokens, except the complete
    windows around a pole, which map onto themselves turned by 90° about their centre: a bias
    over offsets is equivariant there only when averaged over the four quarter turns.
    Needs 2 ≤ √window_size ≤ nside.
    """
    nside = check_nside(nside)
    faces = check_base_pixels(base_pixels)
    side = check_window_size(window_size)
    what = f"symmetric_grid_shift(nside={nside}, faces={faces}, window_size={window_size})"
    src, quad_valid, owner, kx, ky = _corner_windows(nside, faces, window_size, what, symmetric=True)
    half, npface = side // 2, nside * nside
    slot = np.arange(window_size, dtype=np.int64)
    u, v = _compact_bits(slot), _compact_bits(slot >> 1)
    quad_of_slot = u // half + 2 * (v // half)
    full = quad_valid.all((1, 2))
    n_bins = len(faces) * npface // window_size - int(full.sum())

    # Classes of pieces: (ring, ky, kx, quadrants); a turn maps each onto itself. Larger pieces
    # first; a class goes in whole or is split as a whole, so turned pieces stay alike.
    classes: dict[tuple, list[int]] = {}
    for row in np.flatnonzero(~full):
        bits = int(sum(1 << q for q in range(4) if quad_valid[row, q, 0]))
        classes.setdefault((int(owner[row]) // 4, int(ky[row]), int(kx[row]), bits), []).append(int(row))
    queue = [(-bin(key[3]).count("1"), key, key[3]) for key in classes]
    heapq.heapify(queue)

    occupied = [0] * n_bins
    placed: list[tuple[int, int, int, tuple[int, int]]] = []  # (bin, row, part bits, translation)
    while queue:
        _, key, part = heapq.heappop(queue)
        trial, moves = list(occupied), []
        for row in classes[key]:
            # the fullest bin that takes the part: keeps empty bins for the larger parts to come
            fits = [(-bin(trial[b]).count("1"), b, moved, t) for moved, t in _translations(part)
                    for b in range(n_bins) if not trial[b] & moved]
            if not fits:
                break
            _, b, moved, t = min(fits)
            trial[b] |= moved
            moves.append((b, row, part, t))
        else:
            occupied = trial
            placed += moves
            continue
        if bin(part).count("1") == 1:  # cannot happen: free quadrants = quadrants to place
            raise RuntimeError(f"{what}: no free quadrant for a piece (a bug)")
        for sub in _split_piece(part):
            heapq.heappush(queue, (-bin(sub).count("1"), key, sub))

    bin_src = np.full((n_bins, window_size), -1, dtype=np.int64)
    bin_lab = np.zeros((n_bins, window_size), dtype=np.int64)
    for label, (b, row, part, (tu, tv)) in enumerate(placed, start=1):
        sel = (part >> quad_of_slot & 1).astype(bool)
        dst = _spread_bits(u[sel] + tu * half) + (_spread_bits(v[sel] + tv * half) << 1)
        bin_src[b, dst] = src[row, sel]
        bin_lab[b, dst] = label
    if (bin_src < 0).any():
        raise RuntimeError(f"{what}: {int((bin_src < 0).sum())} slots left empty (a bug)")
    index = np.concatenate([src[full].ravel(), bin_src.ravel()])
    labels = np.concatenate([np.zeros(int(full.sum()) * window_size, np.int64), bin_lab.ravel()])
    return _table(index, labels, what)


# --------------------------------------------------------------------------- the original's grid shift

# Window-unit jumps the original takes at face boundaries, per face (its first direction; the
# second direction always jumps 3 faces).
_ORIGINAL_FACE_JUMP = (2, 2, 2, 6, 3, 3, 3, 3)


@functools.lru_cache(maxsize=64)
def original_grid_shift(nside: int, window_size: int) -> ShiftTable:
    """The original HEAL-SWIN's `nest_grid_shift` on faces 0–7, reproduced for its checkpoints.

    Half a window along both face axes in two passes over the nested sequence, crossing face
    boundaries by a fixed table of jumps (so the seams are not geometrically exact, unlike
    `grid_shift`), with the original's mask labels. Needs at least one window per face.
    """
    nside = check_nside(nside)
    side = check_window_size(window_size)
    per_face = nside * nside // window_size
    if per_face < 1 or side < 2:
        raise ValueError(f"nest_grid_shift needs 4 ≤ window_size={window_size} ≤ nside²={nside * nside}")
    top = (per_face.bit_length() - 1) // 2  # log4 of the windows per face
    ws, hws, qws = window_size, window_size // 2, window_size // 4
    n = 8 * nside * nside
    nw = n // ws

    def level(w):  # the largest e ≤ top with 4^e dividing w
        e = top
        while w % (4 ** e):
            e -= 1
        return e

    def jump1(w):
        while True:
            e = level(w)
            w -= 4 ** e
            if e >= level(w):
                break
        off = (4 ** (e + 1) - 1) // 3
        if e == top:
            w += 4 ** e
            off += (_ORIGINAL_FACE_JUMP[w // per_face] - 1) * per_face
        return off

    def jump2(w):
        e = level(w)
        while (w % 4 ** (e + 1)) // 4 ** e == 2:
            w -= 2 * 4 ** e
            e = level(w)
        off = 2 * (4 ** e - 1) // 3
        if e == top:
            off += 3 * per_face
        return off

    pos = np.arange(ws, dtype=np.int64)
    first = np.arange(nw, dtype=np.int64)[:, None] * ws
    off1 = np.array([jump1(w) for w in range(nw)], dtype=np.int64)[:, None] * ws
    off2 = np.array([jump2(w) for w in range(nw)], dtype=np.int64)[:, None] * ws
    # direction 1: the first half of a window comes from the half window before its offset
    dir1 = np.where(pos < hws, first - off1 - hws + pos, first + pos - hws)
    # direction 2: quarters 0 and 2 come from before the offset, quarters 1 and 3 stay
    q, r = pos // qws, pos % qws
    dir2 = np.select([q == 0, q == 1, q == 2],
                     [first - off2 - hws - qws + r, first + r, first - off2 - qws + r], first + hws + r)
    index = (dir1.ravel() % n)[dir2.ravel() % n]

    labels = np.zeros(n, dtype=np.int64)
    w_in_face = np.arange(per_face, dtype=np.int64)
    even_bits = _spread_bits(np.array((1 << top) - 1))  # the x bit of every base-4 digit
    odd_bits = even_bits << 1  # the y bit
    low_row = w_in_face[(w_in_face & odd_bits) == 0]  # windows with base-4 digits 0/1 only
    low_col = w_in_face[(w_in_face & even_bits) == 0]  # digits 0/2 only
    for f, carry in zip((4, 5, 6, 7), (0, 1, 2, 3)):
        base = f * per_face * ws
        labels[(base + low_row[:, None] * ws + np.arange(hws)).ravel()] = f + 1
        right = np.concatenate([np.arange(qws), hws + np.arange(qws)])
        labels[(base + low_col[:, None] * ws + right).ravel()] = f + 5
        labels[carry * per_face * ws:carry * per_face * ws + qws] = f + 1
    return _table(index, labels, f"original nest_grid_shift(nside={nside}, window_size={window_size})")
