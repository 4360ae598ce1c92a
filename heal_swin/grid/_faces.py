"""Sets of base pixels (faces): validation, parsing, and global <-> local NESTED indices.

A map over faces F = (f0 < f1 < …) is the concatenation of those faces' nested pixels, so local
index i is global index f_{i // nside²}·nside² + i % nside²; N = len(F)·nside².
"""

from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np

from ._backend import host_function
from ._pixelfunc import check_nside, check_pixels

__all__ = ["base_pixels_keyword", "check_base_pixels", "parse_base_pixels", "format_base_pixels", "base_pixel_indices",
           "global_to_local", "local_to_global", "n_pixels"]


def check_base_pixels(base_pixels: Iterable[int], name: str = "base_pixels") -> tuple[int, ...]:
    """Return the faces as a tuple of ints, or raise naming the value and the rule
    (distinct faces 0–11 in ascending order, at least one)."""
    if isinstance(base_pixels, str):
        return parse_base_pixels(base_pixels, name)
    try:
        faces = [int(f) for f in base_pixels]
    except (TypeError, ValueError):
        raise ValueError(f"{name}={base_pixels!r} must be a list of face numbers 0–11") from None
    ascending = all(a < b for a, b in zip(faces, faces[1:]))
    if not faces or not ascending or faces[0] < 0 or faces[-1] > 11:
        raise ValueError(f"{name}={faces} must be distinct faces 0–11 in ascending order, at least one")
    return tuple(faces)


def format_base_pixels(base_pixels: Iterable[int]) -> str:
    """The inverse of `parse_base_pixels`: (0, 1, 2, 3, 5) -> '0-3,5'; (0, 1, 4) -> '0,1,4';
    all twelve -> '0-11'. Runs of three or more faces are written as ranges."""
    runs: list[list[int]] = []
    for f in check_base_pixels(base_pixels):
        if runs and f == runs[-1][-1] + 1:
            runs[-1].append(f)
        else:
            runs.append([f])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ",".join(map(str, r)) for r in runs)


def parse_base_pixels(text: str, name: str = "faces") -> tuple[int, ...]:
    """Parse '0-7', '0,1,4-7' or 'all' (= 0-11)."""
    text = text.strip().lower()
    if text in ("all", "sphere"):
        return tuple(range(12))
    faces: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            faces.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    except ValueError:
        raise ValueError(f"{name}={text!r} must look like '0-7', '0,2,5' or 'all'") from None
    return check_base_pixels(faces, name)


def n_pixels(nside: int, base_pixels) -> int:
    return len(check_base_pixels(base_pixels)) * check_nside(nside) ** 2


def base_pixel_indices(nside: int, base_pixels) -> np.ndarray:
    """Global NESTED indices of the map over `base_pixels`, int64 (N,)."""
    nside = check_nside(nside)
    faces = np.asarray(check_base_pixels(base_pixels), dtype=np.int64)
    within = np.arange(nside * nside, dtype=np.int64)
    return (faces[:, None] * nside * nside + within[None, :]).ravel()


@host_function
def global_to_local(nside: int, base_pixels, ipix):
    """Global NESTED index -> local index in the map over `base_pixels`; −1 outside those faces."""
    nside = check_nside(nside)
    ipix = check_pixels(nside, ipix)
    lookup = np.full(12, -1, dtype=np.int64)
    faces = check_base_pixels(base_pixels)
    lookup[list(faces)] = np.arange(len(faces))
    npface = nside * nside
    slot = lookup[ipix // npface]
    return np.where(slot >= 0, slot * npface + ipix % npface, -1)


@host_function
def local_to_global(nside: int, base_pixels, local):
    """Local index in the map over `base_pixels` -> global NESTED index."""
    nside = check_nside(nside)
    faces = np.asarray(check_base_pixels(base_pixels), dtype=np.int64)
    local = np.asarray(local, dtype=np.int64)
    n = len(faces) * nside * nside
    if local.size and (local.min() < 0 or local.max() >= n):
        raise ValueError(f"local index outside [0, {n}) for nside={nside}, base_pixels={tuple(faces)}")
    return faces[local // (nside * nside)] * nside * nside + local % (nside * nside)


def base_pixels_keyword(base_pixels, faces, where: str, old: str = "faces"):
    """The set of base pixels a caller gave: `base_pixels`, the one public name, or `faces` given under the
    keyword `old`, the name some functions had before (a DeprecationWarning that names `where`, the
    function). Both at once is an error."""
    if faces is None:
        return base_pixels
    if base_pixels is not None:
        raise TypeError(f"{where}: give base_pixels=... ({old}=... is its deprecated name), not both")
    warnings.warn(f"{where}({old}=...) is deprecated; use base_pixels=...", DeprecationWarning, stacklevel=3)
    return faces
