"""Gauge CNN (issue #13): chart transitions against healpy, the C4-regular layers, exact gauge and
grid-symmetry equivariance in float64, and SO(3) rotations of band-limited inputs (not exact)."""

import healpy as hp
import numpy as np
import pytest

from heal_swin import grid
from heal_swin.grid._pixelfunc import _NB_DX, _NB_DY

# the issue's table: face f, direction (dx, dy) -> (neighbour, k)
EDGE_TABLE = {
    "north": {(1, 0): (lambda f: (f + 1) % 4, 3), (-1, 0): (lambda f: f + 4, 0),
              (0, 1): (lambda f: (f + 3) % 4, 1), (0, -1): (lambda f: 4 + (f + 1) % 4, 0)},
    "equator": {(1, 0): (lambda f: f - 4, 0), (-1, 0): (lambda f: 8 + (f + 3) % 4, 0),
                (0, 1): (lambda f: (f - 1) % 4, 0), (0, -1): (lambda f: f + 4, 0)},
    "south": {(1, 0): (lambda f: 4 + (f + 1) % 4, 0), (-1, 0): (lambda f: 8 + (f + 3) % 4, 3),
              (0, 1): (lambda f: f - 4, 0), (0, -1): (lambda f: 8 + (f + 1) % 4, 1)},
}
THREE_FACE_VERTICES = {frozenset(s) for s in ({0, 3, 4}, {0, 1, 5}, {1, 2, 6}, {2, 3, 7}, {4, 8, 11}, {5, 8, 9},
                                              {6, 9, 10}, {7, 10, 11})}
ROT = np.array([[0, -1], [1, 0]])


def _ring(f):
    return ("north", "equator", "south")[f // 4]


# --------------------------------------------------------------------------- chart transitions


def test_transitions_match_the_issue_table():
    for f in range(12):
        for (dx, dy), (nb, k) in EDGE_TABLE[_ring(f)].items():
            assert grid.chart_neighbour(f, dx, dy) == (nb(f), k), (f, dx, dy)
    for f in range(4):  # across the poles: four faces meet, the opposite one is turned by half
        assert grid.chart_neighbour(f, 1, 1) == ((f + 2) % 4, 2)
        assert grid.chart_neighbour(8 + f, -1, -1) == (8 + (f + 2) % 4, 2)
        assert grid.chart_neighbour(4 + f, 1, -1)[1] == grid.chart_neighbour(4 + f, -1, 1)[1] == 0
    nb, k = grid.face_transitions()
    assert nb.shape == k.shape == (12, 3, 3) and (nb[:, 1, 1] == np.arange(12)).all() and (k[:, 1, 1] == 0).all()
    assert set(np.unique(k)) == {-1, 0, 1, 2, 3} and ((nb < 0) == (k < 0)).all()


def test_the_eight_three_face_vertices():
    found = set()
    for f in range(12):
        for dx in (-1, 1):
            for dy in (-1, 1):
                if grid.chart_neighbour(f, dx, dy)[0] < 0:
                    found.add(frozenset({f, grid.chart_neighbour(f, dx, 0)[0], grid.chart_neighbour(f, 0, dy)[0]}))
    assert found == THREE_FACE_VERTICES
    nb, _ = grid.face_transitions()
    assert (nb < 0).sum() == 8 * 3  # each vertex is a missing corner of each of its three faces


def _chart_map(nside, p, q):
    """The linear part A of the chart transition at the step p -> q (q a healpy neighbour of p in
    another face): A·(step in p's chart) = (step in q's chart). The step back, q -> p, in q's chart
    is where p stands among q's healpy neighbours."""
    back = list(hp.get_all_neighbours(nside, q, nest=True)).index(p)
    return -np.array([_NB_DX[back], _NB_DY[back]])


@pytest.mark.parametrize("nside", [4, 8])
def test_transitions_match_healpy_on_every_edge_pixel(nside):
    """Every pixel on a face's border, every healpy neighbour across it: the neighbour's face is
    the table's, and the step across, seen from the neighbour, is R^k of the step (a rotation)."""
    ip = np.arange(12 * nside * nside)
    x, y, f = (np.asarray(a) for a in hp.pix2xyf(nside, ip, nest=True))
    nbs = hp.get_all_neighbours(nside, ip, nest=True)
    checked = 0
    for d in range(8):
        dx, dy = int(_NB_DX[d]), int(_NB_DY[d])
        fx = np.where(x + dx < 0, -1, np.where(x + dx >= nside, 1, 0))
        fy = np.where(y + dy < 0, -1, np.where(y + dy >= nside, 1, 0))
        for p in np.nonzero((fx != 0) | (fy != 0))[0]:
            want_face, k = grid.chart_neighbour(f[p], fx[p], fy[p])
            q = nbs[d, p]
            if want_face < 0:
                assert q == -1, (p, d)
                continue
            assert hp.pix2xyf(nside, q, nest=True)[2] == want_face, (p, d)
            step = np.array([dx, dy])
            np.testing.assert_array_equal(_chart_map(nside, p, q), np.linalg.matrix_power(ROT, k) @ step)
            checked += 1
    # per face: 3 cells across each edge for each edge pixel, 2 at the ends, 4 diagonal corners (12n − 4);
    # 24 of the corners have no face
    assert checked == 12 * (12 * nside - 4) - 24


@pytest.mark.parametrize("nside", [4, 8])
def test_transitions_have_no_mirror(nside):
    """Along an edge, two steps in p's chart seen from the neighbour give the full linear map: its
    determinant is +1 and it is R^k."""
    for f in range(12):
        for (dx, dy) in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            nb, k = grid.chart_neighbour(f, dx, dy)
            t = nside // 2
            x0 = nside - 1 if dx == 1 else 0 if dx == -1 else t
            y0 = nside - 1 if dy == 1 else 0 if dy == -1 else t
            along = np.array([dy != 0, dx != 0], dtype=int)  # the edge's direction
            p0 = hp.xyf2pix(nside, x0, y0, f, nest=True)
            p1 = hp.xyf2pix(nside, x0 + along[0], y0 + along[1], f, nest=True)
            q0 = hp.get_all_neighbours(nside, p0, nest=True)[[i for i in range(8) if (_NB_DX[i], _NB_DY[i]) == (dx, dy)][0]]
            q1 = hp.get_all_neighbours(nside, p1, nest=True)[[i for i in range(8) if (_NB_DX[i], _NB_DY[i]) == (dx, dy)][0]]
            a = np.column_stack([_chart_map(nside, p0, q0), np.subtract(hp.pix2xyf(nside, q1, nest=True)[:2],
                                                                        hp.pix2xyf(nside, q0, nest=True)[:2])])
            basis = np.column_stack([[dx, dy], along])
            A = a @ np.linalg.inv(basis)
            np.testing.assert_allclose(A, np.linalg.matrix_power(ROT, k), atol=1e-12, err_msg=f"face {f} ({dx}, {dy})")


def test_chart_neighbour_errors_and_turns():
    with pytest.raises(ValueError, match="face must lie in 0–11, got 12..12"):
        grid.chart_neighbour(12, 1, 0)
    with pytest.raises(ValueError, match=r"dx must lie in \{-1, 0, 1\}, got 2..2"):
        grid.chart_neighbour(0, 2, 0)
    nb, k = grid.chart_neighbour(np.arange(4), np.ones(4, int), np.ones(4, int))
    np.testing.assert_array_equal(nb, [2, 3, 0, 1])
    x, y = np.meshgrid(np.arange(-1, 5), np.arange(-1, 5), indexing="ij")
    x1, y1 = grid.turn_xy(4, x, y, 1)
    np.testing.assert_array_equal((x1, y1), (3 - y, x))
    np.testing.assert_array_equal(grid.turn_xy(4, *grid.turn_xy(4, x, y, 3), 1), (x, y))
