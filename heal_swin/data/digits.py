"""Handwritten digits on the sphere: the segmentation benchmark of Gerken et al. 2022 ("Equivariance versus
augmentation for spherical images"), built from scikit-learn's bundled 8 × 8 digits (1,797 real images in
its wheel: nothing is downloaded; `pip install heal_swin[bench]`).

    from heal_swin.data import digits
    train = digits.DigitSpheres(200, nside=16, split="train", rotate=0.0, seed=0)   # upright digits
    test = digits.DigitSpheres(100, nside=16, split="test", rotate=1.0, seed=1)     # fully SO(3)-rotated
    x, y = train.x, train.y     # (n, 1, N) float32 intensity in [0, 1], (n, N) int64 class, NESTED over
                                # base_pixels
    ds = digits.DigitsDataset("train", spheres=400, nside=16, rotate=0.5, seed=1000)   # what train.py reads

Each sphere holds `digits` (a range) non-overlapping digits, each an 8 × 8 image upsampled smoothly
(bicubic) and placed by a gnomonic projection on a square of half-width `half_width` (radians) in the
tangent plane at a random centre; seen from outside the sphere the digit reads upright with its top towards
the north pole ("non-rotated": only translated). Labels: 0 for background, 1 + digit where the digit's
intensity exceeds `threshold` (11 classes). `rotate` in [0, 1] then turns every sphere by a random rotation
whose angle is drawn from the Haar measure of SO(3) restricted to angles <= rotate·π: 0 leaves the digits
upright, 1 is a uniformly random rotation (full SO(3) augmentation). Train and test spheres draw their
digits from disjoint sets of source images (`source_split`, fixed by `split_seed`); everything is
deterministic per seed.

`DigitsDataset` is the trainer's view of these spheres (`data.source: digits` in a config): items like
`HealpixDataset`'s (`image`, `labels`, `valid`, `stem`), and `rotated(i, R)` draws sphere i turned by R (the
equivariance report's exact turned input). With `task="classification"` (the invariant task of the same
paper) each sphere holds one digit and its label is that digit (0-9), one per sphere.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .. import grid

__all__ = ["CLASS_NAMES", "DIGIT_NAMES", "NUM_CLASSES", "DigitSpheres", "class_names", "DigitsDataset", "haar_rotations", "load_source_digits",
           "source_split"]

NUM_CLASSES = 11
DIGIT_NAMES = tuple(str(d) for d in range(10))   # the classes of task="classification"
CLASS_NAMES = ("background",) + DIGIT_NAMES


def class_names(task: str) -> tuple[str, ...]:
    """The classes of a task on spheres of digits: the ten digits (classification), else background and the
    ten digits (segmentation)."""
    return DIGIT_NAMES if task == "classification" else CLASS_NAMES


@functools.lru_cache(maxsize=1)
def _sklearn_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - the dev and bench extras install it
        raise ImportError("heal_swin.data.digits needs scikit-learn's bundled digits: pip install "
                          "'heal_swin[bench]' (or scikit-learn>=1.3)") from err
    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)
    images.setflags(write=False)
    target = d.target.astype(np.int64)
    target.setflags(write=False)
    return images, target


def source_split(test_fraction: float = 0.25, split_seed: int = 0) -> dict:
    """Indices of scikit-learn's 1,797 digit images in the train and test sets: {"train": ..., "test": ...},
    a seeded permutation, disjoint."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction} must be in (0, 1)")
    n = len(_sklearn_digits()[1])
    perm = np.random.default_rng(split_seed).permutation(n)
    k = int(round(n * test_fraction))
    return {"train": np.sort(perm[k:]), "test": np.sort(perm[:k])}


def load_source_digits(split: str, size: int = 32, test_fraction: float = 0.25, split_seed: int = 0):
    """The split's source images upsampled to size × size (bicubic, clipped to [0, 1]), their digits and
    their indices in scikit-learn's set: (images (k, size, size) float32, digits (k,), indices (k,))."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} must be 'train' or 'test'")
    images, target = _sklearn_digits()
    idx = source_split(test_fraction, split_seed)[split]
    up = torch.nn.functional.interpolate(torch.from_numpy(images[idx])[:, None], size=(size, size),
                                         mode="bicubic", align_corners=False)[:, 0].clamp(0, 1)
    return up.numpy(), target[idx], idx


def _haar_angles(rng, n: int, amount: float) -> np.ndarray:
    """Rotation angles with density ∝ 1 - cos ω (the Haar measure's) on [0, amount·π]: inverse CDF of
    ω - sin ω by bisection."""
    top = amount * math.pi
    target = rng.uniform(0, 1, n) * (top - math.sin(top))
    lo, hi = np.zeros(n), np.full(n, top)
    for _ in range(60):
        mid = (lo + hi) / 2
        below = mid - np.sin(mid) < target
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return (lo + hi) / 2


def haar_rotations(rng, n: int, amount: float = 1.0) -> np.ndarray:
    """n random rotation matrices (n, 3, 3): a uniform axis and an angle from the Haar measure restricted
    to [0, amount·π]; amount 1 samples SO(3) uniformly, 0 gives identities."""
    if not 0 <= amount <= 1:
        raise ValueError(f"rotate={amount} must be in [0, 1] (the fraction of SO(3)'s angles, 1 = all)")
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    angle = _haar_angles(rng, n, amount) if amount > 0 else np.zeros(n)
    k = np.zeros((n, 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(0, 2, 1)
    s, c = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3)[None] + s * k + (1 - c) * (k @ k)                      # Rodrigues


def _bilinear(image: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    s = image.shape[0]
    r0, c0 = np.floor(row).astype(np.int64), np.floor(col).astype(np.int64)
    fr, fc = row - r0, col - c0
    out = np.zeros(row.shape, dtype=np.float64)
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            rr, cc = r0 + dr, c0 + dc
            ok = (rr >= 0) & (rr < s) & (cc >= 0) & (cc < s)
            out += np.where(ok, image[np.clip(rr, 0, s - 1), np.clip(cc, 0, s - 1)], 0.0) * wr * wc
    return out


class DigitSpheres:
    """n spheres of digits (module docstring): `x` (n, 1, N) float32, `y` (n, N) int64, NESTED over
    `base_pixels` (default: all 12 faces; `faces=`, the old keyword, still works with a DeprecationWarning);
    `sources` (n, digits_max) the scikit-learn indices of the digits on each sphere (-1: none),
    `rotations` (n, 3, 3) the rotation applied to each upright sphere. `then_rotate` ((3, 3) or (n, 3, 3)):
    the same spheres (same seed) turned by these rotations after their own, rendered from the geometry, not
    resampled: the exact rotated inputs and labels of an equivariance measurement."""

    def __init__(self, n: int, nside: int = 16, base_pixels=None, split: str = "train", rotate: float = 0.0,
                 digits=(1, 3), half_width: float = 0.35, threshold: float = 0.3, seed: int = 0,
                 test_fraction: float = 0.25, split_seed: int = 0, upsample: int = 32, then_rotate=None, faces=None):
        base_pixels = grid.base_pixels_keyword(base_pixels, faces, "DigitSpheres")
        self.nside = grid.check_nside(nside)
        self.base_pixels = grid.check_base_pixels(range(12) if base_pixels is None else base_pixels)
        lo, hi = (int(digits), int(digits)) if np.isscalar(digits) else (int(digits[0]), int(digits[1]))
        if n < 1:
            raise ValueError(f"n={n} must be >= 1 (the number of spheres)")
        if lo < 1 or hi < lo:
            raise ValueError(f"digits={digits!r} must be a count >= 1 or a (min, max) range with 1 <= min <= max")
        if not 0 < half_width < 0.6:
            raise ValueError(f"half_width={half_width} must be in (0, 0.6) radians (a gnomonic square well "
                             "inside a hemisphere)")
        if not 0 <= threshold < 1:
            raise ValueError(f"threshold={threshold} must be in [0, 1): the intensity above which a digit's pixel "
                             "is labelled (intensities lie in [0, 1], so 1 or more labels nothing)")
        self.split, self.rotate, self.seed = split, float(rotate), int(seed)
        images, target, index = load_source_digits(split, upsample, test_fraction, split_seed)
        rng = np.random.default_rng([self.seed, 0 if split == "train" else 1])
        self.rotations = haar_rotations(rng, n, self.rotate)
        if then_rotate is not None:           # the same spheres, each turned once more, rendered exactly
            extra = np.asarray(then_rotate, dtype=np.float64).reshape(-1, 3, 3)
            if extra.shape[0] not in (1, n):
                raise ValueError(f"then_rotate holds {extra.shape[0]} rotations; give one or n={n}")
            gram = np.abs(extra @ extra.transpose(0, 2, 1) - np.eye(3)).max()
            if gram > 1e-6 or np.linalg.det(extra).min() < 0:
                raise ValueError(f"then_rotate must hold rotation matrices (orthogonal, determinant +1); "
                                 f"max |R Rᵀ − I| = {gram:.2g}, smallest determinant {np.linalg.det(extra).min():.3g}")
            self.rotations = extra @ self.rotations
        glob = grid.base_pixel_indices(self.nside, self.base_pixels)
        v = np.stack(grid.pix2vec(self.nside, glob, nest=True), axis=1)            # (N, 3)
        t = math.tan(half_width)
        # the angular radius of a digit's square (its corner), doubled plus a margin: no two overlap
        min_sep = 2 * math.atan(math.sqrt(2) * t) * 1.05
        x = np.zeros((n, v.shape[0]), dtype=np.float32)
        y = np.zeros((n, v.shape[0]), dtype=np.int64)
        self.sources = np.full((n, hi), -1, dtype=np.int64)
        self.labelled = np.full((n, hi), -1, dtype=np.int64)   # labelled pixels of each placed digit
        for i in range(n):
            count = int(rng.integers(lo, hi + 1))
            centres = self._centres(rng, count, min_sep)
            if len(centres) < lo:
                raise ValueError(self._too_many(digits, half_width, min_sep, i, count, len(centres)))
            picks = rng.integers(0, len(target), len(centres))
            r = self.rotations[i]
            for j, (c, k) in enumerate(zip(centres, picks)):
                up = np.array([0.0, 0.0, 1.0]) - c[2] * c                            # towards the north pole
                up /= np.linalg.norm(up)
                c, up = r @ c, r @ up
                right = np.cross(up, c)                                              # reads upright from outside
                dot = v @ c
                front = dot > 0
                gx = np.where(front, (v @ right) / np.where(front, dot, 1), np.inf)
                gy = np.where(front, (v @ up) / np.where(front, dot, 1), np.inf)
                inside = (np.abs(gx) <= t) & (np.abs(gy) <= t)
                s = images.shape[1]
                col = (gx[inside] / t + 1) / 2 * s - 0.5
                row = (1 - gy[inside] / t) / 2 * s - 0.5
                val = _bilinear(images[k], row, col).astype(np.float32)
                x[i, inside] = np.maximum(x[i, inside], val)
                lab = y[i, inside]
                lab[val > threshold] = 1 + target[k]
                y[i, inside] = lab
                self.sources[i, j] = index[k]
                self.labelled[i, j] = int((val > threshold).sum())
        if len(self.base_pixels) == 12 and (self.labelled == 0).any():
            i, j = map(int, np.argwhere(self.labelled == 0)[0])
            raise ValueError(f"nside={self.nside} is too coarse for digits of half_width={half_width}: digit {j} of "
                             f"sphere {i} covers no pixel above threshold={threshold} (a digit must be seen to be "
                             "learned); raise nside or half_width")
        self.x = torch.from_numpy(x)[:, None]
        self.y = torch.from_numpy(y)

    @property
    def counts(self) -> np.ndarray:
        """int64 (n,): the digits each sphere holds. A sphere draws a count in [min, max]; where fewer
        non-overlapping digits fit by random placement it holds as many as fit (never fewer than min)."""
        return (self.sources >= 0).sum(1)

    @staticmethod
    def _too_many(digits, half_width, min_sep, sphere, drew, placed) -> str:
        # the densest packing of caps of radius min_sep / 2 in the band |z| < 0.9 bounds what can fit
        cap = 2 * math.pi * (1 - math.cos(min_sep / 2))
        bound = int(0.9069 * 4 * math.pi * 0.9 / cap)
        return (f"digits={digits!r} cannot be placed at half_width={half_width}: sphere {sphere} drew {drew} and only "
                f"{placed} non-overlapping digits fit (at most {bound} in |z| < 0.9 even packed densely, fewer by "
                "random placement); lower the digits per sphere or half_width")

    @staticmethod
    def _centres(rng, count: int, min_sep: float) -> np.ndarray:
        """Up to `count` centres, uniform on the sphere away from the poles (|z| < 0.9: the upright frame is
        defined), pairwise farther apart than min_sep (rejection sampling)."""
        out: list = []
        for _ in range(200 * count):
            if len(out) == count:
                break
            z = rng.uniform(-0.9, 0.9)
            phi = rng.uniform(0, 2 * math.pi)
            c = np.array([math.sqrt(1 - z * z) * math.cos(phi), math.sqrt(1 - z * z) * math.sin(phi), z])
            if all(math.acos(min(1.0, float(c @ o))) > min_sep for o in out):
                out.append(c)
        return np.array(out)

    @property
    def faces(self) -> tuple:
        """Deprecated name of `base_pixels`."""
        return self.base_pixels

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class DigitsDataset(torch.utils.data.Dataset):
    """Digit spheres as a dataset of the one trainer (`data.source: digits`).

    split "train" draws `spheres` spheres from the training source images; "val" and "test" draw them from
    the held-out source images (disjoint from the training ones), each with its own seed. `rotate` turns
    every sphere by a random rotation of that fraction of SO(3) (module docstring). Items: `image` float32
    (1, N) intensity in [0, 1], `labels` int64 (N,) (0 background, 1 + digit), `valid` bool (N,) (all
    true: the whole map is data), `camera` "sphere", `stem` "<split>-<seed>-<index>"; N =
    len(base_pixels)·nside², NESTED. task="classification": one digit per sphere (`digits` must be 1),
    `labels` int64 () the digit 0-9, `valid` bool () true; `class_names` the ten digits."""

    ignore_index = 255

    def __init__(self, split: str = "train", *, spheres: int = 400, nside: int = 16, base_pixels=range(12),
                 digits=(3, 5), half_width: float = 0.5, threshold: float = 0.3, rotate: float = 0.0, seed: int = 0,
                 test_fraction: float = 0.25, split_seed: int = 0, task: str = "segmentation"):
        if split not in ("train", "val", "test"):
            raise ValueError(f"split={split!r} must be 'train', 'val' or 'test'")
        if task not in ("segmentation", "classification"):
            raise ValueError(f"task={task!r} must be 'segmentation' or 'classification' for spheres of digits")
        if task == "classification" and tuple(np.atleast_1d(digits).tolist()) not in ((1,), (1, 1)):
            raise ValueError(f"digits={digits!r}: task='classification' labels a sphere by its one digit; "
                             "set digits=(1, 1)")
        self.task = task
        self.class_names = class_names(task)
        self.split, self.seed = split, int(seed)
        self._kw = dict(nside=nside, base_pixels=base_pixels, split="train" if split == "train" else "test",
                        rotate=rotate, digits=digits,
                        half_width=half_width, threshold=threshold, seed=self.seed, test_fraction=test_fraction,
                        split_seed=split_seed)
        self.spheres = DigitSpheres(spheres, **self._kw)
        if task == "classification" and (self.spheres.labelled[:, 0] <= 0).any():
            i = int(np.argmax(self.spheres.labelled[:, 0] <= 0))
            raise ValueError(f"task='classification': the digit of {split} sphere {i} lies outside base_pixels="
                             f"{grid.format_base_pixels(self.spheres.base_pixels)} (no pixel of it on the map), so "
                             "its label would name an unseen digit; classify on the full sphere (base_pixels=all)")
        self.nside, self.base_pixels, self.rotate = self.spheres.nside, self.spheres.base_pixels, self.spheres.rotate
        self._valid = torch.ones(self.spheres.y.shape[1], dtype=torch.bool)
        if task == "classification":
            self._valid = torch.ones((), dtype=torch.bool)
        self._turned: dict = {}

    def __repr__(self) -> str:
        return (f"DigitsDataset(split={self.split!r}, spheres={len(self)}, nside={self.nside}, "
                f"base_pixels={list(self.base_pixels)}, rotate={self.rotate}, seed={self.seed})")

    def __len__(self) -> int:
        return len(self.spheres)

    def set_epoch(self, epoch: int) -> None:
        """The spheres are fixed; augmentation is the rotation they were drawn with."""

    def _item(self, spheres: DigitSpheres, index: int) -> dict:
        labels = spheres.y[index] if self.task == "segmentation" else self._digit(spheres, index)
        return {"image": spheres.x[index], "labels": labels, "valid": self._valid, "camera": "sphere",
                "stem": f"{self.split}-{self.seed}-{index}"}

    @staticmethod
    def _digit(spheres: DigitSpheres, index: int) -> torch.Tensor:
        """The digit (0-9) on a one-digit sphere, int64 ()."""
        return torch.tensor(int(_sklearn_digits()[1][spheres.sources[index, 0]]))

    def __getitem__(self, index: int) -> dict:
        return self._item(self.spheres, index)

    def rotated(self, index: int, rotation) -> dict:
        """Item `index` turned by the rotation R (3×3): the same sphere drawn with R after its own rotation,
        rendered from the geometry (not resampled). The turned set is drawn once per rotation."""
        key = np.asarray(rotation, dtype=np.float64).tobytes()
        if key not in self._turned:
            self._turned[key] = DigitSpheres(len(self), then_rotate=rotation, **self._kw)
        return self._item(self._turned[key], index)

    def label_counts(self) -> torch.Tensor:
        """int64 (len(class_names),): how many pixels (segmentation) or spheres (classification) of the split
        carry each class."""
        if self.task == "classification":
            digits = torch.stack([self._digit(self.spheres, i) for i in range(len(self))])
            return torch.bincount(digits, minlength=len(DIGIT_NAMES))
        return torch.bincount(self.spheres.y.flatten(), minlength=NUM_CLASSES)
