"""heal_swin.grid against healpy (the oracle) for nside 1 … 1024, NESTED and RING."""

import healpy as hp
import numpy as np
import pytest
import torch

from heal_swin import grid

NSIDES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


def _pixels(nside, rng, limit=300_000):
    npix = 12 * nside * nside
    if npix <= limit:
        return np.arange(npix)
    # Every face's corners and edges plus random interior pixels.
    x = np.concatenate([[0, nside - 1, 0, nside - 1], rng.integers(0, nside, 2000)])
    y = np.concatenate([[0, 0, nside - 1, nside - 1], np.zeros(1000, int), np.full(1000, nside - 1)])
    edges = np.concatenate([hp.xyf2pix(nside, x, y, np.full_like(x, f), nest=True) for f in range(12)])
    return np.concatenate([edges, rng.integers(0, npix, limit)])


def _directions(rng, n=100_000):
    theta = np.arccos(rng.uniform(-1, 1, n))
    phi = rng.uniform(0, 2 * np.pi, n)
    # Poles, the cap/belt boundary z = ±2/3, and φ on face seams are the delicate places.
    special_t = np.concatenate([[0.0, np.pi, 1e-9, np.pi - 1e-9], np.full(8, np.arccos(2 / 3)),
                                np.full(8, np.arccos(-2 / 3)), np.full(8, np.pi / 2)])
    special_p = np.concatenate([[0.0, 0.0, 1.0, 2.0], np.tile(np.arange(8) * np.pi / 4, 3)])
    return np.concatenate([theta, special_t]), np.concatenate([phi, special_p])


@pytest.mark.parametrize("nside", NSIDES)
def test_index_conversions_match_healpy(nside, rng):
    ip = _pixels(nside, rng)
    np.testing.assert_array_equal(grid.nest2ring(nside, ip), hp.nest2ring(nside, ip))
    np.testing.assert_array_equal(grid.ring2nest(nside, ip), hp.ring2nest(nside, ip))
    x, y, f = grid.nest2xyf(nside, ip)
    hx, hy, hf = hp.pix2xyf(nside, ip, nest=True)
    np.testing.assert_array_equal(x, hx)
    np.testing.assert_array_equal(y, hy)
    np.testing.assert_array_equal(f, hf)
    np.testing.assert_array_equal(grid.xyf2nest(nside, x, y, f), ip)
    rx, ry, rf = grid.ring2xyf(nside, ip)
    hx, hy, hf = hp.pix2xyf(nside, ip, nest=False)
    np.testing.assert_array_equal(np.stack([rx, ry, rf]), np.stack([hx, hy, hf]))
    np.testing.assert_array_equal(grid.xyf2ring(nside, rx, ry, rf), ip)


@pytest.mark.parametrize("nest", [True, False])
@pytest.mark.parametrize("nside", NSIDES)
def test_pixel_centres_match_healpy(nside, nest, rng):
    ip = _pixels(nside, rng)
    theta, phi = grid.pix2ang(nside, ip, nest=nest)
    h_theta, h_phi = hp.pix2ang(nside, ip, nest=nest)
    np.testing.assert_allclose(theta, h_theta, rtol=0, atol=1e-12)
    np.testing.assert_allclose(phi, h_phi, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.stack(grid.pix2vec(nside, ip, nest=nest)),
                               np.stack(hp.pix2vec(nside, ip, nest=nest)), rtol=0, atol=1e-12)
    lon, lat = grid.pix2ang(nside, ip[:100], nest=nest, lonlat=True)
    h_lon, h_lat = hp.pix2ang(nside, ip[:100], nest=nest, lonlat=True)
    np.testing.assert_allclose(lon, h_lon, atol=1e-10)
    np.testing.assert_allclose(lat, h_lat, atol=1e-10)


@pytest.mark.parametrize("nest", [True, False])
@pytest.mark.parametrize("nside", NSIDES)
def test_ang2pix_and_vec2pix_match_healpy(nside, nest, rng):
    theta, phi = _directions(rng)
    np.testing.assert_array_equal(grid.ang2pix(nside, theta, phi, nest=nest),
                                  hp.ang2pix(nside, theta, phi, nest=nest))
    vec = hp.ang2vec(theta, phi).T * rng.uniform(0.5, 3.0, theta.shape)
    np.testing.assert_array_equal(grid.vec2pix(nside, *vec, nest=nest), hp.vec2pix(nside, *vec, nest=nest))
    # A pixel's own centre maps back to it.
    ip = _pixels(nside, rng, limit=50_000)
    np.testing.assert_array_equal(grid.ang2pix(nside, *grid.pix2ang(nside, ip, nest=nest), nest=nest), ip)


@pytest.mark.parametrize("nest", [True, False])
@pytest.mark.parametrize("nside", NSIDES)
def test_neighbours_match_healpy(nside, nest, rng):
    ip = _pixels(nside, rng)
    np.testing.assert_array_equal(grid.get_all_neighbours(nside, ip, nest=nest),
                                  hp.get_all_neighbours(nside, ip, nest=nest))


@pytest.mark.parametrize("nest", [True, False])
@pytest.mark.parametrize("nside", [1, 2, 8, 64, 1024])
def test_interp_weights_match_healpy(nside, nest, rng):
    theta, phi = _directions(rng, 50_000)
    pix, wgt = grid.get_interp_weights(nside, theta, phi, nest=nest)
    h_pix, h_wgt = hp.get_interp_weights(nside, theta, phi, nest=nest)
    np.testing.assert_array_equal(pix, h_pix)
    np.testing.assert_allclose(wgt, h_wgt, atol=1e-12)
    np.testing.assert_allclose(wgt.sum(0), 1.0, atol=1e-12)


def test_interp_reproduces_values_at_pixel_centres():
    nside = 16
    ip = np.arange(grid.nside2npix(nside))
    values = np.random.default_rng(0).normal(size=ip.size)
    pix, wgt = grid.get_interp_weights(nside, *grid.pix2ang(nside, ip))
    np.testing.assert_allclose((values[pix] * wgt).sum(0), values, atol=1e-12)


@pytest.mark.parametrize("nside", NSIDES)
def test_resolution_functions(nside):
    assert grid.nside2npix(nside) == hp.nside2npix(nside)
    assert grid.npix2nside(12 * nside**2) == nside
    assert grid.nside2order(nside) == hp.nside2order(nside)
    assert grid.order2nside(grid.nside2order(nside)) == nside
    assert grid.nside2pixarea(nside) == pytest.approx(hp.nside2pixarea(nside), rel=1e-14)
    assert grid.nside2resol(nside, arcmin=True) == pytest.approx(hp.nside2resol(nside, arcmin=True))


@pytest.mark.parametrize("bad", [0, 3, 6, -4, 2.5, "8", None, True, 2**30])
def test_check_nside_names_value_and_rule(bad):
    assert not grid.is_valid_nside(bad)
    with pytest.raises(ValueError, match=r"nside=.*power of two"):
        grid.check_nside(bad)


def test_bad_pixel_and_npix_errors():
    with pytest.raises(ValueError, match=r"ipix=48 is outside \[0, 48\) for nside=2"):
        grid.nest2ring(2, [0, 48])
    with pytest.raises(ValueError, match="npix=13"):
        grid.npix2nside(13)
    with pytest.raises(ValueError, match="theta must lie"):
        grid.ang2pix(4, 4.0, 0.0)
    with pytest.raises(ValueError, match="zero-length"):
        grid.vec2pix(4, 0.0, 0.0, 0.0)


def test_scalars_in_scalars_out():
    out = grid.ang2pix(4, 0.3, 1.0)
    assert np.ndim(out) == 0 and int(out) == hp.ang2pix(4, 0.3, 1.0, nest=True)
    theta, phi = grid.pix2ang(4, 5)
    assert np.ndim(theta) == 0 and np.ndim(phi) == 0


def test_torch_in_torch_out(device):
    nside = 32
    ip = torch.arange(grid.nside2npix(nside), device=device)
    ring = grid.nest2ring(nside, ip)
    assert isinstance(ring, torch.Tensor) and ring.device == ip.device and ring.dtype == torch.int64
    np.testing.assert_array_equal(ring.cpu().numpy(), hp.nest2ring(nside, ip.cpu().numpy()))
    x, y, z = grid.pix2vec(nside, ip)
    assert x.dtype == torch.float64 and x.device == ip.device
    theta = torch.rand(100, device=device, dtype=torch.float32) * np.pi
    phi = torch.rand(100, device=device, dtype=torch.float32) * 2 * np.pi
    pix = grid.ang2pix(nside, theta, phi)
    assert pix.dtype == torch.int64 and pix.device == theta.device
    nb = grid.get_all_neighbours(nside, ip[:10])
    assert nb.shape == (8, 10) and isinstance(nb, torch.Tensor)
    _, w = grid.get_interp_weights(nside, theta, phi)
    assert w.dtype == torch.float32


def test_base_pixel_sets():
    nside = 4
    faces = (0, 3, 7)
    glob = grid.base_pixel_indices(nside, faces)
    assert glob.shape == (3 * 16,)
    np.testing.assert_array_equal(glob[:16], np.arange(16))
    np.testing.assert_array_equal(glob[16:32], 3 * 16 + np.arange(16))
    local = np.arange(glob.size)
    np.testing.assert_array_equal(grid.global_to_local(nside, faces, glob), local)
    np.testing.assert_array_equal(grid.local_to_global(nside, faces, local), glob)
    outside = grid.global_to_local(nside, faces, np.array([16, 16 * 11 + 5]))
    np.testing.assert_array_equal(outside, [-1, -1])
    assert grid.n_pixels(nside, range(8)) == 8 * 16
    assert grid.parse_base_pixels("0-7") == tuple(range(8))
    assert grid.parse_base_pixels("0,2,4-5") == (0, 2, 4, 5)
    assert grid.parse_base_pixels("all") == tuple(range(12))
    assert grid.check_base_pixels("0-3") == (0, 1, 2, 3)


@pytest.mark.parametrize("bad", [[], [3, 1], [0, 0], [12], [-1, 2], "0-12", "a-b"])
def test_bad_base_pixels(bad):
    with pytest.raises(ValueError, match=r"(base_pixels|faces)="):
        grid.check_base_pixels(bad)
