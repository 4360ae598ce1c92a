"""The rotated-digits spheres (heal_swin.data.digits): deterministic, labels on the digit pixels, split by
source image, rotations from the restricted Haar measure, partial face sets."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from heal_swin.data import digits

ROOT = Path(__file__).resolve().parents[1]


def test_deterministic_per_seed_and_different_across_seeds():
    a = digits.DigitSpheres(4, nside=8, seed=3, rotate=1.0)
    b = digits.DigitSpheres(4, nside=8, seed=3, rotate=1.0)
    c = digits.DigitSpheres(4, nside=8, seed=4, rotate=1.0)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and np.array_equal(a.sources, b.sources)
    assert not torch.equal(a.x, c.x)
    assert a.x.shape == (4, 1, 768) and a.x.dtype == torch.float32 and a.y.dtype == torch.int64


def test_labels_are_the_digit_pixels_and_their_classes():
    ds = digits.DigitSpheres(6, nside=16, seed=0, threshold=0.3, digits=(2, 3))
    images, target, index = digits.load_source_digits("train")
    digit_of = dict(zip(index.tolist(), target.tolist()))
    for i in range(len(ds)):
        x, y = ds.x[i, 0], ds.y[i]
        assert torch.equal(y > 0, x > 0.3)                            # every bright pixel is labelled, no other
        present = set(torch.unique(y[y > 0]).tolist())
        placed = {1 + digit_of[s] for s in ds.sources[i] if s >= 0}
        assert present and present <= placed
        assert 2 <= (ds.sources[i] >= 0).sum() <= 3
    assert ds.y.max() < digits.NUM_CLASSES and len(digits.CLASS_NAMES) == digits.NUM_CLASSES


def test_train_and_test_use_disjoint_source_images():
    split = digits.source_split()
    assert not set(split["train"]) & set(split["test"])
    assert len(split["train"]) + len(split["test"]) == 1797
    train = digits.DigitSpheres(20, nside=8, split="train", seed=0)
    test = digits.DigitSpheres(20, nside=8, split="test", seed=0)
    used_train, used_test = set(train.sources[train.sources >= 0]), set(test.sources[test.sources >= 0])
    assert used_train <= set(split["train"]) and used_test <= set(split["test"])


@pytest.mark.parametrize("amount", [0.0, 0.25, 1.0])
def test_rotations_come_from_the_restricted_haar_measure(amount):
    r = digits.haar_rotations(np.random.default_rng(0), 2000, amount)
    np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    angle = np.arccos(np.clip((np.trace(r, axis1=1, axis2=2) - 1) / 2, -1, 1))
    assert angle.max() <= amount * math.pi + 1e-9
    if amount == 1.0:   # Haar: the angle's mean is pi/2 + 2/pi
        assert abs(angle.mean() - (math.pi / 2 + 2 / math.pi)) < 0.03


def test_upright_spheres_are_not_rotated_and_partial_faces_restrict_the_map():
    up = digits.DigitSpheres(3, nside=8, seed=1, rotate=0.0)
    np.testing.assert_array_equal(up.rotations, np.broadcast_to(np.eye(3), (3, 3, 3)))
    part = digits.DigitSpheres(3, nside=8, seed=1, rotate=0.0, base_pixels=range(8))
    assert torch.equal(part.x, up.x[..., :8 * 64]) and torch.equal(part.y, up.y[..., :8 * 64])
    with pytest.warns(DeprecationWarning, match=r"DigitSpheres\(faces=...\) is deprecated"):
        old = digits.DigitSpheres(3, nside=8, seed=1, rotate=0.0, faces=range(8))   # the old keyword still works
    assert torch.equal(old.x, part.x) and old.faces == part.base_pixels


def test_bad_arguments_name_the_rule():
    with pytest.raises(ValueError, match=r"rotate=1.5 must be in \[0, 1\]"):
        digits.DigitSpheres(2, nside=8, rotate=1.5)
    with pytest.raises(ValueError, match="split='val' must be 'train' or 'test'"):
        digits.DigitSpheres(2, nside=8, split="val")
    with pytest.raises(ValueError, match=r"half_width=0.9 must be in \(0, 0.6\)"):
        digits.DigitSpheres(2, nside=8, half_width=0.9)


def test_what_cannot_be_honoured_is_refused():
    """Issue #31, item 13: no sphere silently holds less than asked."""
    with pytest.raises(ValueError, match=r"digits=\(20, 20\) cannot be placed at half_width=0.5: sphere 0 drew 20 "
                                         r"and only \d non-overlapping digits fit \(at most 7"):
        digits.DigitSpheres(2, nside=8, digits=(20, 20), half_width=0.5)
    with pytest.raises(ValueError, match=r"digits=\(3, 1\) must be .* 1 <= min <= max"):
        digits.DigitSpheres(2, nside=8, digits=(3, 1))
    with pytest.raises(ValueError, match=r"threshold=1.5 must be in \[0, 1\)"):
        digits.DigitSpheres(2, nside=8, threshold=1.5)
    with pytest.raises(ValueError, match="nside=2 is too coarse .* covers no pixel above threshold"):
        digits.DigitSpheres(3, nside=2, digits=(2, 3))
    with pytest.raises(ValueError, match="then_rotate must hold rotation matrices"):
        digits.DigitSpheres(2, nside=8, then_rotate=np.diag([1.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="then_rotate must hold rotation matrices"):
        digits.DigitSpheres(2, nside=8, then_rotate=np.diag([1.0, 1.0, -1.0]))      # a reflection
    with pytest.raises(ValueError, match=r"classification.*outside base_pixels=0-7"):
        digits.DigitsDataset("train", spheres=40, nside=8, base_pixels=range(8), digits=(1, 1),
                             task="classification")


def test_what_was_made_is_recorded():
    """A sphere draws a count in [min, max] and holds as many as fit, never fewer than min; each placed digit's
    labelled pixels are recorded (and on the full sphere each is seen)."""
    ds = digits.DigitSpheres(60, nside=16, digits=(3, 5), half_width=0.5, seed=1000)
    assert ds.counts.min() >= 3 and ds.counts.max() <= 5
    placed = ds.sources >= 0
    np.testing.assert_array_equal(placed, ds.labelled >= 0)
    assert (ds.labelled[placed] > 0).all()
    for i in range(5):                                          # the recorded counts are the labels' pixels
        assert (ds.y[i] > 0).sum().item() == ds.labelled[i][placed[i]].sum()


def test_then_rotate_renders_the_same_spheres_turned():
    """A quarter turn about the polar axis is a grid symmetry: the turned spheres are the pixel permutation."""
    from heal_swin.equivariance import rotation_permutation, rz

    nside = 8
    turn = rz(math.pi / 2)
    base = digits.DigitSpheres(3, nside=nside, seed=2, rotate=1.0)
    turned = digits.DigitSpheres(3, nside=nside, seed=2, rotate=1.0, then_rotate=turn)
    index = rotation_permutation(nside, turn)
    assert torch.equal(turned.y, base.y.index_select(-1, index))
    torch.testing.assert_close(turned.x, base.x.index_select(-1, index), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- the trainer's data source


def test_digits_dataset_items_splits_and_turned_items():
    train = digits.DigitsDataset("train", spheres=4, nside=8, seed=1000, rotate=0.5)
    val = digits.DigitsDataset("val", spheres=3, nside=8, seed=7)
    item = train[0]
    assert item["image"].shape == (1, 12 * 64) and item["labels"].shape == (12 * 64,) and item["valid"].all()
    assert len(train) == 4 and len(val) == 3 and train.class_names == digits.CLASS_NAMES
    # held-out spheres draw from the held-out source images only
    assert set(val.spheres.sources[val.spheres.sources >= 0]) <= set(digits.source_split()["test"])
    assert int(train.label_counts().sum()) == 4 * 12 * 64
    turn = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])      # 90° about the pole: a grid symmetry
    from heal_swin.equivariance import rotation_permutation

    assert torch.equal(val.rotated(1, turn)["labels"], val[1]["labels"][rotation_permutation(8, turn)])
    with pytest.raises(ValueError, match="split='dev' must be 'train', 'val' or 'test'"):
        digits.DigitsDataset("dev", spheres=2, nside=8)


def test_digits_configs_are_checked_before_any_work(tmp_path):
    from pathlib import Path

    from heal_swin.engine import ConfigError, load_config

    cfg = Path(__file__).resolve().parents[1] / "configs" / "digits_gauge_cnn.yaml"
    for override, message in [("data.digits.rotate=1.5", r"data.digits.rotate=1.5 must be in \[0, 1\]"),
                              ("data.digits.digits=[3,1]", r"1 <= min <= max"),
                              ("data.digits.half_width=0.9", r"must be in \(0, 0.6\)"),
                              ("task=depth", "must be segmentation or classification with data.source=digits"),
                              ("data.rig=true", "no cameras to fuse")]:
        with pytest.raises(ConfigError, match=message):
            load_config(cfg, [override])
    with pytest.raises(ConfigError, match="only data.source=digits"):
        load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml",
                    ["loss.class_balance=inverse_sqrt_frequency"])


def test_a_digits_run_trains_through_the_engine_with_every_family(tmp_path):
    """train.py's loop on the digit spheres: a flat model through its equirectangular adapter, class weights
    from the training labels, the one-cycle schedule; an ordinary run directory that resumes."""
    from pathlib import Path

    from heal_swin.engine import build_datasets, build_loss, load_config, load_model, main
    from heal_swin.models import EquirectangularAdapter

    root = Path(__file__).resolve().parents[1]
    tiny = ["data.nside=8", "data.digits.train=8", "data.digits.test=4", "run.threads=1", "train.max_steps=2",
            "train.eval_every=2"]
    # the flat Swin's windows need the 32 × 96 image of nside 16
    flat = load_config(root / "configs" / "digits_flat.yaml", [f"run.dir={tmp_path / 'flat'}", *tiny, "data.nside=16"])
    result = main(flat)
    assert result["step"] == 2 and "sphere" in result and "fisheye" not in result
    assert isinstance(load_model(tmp_path / "flat"), EquirectangularAdapter)
    assert {p.name for p in (tmp_path / "flat").iterdir()} >= {"config.yaml", "metrics.jsonl", "weights", "state"}
    ds = build_datasets(flat, ("train",))["train"]
    loss = build_loss(flat, 11, ds.label_counts())
    counts = ds.label_counts().double()
    want = (counts.sum() / counts.clamp_min(1)).sqrt()
    torch.testing.assert_close(loss.class_weights.double(), (want / want.mean()), rtol=1e-6, atol=0)
    gauge = load_config(root / "configs" / "digits_gauge_cnn.yaml", [f"run.dir={tmp_path / 'gauge'}", *tiny])
    main(gauge)
    resumed = main(load_config(root / "configs" / "digits_gauge_cnn.yaml",
                                [f"run.dir={tmp_path / 'gauge'}", *tiny[:-2], "train.max_steps=3", "train.eval_every=3",
                                 "train.resume=true"]))
    assert resumed["step"] == 3


def test_the_onecycle_schedule_is_torchs():
    """Learning rate and Adam's first beta step for step as torch's OneCycleLR (the former digits runner's)."""
    from heal_swin.engine import load_config
    from heal_swin.engine.builders import build_optimizer, lr_factor

    f = lr_factor("onecycle", 100)
    assert f(0) == pytest.approx(1 / 25) and f(10) == pytest.approx(1.0)       # a cosine rise over 10 % of the steps
    assert f(100) == pytest.approx(1 / 25e4)
    cfg = load_config(ROOT / "configs" / "digits_gauge_cnn.yaml", ["train.max_steps=100", "train.lr=0.01"])
    model = torch.nn.Linear(2, 2)
    opt, sched = build_optimizer(cfg, model, 100)
    ref_model = torch.nn.Linear(2, 2)
    ref_opt = torch.optim.AdamW(ref_model.parameters(), lr=0.01, weight_decay=1e-4)
    # torch peaks at step pct_start·total_steps − 1 and ends at total_steps − 1: 10 and 100 here, as ours
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, 0.01, total_steps=101, pct_start=11 / 101)
    ours, theirs = [], []
    for _ in range(100):
        ours.append((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]))
        theirs.append((ref_opt.param_groups[0]["lr"], ref_opt.param_groups[0]["betas"][0]))
        opt.step()
        sched.step()
        ref_opt.step()
        ref.step()
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)
