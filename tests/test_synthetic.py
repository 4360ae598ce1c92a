"""The synthetic WoodScape-format generator: layout, and images/labels/depth consistent with the
calibration."""

import json

import cv2
import numpy as np
import pytest

from heal_swin import cameras
from heal_swin.data import synthetic
from heal_swin.data.classes import WOODSCAPE_CLASSES


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    stems = synthetic.generate(root, frames=2, seed=3, size=(96, 72), progress=False)
    return root, stems


def test_writes_the_woodscape_layout(tree):
    root, stems = tree
    assert stems == sorted(f"{i:05d}_{c}" for i in range(2) for c in ("FV", "RV", "MVL", "MVR"))
    for stem in stems:
        rgb = cv2.imread(str(root / "rgb_images" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        lbl = cv2.imread(str(root / "semantic_annotations" / "gtLabels" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        depth = np.load(root / "depth_maps" / "raw_data" / f"{stem}.npy")
        cam = cameras.load_calibration(root / "calibration" / f"{stem}.json")
        assert rgb.shape == (72, 96, 3) and rgb.dtype == np.uint8
        assert lbl.shape == (72, 96) and lbl.dtype == np.uint8 and lbl.max() < len(WOODSCAPE_CLASSES)
        assert depth.shape == (72, 96) and depth.dtype == np.float32
        assert (cam.width, cam.height) == (96, 72) and cam.name == stem.split("_")[1]
        assert (root / "semantic_annotations" / "rgbLabels" / f"{stem}.png").is_file()
    info = json.loads((root / "semantic_annotations" / "seg_annotation_info.json").read_text())
    assert info["classes"] == list(WOODSCAPE_CLASSES)


def test_same_seed_same_frames_and_frames_differ(tree, tmp_path):
    root, _ = tree
    synthetic.generate(tmp_path, frames=1, seed=3, size=(96, 72), cameras=("FV",), progress=False)
    a = cv2.imread(str(root / "rgb_images" / "00000_FV.png"))
    b = cv2.imread(str(tmp_path / "rgb_images" / "00000_FV.png"))
    np.testing.assert_array_equal(a, b)
    c = cv2.imread(str(root / "rgb_images" / "00001_FV.png"))
    assert np.abs(a.astype(int) - c).mean() > 5


def test_depth_and_labels_agree_with_the_calibration():
    """Road pixels: the depth is the distance along the pixel's ray to the ground plane."""
    cams = synthetic.rig_cameras(160, 121)
    scene = synthetic.random_scene(np.random.default_rng(0))
    for cam in cams.values():
        rgb, labels, depth = synthetic.render(scene, cam)
        vv, uu = np.mgrid[0:cam.height, 0:cam.width]
        rays = cam.pixel_to_ray(np.stack([uu, vv], -1).reshape(-1, 2).astype(float)) @ cam.rotation.T
        t_ground = -cam.translation[2] / rays[:, 2]
        road = labels.ravel() == WOODSCAPE_CLASSES.index("road")
        assert road.mean() > 0.1
        np.testing.assert_allclose(depth.ravel()[road], t_ground[road], rtol=1e-5)
        sky = depth.ravel() == synthetic.SKY_DEPTH
        assert np.all(rays[sky, 2] > 0)  # sky only above the horizon
        assert np.all(labels.ravel()[sky] == 0)
        assert np.all(np.isfinite(depth))


def test_rig_orientation():
    cams = synthetic.rig_cameras()
    axes = {name: cam.rotation @ [0, 0, 1] for name, cam in cams.items()}
    assert axes["FV"][0] > 0.9 and axes["RV"][0] < -0.85
    assert axes["MVL"][1] > 0.5 and axes["MVR"][1] < -0.5
    assert all(a[2] < 0 for a in axes.values())  # every camera looks down a little
    # The FV camera of the rig has the sample calibration's intrinsics.
    fv = cameras.load_calibration(cameras.FV_SAMPLE)
    np.testing.assert_allclose(cams["FV"].ray_to_pixel(np.array([0.3, 0.2, 1.0])),
                               fv.ray_to_pixel(np.array([0.3, 0.2, 1.0])), atol=1e-9)


def test_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        synthetic.main(["--out", str(tmp_path), "--size", "big"])
    assert err.value.code == 2 and "--size 'big'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        synthetic.main(["--out", str(tmp_path), "--cameras", "FV,XX", "--size", "32x24"])
    assert "unknown ['XX']" in capsys.readouterr().err
