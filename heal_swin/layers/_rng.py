"""Cheap dropout masks from a seed.

A mask element is kept when a uniform 16-bit integer is at or above round(p·2^16) − 2^15, i.e. with
probability 1 − p to within 2^-17. On the CPU the integers come from numpy's SFC64 generator (four
per 64-bit draw; about 2.4× faster than torch's Mersenne twister and 12× faster than
`bernoulli_`), in chunks small enough that the draws, the comparison and the output value of a
chunk stay in the core's cache, large masks in two halves on two threads when torch may use
more than one (numpy releases the GIL). Elsewhere the integers come from torch's generator on
the device. Either is seeded from torch's own generator, so `torch.manual_seed` still makes runs
reproducible, and the same seed gives the same mask again: backward passes regenerate large
masks instead of keeping them.

Masks hold 0 and a value in the compute dtype, usually the dropout's 1/(1 − p): multiplying by
them is several times faster on CPUs than `torch.where` or `masked_fill` with a bool mask, and
the scale costs no pass of its own. `_penalty` gives the same draws as 0 (kept) or a large
negative value (dropped), to add before an activation that maps it to 0 with zero gradient
(GELU), so that the activation applies the dropout and the backward pass needs no mask.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

__all__ = ["_mask", "_penalty", "_seed"]


_SPLIT_WORDS = 1 << 16  # from this many 64-bit words on, two threads fill the halves of a mask
_CHUNK = 1 << 16  # 16-bit draws per chunk on the CPU: draws, flags and output stay in the L2 cache
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _helper() -> ThreadPoolExecutor:
    """One helper thread, created per process (a forked child cannot use its parent's)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="heal_swin_rng"))
    return _pool[1]


def _halves(numel: int) -> list[tuple[int, int, int]]:
    """(stream, start, stop) of the elements drawn from SFC64([seed, stream]): one stream, or two
    halves (a multiple of four elements in the first) from `_SPLIT_WORDS` 64-bit words on."""
    words = (numel + 3) // 4
    if words < _SPLIT_WORDS:
        return [(0, 0, numel)]
    return [(0, 0, 4 * (words // 2)), (1, 4 * (words // 2), numel)]


def _bits(numel: int, seed: int, device: torch.device) -> list[torch.Tensor]:
    """`numel` uniform int16 values determined by `seed` (and `numel`), in one or two pieces."""
    if device.type == "cpu":
        return [torch.from_numpy(np.random.SFC64([seed, stream]).random_raw((stop - start + 3) // 4)
                                 .view(np.int16)[:stop - start]) for stream, start, stop in _halves(numel)]
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    words = (numel + 3) // 4
    raw = torch.empty(words, dtype=torch.int64, device=device).random_(-2 ** 63, 2 ** 63 - 1, generator=g)
    return [raw.view(torch.int16)[:numel]]


def _mask(shape, p: float, seed: int, dtype: torch.dtype, device, value: float = 1.0) -> torch.Tensor:
    """A tensor of `shape` and `dtype` holding `value` (rounded to `dtype`) with probability 1 − p
    and 0 otherwise; `value` = 1/(1 − p) makes it a complete dropout multiplier."""
    return _fill(shape, p, seed, dtype, device, value, 0.0)


def _penalty(shape, p: float, seed: int, dtype: torch.dtype, device, value: float = -1e30,
             base: torch.Tensor | None = None) -> torch.Tensor:
    """`value` where `_mask` with the same arguments drops an element, and 0 where it keeps it; with
    `base` (a vector along the last axis, e.g. a linear layer's bias) added everywhere (where
    dropped, a penalty of −1e30 absorbs it)."""
    return _fill(shape, p, seed, dtype, device, 0.0, value, base)


def _fill(shape, p, seed, dtype, device, kept, dropped, base=None):
    """`kept` with probability 1 − p and `dropped` otherwise, from the seed's draws, plus `base`
    along the last axis. One of the two values is 0; with `base`, the kept one."""
    device = torch.device(device)
    out = torch.empty(shape, dtype=dtype, device=device)
    threshold = int(round(p * 65536)) - 32768
    flat = out.view(-1)
    if -32768 < threshold <= 32767 and device.type == "cpu" and dtype in _NUMPY:
        dest = _as_numpy(flat)
        if base is None:
            fill = (_numpy_value(kept or dropped, dtype), None)
        else:  # dropped − base where dropped, and + base everywhere, in the dtype's arithmetic
            row = _as_numpy(base.detach().to(device=device, dtype=dtype).reshape(-1).contiguous())
            fill = (np.subtract(_numpy_value(dropped, dtype), row), row)  # (bfloat16: bit patterns, wrapping)
        compare = np.greater_equal if kept else np.less
        jobs = [(seed, stream, dest[start:stop], start, threshold, compare, *fill)
                for stream, start, stop in _halves(flat.numel())]
        if len(jobs) > 1 and torch.get_num_threads() > 1:  # the halves side by side
            later = _helper().submit(_fill_numpy, *jobs[1])
            _fill_numpy(*jobs[0])
            later.result()
        else:  # one thread allowed: the same streams one after the other
            for job in jobs:
                _fill_numpy(*job)
        return out
    if not -32768 < threshold <= 32767:  # p below 2^-17 or above 1 − 2^-17: all kept or all dropped
        out.fill_(kept if threshold <= -32768 else dropped)
    else:
        start = 0
        for piece in _bits(flat.numel(), seed, device):
            dest = flat[start:start + piece.numel()]
            if kept:
                torch.ge(piece, threshold, out=dest)
                if kept != 1:
                    dest.mul_(kept)
            else:
                torch.lt(piece, threshold, out=dest).mul_(dropped)
            start += piece.numel()
    if base is not None:
        out.add_(base.to(dtype))
    return out


def _fill_numpy(seed, stream, dest, offset, threshold, compare, value, base):
    """dest = value where compare(draw, threshold), else 0, plus `base` along rows (then `value`
    is a row too), chunk by chunk from one stream; dest starts `offset` elements into the rows."""
    bitgen = np.random.SFC64([seed, stream])
    flags = np.empty(min(_CHUNK, dest.size), np.bool_)
    if base is not None:  # rows repeated beyond a chunk, so that any phase slices contiguously
        row = base.size
        reps = -(-(_CHUNK + row) // row)
        value, base = np.tile(value, reps), np.tile(base, reps)
    for start in range(0, dest.size, _CHUNK):
        n = min(_CHUNK, dest.size - start)  # a multiple of 4 but in the stream's last chunk
        compare(bitgen.random_raw((n + 3) // 4).view(np.int16)[:n], threshold, out=flags[:n])
        out = dest[start:start + n]
        if base is None:
            np.multiply(flags[:n], value, out=out)
        else:
            phase = (offset + start) % row
            np.multiply(flags[:n], value[phase:phase + n], out=out)
            np.add(out, base[phase:phase + n], out=out)


def _as_numpy(flat: torch.Tensor) -> np.ndarray:
    """A CPU tensor's memory as numpy (bfloat16, which numpy lacks, as its int16 bit patterns)."""
    return flat.view(torch.int16).numpy() if flat.dtype == torch.bfloat16 else flat.numpy()


def _numpy_value(value: float, dtype: torch.dtype):
    """`value` rounded to `dtype`, as numpy holds it (bfloat16: the int16 bit pattern)."""
    if dtype == torch.bfloat16:
        return np.int16(int(torch.tensor(value, dtype=dtype).view(torch.int16)))
    return _NUMPY[dtype](value)


# CPU dtypes that numpy fills
_NUMPY = {torch.bfloat16: None, torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def _seed(p: float, training: bool) -> int:
    """A fresh seed from torch's generator when dropout is active, else 0 (no dropout)."""
    return int(torch.randint(0, 2 ** 62, (1,))) if training and p > 0 else 0
