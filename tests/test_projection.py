"""Fisheye <-> HEALPix sampling against slow references written here, healpy and published facts."""

import healpy as hp
import numpy as np
import pytest
import torch

from heal_swin import cameras, grid, projection
from heal_swin.projection import _sampling

FACES8 = tuple(range(8))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEAL_SWIN_CACHE", str(tmp_path / "cache"))
    projection.clear_memory_cache()
    yield
    projection.clear_memory_cache()


@pytest.fixture(scope="module")
def fv():
    return cameras.load_calibration(cameras.FV_SAMPLE)


@pytest.fixture(scope="module")
def small_cam(fv):
    return fv.resized(160, 121)


def _reference_uv(cam, nside, faces, to_camera=np.eye(3)):
    """Sampling positions from the published radial-poly formula, one pixel at a time."""
    k = [cam.to_dict()["intrinsic"][f"k{i}"] for i in range(1, 5)]
    intr = cam.to_dict()["intrinsic"]
    cx = intr["cx_offset"] + cam.width / 2 - 0.5
    cy = intr["cy_offset"] + cam.height / 2 - 0.5
    out = []
    for ipix in grid.base_pixel_indices(nside, faces):
        x, y, z = to_camera @ np.array(hp.pix2vec(nside, int(ipix), nest=True))
        theta = np.arctan2(np.hypot(x, y), z)
        phi = np.arctan2(y, x)
        rho = sum(k[i] * theta ** (i + 1) for i in range(4))
        out.append((rho * np.cos(phi) + cx, rho * np.sin(phi) * intr["aspect_ratio"] + cy))
    return np.array(out)


def _reference_bilinear(img, u, v):
    """Bilinear sample of img (H, W, C) at one point, border replicated."""
    h, w = img.shape[:2]
    u = min(max(u, 0.0), w - 1.0)
    v = min(max(v, 0.0), h - 1.0)
    x0, y0 = int(np.floor(u)), int(np.floor(v))
    fx, fy = u - x0, v - y0
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    return ((1 - fx) * (1 - fy) * img[y0, x0] + fx * (1 - fy) * img[y0, x1]
            + (1 - fx) * fy * img[y1, x0] + fx * fy * img[y1, x1])


def _test_image(cam, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (cam.height, cam.width, 3), dtype=np.uint8)


def test_paper_coverage_facts(fv):
    """FV sample calibration, nside 256, faces 0–7 (../shared/reference/README.md)."""
    proj = projection.FisheyeToHealpix(fv, nside=256, base_pixels=FACES8)
    assert proj.valid_mask.shape == (8 * 256**2,)
    assert round(100 * proj.valid_mask.mean(), 1) == 75.2
    back = projection.HealpixToFisheye(fv, nside=256, base_pixels=FACES8)
    assert back.covered_mask.shape == (966, 1280)
    assert round(100 * back.covered_mask.mean(), 1) == 93.3
    # Largest incidence angle among the image pixels that faces 0–7 cover: ≈ 104.6°.
    vv, uu = np.mgrid[0:fv.height, 0:fv.width]
    rays = fv.pixel_to_ray(np.stack([uu, vv], -1)[back.covered_mask].astype(np.float64))
    assert np.degrees(np.arccos(rays[:, 2].min())) == pytest.approx(104.6, abs=0.1)


def test_sample_positions_match_published_formula(small_cam):
    nside = 8
    proj = projection.FisheyeToHealpix(small_cam, nside, FACES8)
    ref = _reference_uv(small_cam, nside, FACES8)
    pos = proj.sample_positions
    finite = np.isfinite(pos[:, 0])
    assert finite.mean() > 0.9
    # Positions are the formula's (float32); bilinear sampling uses them rounded to the 1/32 px grid
    # that OpenCV's remap uses.
    np.testing.assert_allclose(pos[finite], ref[finite], atol=1e-4)
    valid = proj.valid_mask
    np.testing.assert_allclose(proj._u[valid], np.clip(ref[valid, 0], 0, small_cam.width - 1),
                               atol=0.5 / projection.SUBPIXEL + 1e-5)
    np.testing.assert_array_equal(proj._u * projection.SUBPIXEL, np.round(proj._u * projection.SUBPIXEL))
    h, w = small_cam.height, small_cam.width
    expected_valid = (ref[:, 0] >= -0.5) & (ref[:, 0] < w - 0.5) & (ref[:, 1] >= -0.5) & (ref[:, 1] < h - 0.5)
    np.testing.assert_array_equal(proj.valid_mask, expected_valid)


def test_project_image_matches_slow_bilinear(small_cam):
    nside = 16
    proj = projection.FisheyeToHealpix(small_cam, nside, FACES8)
    img = _test_image(small_cam)
    out = proj.project_image(img)
    assert out.dtype == np.float32 and out.shape == (3, 8 * nside**2)
    pos = np.round(proj.sample_positions.astype(np.float64) * projection.SUBPIXEL) / projection.SUBPIXEL
    for i in np.flatnonzero(proj.valid_mask)[::7]:
        np.testing.assert_allclose(out[:, i], _reference_bilinear(img.astype(np.float64), *pos[i]), atol=1e-3)
    assert np.all(out[:, ~proj.valid_mask] == 0)


def test_bilinear_is_exact_at_integer_coordinates_and_for_linear_images(small_cam):
    nside = 64
    proj = projection.FisheyeToHealpix(small_cam, nside, FACES8)
    h, w = small_cam.height, small_cam.width
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = np.stack([uu, vv, 3 * uu - 2 * vv + 7], axis=-1)
    out = proj.project_image(ramp)
    pos = np.round(proj.sample_positions.astype(np.float64) * projection.SUBPIXEL) / projection.SUBPIXEL
    valid = proj.valid_mask
    u = np.clip(pos[valid, 0], 0, w - 1)
    v = np.clip(pos[valid, 1], 0, h - 1)
    np.testing.assert_allclose(out[0, valid], u, atol=1e-4)
    np.testing.assert_allclose(out[1, valid], v, atol=1e-4)
    np.testing.assert_allclose(out[2, valid], 3 * u - 2 * v + 7, atol=1e-3)
    # Where a sample lands exactly on a pixel centre, it takes that pixel's value (the original's
    # sampler gave it weight 0 there).
    img = _test_image(small_cam, seed=3)
    out = proj.project_image(img)
    on_centre = valid & np.all(pos == np.round(pos), axis=1)
    assert on_centre.sum() > 5
    ui = pos[on_centre, 0].astype(int)
    vi = pos[on_centre, 1].astype(int)
    np.testing.assert_array_equal(out[:, on_centre], img[vi, ui].T.astype(np.float32))


def test_labels_and_depth_nearest(small_cam):
    nside = 16
    proj = projection.FisheyeToHealpix(small_cam, nside, FACES8, ignore_index=255)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, (small_cam.height, small_cam.width)).astype(np.uint8)
    depth = rng.uniform(1, 80, labels.shape).astype(np.float32)
    depth[::5, ::3] = np.inf
    lab = proj.project_labels(labels)
    dep = proj.project_depth(depth)
    assert lab.dtype == np.int64 and dep.dtype == np.float32
    pos = proj.sample_positions
    for i in range(lab.size):
        if proj.valid_mask[i]:
            x, y = int(np.floor(pos[i, 0] + 0.5)), int(np.floor(pos[i, 1] + 0.5))
            x, y = min(max(x, 0), small_cam.width - 1), min(max(y, 0), small_cam.height - 1)
            assert lab[i] == labels[y, x]
            assert (np.isnan(dep[i]) and not np.isfinite(depth[y, x])) or dep[i] == depth[y, x]
        else:
            assert lab[i] == 255 and np.isnan(dep[i])
    np.testing.assert_array_equal(proj.project_labels(labels, fill=0)[~proj.valid_mask], 0)


def test_torch_path_equals_cpu_path(small_cam, device):
    nside = 16
    proj = projection.FisheyeToHealpix(small_cam, nside, FACES8)
    img = _test_image(small_cam)
    labels = (img[..., 0] % 10).astype(np.int64)
    depth = img[..., 1].astype(np.float32)
    sampler = proj.module().to(device)
    batch = torch.from_numpy(np.stack([img, img[::-1, ::-1].copy()])).permute(0, 3, 1, 2).to(device)
    out = sampler(batch)
    assert out.shape == (2, 3, 8 * nside**2) and out.device.type == device.type
    np.testing.assert_allclose(out[0].cpu().numpy(), proj.project_image(img), atol=1e-4)
    np.testing.assert_allclose(out[1].cpu().numpy(), proj.project_image(img[::-1, ::-1]), atol=1e-4)
    np.testing.assert_array_equal(sampler.labels(torch.from_numpy(labels).to(device)).cpu().numpy(),
                                  proj.project_labels(labels))
    np.testing.assert_array_equal(sampler.depth(torch.from_numpy(depth).to(device)).cpu().numpy(),
                                  proj.project_depth(depth))
    # Differentiable in the image.
    x = batch[:1].double().requires_grad_(True)
    sampler.double()(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # Tables are buffers that never enter a checkpoint.
    assert sampler.state_dict() == {}


def test_numpy_fallback_equals_opencv(small_cam, monkeypatch):
    proj = projection.FisheyeToHealpix(small_cam, 16, FACES8)
    img = _test_image(small_cam)
    fast = proj.project_image(img)
    monkeypatch.setattr(_sampling, "_CV_MAX", 10)  # pretend the image exceeds OpenCV's limit
    np.testing.assert_allclose(proj.project_image(img), fast, atol=1e-4)


def test_rotation_about_optical_axis_permutes_pixels(small_cam):
    """A 90° turn about the pole maps HEALPix centres onto centres, so it is an exact permutation."""
    nside = 16
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    plain = projection.FisheyeToHealpix(small_cam, nside, range(12))
    turned = projection.FisheyeToHealpix(small_cam, nside, range(12), rotation=rot)
    ipix = np.arange(12 * nside**2)
    vec = np.stack(grid.pix2vec(nside, ipix))
    source = grid.vec2pix(nside, *(rot @ vec))
    labels = np.arange(small_cam.height * small_cam.width).reshape(small_cam.height, small_cam.width) % 251
    np.testing.assert_array_equal(turned.project_labels(labels), plain.project_labels(labels)[source])
    identity = projection.FisheyeToHealpix(small_cam, nside, range(12), rotation=np.eye(3))
    np.testing.assert_array_equal(identity.sample_positions, plain.sample_positions)


def test_vehicle_orientation_uses_extrinsics(small_cam):
    nside = 32
    proj = projection.FisheyeToHealpix(small_cam, nside, range(12), orientation="vehicle")
    axis = small_cam.rotation @ np.array([0.0, 0.0, 1.0])  # optical axis in the vehicle frame
    centre_pix = grid.vec2pix(nside, *axis)
    u, v = proj.sample_positions[centre_pix]
    intr = small_cam.to_dict()["intrinsic"]
    cx = intr["cx_offset"] + small_cam.width / 2 - 0.5
    cy = intr["cy_offset"] + small_cam.height / 2 - 0.5
    pix_size = grid.nside2resol(nside) * intr["k1"]
    assert abs(u - cx) < pix_size and abs(v - cy) < pix_size
    # A front camera does not see straight up, nor straight back.
    assert not proj.valid_mask[grid.vec2pix(nside, 0.0, 0.0, 1.0)]
    assert not proj.valid_mask[grid.vec2pix(nside, -1.0, 0.0, 0.0)]


def test_maps_are_cached_on_disk_per_calibration(small_cam, tmp_path, monkeypatch):
    cache = tmp_path / "maps"
    first = projection.FisheyeToHealpix(small_cam, 8, FACES8, cache_dir=cache)
    files = sorted((cache / "maps").glob("*.npz"))
    assert len(files) == 1
    projection.clear_memory_cache()

    def boom(self):
        raise AssertionError("the map was rebuilt instead of read from the cache")

    monkeypatch.setattr(projection.FisheyeToHealpix, "_build_map", boom)
    again = projection.FisheyeToHealpix(small_cam, 8, FACES8, cache_dir=cache)
    np.testing.assert_array_equal(again.sample_positions, first.sample_positions)
    monkeypatch.undo()
    # Another calibration, nside or orientation gets its own map.
    projection.FisheyeToHealpix(small_cam.resized(80, 61), 8, FACES8, cache_dir=cache)
    projection.FisheyeToHealpix(small_cam, 8, FACES8, orientation="vehicle", cache_dir=cache)
    projection.FisheyeToHealpix(small_cam, 4, FACES8, cache_dir=cache)
    assert len(list((cache / "maps").glob("*.npz"))) == 4
    # A damaged file is reported and rebuilt, not fatal (every kind of damage: tests/test_robustness.py).
    files[0].write_bytes(b"not a zip")
    projection.clear_memory_cache()
    with pytest.warns(projection.CacheWarning, match="damaged cache file"):
        rebuilt = projection.FisheyeToHealpix(small_cam, 8, FACES8, cache_dir=cache)
    np.testing.assert_array_equal(rebuilt.sample_positions, first.sample_positions)


def test_backprojection_takes_the_containing_pixel(small_cam):
    nside = 16
    back = projection.HealpixToFisheye(small_cam, nside, FACES8)
    values = np.arange(8 * nside**2, dtype=np.int64)
    img = back.backproject(values)
    assert img.shape == (small_cam.height, small_cam.width) and img.dtype == np.int64
    vv, uu = np.mgrid[0:small_cam.height, 0:small_cam.width]
    rays = small_cam.pixel_to_ray(np.stack([uu, vv], -1).reshape(-1, 2).astype(np.float64))
    expected = hp.vec2pix(nside, *rays.T, nest=True).reshape(img.shape)
    inside = expected < 8 * nside**2
    np.testing.assert_array_equal(img[inside], expected[inside])
    assert np.all(img[~inside] == 255)
    np.testing.assert_array_equal(back.covered_mask, inside)
    floats = back.backproject(values.astype(np.float32))
    assert np.all(np.isnan(floats[~inside]))


def test_project_then_backproject_round_trip(fv):
    """Labels survive fisheye -> sphere -> fisheye except near label boundaries."""
    cam = fv.resized(320, 242)
    nside = 128
    proj = projection.FisheyeToHealpix(cam, nside, FACES8)
    back = projection.HealpixToFisheye(cam, nside, FACES8)
    vv, uu = np.mgrid[0:cam.height, 0:cam.width]
    labels = ((uu // 40) + 3 * (vv // 40)) % 10
    again = back.backproject(proj.project_labels(labels))
    seen = back.covered_mask & (again != 255)
    assert seen.mean() > 0.9
    assert (again[seen] == labels[seen]).mean() > 0.97


def test_bilinear_backprojection_matches_healpy(small_cam):
    nside = 16
    back = projection.HealpixToFisheye(small_cam, nside, range(12), interpolation="bilinear")
    ipix = np.arange(12 * nside**2)
    theta, phi = hp.pix2ang(nside, ipix, nest=True)
    values = (np.cos(theta) + np.sin(theta) * np.cos(phi)).astype(np.float64)
    img = back.backproject(values)
    vv, uu = np.mgrid[0:small_cam.height, 0:small_cam.width]
    rays = small_cam.pixel_to_ray(np.stack([uu, vv], -1).reshape(-1, 2).astype(np.float64))
    t, p = hp.vec2ang(rays)
    pix, wgt = hp.get_interp_weights(nside, t, p, nest=True)
    np.testing.assert_allclose(img.ravel(), (values[pix] * wgt).sum(0), atol=1e-5)
    # Nearest and bilinear agree closely on a smooth field; bilinear is closer to the truth.
    truth = rays[:, 2] + rays[:, 0]
    near = back.backproject(values, interpolation="nearest").ravel()
    assert np.abs(img.ravel() - truth).mean() < np.abs(near - truth).mean()


def test_backproject_torch_equals_numpy(small_cam, device):
    nside = 16
    back = projection.HealpixToFisheye(small_cam, nside, FACES8)
    rng = np.random.default_rng(0)
    values = rng.normal(size=(2, 3, 8 * nside**2)).astype(np.float32)
    out = back.backproject(torch.from_numpy(values).to(device))
    assert out.shape == (2, 3, small_cam.height, small_cam.width) and out.device.type == device.type
    np.testing.assert_array_equal(out.cpu().numpy(), back.backproject(values))
    lab = rng.integers(0, 10, 8 * nside**2)
    np.testing.assert_array_equal(back.backproject(torch.from_numpy(lab).to(device)).cpu().numpy(),
                                  back.backproject(lab))
    bil = back.backproject(torch.from_numpy(values).to(device), interpolation="bilinear")
    np.testing.assert_allclose(bil.cpu().numpy(), back.backproject(values, interpolation="bilinear"),
                               atol=1e-5, equal_nan=True)


def test_bad_inputs_have_clear_errors(small_cam):
    proj = projection.FisheyeToHealpix(small_cam, 8, FACES8)
    with pytest.raises(ValueError, match=r"image has shape \(10, 10, 3\).*121×160"):
        proj.project_image(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="integer"):
        proj.project_labels(np.zeros((121, 160), np.float32))
    with pytest.raises(ValueError, match="orientation='world'"):
        projection.FisheyeToHealpix(small_cam, 8, FACES8, orientation="world")
    with pytest.raises(ValueError, match="proper rotation"):
        projection.FisheyeToHealpix(small_cam, 8, FACES8, rotation=np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match="nside=12"):
        projection.FisheyeToHealpix(small_cam, 12, FACES8)
    with pytest.raises(ValueError, match="base_pixels"):
        projection.FisheyeToHealpix(small_cam, 8, [7, 3])
    back = projection.HealpixToFisheye(small_cam, 8, FACES8)
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 512\)"):
        back.backproject(np.zeros(100))
    with pytest.raises(ValueError, match="interpolation='cubic'"):
        back.backproject(np.zeros(512), interpolation="cubic")
