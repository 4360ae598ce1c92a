"""Equivariance checks shared by the equivariant backbones' tests (gauge CNN, S2CNN), e3nn style; the grid
symmetries as pixel permutations, a plain per-face CNN to compare with, and the SO(3) error measurement.

    err = assert_equivariant(fn, act_in, act_out, x)          # f(g·x) == g·f(x), returns the error

`act_in` / `act_out` apply one explicit group element to an input / output; the check runs in the
dtype of `x` (float64 for exactness tests) and compares with a tolerance per dtype unless given.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from heal_swin import grid, layers
from heal_swin.layers import trivial
from heal_swin.tools.equivariance import relative_error as equivariance_error, so3_errors  # noqa: F401

SPHERE, FACES_0_7 = tuple(range(12)), tuple(range(8))
FACE_SETS = pytest.mark.parametrize("faces", [SPHERE, FACES_0_7], ids=["sphere", "faces0-7"])

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}


def assert_equivariant(fn, act_in, act_out, x, tol: float | None = None) -> float:
    """Assert f(act_in(x)) == act_out(f(x)) up to `tol` (default per dtype: 1e-10 in float64,
    1e-4 in float32) relative to the largest output; returns the measured error."""
    tol = TOLERANCE[x.dtype] if tol is None else tol
    err = equivariance_error(fn, act_in, act_out, x)
    assert err <= tol, f"equivariance error {err:.3e} > {tol:.1e}"
    return err


# --------------------------------------------------------------------------- grid symmetries


def local_index(nside, faces, ipix):
    """Global NESTED pixels -> local indices over `faces`, −1 where the face is absent (or ipix is −1)."""
    pos = np.full(12, -1)
    pos[list(faces)] = np.arange(len(faces))
    f = np.where(ipix >= 0, ipix // nside ** 2, 0)
    return np.where((ipix >= 0) & (pos[f] >= 0), pos[f] * nside ** 2 + ipix % nside ** 2, -1)


def rotation_permutation(nside, matrix, faces=tuple(range(12))):
    """The local NESTED pixel map of a grid symmetry: (g·x)[..., p'] = x[..., index[p']], the pixel centre of
    index[p'] rotated by `matrix` is p's (`grid.symmetry_permutation`, which checks that it is a symmetry)."""
    return torch.as_tensor(grid.symmetry_permutation(nside, matrix, faces))


def rz(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def flip(phi):
    """180° about the horizontal axis at longitude phi."""
    a = np.array([math.cos(phi), math.sin(phi), 0.0])
    return 2 * np.outer(a, a) - np.eye(3)


# --------------------------------------------------------------------------- SO(3): approximate


class PlainFaceCNN(nn.Module):
    """The gauge CNN's U-Net with ordinary 3×3 convolutions on scalar channels (2 × the fields:
    the same weights per convolution), each face padded from its neighbours as read, without
    turning anything: its kernels point along chart axes that turn from face to face.
    x: (B, in_chans, N) NESTED -> (B, num_classes, N)."""

    def __init__(self, nside, faces, in_chans, num_classes, widths, depths):
        super().__init__()
        self.faces, self.widths = faces, [2 * w for w in widths]
        nsides = [nside >> i for i in range(len(widths))]

        def block(cin, cout, ns):
            return nn.ModuleDict(dict(pad=layers.FacePadding(trivial(cin), ns, faces),
                                      conv=nn.Conv2d(cin, cout, 3, bias=False),
                                      back=layers.FaceUnraster(trivial(cout), ns, faces),
                                      norm=nn.GroupNorm(math.gcd(cout, 8), cout)))

        w = self.widths
        self.stem = block(in_chans, w[0], nside)
        self.enc = nn.ModuleList([nn.ModuleList([block(w[max(i - 1, 0)] if j == 0 else w[i], w[i], nsides[i])
                                                 for j in range(depths[i])]) for i in range(len(w))])
        self.dec = nn.ModuleList([nn.ModuleList([block(w[i + 1] + w[i] if j == 0 else w[i], w[i], nsides[i])
                                                 for j in range(depths[i])]) for i in range(len(w) - 2, -1, -1)])
        self.head = nn.Conv1d(w[0], num_classes, 1, bias=False)

    @staticmethod
    def _run(blk, x):
        return torch.relu(blk["norm"](blk["back"](blk["conv"](blk["pad"](x)))))

    def forward(self, x):
        x = self._run(self.stem, x)
        skips = []
        for i, blocks in enumerate(self.enc):
            if i:
                x = x.unflatten(-1, (-1, 4)).mean(-1)
            for blk in blocks:
                x = self._run(blk, x)
            skips.append(x)
        for blocks, skip in zip(self.dec, reversed(skips[:-1])):
            x = torch.cat([x.repeat_interleave(4, -1), skip], 1)
            for blk in blocks:
                x = self._run(blk, x)
        return self.head(x)
