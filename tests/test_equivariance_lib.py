"""heal_swin.equivariance, the library's equivariance checks (issue #25): assert_equivariant passes an exactly
equivariant map and fails a broken one with the measured error, the grid symmetries are the pixel maps they
claim to be, and so3_errors tells a pointwise map from a non-equivariant one."""

import math
import re

import numpy as np
import pytest
import torch

from heal_swin import equivariance as eq
from heal_swin import grid, models

SPHERE, FACES_0_7 = tuple(range(12)), tuple(range(8))
NSIDE = 4


def _turn(faces, nside=NSIDE):
    """The 90° polar turn of the grid as an action on (..., N) maps over `faces`."""
    index = eq.rotation_permutation(nside, eq.rz(math.pi / 2), faces)
    return lambda t: t.index_select(-1, index)


def _x(faces, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, len(faces) * NSIDE ** 2, generator=g, dtype=dtype)


def _ramp(n, dtype=torch.float64):
    """A fixed weight per pixel: multiplying by it is not equivariant to any pixel permutation but the identity."""
    return torch.linspace(0.0, 1.0, n, dtype=dtype)


# --------------------------------------------------------------------------- assert_equivariant


@pytest.mark.parametrize("faces", [SPHERE, FACES_0_7], ids=["sphere", "faces0-7"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_pointwise_map_is_exactly_equivariant_to_a_grid_permutation(faces, dtype):
    act = _turn(faces)
    x = _x(faces, dtype)
    assert act(x).ne(x).any()                                     # the turn moves the pixels
    assert eq.assert_equivariant(torch.tanh, act, act, x) == 0.0
    assert eq.equivariance_error(lambda t: t, act, act, x) == 0.0  # the identity


def test_a_broken_map_fails_with_the_measured_error():
    act = _turn(SPHERE)
    x = _x(SPHERE)
    weight = 1 + _ramp(x.shape[-1])
    broken = lambda t: t * weight  # noqa: E731
    err = eq.equivariance_error(broken, act, act, x)
    assert err > 0.1
    with pytest.raises(AssertionError, match=re.escape(f"equivariance error {err:.3e} > 1.0e-10")):
        eq.assert_equivariant(broken, act, act, x)
    with pytest.raises(AssertionError, match=re.escape(f"{err:.3e} > 1.0e-02")):
        eq.assert_equivariant(broken, act, act, x, tol=1e-2)
    assert eq.assert_equivariant(broken, act, act, x, tol=1.0) == err   # a tolerance it meets


def test_the_default_tolerance_follows_the_dtype():
    """An error of about 1e-6 is float32 round-off (1e-4 passes) but a real error in float64 (1e-10 fails)."""
    act = _turn(SPHERE)
    for dtype, passes in ((torch.float32, True), (torch.float64, False)):
        x = _x(SPHERE, dtype)
        weight = 1 + 1e-6 * _ramp(x.shape[-1], dtype)
        err = eq.equivariance_error(lambda t, w=weight: t * w, act, act, x)
        assert 1e-8 < err < 1e-5, (dtype, err)
        if passes:
            assert eq.assert_equivariant(lambda t, w=weight: t * w, act, act, x) == err
        else:
            with pytest.raises(AssertionError, match=f"> {eq.TOLERANCE[dtype]:.1e}"):
                eq.assert_equivariant(lambda t, w=weight: t * w, act, act, x)
    with pytest.raises(ValueError, match="no default tolerance.*pass tol"):
        eq.assert_equivariant(lambda t: t, act, act, _x(SPHERE).half())


def test_a_nan_error_fails():
    x = _x(SPHERE)
    with pytest.raises(AssertionError, match="nan"):
        eq.assert_equivariant(lambda t: t * torch.nan, _turn(SPHERE), _turn(SPHERE), x, tol=1.0)


def test_relative_error_is_the_old_name():
    assert eq.relative_error is eq.equivariance_error


# --------------------------------------------------------------------------- grid symmetries


@pytest.mark.parametrize("matrix, faces", [(eq.rz(math.pi / 2), SPHERE), (eq.rz(math.pi / 2), FACES_0_7),
                                           (eq.rz(math.pi), FACES_0_7), (eq.flip(0.0), SPHERE),
                                           (eq.flip(math.pi / 4), SPHERE)],
                         ids=["turn90-sphere", "turn90-faces0-7", "turn180-faces0-7", "flip0", "flip45"])
def test_rotation_permutation_moves_each_pixel_centre_onto_its_image(matrix, faces):
    """(g·x)[p] = x[index[p]]: the centre of pixel index[p], rotated by the matrix, is p's centre."""
    index = eq.rotation_permutation(NSIDE, matrix, faces).numpy()
    n = len(faces) * NSIDE ** 2
    assert sorted(index) == list(range(n)) and (index != np.arange(n)).any()
    centres = np.stack(grid.pix2vec(NSIDE, grid.base_pixel_indices(NSIDE, faces), nest=True), -1)
    assert np.allclose(centres[index] @ np.asarray(matrix).T, centres, atol=1e-12)


def test_rotation_permutation_refuses_a_rotation_off_the_grid():
    with pytest.raises(ValueError, match="is not a symmetry"):
        eq.rotation_permutation(NSIDE, eq.rz(math.pi / 3))
    with pytest.raises(ValueError, match="is not a symmetry"):
        eq.rotation_permutation(NSIDE, eq.flip(0.0), FACES_0_7)  # a flip swaps the hemispheres


def test_rz_and_flip_are_the_rotations_they_name():
    assert np.allclose(eq.rz(math.pi / 2) @ [1, 0, 0], [0, 1, 0])
    for phi in (0.0, 0.3, math.pi / 4):
        r = eq.flip(phi)
        axis = [math.cos(phi), math.sin(phi), 0.0]
        assert np.allclose(r @ r.T, np.eye(3)) and np.isclose(np.linalg.det(r), 1.0)
        assert np.allclose(r @ axis, axis) and np.allclose(r @ [0, 0, 1], [0, 0, -1])


def test_local_index_maps_global_pixels_onto_a_face_set():
    faces = (1, 4, 9)
    pix = np.array([0, 1 * 16 + 5, 4 * 16, 9 * 16 + 15, 11 * 16, -1])
    assert eq.local_index(NSIDE, faces, pix).tolist() == [-1, 5, 16, 47, -1, -1]


# --------------------------------------------------------------------------- SO(3): approximate


def test_so3_errors_tell_a_pointwise_map_from_a_non_equivariant_one():
    nside = 8
    weight = 1 + _ramp(12 * nside ** 2)
    err = eq.so3_errors(dict(pointwise=torch.relu, weighted=lambda t: t * weight), nside=nside, lmax_in=3,
                        lmax_out=6, rotations=2)
    assert set(err) == {"pointwise", "weighted"} and all(isinstance(v, float) for v in err.values())
    assert err["pointwise"] < 0.02, err
    assert err["weighted"] > 0.2 and err["weighted"] > 20 * err["pointwise"], err


def test_plain_face_cnn_is_a_public_control():
    torch.manual_seed(0)
    net = models.PlainFaceCNN(NSIDE, FACES_0_7, 2, 3, (2, 4), (1, 1)).eval()
    x = torch.randn(1, 2, len(FACES_0_7) * NSIDE ** 2)
    assert net(x).shape == (1, 3, x.shape[-1])
    assert "PlainFaceCNN" in models.__all__ and models.PlainFaceCNN.__module__ == "heal_swin.models._controls"


def test_grid_symmetry_errors_cover_every_symmetry_the_grid_keeps():
    from heal_swin import models
    from heal_swin.equivariance import grid_symmetry_errors

    torch.manual_seed(0)
    gauge = models.create_model("gauge_cnn_tiny", in_chans=2, num_classes=3, nside=8, base_pixels=range(12),
                                widths=[4, 8], depths=[1, 1]).double().eval()
    errs = grid_symmetry_errors(gauge, 8, range(12), 2)
    assert set(errs) == set(grid.grid_symmetries(8, range(12))) and max(errs.values()) < 1e-12
    shift = grid_symmetry_errors(lambda x: x.roll(1, -1), 8, range(8), 2)      # not a map of the sphere
    assert set(shift) == set(grid.grid_symmetries(8, range(8))) and min(shift.values()) > 0.1
