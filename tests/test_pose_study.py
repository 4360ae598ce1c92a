"""Issue #28, item 5: the camera turned on its mount (`data.pose`, `data.mount_deg`), roll augmentation of
flat images (`augment.rotate_deg` on `FlatDataset`), and the pose study (bench/pose/study.py): it parses,
refuses bad options, and a two-step version runs end to end into its jsonl, results section and PNGs."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from heal_swin.data import FlatDataset, HealpixDataset
from heal_swin.data.pose import check_mount, mount_rotation, render_mounted
from heal_swin.engine import ConfigError, load_config
from heal_swin.study import StudyError, run_study

from pictures import read_png

ROOT = Path(__file__).resolve().parents[1]


def test_mount_rotation_turns_the_camera_about_its_own_axes():
    ex, ey, ez = np.eye(3)
    # roll: the optical axis stays, the image's right (x) turns towards its down (y)
    np.testing.assert_allclose(mount_rotation(roll=90) @ ex, ey, atol=1e-12)
    np.testing.assert_allclose(mount_rotation(roll=90) @ ez, ez, atol=1e-12)
    # pitch about x: the optical axis turns towards y; yaw about y: towards -x
    np.testing.assert_allclose(mount_rotation(pitch=90) @ ez, -ey, atol=1e-12)
    np.testing.assert_allclose(mount_rotation(yaw=90) @ ez, ex, atol=1e-12)
    m = mount_rotation(20, -3, 4)
    np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(mount_rotation(20, -3, 4), mount_rotation(20) @ mount_rotation(pitch=-3)
                               @ mount_rotation(yaw=4), atol=1e-12)
    assert check_mount([10, 2, -2]) == (10.0, 2.0, -2.0)
    with pytest.raises(ValueError, match=r"data.mount_deg=\[1, 2\] must be \[roll, pitch, yaw\]"):
        check_mount([1, 2])
    with pytest.raises(ValueError, match="pitch and yaw in \\[-90, 90\\]"):
        check_mount([0, 95, 0])


def test_render_mounted_keeps_labels_exact_and_marks_what_the_camera_cannot_see(data_root):
    ds = HealpixDataset(data_root, nside=8, split="all")
    frame = ds.frame(ds.items[0])
    assert render_mounted(frame, np.eye(3)) is frame                        # no turn, no resampling
    half = mount_rotation(roll=180)
    back = render_mounted(render_mounted(frame, half), half)
    seen = back["labels"] != ds.ignore_index
    assert seen.mean() > 0.9 and (back["labels"][seen] == frame["labels"][seen]).all()
    tilted = render_mounted(frame, mount_rotation(pitch=10))
    assert not tilted["seen"].all() and (tilted["labels"][~tilted["seen"]] == ds.ignore_index).all()
    assert (tilted["image"][~tilted["seen"]] == 0).all()
    assert set(np.unique(tilted["labels"][tilted["seen"]])) <= set(np.unique(frame["labels"]))   # nearest


def test_a_mounted_dataset_sees_the_turned_sphere(data_root):
    """data.mount_deg on a sphere model: the camera rolled by M sees the content the report's
    `HealpixDataset.rotated` turns by R = M^T (the same scene, resampled once more)."""
    upright = HealpixDataset(data_root, nside=16, split="all")
    mounted = HealpixDataset(data_root, nside=16, split="all", mount=(60, 0, 0))
    a, b = mounted[1], upright.rotated(1, mount_rotation(roll=60).T)
    both = a["valid"] & b["valid"] & (a["labels"] != 255) & (b["labels"] != 255)
    assert both.sum() > 100 and (a["labels"][both] == b["labels"][both]).float().mean() > 0.9
    with pytest.raises(ValueError, match="mount"):
        HealpixDataset(data_root, nside=8, split="all", mount=(0, 0))


def test_flat_images_take_roll_augmentation(data_root):
    plain = FlatDataset(data_root, size=(24, 32), split="all", seed=3)
    rolled = FlatDataset(data_root, size=(24, 32), split="all", transform={"rotate_deg": 180}, seed=3)
    a, b, again = plain[0], rolled[0], rolled[0]
    assert (b["labels"] == again["labels"]).all()                           # seeded per (seed, epoch, index)
    assert not (a["labels"] == b["labels"]).all()
    assert not b["valid"].all() and (b["labels"][~b["valid"]] == 255).all()
    with pytest.raises(ValueError, match="quarter_turns"):
        FlatDataset(data_root, split="all", transform={"quarter_turns": True})


@pytest.mark.parametrize("value, message", [
    ("[1,2]", r"data.mount_deg=\[1, 2\] must be \[roll, pitch, yaw\]"),
    ("[200,0,0]", r"roll must lie in \[-180, 180\]"),
])
def test_the_config_refuses_a_bad_mount(value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(ROOT / "configs" / "demo.yaml", [f"data.mount_deg={value}"])
    with pytest.raises(ConfigError, match="data.source=digits has no camera"):
        load_config(ROOT / "configs" / "digits_gauge_cnn.yaml", ["data.mount_deg=[10,0,0]"])
    assert list(load_config(ROOT / "configs" / "demo.yaml", ["data.mount_deg=[30,2,-5]"]).data.mount_deg) == [30, 2, -5]


def _options(**kw):
    base = dict(models=None, seeds=None, steps=None, tasks=None, set=[], full=False, device=None, rolls=None,
                tilts=None, augment=None, evals=2, frames=None, data=None)
    return argparse.Namespace(**{**base, **kw})


def _study_file():
    from heal_swin.study.cli import load_study_file

    return load_study_file(ROOT / "bench" / "pose" / "study.py")


def test_the_pose_study_declares_its_arms_and_refuses_bad_options():
    pose = _study_file()
    s = pose.make(_options())
    assert len(s.arms) == 6 * 2                              # six backbones, with and without roll augmentation
    assert {a.tags["augment"] for a in s.arms} == {0, 180}
    assert {a.model for a in s.arms} >= {"chart_cnn_tiny", "planar_cnn_1x", "swin_unet_flat_tiny", "s2cnn_tiny"}
    evals = s.arms[0].evaluations
    assert len(evals) == 7 + 8                               # rolls 0..180, pitch and yaw at ±2, ±5
    assert evals["roll90"] == ["eval.split=test", "data.mount_deg=[90,0,0]", "eval.figures=0"]
    assert "data.mount_deg=[0,-5,0]" in evals["pitch-5"] and "data.mount_deg=[0,0,2]" in evals["yaw+2"]
    flat = [a for a in s.arms if a.model == "swin_unet_flat_tiny"]
    assert all("data.flat_size=[64,96]" in a.overrides for a in flat)
    assert "train.max_steps=200" in s.overrides and "data.split_fractions=[0.6,0.2,0.2]" in s.overrides
    full = pose.make(_options(full=True))
    assert len(full.arms) == 6 * 2 * 3 and "run.device=cuda" in full.overrides
    # frames of 1280 × 966 load in worker processes on the GPU machine: in the training process they would
    # take longer than the step (bench/gpu/ESTIMATE.md); the CPU default loads in the training process
    assert "data.num_workers=8" in full.overrides and not any("num_workers" in o for o in s.overrides)
    for bad, match in [(dict(rolls=[0, 200]), "--rolls"), (dict(tilts=[0]), "--tilts"),
                       (dict(augment=[180, 180]), "--augment"), (dict(evals=0), "--evals")]:
        with pytest.raises(StudyError, match=match):
            pose.make(_options(**bad))


def test_a_two_step_pose_study_runs_end_to_end(data_root, tmp_path, run_env):
    pose = _study_file()
    options = _options(models=["gauge_cnn_tiny", "swin_unet_flat_tiny"], steps=2, evals=1, rolls=[0, 90],
                       tilts=[5], data=str(data_root),
                       set=["data.nside=8", "data.batch_size=2", "run.log_every=1"])
    out = tmp_path / "pose"
    rows = run_study(pose.make(options), out, threads=1, extra_overrides=options.set)
    assert len(rows) == 4 and all(len(r["evaluations"]) == 2 + 4 for r in rows)
    lines = [json.loads(x) for x in (out / "pose.jsonl").read_text().splitlines()]
    assert len(lines) == 4 * 6
    assert {(p["pose"], p["angle_deg"]) for p in lines} == {("roll", 0), ("roll", 90), ("pitch", -5), ("pitch", 5),
                                                           ("yaw", -5), ("yaw", 5)}
    assert all(0 <= p["miou"] <= 1 and set(p["rings"]) == {"theta_0_30", "theta_30_60", "theta_60_90",
                                                          "theta_90_plus"} for p in lines)
    text = (out / "results.md").read_text()
    assert "## Camera pose" in text and "| gauge_cnn_tiny | roll ±180° | 1 |" in text and "pitch -5°" in text
    for name in ("miou_vs_roll.png", "miou_vs_tilt.png", "miou_per_ring.png"):
        assert read_png(out / name).shape[0] > 100
