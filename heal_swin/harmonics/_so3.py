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
from ._sht import _Transform
from ._tables import _ring_groups
from ._wigner import _wigner_d

__all__ = ["SO3Analysis", "SO3Synthesis", "check_bandwidth", "so3_grid", "so3_grid_nside", "so3_spectrum_mask",
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


def so3_grid(b: int):
    """Euler angles of the grid of bandwidth b: alpha (Npix,), beta (Npix,) per NESTED pixel, gamma (2b,);
    float64. (A transform built with grid=g uses so3_grid(g).)"""
    b = check_bandwidth(b)
    nside = so3_grid_nside(b)
    theta, phi = grid.pix2ang(nside, np.arange(grid.nside2npix(nside)), nest=True)
    return np.asarray(phi, dtype=np.float64), np.asarray(theta, dtype=np.float64), 2 * np.pi * np.arange(2 * b) / (2 * b)


@functools.lru_cache(maxsize=8)
def _ring_wigner(b: int, nside: int) -> np.ndarray:
    """d^l_{mn}(theta_r) as (m, n + b - 1, l, r) over the rings of HEALPix at `nside` in the order the SHT's
    Fourier chunks emit them; zero outside the spectrum mask. Float64."""
    rings = _ring_groups(nside)[1]
    theta = grid.ring_info(nside, rings)[2]
    out = np.zeros((b, 2 * b - 1, b, rings.size))
    for r, beta in enumerate(theta):
        ds = _wigner_d(b - 1, float(beta))
        for l in range(b):
            out[:l + 1, b - 1 - l:b + l, l, r] = ds[l][l:, :]          # rows m = 0..l, columns n = -l..l
    out = out.reshape(b * (2 * b - 1), b, rings.size)
    out.setflags(write=False)
    return out


def _gamma_dft(b: int, sign: int, n_gamma: int) -> np.ndarray:
    """Real matrix of the complex sum_x v_x e^{sign i n gamma_k}. Synthesis (n -> k, sign +1): (2N, 2K), rows
    (re/im, n), columns (k, re/im); analysis (k -> n, sign -1): (2K, 2N), rows (k, re/im), columns (re/im, n).
    The gamma index sits next to re/im on the side of the grid values, as the ring DFT lays them out."""
    n = np.arange(-(b - 1), b)
    gamma = 2 * np.pi * np.arange(n_gamma) / n_gamma
    ang = np.outer(n, gamma) if sign > 0 else np.outer(gamma, n)        # (inputs, outputs)
    c, s = np.cos(ang), sign * np.sin(ang)
    out = np.block([[c, s], [-s, c]])                                   # rows (re/im, in), columns (re/im, out)
    p, q = ang.shape
    if sign > 0:
        out = out.reshape(2 * p, 2, q).transpose(0, 2, 1).reshape(2 * p, 2 * q)
    else:
        out = out.reshape(2, p, 2 * q).transpose(1, 0, 2).reshape(2 * p, 2 * q)
    out = np.ascontiguousarray(out)
    out.setflags(write=False)
    return out


class _SO3Transform(_Transform):
    def __init__(self, b: int, grid: int | None = None, synthesis: bool = True):
        self.b = check_bandwidth(b)
        self.grid = self.b if grid is None else check_bandwidth(grid, "grid")
        if self.grid < self.b:
            raise ValueError(f"grid={grid} must be >= the bandwidth {self.b}: the grid of a smaller bandwidth "
                             "cannot hold the function")
        super().__init__(so3_grid_nside(self.grid), self.b - 1, range(12), legendre=False,
                         analysis=not synthesis, synthesis=synthesis)
        self.n_gamma = 2 * self.grid
        self.n_rings = 4 * self.nside - 1
        self._table("wigner", _ring_wigner(self.b, self.nside))         # (M*N, L, R)

    def extra_repr(self) -> str:
        return f"bandwidth={self.b}, grid nside={self.nside}, gamma points={self.n_gamma}"


class SO3Synthesis(_SO3Transform):
    """SO(3) spectrum (..., b, b, 2b - 1, 2) -> values on the grid (..., 2b, 12 nside^2) (module docstring).
    f(R) = sum G^l_{mn} conj(D^l_{mn}(R)), evaluated exactly; differentiable, exports to ONNX.
    `grid`: evaluate on the grid of a larger (even) bandwidth instead, (..., 2 grid, 12 nside_grid^2), so
    that layers of different bandwidths share one sampling."""

    def __init__(self, b: int, grid: int | None = None):
        super().__init__(b, grid)
        self._table("dft", _gamma_dft(self.b, +1, self.n_gamma))

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        b, n = self.b, 2 * self.b - 1
        if g.shape[-4:] != (b, b, n, 2):
            raise ValueError(f"expected an SO(3) spectrum (..., {b}, {b}, {n}, 2) for bandwidth {b}, "
                             f"got {tuple(g.shape)}")
        lead = g.shape[:-4]
        g = g.reshape(-1, b, b, n, 2)
        nb, r, k = g.shape[0], self.n_rings, self.n_gamma
        # H_r(m, n) = sum_l d^l_{mn}(beta_r) G^l_{mn}: one matmul per (m, n) over l
        x = g.permute(2, 3, 0, 4, 1).reshape(b * n, 2 * nb, b)
        h = torch.bmm(x, self._t("wigner", g))                              # (M N, 2B, R)
        # F_r(m, gamma_k) = sum_n H_r(m, n) e^{i n gamma_k}: one matmul, rows (ring, map, m)
        h = h.reshape(b, n, nb, 2, r).permute(4, 2, 0, 3, 1).reshape(r * nb * b, 2 * n)
        f = torch.matmul(h, self._t("dft", g)).reshape(r, nb, b, k, 2)
        # f(alpha, beta_r, gamma_k) = sum_m w_m Re(e^{i m alpha} F_r(m, gamma_k)): the SHT's ring stages,
        # every (map, gamma) a map on the rings
        f = f.permute(0, 1, 3, 4, 2).reshape(r, nb * k, 2 * b)
        rings = self._fourier_adj(f, nb * k)
        return self._from_rings(rings, nb * k).reshape(*lead, k, self.n_pix)


class SO3Analysis(_SO3Transform):
    """Values on the grid (..., 2b, 12 nside^2) -> SO(3) spectrum (..., b, b, 2b - 1, 2) by quadrature with
    equal weights (module docstring); the adjoint of SO3Synthesis up to the quadrature weights. `grid`: as
    in SO3Synthesis, the values live on the grid of that bandwidth."""

    def __init__(self, b: int, grid: int | None = None):
        super().__init__(b, grid, synthesis=False)
        self._table("dft", _gamma_dft(self.b, -1, self.n_gamma))
        l = np.arange(self.b, dtype=np.float64)
        self._table("weight", (2 * l + 1) / (8 * np.pi ** 2) * (4 * np.pi / self.n_pix) * (2 * np.pi / self.n_gamma))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        b, n, k = self.b, 2 * self.b - 1, self.n_gamma
        if f.shape[-2:] != (k, self.n_pix):
            raise ValueError(f"expected values on the SO(3) grid (..., {k}, {self.n_pix}) for bandwidth {b}, "
                             f"got {tuple(f.shape)}")
        lead = f.shape[:-2]
        f = f.reshape(-1, self.n_pix)
        nb, r = f.shape[0] // k, self.n_rings
        # F_r(m, gamma_k) = sum_j f e^{-i m alpha_j}, then X_r(m, n) = sum_k F e^{-i n gamma_k}
        x = self._fourier_fwd(self._to_rings(f), nb * k)                    # (R, B K, 2M): (k, re/im, m)
        x = x.reshape(r, nb, 2 * k, b).transpose(2, 3).reshape(r * nb * b, 2 * k)
        x = torch.matmul(x, self._t("dft", f)).reshape(r, nb, b, 2, n)
        # G^l_{mn} = w_l sum_r d^l_{mn}(beta_r) X_r(m, n)
        x = x.permute(2, 4, 1, 3, 0).reshape(b * n, 2 * nb, r)
        g = torch.bmm(x, self._t("wigner", f).transpose(1, 2))              # (M N, 2B, L)
        g = g * self._t("weight", f)
        return g.reshape(b, n, nb, 2, b).permute(2, 4, 0, 1, 3).reshape(*lead, b, b, n, 2)


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
