"""The projection preview tool (heal_swin.tools.preview), its views, and the WoodScape file finder."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest

from heal_swin import cameras, grid
from heal_swin.data.woodscape import FrameFiles, find_frame_files, frame_stem
from heal_swin.projection import sphere_to_camera, views
from heal_swin.tools import preview

W, H = 320, 242
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RIG = (("FV", 0.0), ("MVL", 90.0), ("RV", 180.0), ("MVR", 270.0))  # yaw about the vehicle z axis


@pytest.fixture(autouse=True)
def _private_map_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEAL_SWIN_CACHE", str(tmp_path / "map_cache"))


def small_camera(yaw_deg: float = 0.0, name: str = "FV"):
    """FV_SAMPLE at 320×242, its extrinsic rotation yawed by `yaw_deg` about the vehicle z axis."""
    base = cameras.load_calibration(cameras.FV_SAMPLE).resized(W, H)
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    yaw = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    d = copy.deepcopy(base.to_dict())
    d["name"] = name
    d["extrinsic"]["quaternion"] = list(cameras.rotation_to_quaternion(yaw @ base.rotation))
    return cameras.load_calibration(d)


def synthetic_frame(cam):
    """An RGB image coloured by ray direction with incidence stripes, and labels by region."""
    vv, uu = np.meshgrid(np.arange(cam.height), np.arange(cam.width), indexing="ij")
    rays = cam.pixel_to_ray(np.stack([uu, vv], axis=-1).astype(np.float64))
    theta = np.degrees(np.arccos(rays[..., 2]))
    stripes = (np.floor(theta / 10) % 2) * 90
    image = np.stack([(rays[..., 0] + 1) * 110 + stripes, (rays[..., 1] + 1) * 110, 200 - stripes], -1)
    labels = np.zeros((cam.height, cam.width), dtype=np.uint8)
    labels[rays[..., 1] > 0.2] = 1                       # road below
    labels[(rays[..., 1] > 0.2) & (np.abs(rays[..., 0]) < 0.05)] = 2
    labels[(rays[..., 1] < -0.2) & (rays[..., 0] < 0)] = 6
    return np.clip(image, 0, 255).astype(np.uint8), labels


def write_single(tmp_path, cam=None):
    cam = cam or small_camera()
    image, labels = synthetic_frame(cam)
    paths = {"image": tmp_path / "img.png", "labels": tmp_path / "lbl.png",
             "calibration": tmp_path / "cal.json"}
    cv2.imwrite(str(paths["image"]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(paths["labels"]), labels)
    cameras.save_calibration(cam, paths["calibration"])
    return paths


def write_rig(root, doubled=False, with_labels=True, frame="00000"):
    """A WoodScape tree with the four rig cameras of one frame (flat or doubled folders)."""
    def folder(top, sub=""):
        path = root / top / (top if doubled else "") / sub
        path.mkdir(parents=True, exist_ok=True)
        return path

    for name, yaw in RIG:
        cam = small_camera(yaw, name)
        image, labels = synthetic_frame(cam)
        cv2.imwrite(str(folder("rgb_images") / f"{frame}_{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cameras.save_calibration(cam, folder("calibration") / f"{frame}_{name}.json")
        if with_labels:
            cv2.imwrite(str(folder("semantic_annotations", "gtLabels") / f"{frame}_{name}.png"), labels)
    return root


def assert_readable_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[1] > 800 and img.shape[0] > 400, img.shape
    assert img.reshape(-1, 3).std(axis=0).max() > 10, "the figure is one flat colour"


# ------------------------------------------------------------------------------------------ one camera


@pytest.mark.parametrize("orientation, with_labels", [("camera", True), ("vehicle", False)])
def test_main_writes_a_figure(tmp_path, capsys, orientation, with_labels):
    paths = write_single(tmp_path)
    out = tmp_path / "figs" / "preview.png"
    argv = ["--image", str(paths["image"]), "--calibration", str(paths["calibration"]), "--out", str(out),
            "--nside", "32", "--orientation", orientation, "--faces", "0-7" if with_labels else "all"]
    if with_labels:
        argv += ["--labels", str(paths["labels"])]
    assert preview.main(argv) == 0
    assert_readable_png(out)
    printed = capsys.readouterr().out
    assert "sphere pixels of faces" in printed and f"wrote {out}" in printed


def test_help_shows_examples(capsys):
    assert preview.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "heal-swin-preview --image" in text and "--rig 00000" in text


def test_coverage_report_of_the_woodscape_front_camera():
    cam = cameras.load_calibration(cameras.FV_SAMPLE)
    report = preview.coverage_report(cam, nside=256, base_pixels=range(8), orientation="camera")
    assert report["sphere_seen"] == pytest.approx(0.752, abs=5e-4)
    assert report["image_covered"] == pytest.approx(0.933, abs=5e-4)
    assert report["max_incidence_deg"] == pytest.approx(112.9, abs=0.05)
    assert report["max_incidence_covered_deg"] == pytest.approx(104.6, abs=0.1)
    # radial_poly: one pixel at the principal point spans 1/k1 radians
    assert report["image_pixel_centre_deg"] == pytest.approx(np.degrees(1 / 339.749), rel=1e-3)
    assert report["sphere_pixel_deg"] == pytest.approx(np.degrees(grid.nside2resol(256)))
    assert report["suggested_nside"] == 256
    text = preview.format_coverage(report)
    assert "75.2%" in text and "93.3%" in text and "112.9°" in text


def test_render_preview_returns_the_report_and_a_small_error(tmp_path):
    cam = small_camera()
    image, labels = synthetic_frame(cam)
    stats = preview.render_preview(cam, image, labels, nside=64, base_pixels=range(12), out=tmp_path / "p.png")
    assert_readable_png(tmp_path / "p.png")
    assert stats["image_covered"] == 1.0  # all 12 faces hold every ray
    assert 0 < stats["mean_abs_error"] < 20


def test_missing_image_file(tmp_path, capsys):
    paths = write_single(tmp_path)
    missing = tmp_path / "nope.png"
    code = preview.main(["--image", str(missing), "--calibration", str(paths["calibration"]),
                         "--out", str(tmp_path / "o.png")])
    assert code == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err
    assert not (tmp_path / "o.png").exists()


def test_image_size_must_match_the_calibration(tmp_path, capsys):
    paths = write_single(tmp_path)
    full = tmp_path / "full.json"
    cameras.save_calibration(cameras.load_calibration(cameras.FV_SAMPLE), full)
    code = preview.main(["--image", str(paths["image"]), "--calibration", str(full),
                         "--out", str(tmp_path / "o.png")])
    assert code == 2
    err = capsys.readouterr().err
    assert str(paths["image"]) in err and str(full) in err and "320×242" in err and "1280×966" in err


def test_labels_size_must_match(tmp_path, capsys):
    paths = write_single(tmp_path)
    cv2.imwrite(str(paths["labels"]), np.zeros((10, 10), dtype=np.uint8))
    code = preview.main(["--image", str(paths["image"]), "--calibration", str(paths["calibration"]),
                         "--labels", str(paths["labels"]), "--out", str(tmp_path / "o.png")])
    assert code == 2
    assert str(paths["labels"]) in capsys.readouterr().err


@pytest.mark.parametrize("faces", ["0-15", "x", "5-2"])
def test_bad_faces(tmp_path, capsys, faces):
    paths = write_single(tmp_path)
    code = preview.main(["--image", str(paths["image"]), "--calibration", str(paths["calibration"]),
                         "--faces", faces, "--out", str(tmp_path / "o.png")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--base-pixels" in err and repr(faces) in err


def test_format_faces():
    assert grid.format_base_pixels(range(8)) == "0-7"
    assert grid.format_base_pixels(range(12)) == "0-11"
    assert grid.format_base_pixels([0, 1, 4, 6, 7, 8]) == "0,1,4,6-8"


# ------------------------------------------------------------------------------------------ views


def test_mollweide_view_round_trip_and_area():
    view = views.MollweideView(360)
    rows, cols = np.nonzero(view.inside)
    col, row = view.to_raster(view.theta[view.inside], view.phi[view.inside])
    np.testing.assert_allclose(col, cols, atol=1e-6)
    np.testing.assert_allclose(row, rows, atol=1e-6)
    assert view.inside.mean() == pytest.approx(np.pi / 4, abs=0.01)  # ellipse in its box
    # the top row is near the north pole, φ grows to the left of the centre
    assert np.nanmin(view.theta[0]) < 0.2
    mid = view.height // 2
    assert view.phi[mid, view.width // 2 - 20] < np.pi / 2 < view.phi[mid, view.width // 2 + 20]


def test_orthographic_view_looks_like_the_fisheye():
    cam = small_camera(30.0)
    for orientation in ("camera", "vehicle"):
        to_camera = sphere_to_camera(cam, orientation)
        view = views.OrthographicView(to_camera, 101)
        rays = view.dirs @ to_camera.T  # back into the camera frame
        np.testing.assert_allclose(rays[50, 50], [0, 0, 1], atol=1e-12)  # centre = optical axis
        assert rays[50, 90, 0] > 0.7 and abs(rays[50, 90, 1]) < 1e-12     # right = image right (+x)
        assert rays[90, 50, 1] > 0.7 and abs(rays[90, 50, 0]) < 1e-12     # down = image down (+y)
    centre = views.OrthographicView(sphere_to_camera(cam, "vehicle"), 101).dirs[50, 50]
    np.testing.assert_allclose(centre, cam.rotation @ [0, 0, 1], atol=1e-12)


def test_lookup_and_boundaries():
    view = views.MollweideView(200)
    local, face = views.lookup(view, 4, range(8))
    assert set(np.unique(face[view.inside])) == set(range(12))
    assert (local[face >= 8] == views.UNUSED_FACE).all()
    assert (local[~view.inside] == views.OUTSIDE_VIEW).all()
    ids = np.array([[0, 0, 1], [0, 0, 1], [-1, -1, -1]])
    np.testing.assert_array_equal(views.boundaries(ids), [[0, 1, 1], [0, 1, 1], [0, 0, 0]])


# ------------------------------------------------------------------------------------------ rig


def test_rig_main_writes_a_figure(tmp_path, capsys):
    root = write_rig(tmp_path / "woodscape")
    out = tmp_path / "rig.png"
    assert preview.main(["--rig", "0", "--root", str(root), "--nside", "32", "--out", str(out)]) == 0
    assert_readable_png(out)
    printed = capsys.readouterr().out
    assert all(name in printed for name, _ in RIG) and "all" in printed


def test_rig_fusion_covers_more_than_any_camera():
    cams = {name: small_camera(yaw, name) for name, yaw in RIG}
    frames = {name: synthetic_frame(cam) for name, cam in cams.items()}
    images = {n: f[0] for n, f in frames.items()}
    labels = {n: f[1] for n, f in frames.items() if n != "RV"}  # one camera without labels
    fusion = preview.fuse_rig(cams, images, labels, nside=16, base_pixels="all")
    seen = fusion.which >= 0
    assert seen.mean() > fusion.valid.mean(axis=1).max() + 0.1
    # every pixel comes from a camera that sees it, and it is the one nearest its axis
    assert fusion.valid[fusion.which[seen], np.nonzero(seen)[0]].all()
    front = grid.vec2pix(16, *(cams["FV"].rotation @ [0, 0, 1]))
    assert fusion.names[fusion.which[front]] == "FV"
    rv = fusion.names.index("RV")
    assert (fusion.labels[fusion.which == rv] == 255).all()
    assert (fusion.labels[fusion.which == fusion.names.index("FV")] != 255).any()
    stats = preview._rig_stats(fusion)
    assert stats["total"] == pytest.approx(seen.mean())
    assert sum(stats["chosen"].values()) == pytest.approx(stats["total"])


def test_rig_rejects_camera_orientation(tmp_path, capsys):
    root = write_rig(tmp_path / "ws", with_labels=False)
    code = preview.main(["--rig", "0", "--root", str(root), "--orientation", "camera",
                         "--out", str(tmp_path / "o.png")])
    assert code == 2 and "vehicle" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ layout


@pytest.mark.parametrize("doubled", [False, True])
def test_find_frame_files(tmp_path, doubled):
    root = write_rig(tmp_path / "ws", doubled=doubled)
    files = find_frame_files(root, "00000")
    assert list(files) == ["FV", "RV", "MVL", "MVR"]
    inner = ("rgb_images",) if doubled else ()
    assert files["RV"].image == root.joinpath("rgb_images", *inner, "00000_RV.png")
    for f in files.values():
        assert isinstance(f, FrameFiles)
        assert f.image.is_file() and f.calibration.is_file() and f.labels.is_file()
    assert find_frame_files(root, 0, cameras=("MVL",))["MVL"] == files["MVL"]


def test_find_frame_files_test_set_and_missing_labels(tmp_path):
    root = tmp_path / "ws"
    write_rig(root, with_labels=False)
    (root / "rgb_images").rename(root / "rgb_images(test_set)")
    files = find_frame_files(root, "00000")
    assert files["FV"].image == root / "rgb_images(test_set)" / "00000_FV.png"
    assert all(f.labels is None for f in files.values())


def test_find_frame_files_names_what_is_missing(tmp_path):
    root = write_rig(tmp_path / "ws")
    (root / "calibration" / "00000_RV.json").unlink()
    with pytest.raises(FileNotFoundError) as info:
        find_frame_files(root, "00000")
    message = str(info.value)
    assert "00000" in message and "RV" in message and "calibration" in message
    assert str(root / "calibration" / "00000_RV.json") in message
    with pytest.raises(FileNotFoundError, match="00007"):
        find_frame_files(root, 7)


def test_frame_stem():
    assert frame_stem(12) == "00012" and frame_stem("12") == "00012" and frame_stem("00345") == "00345"
