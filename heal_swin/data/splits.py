"""Train/val/test splits over frames: seeded, disjoint, optionally grouped.

All cameras of a frame land in the same split, and with `group_size` > 1, consecutive frame
numbers (near-identical frames of one recording) stay together, so no scene straddles a split.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SPLITS", "split_frames"]

SPLITS = ("train", "val", "test")


def _group_key(frame: str, group_size: int):
    return int(frame) // group_size if group_size > 1 and frame.isdigit() else frame


def split_frames(frames, fractions=(0.8, 0.1, 0.1), seed: int = 0, group_size: int = 1) -> dict[str, list[str]]:
    """Frames -> {"train": […], "val": […], "test": […]}, sorted within each split.

    Groups are shuffled with `seed` and dealt out by the fractions (largest remainder rounding;
    every split with a positive fraction gets at least one group when there are enough)."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split fractions={list(fractions)} must be three non-negative numbers that sum to 1")
    if group_size < 1:
        raise ValueError(f"group_size={group_size} must be at least 1")
    frames = sorted(set(frames))
    groups: dict = {}
    for f in frames:
        groups.setdefault(_group_key(f, group_size), []).append(f)
    keys = sorted(groups, key=str)
    order = np.random.default_rng(seed).permutation(len(keys))
    n = len(keys)
    exact = np.array(fractions) * n
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts))[: n - counts.sum()]:
        counts[i] += 1
    for i in range(3):  # a requested split should not come out empty
        if fractions[i] > 0 and counts[i] == 0 and n >= sum(f > 0 for f in fractions):
            donor = int(np.argmax(counts))
            counts[donor] -= 1
            counts[i] += 1
    out, start = {}, 0
    for name, count in zip(SPLITS, counts):
        chosen = [keys[j] for j in order[start:start + count]]
        out[name] = sorted(f for k in chosen for f in groups[k])
        start += count
    return out
