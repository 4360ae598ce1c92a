"""Window and shift tables (heal_swin.grid._windows, _charts) against slow references and healpy."""

import healpy as hp
import numpy as np
import pytest

from heal_swin import grid
from heal_swin.grid._pixelfunc import _NB_DX, _NB_DY, _compact_bits

FACE_SETS = [tuple(range(12)), tuple(range(8)), (0,), (4, 5), (0, 2), (1, 5, 9), (8, 9, 10, 11)]


def _uv(ws):
    slot = np.arange(ws)
    return _compact_bits(slot), _compact_bits(slot >> 1)


# --------------------------------------------------------------------------- charts


@pytest.mark.parametrize("nside", [1, 2, 4, 16])
def test_extended_chart_one_step_is_healpix_neighbour(nside):
    ip = np.arange(12 * nside * nside)
    x, y, f = grid.nest2xyf(nside, ip)
    nb = hp.get_all_neighbours(nside, ip, nest=True)
    for i in range(8):
        ex, ey, ef = grid.extended_xyf(nside, x + _NB_DX[i], y + _NB_DY[i], f)
        got = np.where(ef >= 0, grid.xyf2nest(nside, ex, ey, np.maximum(ef, 0)), -1)
        np.testing.assert_array_equal(got, nb[i], err_msg=f"direction {i}")


@pytest.mark.parametrize("nside", [4, 8])
def test_extended_chart_is_rigid_far_from_the_face(nside):
    """Steps along an axis deep inside a neighbouring face stay HEALPix neighbours."""
    f = np.repeat(np.arange(12), 4 * nside * nside)
    xx, yy = np.meshgrid(np.arange(-nside, 2 * nside - 1), np.arange(-nside, 2 * nside - 1), indexing="ij")
    xx, yy = np.tile(xx.ravel(), 12), np.tile(yy.ravel(), 12)
    f = np.repeat(np.arange(12), xx.size // 12)
    for dx, dy in ((1, 0), (0, 1)):
        a = grid.extended_xyf(nside, xx, yy, f)
        b = grid.extended_xyf(nside, xx + dx, yy + dy, f)
        # only pairs that do not cross a boundary line of the source chart
        same_region = ((xx < 0) == (xx + dx < 0)) & ((xx >= nside) == (xx + dx >= nside)) \
            & ((yy < 0) == (yy + dy < 0)) & ((yy >= nside) == (yy + dy >= nside))
        ok = (a[2] >= 0) & (b[2] >= 0) & same_region
        pa = grid.xyf2nest(nside, a[0][ok], a[1][ok], a[2][ok])
        pb = grid.xyf2nest(nside, b[0][ok], b[1][ok], b[2][ok])
        assert (hp.get_all_neighbours(nside, pa, nest=True) == pb).any(0).all()


def test_extended_chart_rejects_far_coordinates():
    with pytest.raises(ValueError, match="must lie in"):
        grid.extended_xyf(4, np.array([8]), np.array([0]), np.array([0]))


# --------------------------------------------------------------------------- windows


def test_window_size_rule():
    assert [grid.is_valid_window_size(w) for w in (1, 4, 16, 64, 2, 8, 32, 0, 4.5, True)] == \
        [True, True, True, True, False, False, False, False, False, False]
    with pytest.raises(ValueError, match=r"window_size=32 must be a power of 4 \(square nested window\)"):
        grid.check_window_size(32)


def test_window_layout_matches_the_original_convention():
    row, col = grid.window_layout(4)
    assert list(zip(row, col)) == [(0, 1), (0, 0), (1, 1), (1, 0)]
    row, col = grid.window_layout(64)
    assert sorted(zip(row, col)) == [(r, c) for r in range(8) for c in range(8)]
    # recursion: the first 16 slots are the 4 x 4 block at rows 0-3, cols 4-7
    assert set(zip(row[:16], col[:16])) == {(r, c) for r in range(4) for c in range(4, 8)}


def test_relative_position_index_of_a_smaller_window_holds_the_same_offsets():
    big = grid.relative_position_index(64)
    np.testing.assert_array_equal(grid.relative_position_index(16, 64), big[:16, :16])
    assert big.min() == 0 and big.max() == 15 * 15 - 1
    assert (np.diag(big) == 7 * 15 + 7).all()


# --------------------------------------------------------------------------- permutations


def _assert_table(table, n):
    assert table.index.shape == table.inverse.shape == table.labels.shape == (n,)
    np.testing.assert_array_equal(np.sort(table.index), np.arange(n))
    np.testing.assert_array_equal(table.index[table.inverse], np.arange(n))
    np.testing.assert_array_equal(table.inverse[table.index], np.arange(n))
    assert not table.index.flags.writeable  # memoised tables are shared: read-only


@pytest.mark.parametrize("faces", FACE_SETS)
@pytest.mark.parametrize("nside", [1, 2, 8])
def test_ring_shift_is_a_permutation(nside, faces):
    for shift in (1, 4, 7):
        _assert_table(grid.ring_shift(nside, faces, shift), len(faces) * nside * nside)


@pytest.mark.parametrize("faces", FACE_SETS)
@pytest.mark.parametrize("nside,ws", [(2, 4), (4, 4), (4, 16), (8, 16), (16, 64), (16, 4)])
def test_grid_shift_is_a_permutation(nside, ws, faces):
    _assert_table(grid.grid_shift(nside, faces, ws), len(faces) * nside * nside)


def test_nest_roll_is_the_original_roll():
    t = grid.nest_roll_shift(64, 16, 8)
    _assert_table(t, 64)
    x = np.arange(64) * 3
    np.testing.assert_array_equal(x[t.index], np.roll(x, -8))
    np.testing.assert_array_equal(t.labels[:48], 0)
    np.testing.assert_array_equal(t.labels[48:56], 1)
    np.testing.assert_array_equal(t.labels[56:], 2)


def _slow_ring_shift(nside, nfaces, shift):
    """The original's ring shift on faces 0 … nfaces−1 (7 or 8), one pixel at a time."""
    npix, npface = 12 * nside * nside, nside * nside
    n = nfaces * npface
    src = [int(hp.ring2nest(nside, (int(hp.nest2ring(nside, p)) - shift) % npix)) for p in range(n)]
    labels = [p // npface + 1 if s >= n else 0 for p, s in enumerate(src)]
    lost = [[q for q in range(f * npface, (f + 1) * npface) if q not in set(src)] for f in range(nfaces)]
    donor = {4: 7, 5: 4, 6: 5, 7: 6}
    leftover = []
    for f in range(4, nfaces):
        pool = list(lost[donor[f]])
        for p in range(f * npface, (f + 1) * npface):
            if src[p] >= n:
                src[p] = pool.pop(0)
        leftover += pool
    for p in range(4 * npface):
        if src[p] >= n:
            src[p] = leftover.pop(0)
    return np.array(src), np.array(labels)


@pytest.mark.parametrize("nside,shift", [(2, 1), (4, 2), (4, 4), (8, 3)])
def test_ring_shift_matches_the_original_on_faces_0_to_7(nside, shift):
    index, labels = _slow_ring_shift(nside, 8, shift)
    table = grid.ring_shift(nside, tuple(range(8)), shift)
    np.testing.assert_array_equal(table.index, index)
    np.testing.assert_array_equal(table.labels, labels)


def test_ring_shift_on_the_full_sphere_is_the_plain_ring_roll():
    nside, shift = 8, 5
    table = grid.ring_shift(nside, tuple(range(12)), shift)
    ring = hp.nest2ring(nside, np.arange(12 * nside * nside))
    np.testing.assert_array_equal(table.index, hp.ring2nest(nside, (ring - shift) % (12 * nside * nside)))
    assert not table.labels.any()


# --------------------------------------------------------------------------- grid shift geometry


@pytest.mark.parametrize("faces", FACE_SETS)
@pytest.mark.parametrize("nside,ws", [(2, 4), (4, 16), (8, 4), (8, 16), (16, 64)])
def test_grid_shift_windows_are_seam_exact(nside, ws, faces):
    """Tokens adjacent in a window's 2-D layout are HEALPix neighbours wherever unmasked."""
    table = grid.grid_shift(nside, faces, ws)
    pix = grid.base_pixel_indices(nside, faces)[table.index].reshape(-1, ws)
    lab = table.labels.reshape(-1, ws)
    row, col = grid.window_layout(ws)
    at = {(r, c): s for s, (r, c) in enumerate(zip(row, col))}
    pairs = np.array([(s, at[r + dr, c + dc]) for s, (r, c) in enumerate(zip(row, col))
                      for dr, dc in ((1, 0), (0, 1)) if (r + dr, c + dc) in at])
    a, b = pix[:, pairs[:, 0]], pix[:, pairs[:, 1]]
    attend = lab[:, pairs[:, 0]] == lab[:, pairs[:, 1]]
    neighbours = hp.get_all_neighbours(nside, a.ravel(), nest=True).reshape((8,) + a.shape)
    edge = neighbours[[0, 2, 4, 6]]  # SW, NW, NE, SE: the four pixels sharing an edge
    bad = attend & ~(edge == b[None]).any(0)
    assert not bad.any(), f"{bad.sum()} attending pairs are not edge neighbours"
    assert attend.any() or nside * nside == ws  # one-window faces: every piece is a lone quadrant


@pytest.mark.parametrize("nside,ws", [(4, 4), (8, 16), (16, 16), (32, 64)])
def test_grid_shift_masks_only_the_eight_three_face_corners_on_the_sphere(nside, ws):
    table = grid.grid_shift(nside, tuple(range(12)), ws)
    lab = table.labels.reshape(-1, ws)
    masked = (lab != lab[:, :1]).any(1)
    assert masked.sum() == 6  # 8 corner windows of three quadrants packed into 6
    pix = grid.base_pixel_indices(nside, range(12))[table.index].reshape(-1, ws)[masked]
    x, y, f = grid.nest2xyf(nside, pix)
    # every masked window consists of face-corner quadrants
    side = int(np.sqrt(ws))
    assert (((x < side // 2) | (x >= nside - side // 2)) & ((y < side // 2) | (y >= nside - side // 2))).all()


def test_grid_shift_moves_interior_windows_by_half_a_window():
    nside, ws, side = 16, 16, 4
    table = grid.grid_shift(nside, (5,), ws)
    pix = grid.base_pixel_indices(nside, (5,))[table.index].reshape(-1, ws)
    x, y, _ = grid.nest2xyf(nside, pix)
    u, v = _uv(ws)
    full = (table.labels.reshape(-1, ws) == 0).all(1)
    # a complete window inside the face: its chart corner sits at half-window offsets
    np.testing.assert_array_equal((x[full] - u) % side, side // 2)
    np.testing.assert_array_equal((y[full] - v) % side, side // 2)
    corner = x[full] - u
    np.testing.assert_array_equal(corner, np.broadcast_to(corner[:, :1], corner.shape))


def test_grid_shift_rejects_windows_larger_than_a_face():
    with pytest.raises(ValueError, match="grid_shift needs a window inside one face"):
        grid.grid_shift(2, (0,), 16)


# --------------------------------------------------------------------------- the original's grid shift


@pytest.mark.parametrize("nside,ws", [(2, 4), (4, 4), (4, 16), (8, 16), (16, 64), (32, 64)])
def test_original_grid_shift_is_a_half_window_translate_inside_faces(nside, ws):
    table = grid.original_grid_shift(nside, ws)
    _assert_table(table, 8 * nside * nside)
    x, y, f = grid.nest2xyf(nside, table.index.reshape(-1, ws))
    u, v = _uv(ws)
    side = int(np.sqrt(ws))
    dx, dy = x - u, y - v
    rigid = (f == f[:, :1]).all(1) & (dx == dx[:, :1]).all(1) & (dy == dy[:, :1]).all(1)
    # every window that does not reach a face's upper edges is the half-window translate
    m = nside // side
    assert rigid.sum() == 8 * (m - 1) ** 2
    assert (dx[rigid] % side == side // 2).all() and (dy[rigid] % side == side // 2).all()
