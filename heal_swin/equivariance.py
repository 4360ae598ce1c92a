"""Equivariance checks for networks on the HEALPix grid, as e3nn keeps `assert_equivariant` in `e3nn.util.test`.

    from heal_swin.equivariance import assert_equivariant, rotation_permutation, rz
    index = rotation_permutation(nside, rz(math.pi / 2), faces)     # the 90° polar turn, an exact symmetry
    act = lambda t: t.index_select(-1, index)
    err = assert_equivariant(model, act, act, x)                     # f(g·x) == g·f(x); returns the error

- `equivariance_error(fn, act_in, act_out, x)` measures max |f(g·x) − g·f(x)| / max |f(x)| for one group
  element g, given by its action on inputs (`act_in`) and on outputs (`act_out`); `assert_equivariant`
  raises AssertionError when it exceeds a tolerance (per dtype of `x` unless given: `TOLERANCE`).
- The grid's own symmetries as pixel permutations: `rotation_permutation(nside, matrix, faces)` for a
  rotation matrix such as `rz(angle)` (turns about the pole by multiples of 90°) or `flip(phi)` (180° about
  an equatorial axis, full sphere only); `local_index` maps global NESTED pixels to a face set's.
- `grid_symmetry_errors(net, nside, base_pixels, in_chans)`: the error under every symmetry the grid keeps.
- `so3_errors(nets)`: the (approximate) equivariance of networks under random rotations of SO(3), measured
  on band-limited inputs in harmonic space.

A network that is not equivariant by construction to compare with: `heal_swin.models.PlainFaceCNN`.
This module sits on the row of `projection`: it imports `grid` and `harmonics` only.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import grid

__all__ = ["TOLERANCE", "assert_equivariant", "equivariance_error", "flip", "grid_symmetry_errors", "local_index",
           "relative_error", "rotation_permutation", "rz", "so3_errors"]

# default tolerance of `assert_equivariant`, relative to the largest output, per dtype of the input
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}


# --------------------------------------------------------------------------- one group element


def equivariance_error(fn, act_in, act_out, x) -> float:
    """max |f(g·x) − g·f(x)| / max |f(x)|: the relative error of equivariance of `fn` at x, for one group
    element given by its action on inputs (`act_in`) and outputs (`act_out`)."""
    with torch.no_grad():
        y = fn(x)
        gy = act_out(y)
        fgx = fn(act_in(x))
    scale = y.abs().max().clamp_min(torch.finfo(y.dtype).tiny)
    return ((fgx - gy).abs().max() / scale).item()


relative_error = equivariance_error  # the name heal_swin.tools.equivariance used first


def assert_equivariant(fn, act_in, act_out, x, tol: float | None = None) -> float:
    """Assert f(act_in(x)) == act_out(f(x)) up to `tol` relative to the largest output (default per dtype of
    x, `TOLERANCE`: 1e-10 in float64, 1e-4 in float32); returns the measured error. Raises AssertionError
    (also under `python -O`) naming the measured error and the tolerance."""
    if tol is None:
        if x.dtype not in TOLERANCE:
            raise ValueError(f"no default tolerance for x of dtype {x.dtype} (known: "
                             f"{', '.join(map(str, TOLERANCE))}); pass tol")
        tol = TOLERANCE[x.dtype]
    err = equivariance_error(fn, act_in, act_out, x)
    if not err <= tol:  # also a NaN error fails
        raise AssertionError(f"equivariance error {err:.3e} > {tol:.1e}")
    return err


# --------------------------------------------------------------------------- grid symmetries


def local_index(nside, faces, ipix):
    """Global NESTED pixels -> local indices over `faces`, −1 where the face is absent (or ipix is −1)."""
    pos = np.full(12, -1)
    pos[list(faces)] = np.arange(len(faces))
    f = np.where(ipix >= 0, ipix // nside ** 2, 0)
    return np.where((ipix >= 0) & (pos[f] >= 0), pos[f] * nside ** 2 + ipix % nside ** 2, -1)


def rotation_permutation(nside, matrix, faces=tuple(range(12))) -> torch.Tensor:
    """The local NESTED pixel map of a grid symmetry: (g·x)[..., p'] = x[..., index[p']], the pixel centre of
    index[p'] rotated by `matrix` is p's (`grid.symmetry_permutation`, which checks that it is a symmetry)."""
    return torch.as_tensor(grid.symmetry_permutation(nside, matrix, faces))


def rz(angle) -> np.ndarray:
    """The rotation by `angle` (radians) about the pole (the z axis), 3 × 3."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def flip(phi) -> np.ndarray:
    """180° about the horizontal axis at longitude phi (radians), 3 × 3."""
    a = np.array([math.cos(phi), math.sin(phi), 0.0])
    return 2 * np.outer(a, a) - np.eye(3)


def grid_symmetry_errors(net, nside: int, base_pixels, in_chans: int, seed: int = 0, batch: int = 2) -> dict:
    """{symmetry name: `equivariance_error`} of `net` (x (B, in_chans, N) NESTED -> (B, K, N)) under every
    symmetry the grid over `base_pixels` keeps (`grid.grid_symmetries`: the polar turns, and on the full
    sphere the equatorial flips), for a random input in the dtype of the net's parameters."""
    dtype = next((p.dtype for p in net.parameters()), torch.float64) if hasattr(net, "parameters") else torch.float64
    n = len(grid.check_base_pixels(base_pixels)) * nside ** 2
    x = torch.as_tensor(np.random.default_rng(seed).standard_normal((batch, in_chans, n)), dtype=dtype)
    out = {}
    for name, matrix in grid.grid_symmetries(nside, base_pixels).items():
        perm = rotation_permutation(nside, matrix, base_pixels)
        out[name] = equivariance_error(net, lambda t, p=perm: t[..., p], lambda t, p=perm: t[..., p], x)
    return out


# --------------------------------------------------------------------------- SO(3): approximate


def so3_errors(nets: dict, nside: int = 32, in_chans: int = 2, lmax_in: int = 4, lmax_out: int = 8,
               rotations: int = 3, seed: int = 0) -> dict:
    """Relative error of equivariance of each net (a callable on full-sphere NESTED maps (1, in_chans, N),
    float64) under random rotations R of a band-limited input: ‖SHT f(R·x) − R·SHT f(x)‖ / ‖SHT f(x)‖ in
    harmonic space up to lmax_out, the input made exactly by rotating random a_lm (l ≤ lmax_in), averaged
    over the rotations. Add torch.relu as a net to see the measurement's own floor."""
    from . import harmonics

    rng = np.random.default_rng(seed)
    isht = harmonics.InverseRealSHT(nside, lmax_in).double()
    sht = harmonics.RealSHT(nside, lmax_out, iterations=3).double()
    a = torch.as_tensor(rng.standard_normal((1, in_chans, harmonics.alm_size(lmax_in), 2)))
    a[..., :lmax_in + 1, 1] = 0
    errors: dict = {k: [] for k in nets}
    with torch.no_grad():
        x = isht(a)
        for _ in range(rotations):
            angles = rng.uniform(0, 2 * np.pi), math.acos(rng.uniform(-1, 1)), rng.uniform(0, 2 * np.pi)
            x_rot = isht(harmonics.rotate_alm(a, *angles))
            for k, f in nets.items():
                want = harmonics.rotate_alm(sht(f(x)), *angles)
                errors[k].append(((sht(f(x_rot)) - want).norm() / want.norm()).item())
    return {k: float(np.mean(v)) for k, v in errors.items()}
