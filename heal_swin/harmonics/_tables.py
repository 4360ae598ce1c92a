"""The tables of the transform: pure functions of their arguments, float64 / int64 numpy, memoised.

Layout of the transform (analysis; synthesis runs the same stages transposed):

1. gather: the NESTED map over the chosen faces -> every HEALPix ring, ring pixel j at
   phi_j = (j + shift/2) 2 pi / n_ring. A ring of n = 4 i pixels is held as (4, i): j = q i + t.
   Absent faces read a zero appended to the map.
2. Fourier: F_r(m) = sum_j f_j e^{-i m phi_j} for 0 <= m <= lmax, as a dense real DFT: one matrix of
   (n_ring, 2 (lmax + 1)) per ring length and shift (the phases of shifted rings folded in), output
   columns (Re, Im) x m. Cap rings (i < nside, one table each, shared by a ring and its southern mirror)
   are grouped into chunks padded to the chunk's widest ring, one batched matmul per chunk; the belt
   rings share two tables (shifted and not): one batched matmul each over all their rings, the table
   expanded. A radix-4 step did the same with a quarter of the multiplications in many small products
   and copies, at 1.5 GFLOP/s (issue #27); the dense products run near the machine's matmul rate and
   need no re-stacking of real and imaginary parts. Analysis tables interleave (m, re/im) in their
   columns, so that the Legendre stage finds each m's (re, im) x maps as one strided matrix; synthesis
   tables keep (re/im, m) with w_m folded in (one product per ring against its (re/im, m) coefficients).
   Coefficients keep the maps innermost (see `_sht._Transform`), mirrors as F_r + F_r' and F_r - F_r'.
3. Legendre: a_lm = (4 pi / Npix) sum_r lambda_lm(theta_r) F_r(m). Rings r and 4 nside - r are mirrors:
   lambda_lm(pi - theta) = (-1)^{l+m} lambda_lm(theta), so the even l+m use F_r + F_r' (and the
   equator), the odd ones F_r - F_r', over the northern rings only. Per chunk of m, a batched matmul
   with the l+m-even and the l+m-odd rows of each m padded to the chunk's longest row (the rings in the
   order the Fourier chunks emit them: `ring_rows`); a final gather puts the a_lm in healpy's m-major
   order.
"""

from __future__ import annotations

import functools

import numpy as np

from .. import grid

__all__ = ["alm_size", "alm_index", "legendre", "fourier_tables", "fourier_synthesis_tables",
           "pixel_tables", "legendre_tables", "ring_rows"]

_SCALE = 600  # the Legendre recurrence keeps values as v * 2**(_SCALE * e)
_BIG = 2.0 ** 300


def alm_size(lmax: int) -> int:
    """Number of a_lm with 0 <= m <= l <= lmax (= healpy.Alm.getsize(lmax))."""
    lmax = _check_lmax(lmax)
    return (lmax + 1) * (lmax + 2) // 2


def alm_index(lmax: int, l, m):
    """healpy's index of (l, m) (= healpy.Alm.getidx(lmax, l, m)): m-major, m(2 lmax + 1 - m)/2 + l."""
    l, m = np.asarray(l, dtype=np.int64), np.asarray(m, dtype=np.int64)
    return m * (2 * lmax + 1 - m) // 2 + l


def _check_lmax(lmax) -> int:
    if isinstance(lmax, bool) or int(lmax) != lmax or lmax < 0:
        raise ValueError(f"lmax must be an integer >= 0, got {lmax!r}")
    return int(lmax)


def _readonly(*arrays):
    for a in arrays:
        a.setflags(write=False)
    return arrays if len(arrays) > 1 else arrays[0]


# --------------------------------------------------------------------------- Legendre


def legendre(lmax: int, theta) -> np.ndarray:
    """Orthonormal associated Legendre functions lambda_lm(theta), float64, shape
    (alm_size(lmax), len(theta)), rows in healpy's order; Y_lm(theta, phi) = lambda_lm(theta) e^{i m phi},
    the Condon-Shortley phase included: lambda_lm = (-1)^m sqrt((2l+1)/(4 pi) (l-m)!/(l+m)!) P_l^m(cos theta),
    P_l^m without the phase.

    Three-term recurrence in l for all m at once, started from lambda_mm computed in log space; values are
    carried as v 2^(600 e) with v rescaled whenever it passes 2^300, so nothing overflows or underflows
    prematurely (lmax 2048 and beyond, any theta); only values below float64's range (~1e-323) come out
    as zero.
    """
    lmax = _check_lmax(lmax)
    theta = np.atleast_1d(np.asarray(theta, dtype=np.float64))
    if theta.ndim != 1:
        raise ValueError("theta must be one-dimensional")
    x, y = np.cos(theta), np.sin(theta)
    n = lmax + 1
    out = np.zeros((alm_size(lmax), theta.size))
    m = np.arange(n, dtype=np.float64)
    # log2 lambda_mm = 0.5 log2((2m+1)/(4 pi)) + 0.5 sum_{k<=m} log2((2k-1)/(2k)) + m log2 sin(theta)
    cum = np.concatenate([[0.0], np.cumsum(np.log2((2 * m[1:] - 1) / (2 * m[1:])))])
    with np.errstate(divide="ignore"):
        log_y = np.log2(np.abs(y))
    l2 = (0.5 * np.log2((2 * m + 1) / (4 * np.pi)) + 0.5 * cum)[:, None] + m[:, None] * log_y[None, :]
    l2 = np.where(np.isfinite(l2), l2, -np.inf)
    e = np.minimum(0, np.ceil(np.where(np.isfinite(l2), l2, -1e6) / _SCALE)).astype(np.int64)
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)[:, None]
    p1 = sign * np.exp2(np.where(np.isfinite(l2), l2 - _SCALE * e, -np.inf))   # lambda_{m, m}
    if (y == 0).any():  # poles: only m = 0 survives
        p1[1:, y == 0] = 0.0
    p2 = np.zeros_like(p1)                                                     # lambda_{m-1, m} = 0
    mi = np.arange(n, dtype=np.int64)
    base = mi * (2 * lmax + 1 - mi) // 2 + mi                                    # index of (m, m)
    out[base] = np.ldexp(p1, _SCALE * e)
    for k in range(1, n):
        cnt = n - k                                      # m = 0 .. lmax - k
        mm, l = m[:cnt], m[:cnt] + k
        a = np.sqrt((4 * l * l - 1) / ((l - mm) * (l + mm)))
        b = np.sqrt(((l - 1) ** 2 - mm * mm) / (4 * (l - 1) ** 2 - 1))
        p1, p2, e = p1[:cnt], p2[:cnt], e[:cnt]
        new = a[:, None] * (x[None, :] * p1 - b[:, None] * p2)
        big = (np.abs(new) > _BIG) & (e < 0)
        if big.any():
            new = np.where(big, new * 2.0 ** -_SCALE, new)
            p1 = np.where(big, p1 * 2.0 ** -_SCALE, p1)
            e = e + big
        out[base[:cnt] + k] = np.ldexp(new, _SCALE * e)
        p1, p2 = new, p1
    return out


# --------------------------------------------------------------------------- chunking


def _chunks(lengths, unit: int = 1, slack: float = 1.15, small: int = 1 << 18):
    """Split consecutive items into runs whose padded size (count x longest x unit table entries) stays
    within `slack` of their summed size, or below `small` entries (fewer, larger operations for small
    tables); returns [(start, stop), ...]."""
    lengths = list(lengths)
    out, start = [], 0
    while start < len(lengths):
        stop, total, longest = start + 1, lengths[start], lengths[start]
        while stop < len(lengths):
            lo = max(longest, lengths[stop])
            padded = lo * (stop + 1 - start)
            if padded > slack * (total + lengths[stop]) and padded * unit > small:
                break
            longest, total, stop = lo, total + lengths[stop], stop + 1
        out.append((start, stop))
        start = stop
    return out


# --------------------------------------------------------------------------- rings and Fourier


@functools.lru_cache(maxsize=32)
def _ring_groups(nside: int):
    """Groups of rings that share one Fourier table: [(quarter ring length i, shift, [[rings sharing the
    table], ...] per table)] per chunk, plus the ring numbers in the order the chunks emit them."""
    nside = grid.check_nside(nside)
    rings = np.arange(1, 4 * nside)
    shifted = grid.ring_info(nside, rings)[3]
    chunks = []
    unit = 8 * (2 * nside + 1)                          # table entries per unit of i (at lmax ~ 2 nside)
    for a, b in _chunks(range(1, nside), unit):       # cap rings i = a+1 .. b, padded to the widest
        i_list = list(range(a + 1, b + 1))
        chunks.append(dict(i=i_list, shift=[1] * len(i_list), members=[[i, 4 * nside - i] for i in i_list]))
    belt = rings[(rings >= nside) & (rings <= 3 * nside)]
    for sh in (1, 0):
        sel = [int(r) for r in belt if bool(shifted[r - 1]) == bool(sh)]
        if sel:
            north = [r for r in sel if r < 2 * nside]
            south = [4 * nside - r for r in north]
            eq = [r for r in sel if r == 2 * nside]
            chunks.append(dict(i=[nside], shift=[sh], members=[north + south + eq]))
    order = np.array([r for c in chunks for mem in c["members"] for r in mem], dtype=np.int64)
    assert np.array_equal(np.sort(order), rings)
    return chunks, order


def _dft(nside: int, lmax: int, interleave: bool, weights: bool):
    """Per Fourier chunk the dense real DFT (k, n_pad, 2 M) of its ring lengths (see `fourier_tables`), columns
    (c, m) or, `interleave`, (m, c); `weights`: w_m folded in (synthesis)."""
    lmax = _check_lmax(lmax)
    chunks, _ = _ring_groups(nside)
    m = np.arange(lmax + 1)
    w = weights_m(lmax) if weights else np.ones(lmax + 1)
    out = []
    for c in chunks:
        k, n_pad = len(c["i"]), 4 * max(c["i"])
        d = np.zeros((k, n_pad, lmax + 1, 2) if interleave else (k, n_pad, 2, lmax + 1))
        for a, (i, sh) in enumerate(zip(c["i"], c["shift"])):
            phi = (np.arange(4 * i) + 0.5 * sh) * (2 * np.pi / (4 * i))
            ang = np.outer(phi, m)
            if interleave:
                d[a, :4 * i, :, 0], d[a, :4 * i, :, 1] = w * np.cos(ang), -w * np.sin(ang)
            else:
                d[a, :4 * i, 0], d[a, :4 * i, 1] = w * np.cos(ang), -w * np.sin(ang)
        out.append(_readonly(d.reshape(k, n_pad, 2 * (lmax + 1))))
    return tuple(out)


@functools.lru_cache(maxsize=32)
def fourier_tables(nside: int, lmax: int):
    """Per Fourier chunk the dense real DFT of its ring lengths, (k, n_pad, 2 M), M = lmax + 1, n_pad = 4 i_pad:
    [a, j, 2 m + c] = cos(m phi_j) (c = 0) and -sin(m phi_j) (c = 1) for pixel j of the chunk's a-th ring
    length 4 i, phi_j = (j + shift/2) 2 pi / (4 i); zero on the padding j >= 4 i. table^T @ ring gives
    (Re F(m), Im F(m)) interleaved, F(m) = sum_j f_j e^{-i m phi_j}. Float64."""
    return _dft(nside, lmax, interleave=True, weights=False)


@functools.lru_cache(maxsize=32)
def fourier_synthesis_tables(nside: int, lmax: int):
    """The synthesis DFT per Fourier chunk, (k, n_pad, 2 M), columns (c, m): [a, j, c M + m] = w_m cos(m phi_j)
    (c = 0), -w_m sin(m phi_j) (c = 1): ring = table[..., :M] @ Re F + table[..., M:] @ Im F gives
    f_j = sum_m w_m Re(e^{i m phi_j} F(m)) (w_0 = 1, w_m = 2). Float64."""
    return _dft(nside, lmax, interleave=False, weights=True)


@functools.lru_cache(maxsize=32)
def pixel_tables(nside: int, base_pixels: tuple):
    """Per Fourier chunk the gather index (g, k, n_pad) into the map with a zero appended (index N = absent
    face or padding): member b of each of the chunk's k ring lengths (the g members: the northern rings,
    their mirrors, the equator), pixel j of a ring at column j; and `scatter` (N,): where each map pixel
    sits in the flattened concatenation of the chunks' (g, k, n_pad) blocks. Int64."""
    nside = grid.check_nside(nside)
    faces = grid.check_base_pixels(base_pixels)
    n_map = grid.n_pixels(nside, faces)
    chunks, _ = _ring_groups(nside)
    rings = np.arange(1, 4 * nside)
    start = grid.ring_info(nside, rings)[0]
    gathers, scatter, offset = [], np.full(n_map, -1, dtype=np.int64), 0
    for c in chunks:
        k, g, n_pad = len(c["members"]), len(c["members"][0]), 4 * max(c["i"])
        idx = np.full((g, k, n_pad), n_map, dtype=np.int64)
        for a, (i, mem) in enumerate(zip(c["i"], c["members"])):
            for b, r in enumerate(mem):
                j = np.arange(4 * i)
                nest = np.asarray(grid.ring2nest(nside, start[r - 1] + j), dtype=np.int64)
                local = np.asarray(grid.global_to_local(nside, faces, nest), dtype=np.int64)
                ok = local >= 0
                idx[b, a, j[ok]] = local[ok]
                scatter[local[ok]] = offset + (b * k + a) * n_pad + j[ok]
        gathers.append(_readonly(idx))
        offset += idx.size
    assert (scatter >= 0).all()
    return tuple(gathers), _readonly(scatter)


@functools.lru_cache(maxsize=32)
def ring_rows(nside: int):
    """How the Fourier chunks' rings meet the Legendre stage: per chunk (k, g, n_north, n_eq) (the g members
    of each ring length: n_north northern rings, their mirrors in the same order, n_eq equator rings), and
    the ring numbers of the rows of the even half (each chunk's northern rings as (member, ring length),
    then its equator) and of the odd half (the northern rings alone), in the chunks' order."""
    chunks, _ = _ring_groups(nside)
    info, even, odd = [], [], []
    for c in chunks:
        mem = c["members"]
        k, g = len(mem), len(mem[0])
        n_eq = sum(1 for r in mem[0] if r == 2 * nside)
        n_north = (g - n_eq) // 2
        north = [mem[a][j] for j in range(n_north) for a in range(k)]
        assert all(r < 2 * nside for r in north)
        assert all(mem[a][n_north + j] == 4 * nside - mem[a][j] for a in range(k) for j in range(n_north))
        info.append((k, g, n_north, n_eq))
        even += north + [mem[a][2 * n_north + e] for e in range(n_eq) for a in range(k)]
        odd += north
    assert sorted(even) == list(range(1, 2 * nside + 1)) and sorted(odd) == list(range(1, 2 * nside))
    return tuple(info), _readonly(np.array(even, dtype=np.int64), np.array(odd, dtype=np.int64))


# --------------------------------------------------------------------------- Legendre tables


@functools.lru_cache(maxsize=4)
def legendre_tables(nside: int, lmax: int):
    """The Legendre stage per chunk of m: (m0, m1, Te, To) with Te (m1-m0, Le, R+1) the rows l = m, m+2, ...
    over the northern rings 1 .. 2 nside - 1 and the equator, To (m1-m0, Lo, R) the rows l = m+1, m+3, ...
    over the northern rings, zero-padded to the chunk's first m; the rings (columns) in the order of
    `ring_rows` (the rows the Fourier stage emits). Then `gather` (n_alm,): each healpy index's
    row in the concatenated, flattened (Te outputs, To outputs) of all chunks, and `scatter` (P,): the
    inverse, n_alm for padding rows. Float64 / int64."""
    nside, lmax = grid.check_nside(nside), _check_lmax(lmax)
    rings = np.arange(1, 2 * nside + 1)
    _, _, theta, _ = grid.ring_info(nside, rings)
    _, (even_rings, odd_rings) = ring_rows(nside)
    cols_e, cols_o = even_rings - 1, odd_rings - 1     # columns of `lam` in the order the Fourier stage emits
    lam = legendre(lmax, theta)                        # (n_alm, 2 nside): northern rings, equator last
    n = lmax + 1
    n_alm = alm_size(lmax)
    gather = np.full(n_alm, -1, dtype=np.int64)
    chunks, offset = [], 0
    for m0, m1 in _chunks([n - m for m in range(n)], rings.size):
        le, lo = (n - m0 + 1) // 2, (n - m0) // 2
        te = np.zeros((m1 - m0, le, rings.size))
        to = np.zeros((m1 - m0, lo, rings.size - 1))
        for m in range(m0, m1):
            le_m, lo_m = (n - m + 1) // 2, (n - m) // 2
            ev = alm_index(lmax, m + 2 * np.arange(le_m), m)
            od = alm_index(lmax, m + 1 + 2 * np.arange(lo_m), m)
            te[m - m0, :le_m] = lam[np.ix_(ev, cols_e)]
            to[m - m0, :lo_m] = lam[np.ix_(od, cols_o)]
            gather[ev] = offset + (m - m0) * le + np.arange(le_m)
            gather[od] = offset + te.shape[0] * le + (m - m0) * lo + np.arange(lo_m)
        offset += te.shape[0] * (le + lo)
        chunks.append((m0, m1) + _readonly(te, to))
    del lam
    tiny = np.finfo(np.float64).tiny
    for _, _, te, to in chunks:                      # no subnormal numbers (slow on x86): below 2.2e-308 -> 0
        te.setflags(write=True), to.setflags(write=True)
        te[np.abs(te) < tiny], to[np.abs(to) < tiny] = 0.0, 0.0
        te.setflags(write=False), to.setflags(write=False)
    assert (gather >= 0).all()
    scatter = np.full(offset, n_alm, dtype=np.int64)
    scatter[gather] = np.arange(n_alm)
    return tuple(chunks), _readonly(gather), _readonly(scatter)


def table_entries(nside: int, lmax: int, base_pixels: tuple) -> dict:
    """The number of entries of each table a transform builds, from the shapes alone (nothing is built):
    `dft` (one direction's Fourier tables, float), `legendre` (Te and To together, float), `legendre_work`
    (the unpadded float64 Legendre values `legendre_tables` holds while it fills Te and To), `index` (the int64
    gathers and scatters), `ring_values` (the gathers' part of `index`)."""
    nside, lmax = grid.check_nside(nside), _check_lmax(lmax)
    faces = grid.check_base_pixels(base_pixels)
    chunks, _ = _ring_groups(nside)
    n = lmax + 1
    dft = sum(len(c["i"]) * 4 * max(c["i"]) * 2 * n for c in chunks)
    ring_values = sum(len(c["members"]) * len(c["members"][0]) * 4 * max(c["i"]) for c in chunks)
    legendre_padded, padded_rows = 0, 0
    for m0, m1 in _chunks([n - m for m in range(n)], 2 * nside):
        le, lo = (n - m0 + 1) // 2, (n - m0) // 2
        legendre_padded += (m1 - m0) * (le * 2 * nside + lo * (2 * nside - 1))
        padded_rows += (m1 - m0) * (le + lo)
    index = ring_values + grid.n_pixels(nside, faces) + alm_size(lmax) + padded_rows
    return dict(dft=dft, legendre=legendre_padded, legendre_work=alm_size(lmax) * 2 * nside, index=index,
                ring_values=ring_values)


def weights_m(lmax: int) -> np.ndarray:
    """Synthesis weight of each m >= 0: 1 for m = 0, 2 otherwise (a real map holds m and -m)."""
    w = np.full(lmax + 1, 2.0)
    w[0] = 1.0
    return w
