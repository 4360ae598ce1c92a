"""The rotated-digits spheres (heal_swin.data.digits): deterministic, labels on the digit pixels, split by
source image, rotations from the restricted Haar measure, partial face sets."""

import math

import numpy as np
import pytest
import torch

from heal_swin.data import digits


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
    part = digits.DigitSpheres(3, nside=8, seed=1, rotate=0.0, faces=range(8))
    assert torch.equal(part.x, up.x[..., :8 * 64]) and torch.equal(part.y, up.y[..., :8 * 64])


def test_bad_arguments_name_the_rule():
    with pytest.raises(ValueError, match=r"rotate=1.5 must be in \[0, 1\]"):
        digits.DigitSpheres(2, nside=8, rotate=1.5)
    with pytest.raises(ValueError, match="split='val' must be 'train' or 'test'"):
        digits.DigitSpheres(2, nside=8, split="val")
    with pytest.raises(ValueError, match=r"half_width=0.9 must be in \(0, 0.6\)"):
        digits.DigitSpheres(2, nside=8, half_width=0.9)


def test_then_rotate_renders_the_same_spheres_turned():
    """A quarter turn about the polar axis is a grid symmetry: the turned spheres are the pixel permutation."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from equivariance import rotation_permutation, rz

    nside = 8
    turn = rz(math.pi / 2)
    base = digits.DigitSpheres(3, nside=nside, seed=2, rotate=1.0)
    turned = digits.DigitSpheres(3, nside=nside, seed=2, rotate=1.0, then_rotate=turn)
    index = rotation_permutation(nside, turn)
    assert torch.equal(turned.y, base.y.index_select(-1, index))
    torch.testing.assert_close(turned.x, base.x.index_select(-1, index), atol=1e-5, rtol=0)
