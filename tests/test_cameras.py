"""Camera models against the published formulas, OpenCV, round trips, and calibration-file checks."""

from __future__ import annotations

import copy
import json
import math
import re

import cv2
import numpy as np
import pytest
import torch

from heal_swin import cameras
from heal_swin.cameras import (
    FV_SAMPLE,
    CalibrationError,
    KannalaBrandtCamera,
    RadialPolyCamera,
    fit_kannala_brandt,
    load_calibration,
    save_calibration,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# --------------------------------------------------------------------------------------------------
# slow, obviously correct references (scalar math, straight from the published formulas)
# --------------------------------------------------------------------------------------------------


def ref_radial_poly(intr: dict, ray) -> tuple[float, float]:
    x, y, z = (float(c) for c in ray)
    theta = math.atan2(math.sqrt(x * x + y * y), z)
    phi = math.atan2(y, x)
    rho = sum(intr[f"k{i}"] * theta**i for i in range(1, 5))
    u = rho * math.cos(phi) + intr["cx_offset"] + intr["width"] / 2 - 0.5
    v = rho * math.sin(phi) * intr["aspect_ratio"] + intr["cy_offset"] + intr["height"] / 2 - 0.5
    return u, v


def ref_kannala_brandt(fx, fy, cx, cy, k, ray) -> tuple[float, float]:
    x, y, z = (float(c) for c in ray)
    theta = math.atan2(math.sqrt(x * x + y * y), z)
    phi = math.atan2(y, x)
    theta_d = theta * (1 + k[0] * theta**2 + k[1] * theta**4 + k[2] * theta**6 + k[3] * theta**8)
    return fx * theta_d * math.cos(phi) + cx, fy * theta_d * math.sin(phi) + cy


def bisect(f, lo: float, hi: float) -> float:
    """Root of f in [lo, hi] with f(lo) and f(hi) of opposite sign."""
    flo = f(lo)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if (f(mid) > 0) == (flo > 0):
            lo, flo = mid, f(mid)
        else:
            hi = mid
    return 0.5 * (lo + hi)


def rays_at(theta, phi, length=1.0):
    """(..., 3) rays at incidence theta / azimuth phi (radians), OpenCV camera frame."""
    theta, phi = np.broadcast_arrays(theta, phi)
    d = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=-1)
    return d * np.asarray(length)[..., None]


def random_rays(rng, n: int, max_deg: float):
    theta = np.radians(rng.uniform(0.0, max_deg, n))
    phi = rng.uniform(-np.pi, np.pi, n)
    return rays_at(theta, phi, rng.uniform(0.1, 10.0, n))


@pytest.fixture
def fv() -> RadialPolyCamera:
    return load_calibration(FV_SAMPLE)


@pytest.fixture
def squashed() -> RadialPolyCamera:
    """A radial_poly camera with aspect_ratio != 1 and odd offsets."""
    return RadialPolyCamera(
        k=(330.0, -20.0, 40.0, -6.0),
        cx_offset=-7.25,
        cy_offset=11.5,
        width=1000,
        height=700,
        aspect_ratio=1.2,
    )


KB_PARAMS = dict(
    fx=331.5, fy=337.25, cx=640.3, cy=481.9, k=(0.03, -0.012, 0.004, -0.0006), width=1280, height=966
)


@pytest.fixture
def kb() -> KannalaBrandtCamera:
    return KannalaBrandtCamera(**KB_PARAMS)


# --------------------------------------------------------------------------------------------------
# radial_poly: formulas, round trips, max_theta
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["fv", "squashed"])
def test_radial_poly_matches_formula(which, fv, squashed):
    cam = {"fv": fv, "squashed": squashed}[which]
    intr = cam.to_dict()["intrinsic"]
    rng = np.random.default_rng(1)
    rays = np.concatenate([random_rays(rng, 200, 90.0), rays_at(np.radians(rng.uniform(90, 105, 100)), 1.0)])
    rays[-1] = rays_at(np.radians(105.0), -2.0)
    expected = np.array([ref_radial_poly(intr, r) for r in rays])
    np.testing.assert_allclose(cam.ray_to_pixel(rays), expected, rtol=0, atol=1e-9)
    assert np.any(np.arccos(rays[:, 2] / np.linalg.norm(rays, axis=1)) > np.radians(100))


def test_optical_axis_lands_on_principal_point(fv, squashed):
    for cam in (fv, squashed):
        cx = cam.cx_offset + cam.width / 2 - 0.5
        cy = cam.cy_offset + cam.height / 2 - 0.5
        np.testing.assert_allclose(cam.ray_to_pixel(np.array([0.0, 0.0, 3.0])), [cx, cy], atol=1e-12)
        np.testing.assert_allclose(cam.pixel_to_ray(np.array([cx, cy])), [0.0, 0.0, 1.0], atol=1e-12)
    assert (fv.cx, fv.cy) == pytest.approx((643.442, 479.407))


def test_aspect_ratio_scales_only_v(squashed):
    # same ray, aspect 1 vs 1.2: u identical, v offset from cy scaled by 1.2
    d = squashed.to_dict()["intrinsic"]
    plain = RadialPolyCamera(
        k=squashed.k, cx_offset=d["cx_offset"], cy_offset=d["cy_offset"], width=1000, height=700
    )
    rays = random_rays(np.random.default_rng(2), 50, 100.0)
    a, b = squashed.ray_to_pixel(rays), plain.ray_to_pixel(rays)
    np.testing.assert_allclose(a[:, 0], b[:, 0], atol=1e-9)
    np.testing.assert_allclose(a[:, 1] - squashed.cy, 1.2 * (b[:, 1] - plain.cy), atol=1e-9)


@pytest.mark.parametrize("which", ["fv", "squashed"])
def test_image_ray_image_round_trip_full_grid(which, fv, squashed):
    cam = {"fv": fv, "squashed": squashed}[which]
    u, v = np.meshgrid(np.arange(cam.width, dtype=np.float64), np.arange(cam.height, dtype=np.float64))
    uv = np.stack([u, v], axis=-1)
    rays = cam.pixel_to_ray(uv)
    assert rays.shape == (cam.height, cam.width, 3)
    np.testing.assert_allclose(np.linalg.norm(rays, axis=-1), 1.0, atol=1e-12)
    err = np.abs(cam.ray_to_pixel(rays) - uv).max()
    assert err <= 1e-6, err


def test_ray_image_ray_round_trip(fv, kb):
    rng = np.random.default_rng(3)
    for cam, max_deg in ((fv, 120.0), (kb, 120.0)):
        rays = random_rays(rng, 5000, max_deg)
        unit = rays / np.linalg.norm(rays, axis=-1, keepdims=True)
        back = cam.pixel_to_ray(cam.ray_to_pixel(rays))
        # |a − b| of unit vectors equals the angle between them to first order
        assert np.abs(back - unit).max() <= 1e-9


def test_incidence_angle_at_image_corners(fv):
    # Worst pixel-centre corner of the WoodScape FV image, cross-checked by bisecting ρ(θ) = r.
    # The corners themselves reach 112.9° (radius ≈ 802 px); the ≈104.6° of the reference is the
    # largest angle among the image pixels inside faces 0–7 (tests/test_projection.py).
    w, h = fv.width, fv.height
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], dtype=np.float64)
    theta = np.degrees(np.arccos(np.clip(fv.pixel_to_ray(corners)[:, 2], -1, 1)))
    radius = np.hypot(corners[:, 0] - fv.cx, corners[:, 1] - fv.cy)
    ref = [math.degrees(bisect(lambda t, r=r: float(fv.rho(t)) - r, 0.0, math.pi)) for r in radius]
    np.testing.assert_allclose(theta, ref, atol=1e-9)
    assert theta.max() == pytest.approx(112.91, abs=0.1)
    assert theta.max() > 90.0  # WoodScape sees behind the image plane


def test_max_theta_first_root_of_derivative():
    k = (339.749, -31.988, 48.275, -60.0)  # strongly negative k4: ρ turns over

    def drho(t):
        return k[0] + 2 * k[1] * t + 3 * k[2] * t**2 + 4 * k[3] * t**3

    grid = np.linspace(0, math.pi, 10001)
    first = int(np.argmax(drho(grid) <= 0))
    assert first > 0
    ref = bisect(drho, grid[first - 1], grid[first])
    cam = RadialPolyCamera(k=k, cx_offset=0.0, cy_offset=0.0, width=1280, height=966)
    assert cam.max_theta == pytest.approx(ref, abs=1e-12)
    assert cam.max_theta < math.pi

    closed_form = RadialPolyCamera(k=(300.0, 0.0, 0.0, -40.0), cx_offset=0, cy_offset=0, width=64, height=64)
    assert closed_form.max_theta == pytest.approx((300.0 / 160.0) ** (1 / 3), abs=1e-12)


def test_max_theta_kannala_brandt(fv, kb):
    assert fv.max_theta == math.pi
    assert KannalaBrandtCamera(**{**KB_PARAMS, "k": (0.0, 0.0, 0.0, 0.0)}).max_theta == math.pi
    k1, k2, k3, k4 = KB_PARAMS["k"]

    def dtheta_d(t):
        return 1 + 3 * k1 * t**2 + 5 * k2 * t**4 + 7 * k3 * t**6 + 9 * k4 * t**8

    grid = np.linspace(0, math.pi, 10001)
    first = int(np.argmax(dtheta_d(grid) <= 0))
    assert kb.max_theta == pytest.approx(bisect(dtheta_d, grid[first - 1], grid[first]), abs=1e-12)
    kb_turning = KannalaBrandtCamera(**{**KB_PARAMS, "k": (0.0, 0.0, 0.0, -0.01)})
    assert kb_turning.max_theta == pytest.approx((1 / 0.09) ** (1 / 8), abs=1e-12)


def test_beyond_max_theta_is_nan():
    cam = RadialPolyCamera(k=(300.0, 0.0, 0.0, -40.0), cx_offset=2.0, cy_offset=-1.0, width=640, height=480)
    m = cam.max_theta
    uv = cam.ray_to_pixel(rays_at(np.array([m - 1e-6, m + 1e-6, m + 0.3]), 0.7))
    assert np.all(np.isfinite(uv[0]))
    assert np.all(np.isnan(uv[1:]))
    r_max = float(cam.rho(m))
    uv_in = np.array([[cam.cx + r_max * 0.6 * (1 - 1e-9), cam.cy + r_max * 0.8 * (1 - 1e-9)]])
    uv_out = np.array([[cam.cx + r_max * 0.6 * (1 + 1e-6), cam.cy + r_max * 0.8 * (1 + 1e-6)]])
    assert np.all(np.isfinite(cam.pixel_to_ray(uv_in)))
    assert np.all(np.isnan(cam.pixel_to_ray(uv_out)))


def test_ray_length_does_not_matter(fv):
    rays = random_rays(np.random.default_rng(10), 20, 104.0)
    unit = rays / np.linalg.norm(rays, axis=-1, keepdims=True)
    for scale in (1e-200, 1e-3, 7.0, 1e200):
        np.testing.assert_allclose(fv.ray_to_pixel(unit * scale), fv.ray_to_pixel(unit), atol=1e-9)


def test_invalid_inputs_are_nan(fv):
    bad_rays = np.array([[0, 0, 0], [np.nan, 0, 1], [0, np.inf, 1], [1, 2, -np.inf]], dtype=np.float64)
    assert np.all(np.isnan(fv.ray_to_pixel(bad_rays)))
    assert np.all(np.isnan(fv.pixel_to_ray(np.array([[np.nan, 3.0], [1.0, np.inf]]))))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        fv.ray_to_pixel(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        fv.pixel_to_ray(np.zeros((4, 3)))


# --------------------------------------------------------------------------------------------------
# torch path
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_torch_matches_numpy(device, fv, kb):
    rng = np.random.default_rng(4)
    rays = random_rays(rng, 1000, 110.0)
    rays[:3] = [[0, 0, 1], [0, 0, 0], [np.nan, 1, 1]]
    for cam in (fv, kb):
        uv_np = cam.ray_to_pixel(rays)
        uv_t = cam.ray_to_pixel(torch.tensor(rays, device=device))
        assert uv_t.device.type == device and uv_t.dtype == torch.float64
        np.testing.assert_allclose(uv_t.cpu().numpy(), uv_np, atol=1e-9, equal_nan=True)
        valid = np.isfinite(uv_np).all(-1)
        rays_np = cam.pixel_to_ray(uv_np[valid])
        rays_t = cam.pixel_to_ray(torch.tensor(uv_np[valid], device=device))
        assert rays_t.device.type == device and rays_t.dtype == torch.float64
        np.testing.assert_allclose(rays_t.cpu().numpy(), rays_np, atol=1e-12)
        uv32 = cam.ray_to_pixel(torch.tensor(rays, device=device, dtype=torch.float32))
        assert uv32.dtype == torch.float32 and uv32.device.type == device
        np.testing.assert_allclose(uv32.cpu().numpy(), uv_np, atol=1e-3, equal_nan=True)
        rays32 = cam.pixel_to_ray(torch.tensor(uv_np[valid], device=device, dtype=torch.float32))
        assert rays32.dtype == torch.float32
        np.testing.assert_allclose(rays32.cpu().numpy(), rays_np, atol=1e-5)
        half = torch.tensor(rays[:5], device=device, dtype=torch.float16)
        assert cam.ray_to_pixel(half).dtype == torch.float16


def test_ray_to_pixel_is_differentiable(fv, kb):
    rng = np.random.default_rng(5)
    rays = np.concatenate([random_rays(rng, 12, 104.0), [[0.0, 0.0, 1.0], [0.0, 0.0, 2.5]]])
    for cam in (fv, kb):
        x = torch.tensor(rays, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(cam.ray_to_pixel, (x,))
    # invalid rays give NaN output but must not poison the gradient of the valid ones
    x = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.2, 1.0]], dtype=torch.float64, requires_grad=True)
    fv.ray_to_pixel(x)[1].sum().backward()
    assert torch.all(torch.isfinite(x.grad))


# --------------------------------------------------------------------------------------------------
# extrinsics
# --------------------------------------------------------------------------------------------------


def test_fv_extrinsic_orientation(fv):
    r = fv.rotation
    assert r.dtype == np.float64 and r.shape == (3, 3)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-12)
    # optical axis: forward and down in the vehicle frame (ISO 8855: x forward, y left, z up)
    np.testing.assert_allclose(r @ [0, 0, 1], [0.918, 0.007, -0.397], atol=2e-3)
    # image right points to the vehicle's right (−y)
    np.testing.assert_allclose(r @ [1, 0, 0], [0.009, -1.0, 0.003], atol=2e-3)
    np.testing.assert_array_equal(fv.translation, [3.7484, 0.0, 0.66017])
    assert fv.translation.dtype == np.float64


def test_identity_quaternion_and_normalisation():
    cam = RadialPolyCamera(k=(300.0,), cx_offset=0, cy_offset=0, width=10, height=10)
    np.testing.assert_array_equal(cam.rotation, np.eye(3))
    # 90° about vehicle z, slightly off unit norm: the rotation must still be orthonormal
    s = math.sqrt(0.5) * 1.0005
    cam = RadialPolyCamera(k=(300.0,), cx_offset=0, cy_offset=0, width=10, height=10, quaternion=(0, 0, s, s))
    np.testing.assert_allclose(cam.rotation @ [1, 0, 0], [0, 1, 0], atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Kannala–Brandt and the fit
# --------------------------------------------------------------------------------------------------


def test_kannala_brandt_matches_opencv(kb):
    rng = np.random.default_rng(6)
    pts = random_rays(rng, 500, 89.0)
    ours = kb.ray_to_pixel(pts)
    ref, _ = cv2.fisheye.projectPoints(
        pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), kb.camera_matrix, np.array(kb.k)
    )
    np.testing.assert_allclose(ours, ref.reshape(-1, 2), atol=1e-8)
    # undistortPoints gives normalised (x/z, y/z); OpenCV iterates to ~1e-8, so compare loosely
    modest = random_rays(rng, 300, 60.0)
    uv = kb.ray_to_pixel(modest)
    und = cv2.fisheye.undistortPoints(
        uv.reshape(-1, 1, 2), kb.camera_matrix, np.array(kb.k),
        criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-14),
    ).reshape(-1, 2)
    rays = kb.pixel_to_ray(uv)
    np.testing.assert_allclose(rays[:, :2] / rays[:, 2:], und, atol=1e-7)


def test_kannala_brandt_formula_beyond_90_degrees(kb):
    rng = np.random.default_rng(7)
    rays = rays_at(np.radians(rng.uniform(85, 120, 100)), rng.uniform(-np.pi, np.pi, 100))
    p = KB_PARAMS
    expected = np.array([ref_kannala_brandt(p["fx"], p["fy"], p["cx"], p["cy"], p["k"], r) for r in rays])
    np.testing.assert_allclose(kb.ray_to_pixel(rays), expected, atol=1e-9)


def test_fit_kannala_brandt_fv_170(fv):
    fitted, err = fit_kannala_brandt(fv, fov_deg=170.0)
    print(f"KB fit to FV_SAMPLE at 170 deg: max error {err:.4f} px")
    assert isinstance(fitted, KannalaBrandtCamera)
    assert 0.0 < err < 0.5  # measured 0.31 px
    assert (fitted.cx, fitted.cy) == (fv.cx, fv.cy)
    assert (fitted.width, fitted.height, fitted.name) == (fv.width, fv.height, fv.name)
    assert fitted.quaternion == fv.quaternion
    np.testing.assert_array_equal(fitted.translation, fv.translation)
    assert fitted.fx == fitted.fy
    # the reported error bounds an independent sample over the fitted cone
    rays = random_rays(np.random.default_rng(8), 2000, 85.0)
    diff = np.linalg.norm(fitted.ray_to_pixel(rays) - fv.ray_to_pixel(rays), axis=-1)
    assert diff.max() <= err + 1e-9
    # a narrower cone is easier to fit
    _, err_narrow = fit_kannala_brandt(fv, fov_deg=90.0)
    assert err_narrow < err


def test_fit_kannala_brandt_aspect_ratio(squashed):
    fitted, err = fit_kannala_brandt(squashed, fov_deg=150.0)
    assert fitted.fy == pytest.approx(fitted.fx * 1.2, rel=1e-12)
    assert err < 1.0


@pytest.mark.parametrize("fov", [190.0, 180.0, 0.0, -10.0, float("nan"), "wide"])
def test_fit_kannala_brandt_rejects_bad_fov(fv, fov):
    with pytest.raises(ValueError, match="fov_deg"):
        fit_kannala_brandt(fv, fov_deg=fov)
    if fov == 190.0:
        with pytest.raises(ValueError, match=r"fov_deg=190\.0 must satisfy 0 < fov_deg < 180"):
            fit_kannala_brandt(fv, fov_deg=fov)


# --------------------------------------------------------------------------------------------------
# calibration files
# --------------------------------------------------------------------------------------------------


def _set(path: str, value):
    def mutate(doc):
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[p]
        node[last] = value

    return mutate


def _drop(path: str):
    def mutate(doc):
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[p]
        del node[last]

    return mutate


def _kb_doc(doc):
    intr = {key: KB_PARAMS[key] for key in ("fx", "fy", "cx", "cy", "width", "height")}
    intr.update({f"k{i + 1}": c for i, c in enumerate(KB_PARAMS["k"])}, model="kannala_brandt")
    doc["intrinsic"] = intr


def _then(*mutators):
    def mutate(doc):
        for m in mutators:
            m(doc)

    return mutate


BAD_VARIANTS = {
    "missing k3": (_drop("intrinsic.k3"), "intrinsic.k3"),
    "k1 string": (_set("intrinsic.k1", "339.7"), "intrinsic.k1"),
    "k2 nan": (_set("intrinsic.k2", float("nan")), "intrinsic.k2"),
    "k4 null": (_set("intrinsic.k4", None), "intrinsic.k4"),
    "k1 negative": (_set("intrinsic.k1", -339.7), "intrinsic.k1"),
    "negative width": (_set("intrinsic.width", -5), "intrinsic.width"),
    "fractional width": (_set("intrinsic.width", 1280.5), "intrinsic.width"),
    "height string": (_set("intrinsic.height", "966"), "intrinsic.height"),
    "missing height": (_drop("intrinsic.height"), "intrinsic.height"),
    "zero aspect": (_set("intrinsic.aspect_ratio", 0.0), "intrinsic.aspect_ratio"),
    "missing aspect": (_drop("intrinsic.aspect_ratio"), "intrinsic.aspect_ratio"),
    "cx_offset bool": (_set("intrinsic.cx_offset", True), "intrinsic.cx_offset"),
    "cy_offset inf": (_set("intrinsic.cy_offset", float("inf")), "intrinsic.cy_offset"),
    "poly_order 5": (_set("intrinsic.poly_order", 5), "intrinsic.poly_order"),
    "poly_order 0": (_set("intrinsic.poly_order", 0), "intrinsic.poly_order"),
    "poly_order 2.5": (_set("intrinsic.poly_order", 2.5), "intrinsic.poly_order"),
    "poly_order string": (_set("intrinsic.poly_order", "4"), "intrinsic.poly_order"),
    "unknown model": (_set("intrinsic.model", "pinhole"), "intrinsic.model"),
    "missing model": (_drop("intrinsic.model"), "intrinsic.model"),
    "non-unit quaternion": (_set("extrinsic.quaternion", [1.0, 1.0, 0.0, 0.0]), "extrinsic.quaternion"),
    "short quaternion": (_set("extrinsic.quaternion", [0.0, 0.0, 1.0]), "extrinsic.quaternion"),
    "quaternion string": (_set("extrinsic.quaternion", "0 0 0 1"), "extrinsic.quaternion"),
    "translation length 2": (_set("extrinsic.translation", [1.0, 2.0]), "extrinsic.translation"),
    "translation nan": (_set("extrinsic.translation", [1.0, float("nan"), 0.0]), "extrinsic.translation"),
    "missing translation": (_drop("extrinsic.translation"), "extrinsic.translation"),
    "missing extrinsic": (_drop("extrinsic"), "extrinsic"),
    "intrinsic list": (_set("intrinsic", [1, 2]), "intrinsic"),
    "name number": (_set("name", 5), "name"),
    "kb missing fx": (_then(_kb_doc, _drop("intrinsic.fx")), "intrinsic.fx"),
    "kb negative fy": (_then(_kb_doc, _set("intrinsic.fy", -1.0)), "intrinsic.fy"),
    "kb k2 string": (_then(_kb_doc, _set("intrinsic.k2", "x")), "intrinsic.k2"),
}


@pytest.mark.parametrize("variant", sorted(BAD_VARIANTS))
def test_bad_calibration_raises(tmp_path, variant):
    mutate, field = BAD_VARIANTS[variant]
    doc = copy.deepcopy(FV_SAMPLE)
    mutate(doc)
    path = tmp_path / "00012_FV.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CalibrationError) as info:
        load_calibration(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: "), msg
    assert field in msg, msg
    assert isinstance(info.value, ValueError)
    with pytest.raises(CalibrationError, match=f"^<dict>: .*{field}"):
        load_calibration(doc)


@pytest.mark.parametrize(
    "text", ['{"extrinsic": {', "not json", "", '[1, 2, 3]', '{"a": 1} trailing'], ids=str
)
def test_unparseable_calibration_raises(tmp_path, text):
    path = tmp_path / "00012_FV.json"
    path.write_text(text)
    with pytest.raises(CalibrationError, match="00012_FV.json"):
        load_calibration(path)


def test_missing_file_and_directory_raise(tmp_path):
    with pytest.raises(CalibrationError, match="nope_FV.json"):
        load_calibration(tmp_path / "nope_FV.json")
    with pytest.raises(CalibrationError, match=re.escape(str(tmp_path))):
        load_calibration(tmp_path)


def test_error_messages_are_precise(tmp_path):
    path = tmp_path / "00012_FV.json"
    doc = copy.deepcopy(FV_SAMPLE)
    del doc["intrinsic"]["k3"]
    path.write_text(json.dumps(doc))
    with pytest.raises(CalibrationError) as info:
        load_calibration(path)
    assert str(info.value) == f"{path}: intrinsic.k3 is missing (required for poly_order 4)"
    doc = copy.deepcopy(FV_SAMPLE)
    doc["intrinsic"]["width"] = -5
    with pytest.raises(CalibrationError) as info:
        load_calibration(doc)
    assert str(info.value) == "<dict>: intrinsic.width=-5 must be a positive integer"


def test_poly_order_ignores_higher_coefficients():
    doc = copy.deepcopy(FV_SAMPLE)
    doc["intrinsic"]["poly_order"] = 3
    doc["intrinsic"]["k4"] = "ignored"
    cam = load_calibration(doc)
    assert cam.k == (339.749, -31.988, 48.275, 0.0)
    doc["intrinsic"]["poly_order"] = 2
    del doc["intrinsic"]["k3"], doc["intrinsic"]["k4"]
    assert load_calibration(doc).k == (339.749, -31.988, 0.0, 0.0)


def test_name_defaults(tmp_path):
    doc = copy.deepcopy(FV_SAMPLE)
    del doc["name"]
    path = tmp_path / "00012_MVL.json"
    path.write_text(json.dumps(doc))
    assert load_calibration(path).name == "MVL"
    plain = tmp_path / "calib.json"
    plain.write_text(json.dumps(doc))
    assert load_calibration(plain).name == ""
    assert load_calibration(doc).name == ""
    assert load_calibration(FV_SAMPLE).name == "FV"


def test_load_is_pure(tmp_path):
    path = tmp_path / "00001_FV.json"
    save_calibration(load_calibration(FV_SAMPLE), path)
    first = load_calibration(path)
    doc = json.loads(path.read_text())
    doc["intrinsic"]["k1"] = 300.0
    path.write_text(json.dumps(doc))
    second = load_calibration(path)
    assert first.k[0] == 339.749 and second.k[0] == 300.0
    assert load_calibration(FV_SAMPLE) is not load_calibration(FV_SAMPLE)


def test_save_load_round_trip(tmp_path, fv, kb, squashed):
    for i, cam in enumerate((fv, kb, squashed, fit_kannala_brandt(fv, 170.0)[0])):
        path = save_calibration(cam, tmp_path / f"{i:05d}_X.json")
        again = load_calibration(path)
        assert type(again) is type(cam)
        assert again == cam
        assert again.to_dict() == cam.to_dict()
        assert again.fingerprint() == cam.fingerprint()
        assert len(cam.fingerprint()) == 64 and int(cam.fingerprint(), 16) >= 0
        rays = random_rays(np.random.default_rng(i), 100, 100.0)
        np.testing.assert_array_equal(again.ray_to_pixel(rays), cam.ray_to_pixel(rays))
    # the on-disk layout is WoodScape's
    saved = json.loads((tmp_path / "00000_X.json").read_text())
    assert saved["intrinsic"]["model"] == "radial_poly" and saved["name"] == "FV"
    assert saved["extrinsic"]["quaternion"] == FV_SAMPLE["extrinsic"]["quaternion"]


def _perturbed(doc_path: str, delta):
    doc = copy.deepcopy(FV_SAMPLE)
    *parents, last = doc_path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    node[last] = delta(node[last])
    return load_calibration(doc)


@pytest.mark.parametrize(
    "field, delta",
    [
        ("intrinsic.k1", lambda v: v + 1e-9),
        ("intrinsic.k4", lambda v: v * 1.001),
        ("intrinsic.cx_offset", lambda v: v + 0.5),
        ("intrinsic.cy_offset", lambda v: v - 0.5),
        ("intrinsic.aspect_ratio", lambda v: 1.01),
        ("intrinsic.width", lambda v: 1282),
        ("intrinsic.height", lambda v: 968),
        ("extrinsic.quaternion", lambda v: [v[0] + 1e-6, *v[1:]]),
        ("extrinsic.translation", lambda v: [v[0], v[1] + 1e-3, v[2]]),
    ],
)
def test_fingerprint_changes_with_every_value(fv, field, delta):
    assert _perturbed(field, delta).fingerprint() != fv.fingerprint()


def test_fingerprint_stable_and_model_specific(fv):
    assert fv.fingerprint() == load_calibration(copy.deepcopy(FV_SAMPLE)).fingerprint()
    # an int and an equal float are the same value (966 vs 966.0 in the file)
    doc = copy.deepcopy(FV_SAMPLE)
    doc["intrinsic"]["height"] = 966
    assert load_calibration(doc).fingerprint() == fv.fingerprint()
    # the name is a label, not geometry
    doc["name"] = "front"
    assert load_calibration(doc).fingerprint() == fv.fingerprint()
    assert load_calibration(doc) != fv


@pytest.mark.parametrize("size", [(640, 483), (800, 600), (2560, 1932)])
def test_resized_maps_rays_to_scaled_pixels(fv, kb, size):
    rays = random_rays(np.random.default_rng(9), 300, 104.0)
    for cam in (fv, kb):
        small = cam.resized(*size)
        assert type(small) is type(cam) and (small.width, small.height) == size
        sx, sy = size[0] / cam.width, size[1] / cam.height
        expected = (cam.ray_to_pixel(rays) + 0.5) * [sx, sy] - 0.5
        np.testing.assert_allclose(small.ray_to_pixel(rays), expected, atol=1e-9)
        round_trip = small.resized(cam.width, cam.height)
        np.testing.assert_allclose(round_trip.ray_to_pixel(rays), cam.ray_to_pixel(rays), atol=1e-9)
        np.testing.assert_array_equal(small.rotation, cam.rotation)


def test_constructor_validation():
    with pytest.raises(CalibrationError, match="k1"):
        RadialPolyCamera(k=(-1.0, 0, 0, 0), cx_offset=0, cy_offset=0, width=10, height=10)
    with pytest.raises(CalibrationError, match="width"):
        RadialPolyCamera(k=(300.0,), cx_offset=0, cy_offset=0, width=0, height=10)
    with pytest.raises(CalibrationError, match="quaternion"):
        RadialPolyCamera(k=(300.0,), cx_offset=0, cy_offset=0, width=10, height=10, quaternion=(0, 0, 0, 2))
    with pytest.raises(CalibrationError, match="fx"):
        KannalaBrandtCamera(**{**KB_PARAMS, "fx": float("nan")})
    with pytest.raises(CalibrationError, match="k="):
        KannalaBrandtCamera(**{**KB_PARAMS, "k": (0.1, 0.2)})


def test_repr_and_public_names(fv, kb):
    text = repr(fv)
    assert "FV" in text and "radial_poly" in text and "1280x966" in text
    assert "kannala_brandt" in repr(kb)
    assert isinstance(fv, cameras.Camera) and isinstance(kb, cameras.Camera)
    for name in cameras.__all__:
        assert hasattr(cameras, name)
    with pytest.raises(AttributeError):
        fv.width = 3


def test_rotation_quaternion_round_trip():
    rng = np.random.default_rng(5)
    for q in [*rng.normal(size=(200, 4)), [0, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]:
        q = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
        r = cameras.quaternion_to_rotation(q)
        back = np.asarray(cameras.rotation_to_quaternion(r))
        # q and −q are the same rotation; the result is the one with w >= 0.
        assert np.allclose(back, q) or np.allclose(back, -q)
        np.testing.assert_allclose(cameras.quaternion_to_rotation(back), r, atol=1e-12)
