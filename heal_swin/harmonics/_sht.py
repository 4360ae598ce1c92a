"""RealSHT / InverseRealSHT: the transform as torch modules (real arithmetic only; the layout: _tables)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from .. import grid
from ._tables import (alm_size, fourier_synthesis_tables, fourier_tables, legendre_tables, pixel_tables,
                      ring_rows, _check_lmax)

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
    """Tables and the three stages (gather, Fourier, Legendre), each with its transpose. Values are held
    with the maps innermost from the gather to the Legendre stage's output: ring values (P, B) (the chunks'
    (g, k, n_pad) blocks), Fourier coefficients ring-major (rings, 2M, B), so that every product reads
    whole rows of B values and no stage transposes the values (the Legendre stage reads each m's rows with a
    stride)."""

    def __init__(self, nside: int, lmax: int, base_pixels=range(12), analysis: bool = True, synthesis: bool = True):
        super().__init__()
        self.nside = grid.check_nside(nside)
        self.lmax = _check_lmax(lmax)
        self.base_pixels = grid.check_base_pixels(base_pixels)
        self.n_pix = grid.n_pixels(self.nside, self.base_pixels)
        self.n_alm = alm_size(self.lmax)
        gathers, scatter = pixel_tables(self.nside, self.base_pixels)
        info, _ = ring_rows(self.nside)
        buf = self._table
        # only the directions a transform runs: the DFT tables are the largest after the Legendre ones
        dft = fourier_tables(self.nside, self.lmax) if analysis else [None] * len(gathers)
        idft = fourier_synthesis_tables(self.nside, self.lmax) if synthesis else [None] * len(gathers)
        self._fourier, offset, even, odd = [], 0, 0, 0
        for c, (d, e, idx, (k, g, n_north, n_eq)) in enumerate(zip(dft, idft, gathers, info)):
            if d is not None:
                buf(f"dft{c}", d)                                              # (k, n_pad, 2M), columns (m, re/im)
            if e is not None:
                buf(f"idft{c}", e)                                             # (k, n_pad, 2M), columns (re/im, m)
            self._fourier.append((k, g, idx.shape[2], n_north, n_eq, offset, even, odd))
            offset, even, odd = offset + idx.size, even + (n_north + n_eq) * k, odd + n_north * k
        buf("gather", np.concatenate([idx.reshape(-1) for idx in gathers]), torch.int64)
        buf("scatter", scatter, torch.int64)
        self.n_values, self.n_even, self.n_odd = offset, even, odd
        leg, alm_gather, alm_scatter = legendre_tables(self.nside, self.lmax)
        self._legendre = []
        for c, (m0, m1, te, to) in enumerate(leg):
            buf(f"te{c}", te), buf(f"to{c}", to)
            self._legendre.append((m0, m1, te.shape[1], to.shape[1]))
        buf("alm_gather", alm_gather, torch.int64), buf("alm_scatter", alm_scatter, torch.int64)
        self.scale = 4.0 * math.pi / grid.nside2npix(self.nside)

    def extra_repr(self) -> str:
        faces = self.base_pixels
        return f"nside={self.nside}, lmax={self.lmax}, base_pixels={faces if len(faces) < 12 else 'all'}"

    # ---- stage 1: NESTED map (B, N) <-> ring values (P, B), P = the chunks' (g, k, n_pad) blocks
    def _to_rings(self, x):                                       # x (B, N)
        xt = torch.cat([x.t(), x.new_zeros(1, x.shape[0])], dim=0)            # (N + 1, B): a zero for the padding
        return torch.index_select(xt, 0, self.gather)

    def _from_rings(self, rings):
        return torch.index_select(rings, 0, self.scatter).t().contiguous()

    # ---- stage 2: ring values <-> F_r(m) ring-major, the even (north + mirror, and the equator) and odd (north
    # - mirror) halves (R_e, 2M, B), (R_o, 2M, B), columns (m, re/im) x map; one dense real DFT per chunk (a
    # batched matmul over its ring lengths, or over its rings for the belt's one table)
    def _fourier_fwd(self, rings):
        nb = rings.shape[1]
        evens, odds = [], []
        for c, (k, g, n, n_north, n_eq, off, _, _) in enumerate(self._fourier):
            v = rings[off:off + g * k * n].view(g, k, n, nb)
            dt = self._t(f"dft{c}", rings).transpose(1, 2)                       # (k, 2M, n)
            if k == 1:
                f = torch.bmm(dt.expand(g, -1, -1), v.view(g, n, nb))            # (g, 2M, B)
            else:
                f = torch.stack([torch.bmm(dt, v[j]) for j in range(g)])          # (g, k, 2M, B)
            f = f.reshape(g * k, -1, nb)
            north, south = f[:n_north * k], f[n_north * k:2 * n_north * k]
            evens += [north + south, f[2 * n_north * k:]] if n_eq else [north + south]
            odds.append(north - south)
        return torch.cat(evens), torch.cat(odds)

    def _fourier_adj(self, even, odd):                           # (M, R_e, 2B), (M, R_o, 2B) -> ring values
        m_count, nb = self.lmax + 1, even.shape[2] // 2
        out = []
        for c, (k, g, n, n_north, n_eq, _, e0, o0) in enumerate(self._fourier):
            en, on = even[:, e0:e0 + n_north * k], odd[:, o0:o0 + n_north * k]
            parts = [en + on, en - on] + ([even[:, e0 + n_north * k:e0 + (n_north + n_eq) * k]] if n_eq else [])
            f = torch.cat(parts, dim=1).view(m_count, g, k, 2, nb)                    # (M, g, k, re/im, B)
            t = self._t(f"idft{c}", even).view(k, n, 2, m_count)
            if k == 1:   # one table: a batched matmul over the g rings, the table expanded
                fr = f.view(m_count, g, 2, nb).permute(1, 0, 2, 3)                    # (g, M, 2, B)
                v = torch.baddbmm(torch.bmm(t[:, :, 0].expand(g, -1, -1), fr[:, :, 0]),
                                  t[:, :, 1].expand(g, -1, -1), fr[:, :, 1])           # (g, n, B)
            else:
                fr = f.permute(1, 2, 0, 3, 4)                                           # (g, k, M, 2, B)
                v = torch.stack([torch.baddbmm(torch.bmm(t[:, :, 0], fr[j, :, :, 0]), t[:, :, 1], fr[j, :, :, 1])
                                 for j in range(g)])                                  # (g, k, n, B)
            out.append(v.reshape(-1, nb))
        return torch.cat(out) if len(out) > 1 else out[0]

    # ---- stage 3: F_r(m) <-> a_lm: per chunk of m, (Le, R_e) @ (R_e, 2B) and (Lo, R_o) @ (R_o, 2B), each m's
    # rows read with a stride from the ring-major halves (no transposition)
    def _legendre_fwd(self, even, odd):                          # (R_e, 2M, B), (R_o, 2M, B) -> (B, n_alm, 2)
        nb, m_count = even.shape[2], self.lmax + 1
        ev, od = even.view(-1, m_count, 2 * nb), odd.view(-1, m_count, 2 * nb)
        out = []
        for c, (m0, m1, le, lo) in enumerate(self._legendre):
            out.append(torch.bmm(self._t(f"te{c}", even), ev[:, m0:m1].transpose(0, 1)).reshape(-1, 2 * nb))
            if lo:
                out.append(torch.bmm(self._t(f"to{c}", even), od[:, m0:m1].transpose(0, 1)).reshape(-1, 2 * nb))
        a = torch.index_select(torch.cat(out, dim=0), 0, self.alm_gather)          # (n_alm, 2B)
        return a.view(self.n_alm, 2, nb).permute(2, 0, 1)

    def _legendre_adj(self, a):                                  # a (B, n_alm, 2) -> (M, R_e, 2B), (M, R_o, 2B)
        nb = a.shape[0]
        a = a.permute(1, 2, 0).reshape(self.n_alm, 2 * nb)
        a = torch.index_select(torch.cat([a, a.new_zeros(1, 2 * nb)], dim=0), 0, self.alm_scatter)
        evens, odds, p = [], [], 0
        for c, (m0, m1, le, lo) in enumerate(self._legendre):
            mc = m1 - m0
            evens.append(torch.bmm(self._t(f"te{c}", a).transpose(1, 2), a[p:p + mc * le].view(mc, le, 2 * nb)))
            p += mc * le
            if lo:
                odds.append(torch.bmm(self._t(f"to{c}", a).transpose(1, 2), a[p:p + mc * lo].view(mc, lo, 2 * nb)))
                p += mc * lo
            else:
                odds.append(a.new_zeros(mc, self.n_odd, 2 * nb))
        return (torch.cat(evens) if len(evens) > 1 else evens[0]), (torch.cat(odds) if len(odds) > 1 else odds[0])

    # ---- whole transforms on ring values
    def _analysis_rings(self, rings):
        return self._legendre_fwd(*self._fourier_fwd(rings)) * self.scale

    def _synthesis_rings(self, a):
        return self._fourier_adj(*self._legendre_adj(a))


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
        rings = self._to_rings(x)
        a = self._analysis_rings(rings)
        for _ in range(self.iterations):
            a = a + self._analysis_rings(rings - self._synthesis_rings(a))
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
        return self._from_rings(self._synthesis_rings(a)).reshape(*lead, self.n_pix)


def table_bytes(module: nn.Module) -> int:
    """Bytes held by a module's buffers (the transform's tables)."""
    return sum(t.numel() * t.element_size() for t in module.buffers())
