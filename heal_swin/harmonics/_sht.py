"""RealSHT / InverseRealSHT: the transform as torch modules (real arithmetic only; the layout: _tables)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from .. import grid
from ._tables import (alm_size, fourier_synthesis_tables, fourier_tables, legendre_tables, pixel_tables,
                      ring_order, _check_lmax)

__all__ = ["RealSHT", "InverseRealSHT", "TableModule", "table_bytes"]


def _tensor(array: np.ndarray, dtype: torch.dtype, device=None) -> torch.Tensor:
    """A table as a tensor. float64 / int64 on the CPU share the memory of the memoised (read-only) numpy
    table, so every module of one (nside, lmax) holds a single copy; the transforms never write to it."""
    np_dtype = {torch.float64: np.float64, torch.int64: np.int64}.get(dtype)
    same = np_dtype is not None and array.dtype == np_dtype
    if same and torch.device(device or "cpu").type == "cpu":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                 # "non-writable NumPy array": read-only by design
            return torch.from_numpy(array)
    t = torch.from_numpy(np.array(array)).to(device=device, dtype=dtype)
    if t.is_floating_point():
        # values below the dtype's normal range (far-from-equator Legendre values) become subnormal
        # numbers, which x86 CPUs multiply on a slow path (the float32 Legendre products ran 2x slower)
        t = t.masked_fill(t.abs() < torch.finfo(dtype).tiny, 0.0)
    return t


class TableModule(nn.Module):
    """A module holding float64 / int64 numpy tables as non-persistent buffers, kept exact across dtype
    changes: `.double()` rebuilds a table from its float64 original (a float32 -> float64 cast would keep
    the float32 rounding), and `_t(name, like)` gives a table in the dtype of a tensor. Used by the
    transforms here and by the spectral layers built on them (`heal_swin.models.s2cnn`)."""

    def __init__(self):
        super().__init__()
        self._sources = {}                     # float tables as built (float64), to restore on .double()

    def _table(self, name: str, array: np.ndarray, dtype: torch.dtype | None = None):
        """Hold a float64 / int64 numpy table as a non-persistent buffer (float tables in the default
        dtype, rebuilt from the float64 original on every dtype change)."""
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if dtype is not torch.int64:
            self._sources[name] = array
        self.register_buffer(name, _tensor(array, dtype), persistent=False)

    def _apply(self, fn, *args, **kwargs):
        # Rebuild the converted tables from the float64 originals: float32 -> float64 would keep the float32
        # rounding, and a plain cast would keep subnormal values (see _tensor).
        out = super()._apply(fn, *args, **kwargs)
        for name, source in self._sources.items():
            t = getattr(self, name)
            setattr(self, name, _tensor(source, t.dtype, t.device))
        return out

    def _t(self, name, like):
        """A table in the dtype of `like` (built per call from the float64 original when the module holds
        another dtype: use .double() / .float() to convert once)."""
        t = getattr(self, name)
        if t.dtype == like.dtype:
            return t
        return _tensor(self._sources[name], like.dtype, t.device)


class _Transform(TableModule):
    """Tables and the three stages (gather, Fourier, Legendre), each with its transpose. `legendre=False`
    holds the ring stages only (the SO(3) transforms replace the Legendre stage with Wigner-d tables)."""

    def __init__(self, nside: int, lmax: int, base_pixels=range(12), legendre: bool = True,
                 analysis: bool = True, synthesis: bool = True):
        super().__init__()
        self.nside = grid.check_nside(nside)
        self.lmax = _check_lmax(lmax)
        self.base_pixels = grid.check_base_pixels(base_pixels)
        self.n_pix = grid.n_pixels(self.nside, self.base_pixels)
        self.n_alm = alm_size(self.lmax)
        gathers, scatter = pixel_tables(self.nside, self.base_pixels)
        buf = self._table
        # only the directions a transform runs: the DFT tables are the largest after the Legendre ones
        dft = fourier_tables(self.nside, self.lmax) if analysis else [None] * len(gathers)
        idft = fourier_synthesis_tables(self.nside, self.lmax) if synthesis else [None] * len(gathers)
        self._fourier = []
        for c, (d, e, idx) in enumerate(zip(dft, idft, gathers)):
            if d is not None:
                buf(f"dft{c}", d)                                              # (k, n_pad, 2M)
            if e is not None:
                buf(f"idft{c}", e)                                             # (k, 2M, n_pad)
            buf(f"gather{c}", idx.reshape(-1), torch.int64)
            self._fourier.append(tuple(idx.shape))                            # (k, g, n_pad)
        buf("scatter", scatter, torch.int64)
        self._legendre = []
        if legendre:
            leg, alm_gather, alm_scatter = legendre_tables(self.nside, self.lmax)
            north, south, eq, inv = ring_order(self.nside)
            buf("north", north, torch.int64), buf("south", south, torch.int64), buf("eq", eq, torch.int64)
            buf("ring_inv", inv, torch.int64)
            for c, (m0, m1, te, to) in enumerate(leg):
                buf(f"te{c}", te), buf(f"to{c}", to)
                self._legendre.append((m0, m1, te.shape[1], to.shape[1]))
            buf("alm_gather", alm_gather, torch.int64), buf("alm_scatter", alm_scatter, torch.int64)
        self.n_rings_north = 2 * self.nside - 1
        self.scale = 4.0 * math.pi / grid.nside2npix(self.nside)

    def extra_repr(self) -> str:
        faces = self.base_pixels
        return f"nside={self.nside}, lmax={self.lmax}, base_pixels={faces if len(faces) < 12 else 'all'}"

    # ---- stage 1: NESTED map <-> rings, a (k, g*B, n_pad) block per chunk (ring length, member and map, pixel)
    def _to_rings(self, x):                                       # x (B, N)
        b = x.shape[0]
        x = torch.cat([x, x.new_zeros(b, 1)], dim=1)
        out = []
        for c, (k, g, n) in enumerate(self._fourier):
            v = torch.index_select(x, 1, getattr(self, f"gather{c}")).reshape(b, k, g, n)
            out.append(v.permute(1, 2, 0, 3).reshape(k, g * b, n))
        return out

    def _from_rings(self, rings, b):
        flat = [v.reshape(k, g, b, n).permute(2, 0, 1, 3).reshape(b, -1) for (k, g, n), v in zip(self._fourier, rings)]
        return torch.index_select(torch.cat(flat, dim=1), 1, self.scatter)

    # ---- stage 2: rings <-> F_r(m) as (R, B, 2M), columns (Re, Im) x m, rings in the order the chunks emit them:
    # one dense real DFT per chunk (a batched matmul over its ring lengths; the belt's: one plain matmul)
    def _fourier_fwd(self, rings, b):
        out = []
        for c, ((k, g, n), v) in enumerate(zip(self._fourier, rings)):
            f = torch.bmm(v, self._t(f"dft{c}", v))                            # (k, g B, 2M)
            out.append(f.reshape(k * g, b, -1))
        return torch.cat(out, dim=0) if len(out) > 1 else out[0]

    def _fourier_adj(self, f, b):                                 # f (R, B, 2M) -> rings
        out, r0 = [], 0
        for c, (k, g, n) in enumerate(self._fourier):
            v = f[r0:r0 + k * g].reshape(k, g * b, -1)
            r0 += k * g
            out.append(torch.bmm(v, self._t(f"idft{c}", f)))                   # (k, g B, n_pad)
        return out

    # ---- stage 3: F_r(m) <-> a_lm
    # The maps are held as (m, 2B, rings) rows (2B = map x re/im); a product per m is bound by reading the
    # table when there are few maps.
    def _legendre_fwd(self, f, b):                                # f (R, B, 2M) -> (B, n_alm, 2)
        f = f.reshape(f.shape[0], b, 2, self.lmax + 1)
        fn, fs = torch.index_select(f, 0, self.north), torch.index_select(f, 0, self.south)
        even = torch.cat([fn + fs, torch.index_select(f, 0, self.eq)], dim=0)
        odd = fn - fs
        m_count = self.lmax + 1
        even = even.permute(3, 1, 2, 0).reshape(m_count, 2 * b, -1)   # (M, 2B, R+1), 2B = (map, re/im)
        odd = odd.permute(3, 1, 2, 0).reshape(m_count, 2 * b, -1)     # (M, 2B, R)
        out = []
        for c, (m0, m1, le, lo) in enumerate(self._legendre):
            # the table on the left, the maps as a transposed view: 2x faster than (maps @ table^T) for
            # few maps in float32 (measured)
            out.append(torch.bmm(self._t(f"te{c}", f), even[m0:m1].transpose(1, 2)).reshape(-1, 2 * b))
            if lo:
                out.append(torch.bmm(self._t(f"to{c}", f), odd[m0:m1].transpose(1, 2)).reshape(-1, 2 * b))
        a = torch.index_select(torch.cat(out, dim=0), 0, self.alm_gather)          # (n_alm, 2B)
        return a.reshape(self.n_alm, b, 2).transpose(0, 1)

    def _legendre_adj(self, a, b):                                # a (B, n_alm, 2) -> (R, B, 2M)
        a = a.transpose(1, 2).reshape(2 * b, self.n_alm)
        a = torch.index_select(torch.cat([a, a.new_zeros(2 * b, 1)], dim=1), 1, self.alm_scatter)
        evens, odds, p = [], [], 0
        rn = self.n_rings_north
        for c, (m0, m1, le, lo) in enumerate(self._legendre):
            mc = m1 - m0
            y = a[:, p:p + mc * le].reshape(2 * b, mc, le).transpose(0, 1)         # (mc, 2B, Le)
            evens.append(torch.bmm(y, self._t(f"te{c}", a)))                       # (mc, 2B, R+1)
            p += mc * le
            if lo:
                y = a[:, p:p + mc * lo].reshape(2 * b, mc, lo).transpose(0, 1)
                odds.append(torch.bmm(y, self._t(f"to{c}", a)))
                p += mc * lo
            else:
                odds.append(a.new_zeros(mc, 2 * b, rn))
        even, odd = torch.cat(evens, dim=0), torch.cat(odds, dim=0)   # (M, 2B, R+1), (M, 2B, R)
        en = even[:, :, :rn]
        g = torch.cat([en + odd, en - odd, even[:, :, rn:]], dim=2)   # rings: north, south, equator
        g = g.reshape(self.lmax + 1, b, 2, -1).permute(3, 1, 2, 0)  # (R, B, 2, M)
        return torch.index_select(g, 0, self.ring_inv).reshape(-1, b, 2 * (self.lmax + 1))

    # ---- whole transforms on rings
    def _analysis_rings(self, rings, b):
        return self._legendre_fwd(self._fourier_fwd(rings, b), b) * self.scale

    def _synthesis_rings(self, a, b):
        return self._fourier_adj(self._legendre_adj(a, b), b)


class RealSHT(_Transform):
    """Spherical harmonic analysis of NESTED HEALPix maps: x (..., N) -> a (..., n_alm, 2).

    N = len(base_pixels) * nside^2, the faces' nested pixels concatenated (faces ascending). The map is the
    whole-sphere map that is zero on the absent faces. `a[..., i, 0]` / `a[..., i, 1]` are the real and
    imaginary parts of healpy's `alm[i]`, i = healpy.Alm.getidx(lmax, l, m), m-major, 0 <= m <= l <= lmax:
    a_lm = (4 pi / Npix) sum_p f(p) conj(Y_lm(p)) (quadrature with equal pixel weights, healpy's
    `use_weights=False`), followed by `iterations` Jacobi steps a += analysis(f - synthesis(a)) on the
    whole sphere: RealSHT(nside, lmax, iterations=k) equals healpy.map2alm(m, lmax, iter=k,
    use_weights=False) on the RING-reordered, zero-extended map. Any batch shape, float32 / float64
    (tables are held in the default dtype; `.double()` for float64), any device; differentiable.
    """

    def __init__(self, nside: int, lmax: int, base_pixels=range(12), iterations: int = 0):
        if isinstance(lmax, int) and isinstance(nside, int) and lmax > 3 * nside - 1:
            raise ValueError(f"RealSHT: lmax={lmax} must be <= 3·nside − 1 = {3 * nside - 1} at nside {nside}: the "
                             "grid cannot resolve higher degrees (the analysis returns garbage and its iterations "
                             "diverge); use a finer nside or a smaller lmax (synthesis, InverseRealSHT, takes any lmax)")
        if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 0:
            raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
        super().__init__(nside, lmax, base_pixels, synthesis=iterations > 0)
        self.iterations = int(iterations)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", iterations={self.iterations}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.n_pix:
            raise ValueError(f"expected (..., {self.n_pix}) for nside {self.nside} over "
                             f"{len(self.base_pixels)} faces, got {tuple(x.shape)}")
        lead = x.shape[:-1]
        x = x.reshape(-1, self.n_pix)
        b = x.shape[0]
        rings = self._to_rings(x)
        a = self._analysis_rings(rings, b)
        for _ in range(self.iterations):
            back = self._synthesis_rings(a, b)
            a = a + self._analysis_rings([r - s for r, s in zip(rings, back)], b)
        return a.reshape(*lead, self.n_alm, 2)


class InverseRealSHT(_Transform):
    """Spherical harmonic synthesis onto NESTED HEALPix maps: a (..., n_alm, 2) -> x (..., N).

    f(p) = sum_{l, |m| <= l} a_lm Y_lm(p) for the real map whose a_lm (m >= 0) are given in healpy's layout
    (see RealSHT), i.e. f = sum_{m >= 0} w_m Re(e^{i m phi} sum_l a_lm lambda_lm(theta)), w_0 = 1, w_m = 2;
    the imaginary part of a_l0 is ignored. Equals healpy.alm2map(alm, nside, lmax) restricted to the faces
    `base_pixels` and reordered to NESTED. It is the transpose of RealSHT's first step (up to 4 pi / Npix
    and the weights w_m), built from the same tables. Synthesis is the exact evaluation of a band-limited
    function at the pixel centres, so any lmax is meaningful here (above 3·nside − 1 the grid samples it
    too coarsely to analyse it back: RealSHT refuses such an lmax).
    """

    def __init__(self, nside: int, lmax: int, base_pixels=range(12)):
        super().__init__(nside, lmax, base_pixels, analysis=False)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if a.shape[-2:] != (self.n_alm, 2):
            raise ValueError(f"expected (..., {self.n_alm}, 2) for lmax {self.lmax}, got {tuple(a.shape)}")
        lead = a.shape[:-2]
        a = a.reshape(-1, self.n_alm, 2)
        b = a.shape[0]
        return self._from_rings(self._synthesis_rings(a, b), b).reshape(*lead, self.n_pix)


def table_bytes(module: nn.Module) -> int:
    """Bytes held by a module's buffers (the transform's tables)."""
    return sum(t.numel() * t.element_size() for t in module.buffers())
