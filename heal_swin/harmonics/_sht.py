"""RealSHT / InverseRealSHT: the transform as torch modules (real arithmetic only; the layout: _tables)."""

from __future__ import annotations

import functools
import math
import os
import warnings

import numpy as np
import torch
from torch import nn

from .. import grid
from ._scratch import _SCRATCH, cached_plan, scratch_wanted
from ._tables import (alm_size, fourier_synthesis_tables, fourier_tables, legendre_tables, pixel_tables,
                      ring_rows, _check_lmax)

__all__ = ["RealSHT", "InverseRealSHT", "TableModule", "available_memory", "memory_estimate", "table_bytes"]


def _tensor(array: np.ndarray, dtype: torch.dtype, device=None) -> torch.Tensor:
    """A table as a tensor. float64 / int64 on the CPU share the memory of the memoised (read-only) numpy
    table, so every module of one (nside, lmax) holds a single copy; the transforms never write to it."""
    np_dtype = {torch.float64: np.float64, torch.int64: np.int64}.get(dtype)
    same = np_dtype is not None and array.dtype == np_dtype
    if same and torch.device(device or "cpu").type == "cpu":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                 # "non-writable NumPy array": read-only by design
            return torch.from_numpy(array)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                     # read only: converted, never written (a new tensor)
        t = torch.from_numpy(array).to(device=device, dtype=dtype, copy=True)
    if t.is_floating_point():
        # values below the dtype's normal range (far-from-equator Legendre values) become subnormal
        # numbers, which x86 CPUs multiply on a slow path (the float32 Legendre products ran 2x slower);
        # in place, piece by piece (no full-size temporaries: `memory_estimate`)
        tiny = torch.finfo(dtype).tiny
        for piece in t.view(-1).split(1 << 22):
            piece.masked_fill_((piece > -tiny) & (piece < tiny), 0.0)
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
        # rounding, and a plain cast would keep subnormal values (see _tensor). The version names the tables
        # in the keys of plans (`cached_plan`).
        self._table_version = getattr(self, "_table_version", 0) + 1
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


_GIB = 2 ** 30
_PER_RING = 5000      # values of one synthesis ring product (maps x pixels) from which it writes in place


def memory_estimate(nside: int, lmax: int, base_pixels=range(12), dtype=None, analysis: bool = True,
                    synthesis: bool = True) -> dict:
    """Bytes a transform of (nside, lmax) needs, from the table shapes alone (nothing is built): `tables`, its
    buffers (what `table_bytes` reports of the built module); `held`, everything it keeps (the buffers, the
    float64 originals it converts from, kept for exact dtype changes and memoised, and the int64 indices);
    `peak`, the most it holds at once while it is built (the float64 Legendre values the tables are filled
    from and the float64 and converted tables together), the figure `RealSHT` / `InverseRealSHT` check
    against the available memory before building anything; and the parts (`legendre`, `fourier`, `index`:
    the held bytes of each). `dtype`: the tables' (default: torch's default dtype). RealSHT builds the
    analysis direction (and synthesis with iterations > 0), InverseRealSHT the synthesis direction. Memoised
    tables of an earlier module with the same (nside, lmax) are counted again (an upper bound then)."""
    from ._tables import table_entries
    dtype = torch.get_default_dtype() if dtype is None else dtype
    item = torch.empty((), dtype=dtype).element_size()
    shared = dtype == torch.float64                    # float64 buffers share the float64 originals' memory
    n = table_entries(nside, lmax, tuple(grid.check_base_pixels(base_pixels)))
    dft = n["dft"] * (int(analysis) + int(synthesis))
    index = 8 * (n["index"] + n["ring_values"])        # the memoised indices and the module's joined gather
    fourier = 8 * dft + (0 if shared else item * dft)
    legendre = 8 * n["legendre"] + (0 if shared else item * n["legendre"])
    tables = item * (dft + n["legendre"]) + 8 * n["index"]
    held = fourier + legendre + index
    # building: the Fourier tables and indices first; then the Legendre values (n_alm x 2 nside, float64) and the
    # padded float64 tables filled from them; then the tables converted (the float64 ones still memoised)
    peak = fourier + index + 8 * n["legendre"] + max(8 * n["legendre_work"], 0 if shared else item * n["legendre"])
    return dict(tables=tables, held=held, peak=peak, legendre=legendre, fourier=fourier, index=index)


def _parse_bytes(text: str) -> int:
    units = {"": 1, "k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30, "t": 2 ** 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = t[-1] if t and t[-1] in units else ""
    return int(float(t[:len(t) - len(unit)]) * units[unit])


def available_memory():
    """(bytes, where from) a new transform may use, or (None, reason) when unknown: HEAL_SWIN_MEMORY_LIMIT
    if set (bytes, or with a unit: 512M, 4G, 1.5GiB), else the smaller of MemAvailable (/proc/meminfo, or
    the free physical pages from os.sysconf) and the room left in the cgroup's memory.max (containers)."""
    env = os.environ.get("HEAL_SWIN_MEMORY_LIMIT")
    if env:
        try:
            return _parse_bytes(env), "HEAL_SWIN_MEMORY_LIMIT"
        except ValueError:
            raise ValueError(f"HEAL_SWIN_MEMORY_LIMIT={env!r} is not a size (bytes, or e.g. 512M, 4G, 1.5GiB)")
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append((int(line.split()[1]) * 1024, "MemAvailable"))
    except OSError:
        pass
    if not found:
        try:
            found.append((os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free physical memory"))
        except (AttributeError, ValueError, OSError):
            pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                found.append((int(limit) - int(f.read()), "the cgroup's memory.max"))
    except (OSError, ValueError):
        pass
    return min(found) if found else (None, "unknown")


def _check_memory(name: str, nside: int, lmax: int, faces: tuple, analysis: bool, synthesis: bool):
    """Refuse, before building anything, a transform whose construction peak exceeds the available memory."""
    dtype = torch.get_default_dtype()
    est = memory_estimate(nside, lmax, faces, dtype, analysis, synthesis)
    avail, source = available_memory()
    if avail is None or est["peak"] <= avail:
        return
    g = lambda b: f"{b / _GIB:.2f} GiB"
    dt = str(dtype).removeprefix("torch.")
    cheaper = "float64 (its tables share the float64 originals) or " if dtype != torch.float64 else ""
    raise MemoryError(
        f"{name}(nside={nside}, lmax={lmax}, {len(faces)} faces, {dt}): building it needs about {g(est['peak'])} "
        f"at its peak (it then holds {g(est['held'])}: Legendre tables {g(est['legendre'])}, Fourier tables "
        f"{g(est['fourier'])}, indices {g(est['index'])}; harmonics.memory_estimate), more than the {g(avail)} "
        f"available ({source}). Use a smaller lmax (the Legendre tables grow as lmax^2 nside, the Fourier tables "
        f"as lmax nside^2) or a smaller nside; {cheaper}a single direction (RealSHT with iterations=0 holds no "
        "synthesis tables) holds less; the number of faces does not change the tables. Set "
        "HEAL_SWIN_MEMORY_LIMIT (e.g. 64G) to override the available figure.")


class _Transform(TableModule):
    """Tables and the three stages (gather, Fourier, Legendre), each with its transpose. Analysis holds the
    ring values map by map (B, P) (the chunks' (g, k, n_pad) blocks, gathered along each map's row) and the
    ring DFT reads them as transposed operands; the Fourier coefficients are ring-major with the maps
    innermost (rings, 2M, B), and the Legendre stage reads each m's rows with a stride; synthesis leaves
    its Fourier coefficients ring-major ((re/im, m) x maps per ring) and writes its ring values map by map
    (B, P) (the products' transposed form, so no transposition of the maps), then gathers along each map's
    row into NESTED order."""

    def __init__(self, nside: int, lmax: int, base_pixels=range(12), analysis: bool = True, synthesis: bool = True):
        super().__init__()
        self.nside = grid.check_nside(nside)
        self.lmax = _check_lmax(lmax)
        self.base_pixels = grid.check_base_pixels(base_pixels)
        self.n_pix = grid.n_pixels(self.nside, self.base_pixels)
        self.n_alm = alm_size(self.lmax)
        _check_memory(type(self).__name__, self.nside, self.lmax, self.base_pixels, analysis, synthesis)
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
        gather = np.concatenate([idx.reshape(-1) for idx in gathers])
        # all faces: no absent pixels, only the padding reads the appended zero; it may read any pixel instead
        # (pixel 0), since the analysis tables are zero on the padding (0 x value = 0, also in the gradient), so
        # the map needs no zero column appended (a copy of the map less)
        self._zero_slot = len(self.base_pixels) < 12
        buf("gather", gather if self._zero_slot else np.where(gather == self.n_pix, 0, gather), torch.int64)
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

    # Without gradients (`scratch_wanted`) the stages write their intermediates into the per-thread scratch
    # buffers (`_scratch`: slots 0-4) with out= variants of the same operations (same values, bit for bit);
    # with gradients they concatenate fresh tensors. `ws(slot, shape)`: a scratch view, or None.
    @staticmethod
    def _workspace(x, use: bool):
        return (lambda slot, shape: _SCRATCH.get(slot, tuple(shape), x)) if use else (lambda slot, shape: None)

    # At small nside most of a call is dispatch: the analysis at nside 16 is about 90 torch calls, 20 of them
    # products, the rest views (0.22 ms a call at one map). Without gradients a call runs a plan instead: the
    # out= operations of the scratch path with their views built once per (direction, batch, dtype, device)
    # and bound to their arguments; the same operations on the same views, so the same values bit for bit.
    # Plans live beside the scratch buffers they view (`cached_plan`), keyed by the tables' version too.
    def _plan(self, kind: str, x):
        build = {"analysis": self._build_analysis, "synthesis": self._build_synthesis}[kind]
        key = (kind, x.shape[0], x.dtype, x.device, getattr(self, "_table_version", 0))
        return cached_plan(self, key, lambda: build(x))

    @staticmethod
    def _recorder(like):
        """(ws, record, views, ops) for building a plan: `ws` hands out scratch views (kept in `views`; None
        where a request is above the scratch limit), `record` appends an operation bound to its arguments."""
        views, ops = [], []

        def ws(slot, shape):
            v = _SCRATCH.get(slot, tuple(shape), like)
            views.append(v)
            return v

        def record(fn, *args, **kwargs):
            ops.append(functools.partial(fn, *args, **kwargs))

        return ws, record, views, ops

    def _build_analysis(self, x):
        ws, record, views, ops = self._recorder(x)
        rings = ws(1, (x.shape[0], self.gather.shape[0]))
        if rings is None:
            return None
        even, odd = self._fourier_fwd(rings, ws, record)
        rows = self._legendre_fwd(even, odd, ws, record)
        return None if any(v is None for v in views) else (rings, ops, rows)

    def _build_synthesis(self, a):
        ws, record, views, ops = self._recorder(a)
        nb = a.shape[0]
        at = ws(0, (self.n_alm + 1, 2 * nb))
        if at is None:
            return None
        rings = self._fourier_adj(*self._legendre_adj(a, ws, record), ws, record)
        if any(v is None for v in views):
            return None
        return at[:self.n_alm].view(self.n_alm, 2, nb), ops, rings

    # ---- stage 1: NESTED map (B, N) <-> ring values (B, P), P = the chunks' (g, k, n_pad) blocks: a gather
    # along the map (each map's row read at random, in the cache), no transposition: the Fourier products read
    # these rows as transposed operands
    def _to_rings(self, x, ws):                                   # x (B, N)
        if self._zero_slot:
            x = torch.cat([x, x.new_zeros(x.shape[0], 1)], dim=1)             # (B, N + 1): zero at absent faces
        out = ws(1, (x.shape[0], self.gather.shape[0]))
        return torch.index_select(x, 1, self.gather) if out is None else torch.index_select(x, 1, self.gather, out=out)

    def _from_rings(self, rings):                                # synthesis' ring values (B, P) -> (B, N), fresh
        return torch.index_select(rings, 1, self.scatter)

    # ---- stage 2: ring values <-> F_r(m) ring-major, the even (north + mirror, and the equator) and odd (north
    # - mirror) halves (R_e, 2M, B), (R_o, 2M, B), columns (m, re/im) x map; one dense real DFT per chunk (a
    # batched matmul over its ring lengths, or over its rings for the belt's one table)
    def _fourier_fwd(self, rings, ws, run=None):
        run = run or _call
        nb, width = rings.shape[0], 2 * (self.lmax + 1)
        evens, odds = [], []
        even, odd = ws(3, (self.n_even, width, nb)), ws(4, (self.n_odd, width, nb))
        for c, (k, g, n, n_north, n_eq, off, e0, o0) in enumerate(self._fourier):
            v = rings[:, off:off + g * k * n].view(nb, g, k, n).permute(1, 2, 3, 0)   # (g, k, n, B), B strided
            dt = self._t(f"dft{c}", rings).transpose(1, 2)                       # (k, 2M, n)
            f = ws(2, (g, k, width, nb))
            if k == 1 and f is None:
                f = torch.bmm(dt.expand(g, -1, -1), v[:, 0])
            elif k == 1:
                run(torch.bmm, dt.expand(g, -1, -1), v[:, 0], out=f.view(g, width, nb))
            elif f is None:
                f = torch.stack([torch.bmm(dt, v[j]) for j in range(g)])          # (g, k, 2M, B)
            else:
                for j in range(g):
                    run(torch.bmm, dt, v[j], out=f[j])
            f = f.reshape(g * k, width, nb)
            north, south, eq = f[:n_north * k], f[n_north * k:2 * n_north * k], f[2 * n_north * k:]
            if even is None:
                evens += [north + south, eq] if n_eq else [north + south]
                odds.append(north - south)
            else:
                run(torch.add, north, south, out=even[e0:e0 + n_north * k])
                if n_eq:
                    run(torch.Tensor.copy_, even[e0 + n_north * k:e0 + (n_north + n_eq) * k], eq)
                run(torch.sub, north, south, out=odd[o0:o0 + n_north * k])
        return (torch.cat(evens), torch.cat(odds)) if even is None else (even, odd)

    def _fourier_adj(self, even, odd, ws, run=None):             # (M, R_e, 2B), (M, R_o, 2B) -> ring values (B, P)
        run = run or _call
        m_count, nb = self.lmax + 1, even.shape[2] // 2
        width = 2 * m_count
        rings, out = ws(4, (nb, self.n_values)), []

        def rows(half, r0, r1):                                  # (M, r, 2B) rows -> (r, re/im, M, B), a view
            return half[:, r0:r1].view(m_count, r1 - r0, 2, nb).permute(1, 2, 0, 3)

        for c, (k, g, n, n_north, n_eq, off, e0, o0) in enumerate(self._fourier):
            en, on = rows(even, e0, e0 + n_north * k), rows(odd, o0, o0 + n_north * k)
            eq = rows(even, e0 + n_north * k, e0 + (n_north + n_eq) * k)
            # ring-major coefficients (g k, (re/im, m), B): each ring's (2M, B) block is one operand of a
            # single product against the table's (re/im, m) columns
            f = ws(0, (g * k, 2, m_count, nb))
            if f is None:
                f = torch.cat([en + on, en - on] + ([eq] if n_eq else [])).contiguous()
            else:
                run(torch.add, en, on, out=f[:n_north * k])
                run(torch.sub, en, on, out=f[n_north * k:2 * n_north * k])
                if n_eq:
                    run(torch.Tensor.copy_, f[2 * n_north * k:], eq)
            f = f.view(g, k, width, nb)
            # per ring (B, n) = F^T (B, 2M) @ T^T (2M, n): the maps leading, written into the rows of (B, P)
            t = self._t(f"idft{c}", even).transpose(1, 2)                               # (k, 2M, n)
            dst = None if rings is None else rings[:, off:off + g * k * n].view(nb, g, k, n)
            # a product writing into the rows of (B, P) runs as one GEMM per ring (torch's batched GEMM wants a
            # contiguous result), about 1.5 us each; below _PER_RING values a ring (16 maps at nside 64: 4,096),
            # a contiguous product and one copy into the rows cost less (the same GEMM values either way)
            tmp = None if dst is None or nb * n >= _PER_RING else ws(1, (g, k, nb, n))
            if k == 1:   # one table: a batched matmul over the g rings, the table expanded
                lhs, rhs = f[:, 0].transpose(1, 2), t.expand(g, -1, -1)                # (g, B, 2M), (g, 2M, n)
                if dst is None:
                    out.append(torch.bmm(lhs, rhs).transpose(0, 1).reshape(nb, g * n))
                elif tmp is not None:
                    run(torch.bmm, lhs, rhs, out=tmp[:, 0])
                    run(torch.Tensor.copy_, dst, tmp.permute(2, 0, 1, 3))
                else:
                    run(torch.bmm, lhs, rhs, out=dst[:, :, 0].transpose(0, 1))
                continue
            if dst is None:
                y = torch.stack([torch.bmm(f[j].transpose(1, 2), t) for j in range(g)])   # (g, k, B, n)
                out.append(y.permute(2, 0, 1, 3).reshape(nb, g * k * n))
            elif tmp is not None:
                for j in range(g):
                    run(torch.bmm, f[j].transpose(1, 2), t, out=tmp[j])
                run(torch.Tensor.copy_, dst, tmp.permute(2, 0, 1, 3))
            else:
                for j in range(g):
                    run(torch.bmm, f[j].transpose(1, 2), t, out=dst[:, j].transpose(0, 1))
        if rings is not None:
            return rings
        return torch.cat(out, dim=1) if len(out) > 1 else out[0]

    # ---- stage 3: F_r(m) <-> a_lm: per chunk of m, (Le, R_e) @ (R_e, 2B) and (Lo, R_o) @ (R_o, 2B), each m's
    # rows read with a stride from the ring-major halves (no transposition)
    def _legendre_fwd(self, even, odd, ws, run=None):            # (R_e, 2M, B), (R_o, 2M, B) -> (B, n_alm, 2)
        nb, m_count = even.shape[2], self.lmax + 1
        ev, od = even.view(-1, m_count, 2 * nb), odd.view(-1, m_count, 2 * nb)
        rows = ws(0, (self.alm_scatter.shape[0], 2 * nb))
        out, p = [], 0
        for c, (m0, m1, le, lo) in enumerate(self._legendre):
            mc = m1 - m0
            for table, x, count in ((f"te{c}", ev, le), (f"to{c}", od, lo)):
                if count and rows is None:
                    out.append(torch.bmm(self._t(table, even), x[:, m0:m1].transpose(0, 1)).reshape(-1, 2 * nb))
                elif count:
                    (run or _call)(torch.bmm, self._t(table, even), x[:, m0:m1].transpose(0, 1),
                                   out=rows[p:p + mc * count].view(mc, count, 2 * nb))
                p += mc * count
        if run is not None:
            return rows                                             # planning: the rows the products fill
        return self._alm(torch.cat(out, dim=0) if rows is None else rows, nb)

    def _alm(self, rows, nb):                                    # the Legendre rows (P_l, 2B) -> (B, n_alm, 2)
        a = torch.index_select(rows, 0, self.alm_gather)                                       # (n_alm, 2B)
        return a.view(self.n_alm, 2, nb).permute(2, 0, 1)

    def _legendre_adj(self, a, ws, run=None):                    # a (B, n_alm, 2) -> (M, R_e, 2B), (M, R_o, 2B)
        nb, width = a.shape[0], 2 * a.shape[0]
        at = ws(0, (self.n_alm + 1, width))
        rows = None if at is None else ws(1, (self.alm_scatter.shape[0], width))
        if at is None:
            at = torch.cat([a.permute(1, 2, 0).reshape(self.n_alm, width), a.new_zeros(1, width)], dim=0)
            a = torch.index_select(at, 0, self.alm_scatter)
        else:
            if run is None:                            # planning: the caller copies each call's a_lm in
                at[:self.n_alm].view(self.n_alm, 2, nb).copy_(a.permute(1, 2, 0))
            (run or _call)(torch.Tensor.zero_, at[self.n_alm])
            if rows is None:
                a = torch.index_select(at, 0, self.alm_scatter)
            else:
                (run or _call)(torch.index_select, at, 0, self.alm_scatter, out=rows)
                a = rows
        run = run or _call
        m_count = self.lmax + 1
        even, odd = ws(2, (m_count, self.n_even, width)), ws(3, (m_count, self.n_odd, width))
        evens, odds, p = [], [], 0
        for c, (m0, m1, le, lo) in enumerate(self._legendre):
            mc = m1 - m0
            for table, dst, parts, n_rows, count in ((f"te{c}", even, evens, self.n_even, le),
                                                     (f"to{c}", odd, odds, self.n_odd, lo)):
                if count and dst is None:
                    y = torch.bmm(self._t(table, a).transpose(1, 2), a[p:p + mc * count].view(mc, count, width))
                elif count:
                    y = dst[m0:m1]
                    run(torch.bmm, self._t(table, a).transpose(1, 2), a[p:p + mc * count].view(mc, count, width),
                        out=y)
                elif dst is None:
                    y = a.new_zeros(mc, n_rows, width)
                else:
                    y = dst[m0:m1]
                    run(torch.Tensor.zero_, y)
                p += mc * count
                parts.append(y)
        if even is not None:
            return even, odd
        return (torch.cat(evens) if len(evens) > 1 else evens[0]), (torch.cat(odds) if len(odds) > 1 else odds[0])

    # ---- whole transforms on ring values
    def _analysis_rings(self, rings, ws):
        return self._legendre_fwd(*self._fourier_fwd(rings, ws), ws) * self.scale

    def _synthesis_rings(self, a, ws):
        return self._fourier_adj(*self._legendre_adj(a, ws), ws)


def _bmm(a, b, out=None):
    return torch.bmm(a, b) if out is None else torch.bmm(a, b, out=out)


def _call(fn, *args, **kwargs):
    return fn(*args, **kwargs)


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
        plan = self._plan("analysis", x) if self.iterations == 0 and scratch_wanted(x) else None
        if plan is not None:
            rings, ops, rows = plan
            if self._zero_slot:
                x = torch.cat([x, x.new_zeros(x.shape[0], 1)], dim=1)
            torch.index_select(x, 1, self.gather, out=rings)
            for op in ops:
                op()
            return (self._alm(rows, x.shape[0]) * self.scale).reshape(*lead, self.n_alm, 2)
        ws = self._workspace(x, self.iterations == 0 and scratch_wanted(x))
        rings = self._to_rings(x, ws)
        a = self._analysis_rings(rings, ws)
        for _ in range(self.iterations):
            a = a + self._analysis_rings(rings - self._synthesis_rings(a, ws), ws)
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
        plan = self._plan("synthesis", a) if scratch_wanted(a) else None
        if plan is not None:
            at, ops, rings = plan
            at.copy_(a.permute(1, 2, 0))
            for op in ops:
                op()
            return self._from_rings(rings).reshape(*lead, self.n_pix)
        ws = self._workspace(a, scratch_wanted(a))
        return self._from_rings(self._synthesis_rings(a, ws)).reshape(*lead, self.n_pix)


def table_bytes(module: nn.Module) -> int:
    """Bytes held by a module's buffers (the transform's tables). Not what building it costs: the float64
    originals stay memoised beside converted buffers, and the construction peaks higher still; see
    `memory_estimate` (and `available_memory`, against which RealSHT / InverseRealSHT check it)."""
    return sum(t.numel() * t.element_size() for t in module.buffers())
