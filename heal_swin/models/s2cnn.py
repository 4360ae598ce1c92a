"""S2CNN: spherical CNNs with S² and SO(3) convolutions on the HEALPix grid, and a hybrid U-Net.

Cohen, Geiger, Köhler, Welling, "Spherical CNNs", ICLR 2018: a map on the sphere is correlated with a
kernel turned by every rotation R, which gives a function on SO(3) (the S² convolution); SO(3) maps are
correlated the same way (the SO(3) convolution). Gerken et al., "Equivariance versus augmentation for
spherical images", ICML 2022, added the SO(3) → S² layer that returns to the sphere for segmentation.
Every such layer is a product of spectra per degree l, so it commutes with every rotation; on a grid the
nonlinearities sample, so the network is equivariant up to sampling effects (measured, bench/README.md),
and exactly for the rotations that map the grids onto themselves (90° turns about the polar axis, the
180° turn about the x axis).

Conventions (`heal_swin.harmonics`): maps on S² enter as a_lm in healpy's layout (..., n_alm, 2); SO(3)
maps are spectra G^l_{mn} (..., b, b, 2b - 1, 2) with f(R) = Σ G^l_{mn} conj(D^l_{mn}(R)), and values on the
SO(3) grid (..., 2b, 12 nside_b²). With kernels that are weighted sums of point masses at rotations near the
identity (the original's grids: 24 points on S², 192 on SO(3)) the layers compute, before band-limiting,

    S² conv        out(R) = Σ_j w_j f(R x_j)                 G^l_{mn} = Σ_j w_j a_lm Y_ln(x_j)
    SO(3) conv     out(R) = Σ_j w_j f(R Q_j)                 G'^l = G^l (Σ_j w_j D^l(Q_j))^†
    SO(3) → S²     out(x) = Σ_j w_j mean_{R x_j = x} f(R)    a_lm = 4π/(2l+1) Σ_n G^l_{mn} Σ_j w_j conj(Y_ln(x_j))

summed over input channels. The kernel spectra (Σ_j w_j ...) are rebuilt from the weights in training and
held, folded, while the module is in eval mode without gradients (also what ONNX export traces).

Models: `s2cnn_digits`, the all-spectral segmentation network of the 2022 paper (SHT → S² conv → SO(3)
convs → SO(3) → S² → inverse SHT), and `S2CNNUNet` (`s2cnn_tiny`, `s2cnn_small`): isotropic local stages
(Chebyshev polynomials of the normalised HEALPix 8-neighbour graph Laplacian, as in DeepSphere; nested 2×2
pooling) from the input nside down to a core nside, the spectral core there, and a decoder with skips.

Read top-down: kernel grids → spectral layers → graph layers → models → registered variants.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .. import grid
from ..grid import check_base_pixels, check_nside, format_base_pixels
from ..harmonics import (InverseRealSHT, RealSHT, SO3Analysis, SO3Synthesis, TableModule, alm_index, alm_size,
                         cached_plan, check_bandwidth, legendre, so3_grid_nside, wigner_d)
from ..layers import CheckpointList, NestedPool, NestedUnpool
from ._base import SphereBackbone, is_whole
from ._registry import register_model

__all__ = ["ChebConv", "S2CNN", "S2CNNUNet", "S2Conv", "SO3Activation", "SO3Conv", "SO3ToS2Conv",
           "s2_near_identity_grid", "so3_near_identity_grid"]


# --------------------------------------------------------------------------- kernel grids


def s2_near_identity_grid(max_beta: float = math.pi / 8, n_alpha: int = 8, n_beta: int = 3) -> np.ndarray:
    """Points near the north pole: rings at colatitudes max_beta·(1..n_beta)/n_beta, n_alpha points each;
    (J, 2) = (beta, alpha), J = 24 by default (the original S2CNN's S² kernel support)."""
    beta = max_beta * np.arange(1, n_beta + 1) / n_beta
    alpha = 2 * np.pi * np.arange(n_alpha) / n_alpha
    b, a = np.meshgrid(beta, alpha, indexing="ij")
    return np.stack([b.ravel(), a.ravel()], axis=1)


def so3_near_identity_grid(max_beta: float = math.pi / 8, n_alpha: int = 8, n_beta: int = 3,
                           n_gamma: int = 8) -> np.ndarray:
    """Rotations near the identity: ZYZ angles (alpha, beta, gamma - alpha) with beta on n_beta rings up to
    max_beta, alpha and gamma on n_alpha / n_gamma uniform points (gamma - alpha undoes the turn about z of
    alpha, so every point is close to the identity); (J, 3), J = 192 by default (the original's)."""
    beta = max_beta * np.arange(1, n_beta + 1) / n_beta
    alpha = 2 * np.pi * np.arange(n_alpha) / n_alpha
    gamma = 2 * np.pi * np.arange(n_gamma) / n_gamma
    b, a, g = np.meshgrid(beta, alpha, gamma, indexing="ij")
    return np.stack([a.ravel(), b.ravel(), (g - a).ravel()], axis=1)


@functools.lru_cache(maxsize=16)
def _s2_basis(b: int, points: tuple) -> np.ndarray:
    """Y_ln(x_j) for l < b, |n| <= l: (J, b, 2b - 1, 2) real / imaginary parts, zero for |n| > l."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    lam = legendre(b - 1, pts[:, 0])                                  # (n_alm, J)
    out = np.zeros((len(pts), b, 2 * b - 1, 2))
    for l in range(b):
        for n in range(l + 1):
            y = lam[alm_index(b - 1, l, n)] * np.exp(1j * n * pts[:, 1])
            out[:, l, b - 1 + n] = np.stack([y.real, y.imag], axis=1)
            if n:
                y = (-1) ** n * np.conj(y)                            # Y_{l,-n} = (-1)^n conj(Y_ln)
                out[:, l, b - 1 - n] = np.stack([y.real, y.imag], axis=1)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=16)
def _so3_basis(b: int, points: tuple) -> np.ndarray:
    """conj(D^l_{kn}(Q_j)) = e^{i k alpha} d^l_{kn}(beta) e^{i n gamma} for l < b: (J, b, 2b - 1, 2b - 1, 2),
    axes (j, l, k + b - 1, n + b - 1, re/im), zero outside |k|, |n| <= l."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    out = np.zeros((len(pts), b, 2 * b - 1, 2 * b - 1, 2))
    for j, (alpha, beta, gamma) in enumerate(pts):
        ds = wigner_d(b - 1, float(beta))
        for l in range(b):
            k = np.arange(-l, l + 1)
            v = np.exp(1j * k * alpha)[:, None] * ds[l] * np.exp(1j * k * gamma)[None, :]
            s = slice(b - 1 - l, b + l)
            out[j, l, s, s, 0], out[j, l, s, s, 1] = v.real, v.imag
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=16)
def _so3_basis_packed(b: int, points: tuple) -> np.ndarray:
    """`_so3_basis` without its zeros, degree after degree: (J, sum_l 2 (2l + 1)^2), the block of degree l
    ordered (re/im, n, k) over |n|, |k| <= l (SO3Conv's kernel rows are (re/im, i, n), its columns (o, k))."""
    full = _so3_basis(b, points)
    blocks = [full[:, l, b - 1 - l:b + l, b - 1 - l:b + l, :].transpose(0, 3, 2, 1).reshape(len(full), -1)
              for l in range(b)]
    out = np.ascontiguousarray(np.concatenate(blocks, axis=1))
    out.setflags(write=False)
    return out


def _complex_matrix(re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """The real (…, 2P, 2Q) matrix of a complex (…, P, Q) one, for x = [x_re | x_im]: x @ M = [y_re | y_im]."""
    return torch.cat([torch.cat([re, im], dim=-1), torch.cat([-im, re], dim=-1)], dim=-2)


# --------------------------------------------------------------------------- spectral layers


class _SpectralConv(TableModule):
    """Weights (out, in, J) on a kernel grid, the kernel's spectrum folded in eval mode without grad."""

    def __init__(self, in_channels: int, out_channels: int, b_in: int, b_out: int, n_points: int):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.b_in, self.b_out = check_bandwidth(b_in, "b_in"), check_bandwidth(b_out, "b_out")
        self.b = min(self.b_in, self.b_out)                       # degrees carried through
        # out(R) = sum over in x points of w f(R x_j): unit-variance outputs for unit-variance inputs
        self.weight = nn.Parameter(torch.randn(self.out_channels, self.in_channels, n_points)
                                   / math.sqrt(self.in_channels * n_points))
        self._folded, self._folded_key = None, None

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, b_in={self.b_in}, b_out={self.b_out}, "
                f"points={self.weight.shape[-1]}")

    def kernel(self, like: torch.Tensor) -> torch.Tensor:
        if self.training or (torch.is_grad_enabled() and self.weight.requires_grad):
            return self._build_kernel(like)
        key = (self.weight._version, id(self.weight), self.weight.dtype, self.weight.device, like.dtype)
        if self._folded_key != key:
            with torch.no_grad():
                self._folded = self._build_kernel(like)
            self._folded_key = key
        return self._folded

    def _so3_in(self, g: torch.Tensor) -> torch.Tensor:
        """An SO(3) spectrum at b_in, cut to the carried degrees: (B, C, b, b, 2b - 1, 2)."""
        bi, b = self.b_in, self.b
        if g.dim() != 6 or g.shape[1] != self.in_channels or g.shape[2:] != (bi, bi, 2 * bi - 1, 2):
            raise ValueError(f"expected an SO(3) spectrum (B, {self.in_channels}, {bi}, {bi}, {2 * bi - 1}, 2), "
                             f"got {tuple(g.shape)}")
        return g[:, :, :b, :b, bi - b:bi + b - 1]

    def _so3_out(self, g: torch.Tensor) -> torch.Tensor:
        """(B, C, b, b, 2b - 1, 2) zero-padded to b_out."""
        p = self.b_out - self.b
        return nn.functional.pad(g, (0, 0, p, p, 0, p, 0, p)) if p else g


class S2Conv(_SpectralConv):
    """S² → SO(3): a_lm (B, in, alm_size(b_in - 1), 2) -> G (B, out, b_out, b_out, 2b_out - 1, 2);
    out(R) = Σ_{c, j} w_cj f_c(R x_j) (module docstring), degrees l < min(b_in, b_out)."""

    def __init__(self, in_channels: int, out_channels: int, b_in: int, b_out: int, points=None):
        points = s2_near_identity_grid() if points is None else np.asarray(points, dtype=np.float64)
        super().__init__(in_channels, out_channels, b_in, b_out, len(points))
        b = self.b
        self._table("basis", _s2_basis(b, tuple(map(tuple, points))).reshape(len(points), -1))   # (J, L N 2)
        idx = np.full((b, b), alm_size(self.b_in - 1), dtype=np.int64)       # zero slot for m > l
        for l in range(b):
            idx[l, :l + 1] = alm_index(self.b_in - 1, l, np.arange(l + 1))
        self._table("alm_gather", idx.reshape(-1), torch.int64)

    def _build_kernel(self, like):
        b, n = self.b, 2 * self.b - 1
        k = (self.weight.reshape(-1, self.weight.shape[-1]).to(like.dtype) @ self._t("basis", like))
        k = k.reshape(self.out_channels, self.in_channels, b, n, 2).permute(2, 1, 0, 3, 4)   # (L, I, O, N, 2)
        k = k.reshape(b, self.in_channels, self.out_channels * n, 2)
        return _complex_matrix(k[..., 0], k[..., 1])                       # (L, 2I, 2 O N)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        n_alm = alm_size(self.b_in - 1)
        if a.dim() != 4 or a.shape[1] != self.in_channels or a.shape[2:] != (n_alm, 2):
            raise ValueError(f"expected a_lm (B, {self.in_channels}, {n_alm}, 2) for b_in={self.b_in}, "
                             f"got {tuple(a.shape)}")
        nb, b, n = a.shape[0], self.b, 2 * self.b - 1
        a = torch.cat([a, a.new_zeros(nb, self.in_channels, 1, 2)], dim=2)
        a = torch.index_select(a, 2, self.alm_gather).reshape(nb, self.in_channels, b, b, 2)   # (B, I, l, m, 2)
        x = a.permute(2, 0, 3, 4, 1).reshape(b, nb * b, 2, self.in_channels)                  # (L, B M, 2, I)
        x = x.reshape(b, nb * b, 2 * self.in_channels)
        g = torch.bmm(x, self.kernel(a))                                   # (L, B M, 2 O N): G = a conj(k)
        g = g.reshape(b, nb, b, 2, self.out_channels, n).permute(1, 4, 0, 2, 5, 3)
        return self._so3_out(g)


class SO3Conv(_SpectralConv):
    """SO(3) → SO(3): G (B, in, b_in, b_in, 2b_in - 1, 2) -> (B, out, b_out, b_out, 2b_out - 1, 2);
    out(R) = Σ_{c, j} w_cj f_c(R Q_j) (module docstring), degrees l < min(b_in, b_out).

    Per degree l only the coefficients there are computed: rows m <= l, columns |n|, |k| <= l (62 % of the
    padded (b, 2b - 1, 2b - 1) kernel and 44 % of the input rows are zero at b = 8). The kernel basis is held
    packed, degree after degree, so that one matmul builds every degree's kernel; the entries outside the
    spectrum mask (m > l or |k| > l) of the output are zero."""

    def __init__(self, in_channels: int, out_channels: int, b_in: int, b_out: int, points=None):
        points = so3_near_identity_grid() if points is None else np.asarray(points, dtype=np.float64)
        super().__init__(in_channels, out_channels, b_in, b_out, len(points))
        self._table("basis", _so3_basis_packed(self.b, tuple(map(tuple, points))))
        self._sizes = [2 * (2 * l + 1) ** 2 for l in range(self.b)]

    def _build_kernel(self, like):
        """[K_l for l < b]: K_l (2 I (2l + 1), O (2l + 1)), rows ([re|im], i, n), columns (o, k): the complex
        kernel's real and imaginary parts stacked, for [y_re; y_im] = [[x_re, -x_im]; [x_im, x_re]] @ K_l."""
        i, o = self.in_channels, self.out_channels
        k = (self.weight.reshape(o * i, -1).to(like.dtype) @ self._t("basis", like)).reshape(o, i, -1)
        # split (its backward is one cat) rather than slices (each slice's backward fills a zero tensor)
        return [s.reshape(o, i, 2, 2 * l + 1, 2 * l + 1).permute(2, 1, 3, 0, 4).reshape(2 * i * (2 * l + 1), -1)
                for l, s in enumerate(k.split(self._sizes, dim=-1))]

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        g = self._so3_in(g)
        nb, b, i, o = g.shape[0], self.b, self.in_channels, self.out_channels
        kernels = self.kernel(g)
        x = g.permute(2, 0, 3, 5, 1, 4)                                     # (l, B, m, re/im, I, n)
        ys = []
        for l, k in enumerate(kernels):
            w, p = 2 * l + 1, b - 1 - l
            xl = x[l, :, :l + 1, :, :, p:p + w].reshape(nb * (l + 1), 2, i * w)           # (B m, re/im, I n)
            # complex rows as real blocks on the input side (the smaller operand): [x_re, -x_im], [x_im, x_re]
            xl = torch.cat([xl[:, 0], -xl[:, 1], xl[:, 1], xl[:, 0]], dim=1).reshape(2 * nb * (l + 1), 2 * i * w)
            y = (xl @ k).reshape(nb, l + 1, 2, o, w)                        # (B, m, re/im, O, k)
            ys.append(nn.functional.pad(y, (p, p, 0, 0, 0, 0, 0, b - 1 - l)) if p else y)
        y = torch.stack(ys).permute(1, 4, 0, 2, 5, 3)                        # (B, O, l, m, k, re/im)
        return self._so3_out(y)


class SO3ToS2Conv(_SpectralConv):
    """SO(3) → S²: G (B, in, b_in, b_in, 2b_in - 1, 2) -> a_lm (B, out, alm_size(b_out - 1), 2);
    out(x) = Σ_{c, j} w_cj mean over {R : R x_j = x} of f_c(R) (module docstring), degrees l < min(b_in, b_out)."""

    def __init__(self, in_channels: int, out_channels: int, b_in: int, b_out: int, points=None):
        points = s2_near_identity_grid() if points is None else np.asarray(points, dtype=np.float64)
        super().__init__(in_channels, out_channels, b_in, b_out, len(points))
        b = self.b
        basis = np.array(_s2_basis(b, tuple(map(tuple, points))))
        basis[..., 1] *= -1                                                 # conj(Y_ln(x_j))
        basis *= (4 * np.pi / (2 * np.arange(b) + 1))[None, :, None, None]   # fibre mean: 8 pi^2/(2l+1)/(2 pi)
        self._table("basis", basis.reshape(len(points), -1))
        n_out = alm_size(self.b_out - 1)
        idx = np.full(n_out, b * b, dtype=np.int64)                         # zero slot for l >= b
        for m in range(b):
            l = np.arange(m, b)
            idx[alm_index(self.b_out - 1, l, m)] = l * b + m
        self._table("alm_scatter", idx, torch.int64)

    def _build_kernel(self, like):
        b, n, i, o = self.b, 2 * self.b - 1, self.in_channels, self.out_channels
        k = self.weight.reshape(o * i, -1).to(like.dtype) @ self._t("basis", like)
        k = k.reshape(o, i, b, n, 2).permute(2, 1, 3, 0, 4).reshape(b, i * n, o, 2)      # (L, I n, O)
        return _complex_matrix(k[..., 0], k[..., 1])                       # (L, 2 I N, 2 O)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        g = self._so3_in(g)
        nb, b, n = g.shape[0], self.b, 2 * self.b - 1
        x = g.permute(2, 0, 3, 5, 1, 4).reshape(b, nb * b, 2 * self.in_channels * n)
        y = torch.bmm(x, self.kernel(g)).reshape(b, nb, b, 2, self.out_channels)        # (l, B, m, re/im, O)
        y = y.permute(1, 4, 0, 2, 3).reshape(nb, self.out_channels, b * b, 2)
        y = torch.cat([y, y.new_zeros(nb, self.out_channels, 1, 2)], dim=2)
        return torch.index_select(y, 2, self.alm_scatter)


class SO3Activation(nn.Module):
    """Pointwise on the SO(3) grid: spectrum -> values (SO3Synthesis) -> GroupNorm -> ReLU -> spectrum
    (SO3Analysis), at bandwidth b on the grid `grid` (`harmonics.so3_grid_shape`: default the grid of b).
    GroupNorm's statistics over all grid points (equal measure each) and the ReLU commute with every
    permutation of the grid, so the grid's symmetries stay exact.

    The values stay on the transforms' padded rings (R, L, K, B C), the maps innermost, in between (no NESTED
    gather and scatter); the padding is zero after synthesis, so the sums of the statistics need no mask, and
    analysis ignores it. The result equals nn.GroupNorm on the NESTED values (the module `norm` holds its
    parameters)."""

    def __init__(self, channels: int, b: int, groups: int | None = None, norm: bool = True, grid=None):
        super().__init__()
        self.b = check_bandwidth(b)
        self.synthesis, self.analysis = SO3Synthesis(self.b, grid), SO3Analysis(self.b, grid)
        self.norm = nn.GroupNorm(math.gcd(channels, 8) if groups is None else groups, channels) if norm else None
        self.act = nn.ReLU()

    def forward(self, g):
        lead = g.shape[:-4]
        # without gradients (not tracing): the transforms' large intermediates in reused per-thread buffers
        scratch = (not torch.is_grad_enabled() and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()
                   and g.device.type == "cpu")
        plan = self._plan(g.reshape(-1, *g.shape[-4:])) if scratch and self.norm is not None else None
        if plan is not None:
            out = self._run_plan(plan, g.reshape(-1, *g.shape[-4:]))
            return out.reshape(*lead, *out.shape[1:])
        v = self.synthesis.rings(g.reshape(-1, *g.shape[-4:]), scratch)           # (R, L, K, B C)
        if self.norm is not None:
            v = self._group_norm(v.reshape(-1, v.shape[-1])).view_as(v)
        else:
            v = torch.relu_(v) if scratch else self.act(v)
        out = self.analysis.spectrum(v, scratch)
        return out.reshape(*lead, *out.shape[1:])

    # Without gradients a call replays a plan (`harmonics.cached_plan`): the scratch path's operations bound
    # once to their views (synthesis, the GroupNorm's block sums, its affine map and ReLU, analysis up to the
    # last product), so a call is about 40 dispatches instead of about 200 (0.4 ms at b = 8). The same
    # operations on the same values: bit for bit the unplanned result. Per call: the spectrum copied in, the
    # GroupNorm coefficients (from the current parameters) and the last product (the returned tensor).
    def _plan(self, g):
        s, a = self.synthesis, self.analysis
        key = (g.shape[0], g.dtype, g.device, getattr(s, "_table_version", 0), getattr(a, "_table_version", 0))
        return cached_plan(self, key, lambda: self._build_plan(g))

    def _build_plan(self, g):
        ops = []
        record = lambda fn, *args, **kwargs: ops.append(functools.partial(fn, *args, **kwargs))
        t, v = self.synthesis.rings(g, True, record)
        cols = v.shape[-1]
        flat = v.view(-1, cols)
        rows = _block_rows(flat)
        # the sums as `_ring_sums` forms them (the same operations in the same order)
        s1, s2, part = flat.new_zeros(cols), flat.new_zeros(1, cols), flat.new_empty(cols)
        buf, ones = flat.new_empty(rows, cols), flat.new_ones(1, rows)
        record(torch.Tensor.zero_, s1), record(torch.Tensor.zero_, s2)
        for blk in flat.split(rows):
            n = blk.shape[0]
            record(torch.sum, blk, 0, out=part)
            record(torch.Tensor.add_, s1, part)
            record(torch.mul, blk, blk, out=buf[:n])
            record(torch.addmm, s2, ones[:, :n], buf[:n], out=s2)
        stats = ops
        ops = []
        shift, scale = flat.new_empty(cols), flat.new_empty(cols)
        for blk in flat.split(rows):
            record(torch.addcmul, shift, blk, scale, out=blk)
            record(torch.relu_, blk)
        x = self.analysis.spectrum(v, True, record)
        return t, stats, s1, s2, shift, scale, ops, x

    def _run_plan(self, plan, g):
        t, stats, s1, s2, shift, scale, ops, x = plan
        t.copy_(g.reshape(g.shape[0], -1).t())
        for op in stats:
            op()
        norm = self.norm
        channels = norm.num_channels
        count = self.synthesis.n_pix * self.synthesis.n_gamma * (channels // norm.num_groups)
        weight, bias = (norm.weight, norm.bias) if norm.affine else (s1.new_ones(channels), s1.new_zeros(channels))
        sc, sh, _, _ = _ring_norm_coefficients(s1.reshape(-1, channels), s2.reshape(-1, channels), weight, bias,
                                               norm.num_groups, count, norm.eps)
        scale.copy_(sc.reshape(-1)), shift.copy_(sh.reshape(-1))
        for op in ops:
            op()
        return self.analysis.spectrum_last(x)

    def _group_norm(self, v):
        """GroupNorm + ReLU of v (X, B C) (grid points x maps, the maps as columns b C + c) over the X rows and
        the channels of a group, grid points only. With gradients: `_RingGroupNormReLU` (its own backward:
        fewer passes over the grid values and fewer saved tensors); without (inference, ONNX export): the
        plain ops below."""
        norm = self.norm
        channels = norm.num_channels
        count = self.synthesis.n_pix * self.synthesis.n_gamma * (channels // norm.num_groups)
        weight, bias = (norm.weight, norm.bias) if norm.affine else (v.new_ones(channels), v.new_zeros(channels))
        if torch.is_grad_enabled() and (v.requires_grad or weight.requires_grad or bias.requires_grad):
            return _RingGroupNormReLU.apply(v, weight, bias, norm.num_groups, count, norm.eps)
        s1, s2 = _ring_sums(v, channels)
        scale, shift, _, _ = _ring_norm_coefficients(s1, s2, weight, bias, norm.num_groups, count, norm.eps)
        if not torch.is_grad_enabled() and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export():
            # v is the synthesis' fresh output: overwrite it (one large allocation and its page faults less);
            # addcmul as below and in _RingGroupNormReLU, so all three paths round alike; block by block of
            # rows (those of `_ring_sums`), so that the ReLU reads each block from the cache, not from memory
            shift, scale = shift.reshape(-1), scale.reshape(-1)
            rows = _block_rows(v)
            for i in range(0, v.shape[0], rows):
                blk = v[i:i + rows]
                torch.addcmul(shift, blk, scale, out=blk).relu_()
            return v
        return torch.relu(torch.addcmul(shift.reshape(-1), v, scale.reshape(-1)))


def _block_rows(v: torch.Tensor) -> int:
    """Rows of v (X, B C) per block of the GroupNorm's passes: about 512 KiB in float32 (the cache's share)."""
    return max(1, min(v.shape[0], (1 << 17) // max(v.shape[1], 1)))


def _ring_sums(v: torch.Tensor, channels: int):
    """Per (B, C) sums of v and of v^2 over the rows of v (X, B C) (grid points; the padding is zero). The
    sums and squares block by block of rows (about 512 KiB, the squares into one block buffer), the squares
    summed by a (1, rows) @ (rows, B C) product accumulated in place: each block is read from memory once
    and its squares stay in the cache (instead of v.sum(0), then writing and reading v * v: 0.72 -> 0.45 ms
    for the squares alone at b = 8, 96 maps)."""
    x, cols = v.shape
    rows = _block_rows(v)
    buf = v.new_empty(rows, cols)
    ones = v.new_ones(1, rows)
    s1, s2 = v.new_zeros(cols), v.new_zeros(1, cols)
    for i in range(0, x, rows):
        blk = v[i:i + rows]
        n = blk.shape[0]
        s1 += blk.sum(0)
        torch.addmm(s2, ones[:, :n], torch.mul(blk, blk, out=buf[:n]), out=s2)
    s2 = s2.reshape(-1)
    return s1.reshape(-1, channels), s2.reshape(-1, channels)


def _ring_norm_coefficients(s1, s2, weight, bias, groups: int, count: int, eps: float):
    """GroupNorm as y = scale v + shift per (B, C) from the sums (`_ring_sums`): scale, shift (B, C) and the
    group statistics mean, inv (B, G) (inv = 1 / sqrt(var + eps))."""
    nb, c = s1.shape
    mean = s1.reshape(nb, groups, -1).sum(-1) / count
    inv = torch.rsqrt((s2.reshape(nb, groups, -1).sum(-1) / count - mean.square()).clamp_min(0) + eps)   # (B, G)
    per = c // groups
    scale = inv.repeat_interleave(per, dim=1) * weight
    shift = bias - mean.repeat_interleave(per, dim=1) * scale
    return scale, shift, mean, inv


class _RingGroupNormReLU(torch.autograd.Function):
    """relu(GroupNorm(v)) on the rings as v (X, B C) (grid points x maps, columns b C + c), statistics over
    `count` grid points per group (the padding is zero in v and its gradient is ignored downstream). The
    backward, with z = a v + c the normalised values and g_z = g_y [z > 0], S = sum g_z, P = sum g_z v per
    (B, C): g_v = a g_z + p v + q with, per group, A = sum_c gamma_c S, D = sum_c gamma_c inv (P - mean S),
    p = -inv^2 D / N, q = inv (mean inv D - A) / N; g_gamma = sum_B inv (P - mean S), g_beta = sum_B S.
    Saves v, the output and the (B, C) coefficients."""

    @staticmethod
    def forward(ctx, v, weight, bias, groups, count, eps):
        s1, s2 = _ring_sums(v, weight.shape[0])
        scale, shift, mean, inv = _ring_norm_coefficients(s1, s2, weight, bias, groups, count, eps)
        y = torch.addcmul(shift.reshape(-1), v, scale.reshape(-1)).relu_()
        ctx.save_for_backward(v, y, weight, scale, mean, inv)
        ctx.groups, ctx.count = groups, count
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_y):
        v, y, weight, scale, mean, inv = ctx.saved_tensors
        groups, count = ctx.groups, ctx.count
        nb, c = scale.shape
        # relu's own backward kernel (one pass; masked_fill / where with a boolean mask measured 10x slower)
        g_z = torch.ops.aten.threshold_backward(g_y.contiguous(), y, 0)
        s = g_z.sum(0).reshape(nb, c)                                                     # (B, C)
        p_dot = torch.mm(v.new_ones(1, v.shape[0]), g_z * v).reshape(nb, c)
        per = c // groups
        mean_c, inv_c = mean.repeat_interleave(per, dim=1), inv.repeat_interleave(per, dim=1)
        xs = inv_c * (p_dot - mean_c * s)                                                 # sum g_z xhat, (B, C)
        big_a = (weight * s).reshape(nb, groups, per).sum(-1)
        big_d = (weight * xs).reshape(nb, groups, per).sum(-1)
        p = (-inv.square() * big_d / count).repeat_interleave(per, dim=1)
        q = (inv * (mean * inv * big_d - big_a) / count).repeat_interleave(per, dim=1)
        g_v = torch.addcmul(q.reshape(-1), v, p.reshape(-1)).addcmul_(g_z, scale.reshape(-1))
        g_w = xs.sum(0) if ctx.needs_input_grad[1] else None
        g_b = s.sum(0) if ctx.needs_input_grad[2] else None
        return g_v, g_w, g_b, None, None, None


# --------------------------------------------------------------------------- graph layers


@functools.lru_cache(maxsize=16)
def _laplacian_tables(nside: int, faces: tuple):
    """The 8-neighbour HEALPix graph restricted to `faces`: neighbour index (N, 8) into the map with a zero
    slot appended (index N for a missing or absent-face neighbour) and weights (N, 8) of
    -D^{-1/2} A D^{-1/2} (the normalised Laplacian minus the identity: spectrum in [-1, 1])."""
    n = grid.n_pixels(nside, faces)
    glob = grid.base_pixel_indices(nside, faces)
    nb = np.asarray(grid.get_all_neighbours(nside, glob, nest=True)).T          # (N, 8), -1 where none
    local = np.full(nb.shape, n, dtype=np.int64)
    ok = nb >= 0
    local[ok] = grid.global_to_local(nside, faces, nb[ok])
    local[local < 0] = n
    present = local < n
    deg = present.sum(1).astype(np.float64)
    inv_sqrt = np.append(1 / np.sqrt(np.maximum(deg, 1)), 0.0)
    w = -inv_sqrt[:n, None] * inv_sqrt[local] * present
    local.setflags(write=False), w.setflags(write=False)
    return local, w


class ChebConv(TableModule):
    """Isotropic graph convolution (DeepSphere): y = Σ_{k < order} W_k T_k(L̃) x with T_k the Chebyshev
    polynomials of the normalised 8-neighbour graph Laplacian shifted to [-1, 1]; every filter is a function
    of the graph only, so it commutes with the grid's symmetries. x (B, C_in, N) -> (B, C_out, N), NESTED
    over `faces` (absent faces read zero)."""

    def __init__(self, in_channels: int, out_channels: int, nside: int, faces: Sequence[int], order: int = 3,
                 bias: bool = False):
        super().__init__()
        if order < 1:
            raise ValueError(f"ChebConv order={order} must be >= 1")
        self.nside, self.faces, self.order = check_nside(nside), check_base_pixels(faces), int(order)
        idx, w = _laplacian_tables(self.nside, self.faces)
        self._table("neighbours", idx.reshape(-1), torch.int64)
        self._table("weights", w)
        self.mix = nn.Conv1d(in_channels * self.order, out_channels, 1, bias=bias)

    def extra_repr(self) -> str:
        return f"nside={self.nside}, faces={format_base_pixels(self.faces)}, order={self.order}"

    def laplacian(self, x):
        """L̃ x: (B, C, N) -> (B, C, N)."""
        nb, c, n = x.shape
        x = torch.cat([x, x.new_zeros(nb, c, 1)], dim=2)
        v = torch.index_select(x, 2, self.neighbours).reshape(nb, c, n, 8)
        return (v * self._t("weights", x)).sum(-1)

    def forward(self, x):
        terms = [x]
        if self.order > 1:
            terms.append(self.laplacian(x))
        for _ in range(2, self.order):
            terms.append(2 * self.laplacian(terms[-1]) - terms[-2])
        return self.mix(torch.cat(terms, dim=1))


class ChebBlock(nn.Module):
    """ChebConv, GroupNorm, ReLU: (B, C_in, N) -> (B, C_out, N)."""

    def __init__(self, in_channels: int, out_channels: int, nside: int, faces: Sequence[int], order: int = 3):
        super().__init__()
        self.conv = ChebConv(in_channels, out_channels, nside, faces, order)
        self.norm = nn.GroupNorm(math.gcd(out_channels, 8), out_channels)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


SO3_GRIDS = ("shared", "sphere", "own")


class SpectralCore(nn.Module):
    """Maps on S² -> maps on S² through SO(3): RealSHT, S² conv, [activation, SO(3) conv] x k, activation,
    SO(3) → S², inverse SHT. x (B, C_in, N) -> (B, C_out, N) at (nside, faces).

    `channels` = (c_1, ..., c_k+1) SO(3) channels after each convolution, `bandwidths` = (b_0, b_1, ...,
    b_k+1, b_out): the input's SHT band limit, the bandwidth after each convolution and that of the output.
    `so3_grid`, where the activations sample SO(3) (bench/README.md, issue #27, measures the trade):
    "shared": every activation on the grid of the largest inner bandwidth (the same α, β, γ points in every
    layer); "sphere": the (α, β) HEALPix grid of the largest inner bandwidth shared, 2b γ points per
    bandwidth; "own": each on the grid of its own bandwidth (fewest points, most aliasing).
    The activations (values on the SO(3) grid: the most memory) and the SO(3) convolutions are
    `CheckpointList`s: with gradient checkpointing each keeps only its input spectrum."""

    def __init__(self, in_channels: int, out_channels: int, nside: int, faces: Sequence[int],
                 channels: Sequence[int], bandwidths: Sequence[int], points_s2=None, points_so3=None,
                 so3_grid: str = "sphere"):
        super().__init__()
        if not all(is_whole(c) and c >= 1 for c in channels):
            raise ValueError(f"channels={tuple(channels)} must be whole numbers >= 1 (SO(3) channels per convolution)")
        channels, bandwidths = tuple(int(c) for c in channels), tuple(int(b) for b in bandwidths)
        if len(channels) < 1 or len(bandwidths) != len(channels) + 2:
            raise ValueError(f"channels={channels} (one per S²/SO(3) convolution, at least the S² one) need "
                             f"bandwidths={bandwidths} of length len(channels) + 2 (input, per layer, output)")
        for b in bandwidths:
            check_bandwidth(b, "bandwidths")
        self.nside, self.faces = check_nside(nside), check_base_pixels(faces)
        if bandwidths[0] - 1 > 3 * self.nside - 1 or bandwidths[-1] - 1 > 3 * self.nside - 1:
            raise ValueError(f"bandwidths={bandwidths}: the maps at nside {self.nside} hold degrees < 3·nside = "
                             f"{3 * self.nside}; lower the input / output band limit")
        self.channels, self.bandwidths = channels, bandwidths
        self.sht = RealSHT(self.nside, bandwidths[0] - 1, self.faces)
        self.s2conv = S2Conv(in_channels, channels[0], bandwidths[0], bandwidths[1], points_s2)
        if so3_grid not in SO3_GRIDS:
            raise ValueError(f"so3_grid={so3_grid!r} must be one of {SO3_GRIDS} (where the activations sample SO(3))")
        self.so3_grid = so3_grid
        top = max(bandwidths[1:-1])
        grids = {"shared": lambda b: top, "sphere": lambda b: (so3_grid_nside(top), 2 * b), "own": lambda b: None}
        self.acts = CheckpointList([SO3Activation(c, b, grid=grids[so3_grid](b))
                                    for c, b in zip(channels, bandwidths[1:-1])])
        self.so3convs = CheckpointList([SO3Conv(channels[i], channels[i + 1], bandwidths[i + 1],
                                                bandwidths[i + 2], points_so3) for i in range(len(channels) - 1)])
        self.to_s2 = SO3ToS2Conv(channels[-1], out_channels, bandwidths[-2], bandwidths[-1], points_s2)
        self.isht = InverseRealSHT(self.nside, bandwidths[-1] - 1, self.faces)

    def extra_repr(self) -> str:
        grid = ", ".join(f"{a.synthesis.nside}x{a.synthesis.n_gamma}" for a in self.acts)
        grid = f", SO(3) grids {self.so3_grid!r} (nside x gammas: {grid})"
        return f"nside={self.nside}, faces={format_base_pixels(self.faces)}, bandwidths={self.bandwidths}{grid}"

    def forward(self, x):
        # transforms sum thousands of products: never in half precision (the core leaves autocast and
        # computes in float32, or float64 for float64 inputs)
        device = x.device.type
        if torch.is_autocast_enabled(device):
            with torch.autocast(device, enabled=False):
                return self._forward(x.float()).to(x.dtype)
        return self._forward(x)

    def _forward(self, x):
        g = self.s2conv(self.sht(x))
        for i in range(len(self.acts)):
            g = self.acts.run(i, g)
            if i < len(self.so3convs):
                g = self.so3convs.run(i, g)
        return self.isht(self.to_s2(g))


# --------------------------------------------------------------------------- models


class S2CNN(SphereBackbone):
    """The all-spectral S2CNN for segmentation (Gerken et al. 2022): SHT → S² conv → SO(3) convs →
    SO(3) → S² → inverse SHT → task head. x (B, in_chans, N) NESTED over `base_pixels` -> (B, num_classes, N).

    `channels`: SO(3) channels after the S² conv and each SO(3) conv; `bandwidths`: the input's band limit,
    one per convolution, then the output's (see `SpectralCore`). Backbone surface (`SphereBackbone` owns the
    shared part): `forward_features` gives one map, the SO(3) → S² output (B, embed_dim, N) after a GroupNorm
    and ReLU (reduction 1, module "core"); `forward_decoder` returns it unchanged."""

    def __init__(self, nside: int = 16, base_pixels: Sequence[int] | str = tuple(range(12)), in_chans: int = 1,
                 num_classes: int = 11, *, task: str = "segmentation", log_variance: bool = False,
                 channels: Sequence[int] = (12, 24, 24, 12), bandwidths: Sequence[int] = (16, 12, 8, 8, 12, 16),
                 embed_dim: int = 16, head_bias: bool = True, so3_grid: str = "sphere",
                 grad_checkpointing: bool = False):
        super().__init__(nside, base_pixels, in_chans, num_classes, task=task, log_variance=log_variance)
        if not (is_whole(embed_dim) and embed_dim >= 1):
            raise ValueError(f"embed_dim={embed_dim!r} must be a whole number >= 1 (the channels of the SO(3) → S² "
                             "output)")
        self.embed_dim = int(embed_dim)
        self.core = nn.Sequential(SpectralCore(self.in_chans, self.embed_dim, self.nside, self.faces, channels,
                                               bandwidths, so3_grid=so3_grid),
                                  nn.GroupNorm(math.gcd(self.embed_dim, 8), self.embed_dim), nn.ReLU())
        self.feature_info = self.stage_info([(self.embed_dim, self.nside, "core")])
        self.num_features = self.embed_dim
        self.head = self.build_head(self.embed_dim, bias=head_bias)
        self.set_grad_checkpointing(grad_checkpointing)

    def repr_args(self) -> list[str]:
        return [f"channels={self.core[0].channels}", f"bandwidths={self.core[0].bandwidths}"]

    def forward_features(self, x):
        self.check_input(x)
        return [self.core(x)]

    def forward_decoder(self, features):
        return features[-1]


class S2CNNUNet(SphereBackbone):
    """Hybrid S2CNN U-Net for full-resolution maps: isotropic local stages, a spectral core, a decoder.

    x: (B, in_chans, N), N = len(base_pixels)·nside², NESTED -> (B, num_classes, N) (depth: 1 channel, 2 with
    log-variance). Stage i works at nside / 2^i with `widths[i]` channels and `depths[i]` ChebBlocks (stage
    i > 0 starts with nested 2×2 mean pooling); the last stage's nside is the core nside, where
    `SpectralCore(widths[-1] -> widths[-1], core_channels, core_bandwidths)` adds global context (its output
    is concatenated with its input); the decoder unpools, concatenates the encoder map and runs one
    ChebBlock per stage.

    Backbone surface (`SphereBackbone` owns the shared part): `forward_features(x)` returns the stage maps
    (B, widths[i], N_i), finest first, then the core's output (B, 2·widths[-1], N_core) as the bottleneck;
    `forward_decoder` -> (B, widths[0], N_0). Gradient checkpointing: per ChebBlock and inside the core.
    """

    def __init__(self, nside: int = 64, base_pixels: Sequence[int] | str = tuple(range(8)), in_chans: int = 3,
                 num_classes: int = 10, *, task: str = "segmentation", log_variance: bool = False,
                 widths: Sequence[int] = (8, 16, 32), depths: Sequence[int] = (1, 1, 1),
                 core_channels: Sequence[int] = (16, 16), core_bandwidths: Sequence[int] = (16, 16, 16, 16),
                 order: int = 3, head_bias: bool = False, grad_checkpointing: bool = False):
        super().__init__(nside, base_pixels, in_chans, num_classes, task=task, log_variance=log_variance)
        widths, depths, nsides = self.check_stages(widths, depths)
        L = len(widths)
        self.widths, self.depths = widths, depths
        self.core_nside = nsides[-1]
        degrees = 3 * self.core_nside
        if max(int(core_bandwidths[0]), int(core_bandwidths[-1])) > degrees:
            raise ValueError(f"core_bandwidths={tuple(core_bandwidths)}: the spectral core runs at the last stage's "
                             f"nside, {self.nside} / 2^{L - 1} = {self.core_nside}, whose maps hold degrees < "
                             f"3·{self.core_nside} = {degrees}: lower the first and last core_bandwidths to <= "
                             f"{degrees}, or raise nside")
        self.embed_dim, self.num_features = widths[0], 2 * widths[-1]
        self.stem = ChebBlock(self.in_chans, widths[0], self.nside, self.faces, order)
        self.pool, self.unpool = NestedPool("mean"), NestedUnpool()
        self.stages = nn.ModuleList([
            CheckpointList([ChebBlock(widths[max(i - 1, 0)] if j == 0 else widths[i], widths[i], nsides[i],
                                      self.faces, order) for j in range(depths[i])])
            for i in range(L)])
        self.core = SpectralCore(widths[-1], widths[-1], self.core_nside, self.faces, core_channels, core_bandwidths)
        self.core_norm = nn.Sequential(nn.GroupNorm(math.gcd(widths[-1], 8), widths[-1]), nn.ReLU())
        self.decoder = CheckpointList([ChebBlock(2 * widths[-1] if i == L - 1 else widths[i + 1] + widths[i],
                                                 widths[i], nsides[i], self.faces, order)
                                       for i in range(L - 1, -1, -1)]) if self.dense else None
        self.feature_info = self.stage_info([(widths[i], nsides[i], f"stages.{i}") for i in range(L)]
                                            + [(2 * widths[-1], nsides[-1], "bottleneck")])
        self.bottleneck = _Concat()
        self.head = self.build_head(widths[0] if self.dense else 2 * widths[-1], bias=head_bias)
        self.set_grad_checkpointing(grad_checkpointing)

    def repr_args(self) -> list[str]:
        return [f"widths={self.widths}", f"depths={self.depths}", f"core nside={self.core_nside}",
                f"core bandwidths={self.core.bandwidths}"]

    def forward_features(self, x):
        self.check_input(x)
        x = self.stem(x)
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(self.pool(x) if i > 0 else x)
            features.append(x)
        features.append(self.bottleneck(x, self.core_norm(self.core(x))))
        return features

    def forward_decoder(self, features):
        """The maps of `forward_features` -> (B, widths[0], N_0); for classification the bottleneck
        (the last stage beside the spectral core's output)."""
        x = features[-1]
        if self.decoder is None:
            return x
        skips = features[:-1]
        for k in range(len(self.decoder)):
            if k > 0:
                x = torch.cat([self.unpool(x), skips[len(skips) - 1 - k]], dim=1)
            x = self.decoder.run(k, x)
        return x


class _Concat(nn.Module):
    """Channel concatenation as a module (so the bottleneck map has a module name for feature_info)."""

    def forward(self, *xs):
        return torch.cat(xs, dim=1)


# --------------------------------------------------------------------------- variants
# Each variant's defaults are overridden by the caller's keywords: `dict(model_args, **kwargs)` (timm's).

_register = functools.partial(register_model, family="s2cnn", domain="healpix")


@_register(test_kwargs=dict(nside=8, channels=(4, 4), bandwidths=(8, 6, 4, 8), embed_dim=4))
def s2cnn_digits(**kwargs) -> S2CNN:
    """The rotated-digits segmentation network of Gerken et al. 2022 (≈ 230 k parameters): S² conv to 12
    channels, SO(3) convs 12 → 24 → 24 → 12, SO(3) → S²; bandwidths 16 → 12 → 8 → 8 → 12 → 16 at nside 16."""
    model_args = dict(nside=16, base_pixels=range(12), in_chans=1, num_classes=11)
    return S2CNN(**dict(model_args, **kwargs))


@_register(test_kwargs=dict(nside=8, widths=(4, 8), depths=(1, 1), core_channels=(4, 4),
                            core_bandwidths=(4, 4, 4, 4)))
def s2cnn_tiny(**kwargs) -> S2CNNUNet:
    """CPU-trainable hybrid: 8-16-32 channels, core at nside / 4 with bandwidth 16, 16 SO(3) channels."""
    model_args = dict(nside=64, widths=(8, 16, 32), depths=(1, 1, 1), core_channels=(16, 16),
                      core_bandwidths=(16, 16, 16, 16))
    return S2CNNUNet(**dict(model_args, **kwargs))


@_register(test_kwargs=dict(nside=16, widths=(4, 8, 8), depths=(1, 1, 1), core_channels=(4, 4),
                            core_bandwidths=(4, 4, 4, 4)))
def s2cnn_small(**kwargs) -> S2CNNUNet:
    """Full-resolution hybrid (nside 256 → core nside 32): 16-32-64-96 channels, two blocks per stage, core
    bandwidth 16 with 32 SO(3) channels."""
    model_args = dict(nside=256, widths=(16, 32, 64, 96), depths=(2, 2, 2, 2), core_channels=(32, 32),
                      core_bandwidths=(16, 16, 16, 16))
    return S2CNNUNet(**dict(model_args, **kwargs))
