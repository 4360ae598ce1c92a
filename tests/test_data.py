"""Readers, splits, datasets and augmentation on generated WoodScape-format trees."""

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from heal_swin import cameras, grid, projection
from heal_swin.data import (PAPER_SYNWOODSCAPE_8, SYNWOODSCAPE_CLASSES, Augment, DatasetError, FlatDataset,
                            HealpixDataset, WoodScapeTree, class_lut, flip_camera, quarter_turn_permutation,
                            split_frames, synthetic)
from heal_swin.data.augment import axis_rotation, hflip_item

SIZE = (64, 48)


@pytest.fixture(scope="module")
def flat_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("flat")
    synthetic.generate(root, frames=5, seed=1, size=SIZE, progress=False, workers=1)
    return root


def _doubled_copy(src, dst):
    """The layout of the real downloads: every top folder doubled, test split in *(test_set)."""
    for top in ("rgb_images", "calibration", "semantic_annotations", "depth_maps"):
        shutil.copytree(src / top, dst / f"{top}(test_set)" / top)
    return dst


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEAL_SWIN_CACHE", str(tmp_path / "cache"))


# ----------------------------------------------------------------------------- readers


def test_reader_flat_and_doubled_layouts_agree(flat_tree, tmp_path):
    flat = WoodScapeTree(flat_tree)
    doubled = WoodScapeTree(_doubled_copy(flat_tree, tmp_path / "dl"), test_set=True)
    assert [s.stem for s in flat.samples] == [s.stem for s in doubled.samples]
    assert len(flat) == 20 and flat.frames == [f"{i:05d}" for i in range(5)]
    a, b = flat.load(flat.samples[3], depth=True), doubled.load(doubled.samples[3], depth=True)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["labels"], b["labels"])
    np.testing.assert_array_equal(a["depth"], b["depth"])
    assert a["camera"] == b["camera"]
    assert flat.check(depth=True) == []
    only = WoodScapeTree(flat_tree, cameras=["MVL"])
    assert {s.camera for s in only.samples} == {"MVL"} and len(only) == 5


def test_generator_output_reads_back_consistently(flat_tree):
    """Labels and depth agree with the image at object boundaries: every label edge that separates
    an object from the road is also a jump in depth."""
    tree = WoodScapeTree(flat_tree)
    item = tree.load(tree.samples[0], depth=True)
    lab, dep = item["labels"], item["depth"]
    assert item["image"].shape == (SIZE[1], SIZE[0], 3) and item["image"].dtype == np.uint8
    horizontal = (lab[:, 1:] != lab[:, :-1]) & ((lab[:, 1:] == 1) | (lab[:, :-1] == 1)) \
        & ~np.isin(lab[:, 1:], [2, 3]) & ~np.isin(lab[:, :-1], [2, 3])
    if horizontal.any():
        jump = np.abs(dep[:, 1:] - dep[:, :-1])[horizontal]
        assert np.median(jump) > 0.05
    assert tree.class_names[1] == "road"


def test_reader_errors_name_stem_and_path(flat_tree, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(flat_tree, root)
    (root / "semantic_annotations" / "gtLabels" / "00001_FV.png").unlink()
    (root / "calibration" / "00002_RV.json").unlink()
    cal = root / "calibration" / "00003_MVL.json"
    doc = json.loads(cal.read_text())
    del doc["intrinsic"]["k3"]
    cal.write_text(json.dumps(doc))
    cv2.imwrite(str(root / "rgb_images" / "00004_MVR.png"), np.zeros((10, 10, 3), np.uint8))
    tree = WoodScapeTree(root)
    problems = "\n".join(tree.check())
    assert "00001_FV: label file" in problems and "gtLabels/00001_FV.png is missing" in problems
    assert "00002_RV: calibration file" in problems
    assert "00003_MVL" in problems and "intrinsic.k3" in problems
    assert "00004_MVR" in problems and "10×10" in problems and "64×48" in problems
    assert len(tree.check()) == 4  # every problem at once, nothing else
    with pytest.raises(DatasetError, match="00004_MVR.*is 10×10 but 00004_MVR.json says 64×48"):
        tree.load(next(s for s in tree.samples if s.stem == "00004_MVR"))
    with pytest.raises(DatasetError, match="00001_FV: labels file is missing"):
        tree.load(next(s for s in tree.samples if s.stem == "00001_FV"))
    with pytest.raises(DatasetError, match="no image folder"):
        WoodScapeTree(tmp_path)
    with pytest.raises(DatasetError, match="unknown \\['XV'\\]"):
        WoodScapeTree(root, cameras=["XV"])


# ----------------------------------------------------------------------------- splits and classes


def test_splits_are_disjoint_deterministic_and_grouped():
    frames = [f"{i:05d}" for i in range(100)]
    a = split_frames(frames, (0.7, 0.2, 0.1), seed=4, group_size=5)
    b = split_frames(frames, (0.7, 0.2, 0.1), seed=4, group_size=5)
    assert a == b
    assert [len(a[k]) for k in ("train", "val", "test")] == [70, 20, 10]
    sets = [set(a[k]) for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert set().union(*sets) == set(frames)
    for k, members in a.items():  # consecutive groups of 5 never straddle splits
        assert all(f"{(int(f) // 5) * 5 + j:05d}" in members for f in members for j in range(5))
    assert split_frames(frames, (0.7, 0.2, 0.1), seed=5, group_size=5) != a
    with pytest.raises(ValueError, match="sum to 1"):
        split_frames(frames, (0.5, 0.2, 0.1))


def test_all_cameras_of_a_frame_share_a_split(flat_tree):
    seen = {}
    for split in ("train", "val", "test"):
        ds = HealpixDataset(flat_tree, nside=4, split=split, split_fractions=(0.6, 0.2, 0.2))
        for s in ds.items:
            assert seen.setdefault(s.frame, split) == split


def test_class_merges():
    lut = class_lut(SYNWOODSCAPE_CLASSES, PAPER_SYNWOODSCAPE_8)
    assert lut[SYNWOODSCAPE_CLASSES.index("road")] == PAPER_SYNWOODSCAPE_8.index("road")
    assert lut[SYNWOODSCAPE_CLASSES.index("pedestrian")] == 0
    assert lut[SYNWOODSCAPE_CLASSES.index("ego-vehicle")] == 7
    assert lut[200] == 255
    custom = class_lut(SYNWOODSCAPE_CLASSES, PAPER_SYNWOODSCAPE_8, {"terrain": "sidewalk"})
    assert custom[SYNWOODSCAPE_CLASSES.index("terrain")] == PAPER_SYNWOODSCAPE_8.index("sidewalk")
    with pytest.raises(ValueError, match="'lava' is not one of"):
        class_lut(SYNWOODSCAPE_CLASSES, PAPER_SYNWOODSCAPE_8, {"lava": "road"})


# ----------------------------------------------------------------------------- datasets


def test_healpix_dataset_items(flat_tree):
    ds = HealpixDataset(flat_tree, nside=8, base_pixels=range(8), split="all", mean=(0, 0, 0), std=(1, 1, 1))
    item = ds[0]
    n = 8 * 64
    assert item["image"].shape == (3, n) and item["image"].dtype == torch.float32
    assert item["labels"].shape == (n,) and item["labels"].dtype == torch.int64
    assert item["valid"].dtype == torch.bool and 0.5 < item["valid"].float().mean() < 1
    assert item["camera"] == "FV" and item["stem"] == "00000_FV"
    # Equals projecting the files by hand.
    tree = WoodScapeTree(flat_tree)
    raw = tree.load(tree.samples[0])
    proj = projection.FisheyeToHealpix(raw["camera"], 8, range(8))
    np.testing.assert_allclose(item["image"].numpy(), proj.project_image(raw["image"]), atol=1e-4)
    np.testing.assert_array_equal(item["labels"].numpy(), proj.project_labels(raw["labels"]))
    assert torch.all(item["labels"][~item["valid"]] == 255)
    void = HealpixDataset(flat_tree, nside=8, split="all", outside="void")[0]
    assert torch.all(void["labels"][~void["valid"]] == 0)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, n) and len(batch["stem"]) == 3


def test_depth_dataset_and_rig(flat_tree):
    ds = HealpixDataset(flat_tree, task="depth", nside=8, split="all")
    item = ds[0]
    assert item["depth"].dtype == torch.float32
    assert torch.all(torch.isfinite(item["depth"][item["valid"]]))
    assert torch.all(~item["valid"][torch.isnan(item["depth"])])
    capped = HealpixDataset(flat_tree, task="depth", nside=8, split="all", max_depth=20.0)[0]
    assert torch.all(capped["depth"][capped["valid"]] <= 20.0)
    rig = HealpixDataset(flat_tree, nside=8, split="all", rig=True, base_pixels=range(12))
    assert len(rig) == 5 and rig.orientation == "vehicle"
    item = rig[0]
    assert item["image"].shape == (3, 12 * 64) and item["camera"] == "rig" and item["stem"] == "00000"
    single = HealpixDataset(flat_tree, nside=8, split="all", cameras=["FV"], orientation="vehicle",
                            base_pixels=range(12))[0]
    assert item["valid"].sum() > single["valid"].sum()


def test_flat_dataset(flat_tree):
    ds = FlatDataset(flat_tree, size=(32, 40), split="all")
    item = ds[1]
    assert item["image"].shape == (3, 32, 40) and item["labels"].shape == (32, 40)
    assert ds.camera_for(1).width == 40 and ds.camera_for(1).height == 32
    depth = FlatDataset(flat_tree, task="depth", size=(32, 40), split="all")[1]
    assert depth["depth"].shape == (32, 40) and depth["valid"].all()
    with pytest.raises(ValueError, match="quarter_turns act on the sphere's faces"):
        FlatDataset(flat_tree, split="all", transform={"quarter_turns": True})


def test_sample_cache(flat_tree, tmp_path):
    ds = HealpixDataset(flat_tree, nside=8, split="all", sample_cache=tmp_path / "samples")
    first = ds[2]
    assert len(list((tmp_path / "samples").glob("*.npz"))) == 1
    again = ds[2]
    for key in ("image", "labels", "valid"):
        assert torch.equal(first[key], again[key])
    # Another class merge is another cache entry, not a stale hit.
    merged = HealpixDataset(flat_tree, nside=8, split="all", sample_cache=tmp_path / "samples",
                            class_merge={"traffic_sign": "void"})
    merged[2]
    assert len(list((tmp_path / "samples").glob("*.npz"))) == 2


def test_dataset_argument_errors(flat_tree):
    with pytest.raises(ValueError, match="task='seg'"):
        HealpixDataset(flat_tree, task="seg")
    with pytest.raises(ValueError, match="split='dev'"):
        HealpixDataset(flat_tree, split="dev")
    with pytest.raises(ValueError, match="not closed under quarter turns"):
        HealpixDataset(flat_tree, nside=4, base_pixels=range(6), split="all", transform={"quarter_turns": True})
    with pytest.raises(ValueError, match="augment.photometric\\[0\\].name='Nope'"):
        Augment(photometric=[{"name": "Nope"}])


# ----------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize("faces", [range(8), range(12)])
def test_quarter_turn_equals_projecting_the_rotated_scene(faces):
    cam = cameras.load_calibration(cameras.FV_SAMPLE).resized(120, 91)
    nside = 16
    labels = (np.arange(cam.height * cam.width).reshape(cam.height, cam.width) * 7919) % 251
    plain = projection.FisheyeToHealpix(cam, nside, faces)
    for k in (1, 2, 3):
        turned = projection.FisheyeToHealpix(cam, nside, faces, rotation=axis_rotation([0, 0, 1], k * np.pi / 2))
        perm = quarter_turn_permutation(nside, faces, k)
        np.testing.assert_array_equal(turned.project_labels(labels), plain.project_labels(labels)[perm])
        np.testing.assert_array_equal(turned.valid_mask, plain.valid_mask[perm])


def test_hflip_through_the_calibration():
    cam = cameras.load_calibration(cameras.FV_SAMPLE).resized(120, 91)
    flipped = flip_camera(cam)
    # Flipping twice is the identity (to float rounding of the quaternion).
    twice = flip_camera(flipped)
    np.testing.assert_allclose(twice.rotation, cam.rotation, atol=1e-12)
    np.testing.assert_allclose(twice.translation, cam.translation, atol=0)
    assert (twice.k, twice.cx_offset, twice.cy_offset) == (cam.k, cam.cx_offset, cam.cy_offset)
    assert flipped.cx_offset == -cam.cx_offset
    # The flipped camera sees the mirrored world: ray (x, y, z) -> pixel mirrored in u.
    rays = np.random.default_rng(0).normal(size=(50, 3)) + [0, 0, 2]
    uv, uv_f = cam.ray_to_pixel(rays), flipped.ray_to_pixel(rays * [-1, 1, 1])
    np.testing.assert_allclose(uv_f[:, 0], cam.width - 1 - uv[:, 0], atol=1e-9)
    np.testing.assert_allclose(uv_f[:, 1], uv[:, 1], atol=1e-9)
    # In the vehicle frame the mirrored camera's axis is mirrored left-right.
    np.testing.assert_allclose(flipped.rotation @ [0, 0, 1], (cam.rotation @ [0, 0, 1]) * [1, -1, 1], atol=1e-9)
    # On the sphere: the flipped sample equals the original mirrored about the camera's vertical plane.
    nside = 16
    labels = (np.arange(cam.height * cam.width).reshape(cam.height, cam.width) * 31) % 97
    item = hflip_item({"image": np.zeros((cam.height, cam.width, 3), np.uint8), "labels": labels, "camera": cam})
    a = projection.FisheyeToHealpix(item["camera"], nside, range(8)).project_labels(item["labels"])
    b = projection.FisheyeToHealpix(cam, nside, range(8)).project_labels(labels)
    vec = np.stack(grid.pix2vec(nside, np.arange(8 * nside**2)))
    mirror = grid.vec2pix(nside, -vec[0], vec[1], vec[2])
    assert (a == b[mirror]).mean() > 0.995  # exact but for ties of the nearest-pixel rounding


def test_augmentation_is_seeded_per_sample_and_epoch(flat_tree):
    spec = dict(photometric=[{"name": "RandomBrightnessContrast", "p": 1.0}], rotate_deg=20,
                quarter_turns=True, hflip=0.5)
    a = HealpixDataset(flat_tree, nside=8, split="all", transform=spec, seed=3)
    b = HealpixDataset(flat_tree, nside=8, split="all", transform=spec, seed=3)
    for i in range(3):
        assert torch.equal(a[i]["image"], b[i]["image"]) and torch.equal(a[i]["labels"], b[i]["labels"])
    # Workers see the same numbers as the main process.
    loader = torch.utils.data.DataLoader(a, batch_size=1, num_workers=2)
    first = next(iter(loader))
    assert torch.equal(first["image"][0], a[0]["image"])
    a.set_epoch(1)
    assert not torch.equal(a[0]["image"], b[0]["image"])
    plain = HealpixDataset(flat_tree, nside=8, split="all")
    assert not torch.equal(b[0]["image"], plain[0]["image"])
    # Labels stay class ids: augmentation never interpolates them.
    assert set(torch.unique(b[1]["labels"]).tolist()) <= set(range(10)) | {255}


def test_box_culling_matches_brute_force():
    cam = synthetic.rig_cameras(80, 61)["MVL"]
    scene = synthetic.random_scene(np.random.default_rng(7))
    bundle = synthetic.RayBundle(cam, tile=8)
    t, box, _, _ = synthetic._intersect_boxes(bundle, scene.lo, scene.hi)
    # Brute force: every ray against every box.
    o, d = bundle.origin, bundle.dirs
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (scene.lo[None] - o) / d[:, None]
        t2 = (scene.hi[None] - o) / d[:, None]
    near, far = np.fmin(t1, t2).max(-1), np.fmax(t1, t2).min(-1)
    tt = np.where((far >= near) & (near > 1e-3), near, np.inf)
    np.testing.assert_allclose(t, tt.min(1))
    hit = np.isfinite(t)
    np.testing.assert_array_equal(box[hit], tt.argmin(1)[hit])


def test_check_cli_lists_every_problem(flat_tree, tmp_path, capsys):
    from heal_swin.data import woodscape

    assert woodscape.main([str(flat_tree), "--check", "--depth"]) == 0
    assert "20 samples, 5 frames" in capsys.readouterr().out
    root = tmp_path / "broken"
    shutil.copytree(flat_tree, root)
    (root / "semantic_annotations" / "gtLabels" / "00001_FV.png").unlink()
    (root / "depth_maps" / "raw_data" / "00002_RV.npy").write_bytes(b"garbage")
    assert woodscape.main([str(root), "--check", "--depth"]) == 1
    out = capsys.readouterr().out
    assert "problem: 00001_FV: label file" in out and "00002_RV.npy: cannot read the depth map" in out
    assert "2 problem(s)" in out
    # --fast: the same two problems from file headers, without decoding a pixel
    assert woodscape.main([str(root), "--check", "--fast", "--depth"]) == 1
    out = capsys.readouterr().out
    assert "problem: 00001_FV: label file" in out and "00002_RV.npy: cannot read the depth map" in out
    assert "2 problem(s)" in out
    assert woodscape.main([str(tmp_path / "nowhere")]) == 2


def test_ensure_synthetic_generates_only_into_an_empty_folder(tmp_path):
    root = tmp_path / "data"
    assert synthetic.ensure_synthetic(root, frames=1, size=(32, 24), progress=False)
    assert len(list((root / "rgb_images").iterdir())) == 4
    assert not synthetic.ensure_synthetic(root, frames=3, size=(32, 24), progress=False)
    assert len(list((root / "rgb_images").iterdir())) == 4
