"""Spherical harmonic transforms on (partial) NESTED HEALPix maps, and Wigner small-d tables.

    from heal_swin import harmonics
    sht  = harmonics.RealSHT(nside, lmax, base_pixels=range(12), iterations=0)   # (..., N) -> (..., n_alm, 2)
    isht = harmonics.InverseRealSHT(nside, lmax, base_pixels=range(12))          # (..., n_alm, 2) -> (..., N)
    harmonics.memory_estimate(nside, lmax)   # bytes: tables, held (float64 originals too), construction peak
    harmonics.alm_size(lmax)                 # healpy.Alm.getsize(lmax)
    harmonics.alm_index(lmax, l, m)          # healpy.Alm.getidx(lmax, l, m)
    harmonics.legendre(lmax, theta)          # orthonormal lambda_lm(theta), (n_alm, len(theta)), float64
    harmonics.wigner_d(lmax, beta)           # [d^l(beta) for l <= lmax], d^l[m' + l, m + l] = d^l_{m'm}(beta)
    harmonics.rotate_alm(a, alpha, beta, gamma)   # ZYZ, active: f(R^-1 x), R = Rz(alpha) Ry(beta) Rz(gamma)
    harmonics.SO3Synthesis(b)   # SO(3) spectrum (..., b, b, 2b-1, 2) -> grid values (..., 2b, 12 nside_b^2)
    harmonics.SO3Analysis(b)    # grid values -> SO(3) spectrum (quadrature); grid: harmonics.so3_grid(b)

Conventions (healpy's): `a[..., i, 0]`, `a[..., i, 1]` are the real and imaginary parts of healpy's
`alm[i]`, i = healpy.Alm.getidx(lmax, l, m), m-major, 0 <= m <= l <= lmax; orthonormal complex spherical
harmonics with the Condon-Shortley phase, Y_lm = lambda_lm(cos theta) e^{i m phi}. A map over a partial
face set is a map on the whole sphere that is zero on the absent faces. Everything in the torch graph is
real arithmetic (matmul, gather, elementwise), so it exports to ONNX and runs in onnxruntime; tables are
built once in float64 by memoised pure functions and held as non-persistent buffers.

Functions on SO(3) (the S2CNN's feature maps) have spectra G^l_{mn} (m >= 0, padded to (b, b, 2b - 1, 2))
and live on a HEALPix x uniform-gamma grid: see `_so3`'s docstring for the layout and conventions.
"""

from ._scratch import cached_plan, release_scratch
from ._sht import InverseRealSHT, RealSHT, TableModule, available_memory, memory_estimate, table_bytes
from ._so3 import (SO3Analysis, SO3Synthesis, check_bandwidth, so3_grid, so3_grid_nside, so3_grid_shape, so3_spectrum_mask,
                   so3_spectrum_shape, so3_table_mib, rotate_so3)
from ._tables import alm_index, alm_size, legendre
from ._wigner import rotate_alm, wigner_d

__all__ = ["InverseRealSHT", "RealSHT", "SO3Analysis", "SO3Synthesis", "TableModule", "alm_index", "alm_size",
           "available_memory", "cached_plan", "memory_estimate", "release_scratch",
           "check_bandwidth", "legendre", "rotate_alm", "rotate_so3", "so3_grid", "so3_grid_nside", "so3_grid_shape", "so3_spectrum_mask",
           "so3_spectrum_shape", "so3_table_mib", "table_bytes", "wigner_d"]
