"""numpy/torch dispatch for the grid functions.

The HEALPix index arithmetic is written once, in numpy. A function wrapped by `host_function`
also accepts torch tensors: they are moved to the host, the numpy code runs, and the results come
back as tensors on the device of the first tensor argument (integers as int64, floats in that
tensor's floating dtype, or float64 for integer inputs). Index tables are built once and cached, so
host round trips are not on a hot path.
"""

from __future__ import annotations

import functools

import numpy as np

try:  # torch is a hard dependency of the package, but the grid maths does not need it
    import torch
except ImportError:  # pragma: no cover
    torch = None


def _is_tensor(a) -> bool:
    return torch is not None and isinstance(a, torch.Tensor)


def _to_numpy(a):
    return a.detach().cpu().numpy() if _is_tensor(a) else a


def _scalarise(a):
    return a[()] if isinstance(a, np.ndarray) and a.ndim == 0 else a


def host_function(fn):
    """Decorator: run `fn` on numpy arrays; return torch tensors when given torch tensors."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        tensors = [a for a in (*args, *kwargs.values()) if _is_tensor(a)]
        if not tensors:
            return _map_outputs(fn(*args, **kwargs), _scalarise)
        device = tensors[0].device
        float_dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float64)
        out = fn(*(_to_numpy(a) for a in args), **{k: _to_numpy(v) for k, v in kwargs.items()})

        def back(a):
            a = np.asarray(a)
            if np.issubdtype(a.dtype, np.floating):
                return torch.as_tensor(a).to(device=device, dtype=float_dtype)
            if a.dtype == np.bool_:
                return torch.as_tensor(a).to(device=device)
            return torch.as_tensor(a.astype(np.int64)).to(device=device)

        return _map_outputs(out, back)

    return wrapper


def _map_outputs(out, f):
    if isinstance(out, tuple):
        return tuple(f(o) for o in out)
    return f(out)
