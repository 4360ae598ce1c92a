"""Equivariance checks shared by the equivariant backbones' tests (gauge CNN, S2CNN), e3nn style.

    err = assert_equivariant(fn, act_in, act_out, x)          # f(g·x) == g·f(x), returns the error

`act_in` / `act_out` apply one explicit group element to an input / output; the check runs in the
dtype of `x` (float64 for exactness tests) and compares with a tolerance per dtype unless given.
"""

from __future__ import annotations

import torch

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}


def equivariance_error(fn, act_in, act_out, x) -> float:
    """max |f(g·x) − g·f(x)| / max |f(x)|: the relative error of equivariance at x."""
    with torch.no_grad():
        y = fn(x)
        gy = act_out(y)
        fgx = fn(act_in(x))
    scale = y.abs().max().clamp_min(torch.finfo(y.dtype).tiny)
    return ((fgx - gy).abs().max() / scale).item()


def assert_equivariant(fn, act_in, act_out, x, tol: float | None = None) -> float:
    """Assert f(act_in(x)) == act_out(f(x)) up to `tol` (default per dtype: 1e-10 in float64,
    1e-4 in float32) relative to the largest output; returns the measured error."""
    tol = TOLERANCE[x.dtype] if tol is None else tol
    err = equivariance_error(fn, act_in, act_out, x)
    assert err <= tol, f"equivariance error {err:.3e} > {tol:.1e}"
    return err
