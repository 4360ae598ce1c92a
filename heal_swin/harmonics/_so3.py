"""Functions on SO(3): a HEALPix x uniform-gamma grid and its Fourier transforms (real arithmetic).

Spectrum. A real function on SO(3) of bandwidth b (degrees l < b) is held by its coefficients G^l_{mn},
0 <= m <= l, -l <= n <= l, in a zero-padded tensor (..., b, b, 2b - 1, 2): entry [l, m, n + b - 1, c] is the
real (c = 0) or imaginary (c = 1) part of G^l_{mn}, zero where m > l or |n| > l. The function is

    f(R) = sum_{l, |m| <= l, |n| <= l} G^l_{mn} conj(D^l_{mn}(R)),
    D^l_{mn}(alpha, beta, gamma) = e^{-i m alpha} d^l_{mn}(beta) e^{-i n gamma}   (`rotate_alm`'s D),

with the rows m < 0 implied by realness, G^l_{-m,-n} = (-1)^{m-n} conj(G^l_{mn}); the part of the m = 0 row
that breaks realness is ignored, as InverseRealSHT ignores Im a_l0. With this basis a rotation acts on the
left index exactly as on a_lm: f(Q^-1 R) has coefficients D^l(Q) G^l, and conj(D^l_{m0}(R)) =
sqrt(4 pi / (2l + 1)) Y_lm(R e_z), so a map on S^2 is the n = 0 column.

Grid. R = Rz(alpha) Ry(beta) Rz(gamma) with (beta, alpha) = (theta, phi) of the NESTED pixels of HEALPix at
`so3_grid_nside(b)` (all 12 faces, the smallest power of two >= b/2) and gamma_k = 2 pi k / (2b); values
are held as (..., 2b, 12 nside^2): [k, p] = f at (phi_p, theta_p, gamma_k). Rotations about the polar axis
by multiples of 90 degrees permute the grid (alpha moves along the rings), and so does the 180-degree turn
about the x axis; both are exact symmetries of the transforms below.

Transforms (the SHT's ring stages reused, plus a DFT in gamma and a product with Wigner-d tables):
SO3Synthesis evaluates f on the grid exactly (up to rounding); SO3Analysis is its quadrature adjoint,
G^l_{mn} ~ (2l + 1) / (8 pi^2) * sum_grid f(R) D^l_{mn}(R) * (4 pi / Npix) (2 pi / 2b), exact only to
the HEALPix quadrature (errors in bench/README.md), and exactly equivariant to the grid's symmetries.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .. import grid
from ._scratch import _SCRATCH, NoScratch
from ._sht import TableModule
from ._tables import weights_m
from ._wigner import _wigner_d

__all__ = ["SO3Analysis", "SO3Synthesis", "check_bandwidth", "so3_grid", "so3_grid_nside", "so3_grid_shape", "so3_spectrum_mask",
           "so3_spectrum_shape", "so3_table_mib", "rotate_so3"]


def check_bandwidth(b, name: str = "bandwidth") -> int:
    """b as an int, or ValueError: an even integer >= 2 (even, so that the gamma grid of 2b points holds
    the 180-degree turns)."""
    if isinstance(b, bool) or int(b) != b or b < 2 or int(b) % 2:
        raise ValueError(f"{name}={b!r} must be an even integer >= 2 (degrees l < {name})")
    return int(b)


def so3_grid_nside(b: int) -> int:
    """HEALPix nside of the (alpha, beta) part of the SO(3) grid: the smallest power of two >= b / 2."""
    b = check_bandwidth(b)
    n = 1
    while 2 * n < b:
        n *= 2
    return n


def so3_spectrum_shape(b: int) -> tuple:
    """(b, b, 2b - 1): the padded (l, m, n + b - 1) layout of an SO(3) spectrum (a last axis of 2 follows)."""
    b = check_bandwidth(b)
    return (b, b, 2 * b - 1)


@functools.lru_cache(maxsize=16)
def so3_spectrum_mask(b: int) -> np.ndarray:
    """Boolean (b, b, 2b - 1): True where (l, m, n) is a coefficient (m <= l, |n| <= l)."""
    b = check_bandwidth(b)
    l, m, n = np.meshgrid(np.arange(b), np.arange(b), np.arange(-(b - 1), b), indexing="ij")
    mask = (m <= l) & (np.abs(n) <= l)
    mask.setflags(write=False)
    return mask


def so3_grid_shape(b: int, grid=None) -> tuple:
    """(nside, gamma points) of the grid a transform of bandwidth b samples. `grid`: None (the grid of b:
    so3_grid_nside(b), 2b), an even bandwidth g >= b (the grid of g), or a pair (nside, n_gamma): HEALPix at
    nside (a power of two >= so3_grid_nside(b)) times n_gamma uniform gammas (even, >= 2b), a grid
    oversampled in (alpha, beta) or gamma alone."""
    b = check_bandwidth(b)
    if grid is None:
        return so3_grid_nside(b), 2 * b
    if isinstance(grid, (tuple, list)):
        if len(grid) != 2:
            raise ValueError(f"grid={grid!r} must be a bandwidth or a pair (nside, n_gamma)")
        nside, n_gamma = int(grid[0]), int(grid[1])
        if grid[0] != nside or nside < so3_grid_nside(b) or nside & (nside - 1):
            raise ValueError(f"grid={tuple(grid)!r}: nside={grid[0]!r} must be a power of two >= "
                             f"{so3_grid_nside(b)} (the grid of bandwidth {b})")
        if grid[1] != n_gamma or n_gamma < 2 * b or n_gamma % 2:
            raise ValueError(f"grid={tuple(grid)!r}: n_gamma={grid[1]!r} must be an even integer >= 2b = {2 * b} "
                             "(even: the 180-degree turns; >= 2b: the gamma DFT of degrees < b)")
        return nside, n_gamma
    g = check_bandwidth(grid, "grid")
    if g < b:
        raise ValueError(f"grid={grid} must be >= the bandwidth {b}: the grid of a smaller bandwidth cannot hold "
                         "the function")
    return so3_grid_nside(g), 2 * g


def so3_grid(b: int, grid=None):
    """Euler angles of the grid of bandwidth b: alpha (Npix,), beta (Npix,) per NESTED pixel, gamma (n_gamma,);
    float64. `grid` as in `so3_grid_shape` (a transform built with grid=g samples so3_grid(b, g))."""
    nside, n_gamma = so3_grid_shape(b, grid)
    theta, phi = _pixel_angles(nside)
    return phi, theta, 2 * np.pi * np.arange(n_gamma) / n_gamma


def _pixel_angles(nside: int):
    theta, phi = grid.pix2ang(nside, np.arange(grid.nside2npix(nside)), nest=True)   # `grid`: the module here
    return np.asarray(theta, dtype=np.float64), np.asarray(phi, dtype=np.float64)


@functools.lru_cache(maxsize=8)
def _ring_wigner(b: int, nside: int) -> np.ndarray:
    """d^l_{mn}(theta_r) as (m, n + b - 1, l, r) over the rings r = 1 .. 4 nside - 1 of HEALPix at `nside`
    (north to south); zero outside the spectrum mask. Float64."""
    theta = grid.ring_info(nside, np.arange(1, 4 * nside))[2]
    out = np.zeros((b, 2 * b - 1, b, theta.size))
    for r, beta in enumerate(theta):
        ds = _wigner_d(b - 1, float(beta))
        for l in range(b):
            out[:l + 1, b - 1 - l:b + l, l, r] = ds[l][l:, :]          # rows m = 0..l, columns n = -l..l
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=8)
def _padded_rings(nside: int, mmax: int):
    """The SO(3) grid's rings, every ring padded to L = 4 nside: the dense real DFT (R, L, 2M), M = mmax + 1,
    [r, j, c M + m] = cos(m phi_rj) (c = 0), -sin(m phi_rj) (c = 1), zero on the padding; its transpose
    with the synthesis weights w_m folded in (R, 2M, L); `gather` (R L,): the NESTED pixel at each ring
    position (12 nside^2, a zero slot, on the padding); `scatter` (12 nside^2,): each pixel's ring position.
    One batched matmul over the rings (the grids are small: padding costs less than splitting them)."""
    rings = np.arange(1, 4 * nside)
    start, count, _, shifted = grid.ring_info(nside, rings)
    n_ring, width, m = rings.size, 4 * nside, np.arange(mmax + 1)
    dft = np.zeros((n_ring, width, 2, mmax + 1))
    gather = np.full((n_ring, width), 12 * nside * nside, dtype=np.int64)
    for r in range(n_ring):
        j = np.arange(count[r])
        phi = (j + 0.5 * shifted[r]) * (2 * np.pi / count[r])
        dft[r, j, 0], dft[r, j, 1] = np.cos(np.outer(phi, m)), -np.sin(np.outer(phi, m))
        gather[r, j] = grid.ring2nest(nside, start[r] + j)
    dft = dft.reshape(n_ring, width, 2 * (mmax + 1))
    w = np.tile(weights_m(mmax), 2)
    idft = np.ascontiguousarray(dft.transpose(0, 2, 1)) * w[None, :, None]
    gather = gather.reshape(-1)
    scatter = np.full(12 * nside * nside, -1, dtype=np.int64)
    ok = gather < scatter.size
    scatter[gather[ok]] = np.flatnonzero(ok)
    assert (scatter >= 0).all()
    for t in (dft, idft, gather, scatter):
        t.setflags(write=False)
    return dft, idft, gather, scatter


def _gamma_dft(b: int, sign: int, n_gamma: int) -> np.ndarray:
    """Real (2P, 2Q) matrix of the complex sum_x v_x e^{sign i n gamma_k} for matrices on the left of the
    values: out = table @ values. Synthesis (n -> k, sign +1): (2K, 2N), rows (k, re/im), columns (n, re/im);
    analysis (k -> n, sign -1): (2N, 2K), rows (n, re/im), columns (k, re/im)."""
    n = np.arange(-(b - 1), b)
    gamma = 2 * np.pi * np.arange(n_gamma) / n_gamma
    ang = np.outer(gamma, n) if sign > 0 else np.outer(n, gamma)        # (outputs, inputs)
    c, s = np.cos(ang), sign * np.sin(ang)
    out = np.stack([np.stack([c, -s], axis=-1), np.stack([s, c], axis=-1)], axis=1)   # (out, re/im, in, re/im)
    out = np.ascontiguousarray(out.reshape(2 * ang.shape[0], 2 * ang.shape[1]))
    out.setflags(write=False)
    return out


def _out(scratch: bool, slot: int, shape, like: torch.Tensor):
    """A scratch view to write a stage's result into, or None (a fresh tensor)."""
    return _SCRATCH.get(slot, tuple(shape), like) if scratch else None


def _bmm(a: torch.Tensor, b: torch.Tensor, out=None, run=None) -> torch.Tensor:
    """a @ b (batched), into `out` when given; `run`: record the call instead (planning, `out` required)."""
    if run is not None:
        if out is None:
            raise NoScratch
        run(torch.bmm, a, b, out=out)
        return out
    return torch.bmm(a, b) if out is None else torch.bmm(a, b, out=out)


def _call(fn, *args, **kwargs):
    return fn(*args, **kwargs)


def _dense_grad(t: torch.Tensor) -> torch.Tensor:
    """t, its gradient made contiguous before t's producer sees it: a matmul's output that is permuted next
    gets its gradient as a permuted view, which the batched matmul's backward would copy matrix by matrix."""
    if t.requires_grad:
        t.register_hook(torch.Tensor.contiguous)
    return t


def _per_m(table: torch.Tensor, x: torch.Tensor, out=None, run=None) -> torch.Tensor:
    """table (P, Q) @ x (M, Q, S) -> (M, P, S) as one batched matmul over the table expanded (no copy):
    torch.matmul folds a 2-D @ 3-D product into one (M S, Q) @ (Q, P) product through transposed views, whose
    backward copies x's gradient matrix by matrix."""
    return _bmm(table.expand(x.shape[0], *table.shape), x, out, run)


def _ring_major(f: torch.Tensor, out=None, run=None) -> torch.Tensor:
    """(M, K, 2, R, B) -> (R, 2 M, K B): the γ DFT's output (m outermost) as the ring DFT reads it (rings
    outermost). The maps stay innermost on both sides, so the one permuted copy moves runs of B contiguous
    values (a copy that put m innermost read one value per cache line: 2.5-3x slower at the digits' sizes)."""
    m, k, _, r, nb = f.shape
    if run is not None and out is None:
        raise NoScratch
    if out is not None:
        (run or _call)(torch.Tensor.copy_, out.view(r, 2, m, k, nb), f.permute(3, 2, 0, 1, 4))
        return out
    return f.permute(3, 2, 0, 1, 4).reshape(r, 2 * m, k * nb)


def _m_major(x: torch.Tensor, m: int, out=None, run=None) -> torch.Tensor:
    """(R, 2 M, K, B) -> (M, 2 K, R B), the inverse move of `_ring_major` (maps innermost on both sides)."""
    r, _, k, nb = x.shape
    if run is not None and out is None:
        raise NoScratch
    if out is not None:
        (run or _call)(torch.Tensor.copy_, out.view(m, k, 2, r, nb), x.reshape(r, 2, m, k, nb).permute(2, 3, 1, 0, 4))
        return out
    return x.reshape(r, 2, m, k, nb).permute(2, 3, 1, 0, 4).reshape(m, 2 * k, r * nb)


class _SO3Transform(TableModule):
    """Tables of one direction of the SO(3) transform: the Wigner-d products per (m, n), the gamma DFT and the
    ring DFT over the padded rings (`_padded_rings`, held with the table on the left of the values). Values
    are held on the rings as (R, L, K, B) inside, the maps innermost (`SO3Activation` works there: every
    grid point once, padding zero after synthesis and ignored by analysis), NESTED (B, K, 12 nside^2) at the
    module boundary."""

    def __init__(self, b: int, grid=None, synthesis: bool = True):
        super().__init__()
        self.b = check_bandwidth(b)
        self.nside, self.n_gamma = so3_grid_shape(self.b, grid)
        self.grid = grid
        self.n_pix = 12 * self.nside ** 2
        self.n_rings, self.ring_width = 4 * self.nside - 1, 4 * self.nside
        dft, idft, gather, scatter = _padded_rings(self.nside, self.b - 1)
        wig = _ring_wigner(self.b, self.nside).reshape(self.b * (2 * self.b - 1), self.b, self.n_rings)
        if synthesis:   # per (m, n, re/im): (R, L_deg) @ (L_deg, maps)
            self._table("wigner", np.repeat(wig.transpose(0, 2, 1), 2, axis=0))
            self._table("ring_dft", np.ascontiguousarray(idft.transpose(0, 2, 1)))     # (R, L, 2M)
            self._table("scatter", scatter, torch.int64)
        else:           # per (m, n, re/im): (L_deg, R) @ (R, maps), the quadrature weight of each l folded in
            l = np.arange(self.b, dtype=np.float64)
            weight = (2 * l + 1) / (8 * np.pi ** 2) * (4 * np.pi / self.n_pix) * (2 * np.pi / self.n_gamma)
            self._table("wigner", np.repeat(wig, 2, axis=0) * weight[None, :, None])
            self._table("ring_dft", np.ascontiguousarray(dft.transpose(0, 2, 1)))      # (R, 2M, L)
            self._table("gather", gather, torch.int64)
        self._table("gamma_dft", _gamma_dft(self.b, 1 if synthesis else -1, self.n_gamma))

    def extra_repr(self) -> str:
        return f"bandwidth={self.b}, grid nside={self.nside}, gamma points={self.n_gamma}"


class SO3Synthesis(_SO3Transform):
    """SO(3) spectrum (..., b, b, 2b - 1, 2) -> values on the grid (..., 2b, 12 nside^2) (module docstring).
    f(R) = sum G^l_{mn} conj(D^l_{mn}(R)), evaluated exactly; differentiable, exports to ONNX.
    `grid`: evaluate on another grid (`so3_grid_shape`): that of a larger (even) bandwidth, so that layers of
    different bandwidths share one sampling, or (nside, n_gamma), (..., n_gamma, 12 nside^2)."""

    def __init__(self, b: int, grid=None):
        super().__init__(b, grid, synthesis=True)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        lead = self._check(g)
        v = self.rings(g.reshape(-1, *g.shape[-4:]))                         # (R, L, K, B)
        r, width, k, nb = v.shape
        v = v.permute(3, 2, 0, 1).reshape(nb * k, r * width)
        return torch.index_select(v, 1, self.scatter).reshape(*lead, k, self.n_pix)

    def _check(self, g):
        b, n = self.b, 2 * self.b - 1
        if g.shape[-4:] != (b, b, n, 2):
            raise ValueError(f"expected an SO(3) spectrum (..., {b}, {b}, {n}, 2) for bandwidth {b}, "
                             f"got {tuple(g.shape)}")
        return g.shape[:-4]

    def rings(self, g: torch.Tensor, scratch: bool = False, run=None) -> torch.Tensor:
        """g (B, b, b, 2b - 1, 2) -> values on the padded rings (R, L, K, B), zero on the padding. `scratch`
        (no gradients): the intermediates and the result in the per-thread scratch buffers (`_Scratch`,
        slots 0 and 1; the result is overwritten by the next such call in this thread). `run` (with `scratch`):
        record the scratch path's operations instead of running them (a plan, `harmonics.cached_plan`), and
        return (t, v): t (b b (2b - 1) 2, B), the scratch view each call copies its transposed spectrum into."""
        self._check(g)
        b, n, nb, r, k = self.b, 2 * self.b - 1, g.shape[0], self.n_rings, self.n_gamma
        # H_r(m, n) = sum_l d^l_{mn}(beta_r) G^l_{mn}: one matmul per (m, n, re/im) over l
        # contiguous: the permuted spectrum reshapes to a view with batch stride 1, which bmm would copy
        # matrix by matrix (b (2b - 1) 2 small copies); a 2-D transpose first, then a permuted copy of runs of
        # B values (the single 5-D permuted copy read one value per cache line: 2x slower at b = 16)
        t, x = _out(scratch, 0, (b * b * n * 2, nb), g), _out(scratch, 1, (b * n * 2, b, nb), g)
        if t is not None and x is not None:
            if run is None:                  # planning (`run`): the caller copies each call's spectrum into t
                t.copy_(g.reshape(nb, -1).t())
            (run or _call)(torch.Tensor.copy_, x.view(b, n, 2, b, nb), t.view(b, b, n, 2, nb).permute(1, 2, 3, 0, 4))
        elif run is not None:
            raise NoScratch
        else:
            x = g.reshape(nb, -1).t().contiguous().view(b, b, n, 2, nb)
            x = x.permute(1, 2, 3, 0, 4).reshape(b * n * 2, b, nb)
        h = _bmm(self._t("wigner", g), x, _out(scratch, 0, (b * n * 2, r, nb), g), run)    # (M N 2, R, B)
        # F_r(m, gamma_k) = sum_n H_r(m, n) e^{i n gamma_k}: per m, (2K, 2N) @ (2N, R B)
        f = _per_m(self._t("gamma_dft", g), h.reshape(b, 2 * n, r * nb), _out(scratch, 1, (b, 2 * k, r * nb), g),
                   run)
        # f(alpha_j, beta_r, gamma_k) = sum_m w_m Re(e^{i m alpha_j} F_r(m, gamma_k)): per ring (L, 2M) @ (2M, K B)
        f = _ring_major(f.reshape(b, k, 2, r, nb), _out(scratch, 0, (r, 2 * b, k * nb), g), run)  # (R, 2M, K B)
        v = _bmm(self._t("ring_dft", g), f, _out(scratch, 1, (r, self.ring_width, k * nb), g), run)
        if run is not None:
            return t, v.reshape(r, self.ring_width, k, nb)       # planning: also where each call's input goes
        return v.reshape(r, self.ring_width, k, nb)


class SO3Analysis(_SO3Transform):
    """Values on the grid (..., 2b, 12 nside^2) -> SO(3) spectrum (..., b, b, 2b - 1, 2) by quadrature with
    equal weights (module docstring); the adjoint of SO3Synthesis up to the quadrature weights. `grid`: as
    in SO3Synthesis, the values live on that grid, (..., n_gamma, 12 nside^2)."""

    def __init__(self, b: int, grid=None):
        super().__init__(b, grid, synthesis=False)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        k = self.n_gamma
        if f.shape[-2:] != (k, self.n_pix):
            raise ValueError(f"expected values on the SO(3) grid (..., {k}, {self.n_pix}) for bandwidth {self.b}, "
                             f"got {tuple(f.shape)}")
        lead = f.shape[:-2]
        f = f.reshape(-1, self.n_pix)
        f = torch.index_select(torch.cat([f, f.new_zeros(f.shape[0], 1)], dim=1), 1, self.gather)
        v = f.reshape(-1, k, self.n_rings, self.ring_width).permute(2, 3, 1, 0)
        g = self.spectrum(v)
        return g.reshape(*lead, *g.shape[1:])

    def spectrum(self, v: torch.Tensor, scratch: bool = False, run=None) -> torch.Tensor:
        """Values on the padded rings (R, L, K, B) (the padding is ignored) -> spectra (B, b, b, 2b - 1, 2).
        `scratch` (no gradients): the intermediates in the per-thread scratch buffers (`_Scratch`, slot 0,
        then slot 1, which may hold v: v is read before it is overwritten)."""
        b, n, k, r = self.b, 2 * self.b - 1, self.n_gamma, self.n_rings
        if v.dim() != 4 or v.shape[:3] != (r, self.ring_width, k):
            raise ValueError(f"expected values on the rings ({r}, {self.ring_width}, {k}, B), got {tuple(v.shape)}")
        nb = v.shape[3]
        # F_r(m, gamma_k) = sum_j f e^{-i m alpha_j}: per ring (2M, L) @ (L, K B)
        x = _bmm(self._t("ring_dft", v), v.reshape(r, self.ring_width, k * nb),
                 _out(scratch, 0, (r, 2 * b, k * nb), v), run)                                            # (R, 2M, K B)
        # X_r(m, n) = sum_k F e^{-i n gamma_k}: per m, (2N, 2K) @ (2K, R B)
        x = _m_major(x.reshape(r, 2 * b, k, nb), b, _out(scratch, 1, (b, 2 * k, r * nb), v), run)
        x = _per_m(self._t("gamma_dft", v), x, _out(scratch, 0, (b, 2 * n, r * nb), v), run)   # (M, 2N, R B)
        if run is not None:
            return x              # planning: the caller runs the last stage (its result is returned: fresh)
        return self.spectrum_last(x)

    def spectrum_last(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage of `spectrum`, from the γ DFT's output (M, 2N, R B) (what `spectrum` returns when it
        records a plan) to the spectra (B, b, b, 2b - 1, 2)."""
        b, n, r = self.b, 2 * self.b - 1, self.n_rings
        nb = x.shape[2] // r
        # G^l_{mn} = w_l sum_r d^l_{mn}(beta_r) X_r(m, n): per (m, n, re/im), (L_deg, R) @ (R, B) (w_l in the table)
        g = _dense_grad(torch.bmm(self._t("wigner", x), x.reshape(b * n * 2, r, nb)))   # (M N 2, L_deg, B)
        return g.reshape(b, n, 2, b, nb).permute(4, 3, 0, 1, 2)


def so3_table_mib(b: int) -> float:
    """MiB of the Wigner table one SO(3) transform holds in float32 (b^2 (2b - 1) (4 nside - 1) values)."""
    nside = so3_grid_nside(b)
    return b * b * (2 * b - 1) * (4 * nside - 1) * 4 / 2 ** 20


def _full_rows(g: np.ndarray, b: int) -> np.ndarray:
    """Complex (..., b, 2b - 1, 2b - 1): all rows m = -l..l of a padded real spectrum (realness)."""
    c = g[..., 0] + 1j * g[..., 1]                                  # (..., l, m >= 0, n)
    full = np.zeros(c.shape[:-2] + (2 * b - 1, 2 * b - 1), dtype=complex)
    full[..., b - 1:, :] = c
    sign = (-1.0) ** (np.arange(1, b)[:, None] - np.arange(-(b - 1), b)[None, :])   # (-1)^{m - n}
    full[..., b - 2::-1, :] = sign * np.conj(c[..., 1:, ::-1])        # G_{-m,-n} = (-1)^{m-n} conj G_{mn}
    return full * so3_full_mask(b)


@functools.lru_cache(maxsize=8)
def so3_full_mask(b: int) -> np.ndarray:
    l, m, n = np.meshgrid(np.arange(b), np.arange(-(b - 1), b), np.arange(-(b - 1), b), indexing="ij")
    mask = (np.abs(m) <= l) & (np.abs(n) <= l)
    mask.setflags(write=False)
    return mask


def rotate_so3(g, alpha: float, beta: float, gamma: float):
    """Rotate an SO(3) spectrum (..., b, b, 2b - 1, 2) by R = Rz(alpha) Ry(beta) Rz(gamma): the spectrum of
    R' -> f(R^-1 R'), i.e. G^l -> D^l(R) G^l (the convention of `rotate_alm`, on the first index; the m < 0
    rows come from realness). numpy or torch in (float64 arithmetic; not differentiable), same type out."""
    is_numpy = isinstance(g, np.ndarray)
    arr = np.asarray(g.detach().cpu().numpy() if not is_numpy else g, dtype=np.float64)
    b = arr.shape[-4]
    check_bandwidth(b)
    if arr.shape[-4:] != (b, b, 2 * b - 1, 2):
        raise ValueError(f"expected an SO(3) spectrum (..., b, b, 2b - 1, 2), got {arr.shape}")
    full = _full_rows(arr, b)
    ds = _wigner_d(b - 1, float(beta))
    out = np.zeros(arr.shape[:-1], dtype=complex)
    for l in range(b):
        k = np.arange(-l, l + 1)
        d = np.exp(-1j * k * alpha)[:, None] * ds[l] * np.exp(-1j * k * gamma)[None, :]
        s = slice(b - 1 - l, b + l)
        rows = np.einsum("mk,...kn->...mn", d, full[..., l, s, s])   # (..., 2l + 1, 2l + 1)
        out[..., l, :l + 1, s] = rows[..., l:, :]
    res = np.stack([out.real, out.imag], axis=-1)
    return res if is_numpy else torch.as_tensor(res, dtype=g.dtype, device=g.device)
