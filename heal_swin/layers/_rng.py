"""Cheap dropout masks from a seed.

A mask element is kept when a uniform 16-bit integer is at or above round(p·2^16) − 2^15, i.e. with
probability 1 − p to within 2^-17. On the CPU the integers come from numpy's SFC64 generator (four
per 64-bit draw; about 2.4× faster than torch's Mersenne twister and 12× faster than
`bernoulli_`), in chunks small enough that the draws, the comparison and the output value of a
chunk stay in the core's cache, large masks in two halves on two threads (numpy releases the
GIL). Elsewhere the integers come from torch's generator on the device. Either is seeded from
torch's own generator, so `torch.manual_seed` still makes runs reproducible, and the same seed
gives the same mask again: backward passes regenerate large masks instead of keeping them.

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


def _penalty(shape, p: float, seed: int, dtype: torch.dtype, device, value: float = -1e30) -> torch.Tensor:
    """0 where `_mask` with the same arguments keeps an element, and `value` where it drops it."""
    return _fill(shape, p, seed, dtype, device, 0.0, value)


def _fill(shape, p, seed, dtype, device, kept, dropped):
    """`kept` with probability 1 − p and `dropped` otherwise, from the seed's draws; one of the
    two values is 0."""
    device = torch.device(device)
    out = torch.empty(shape, dtype=dtype, device=device)
    threshold = int(round(p * 65536)) - 32768
    if not -32768 < threshold <= 32767:  # p below 2^-17 or above 1 − 2^-17: all kept or all dropped
        return out.fill_(kept if threshold <= -32768 else dropped)
    flat = out.view(-1)
    if device.type == "cpu" and dtype in _NUMPY:
        dest, value = _NUMPY[dtype](flat, kept or dropped)
        compare = np.greater_equal if kept else np.less
        jobs = [(seed, stream, dest[start:stop], threshold, compare, value)
                for stream, start, stop in _halves(flat.numel())]
        later = _helper().submit(_fill_numpy, *jobs[1]) if len(jobs) > 1 else None
        _fill_numpy(*jobs[0])
        if later is not None:
            later.result()
        return out
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
    return out


def _fill_numpy(seed, stream, dest, threshold, compare, value):
    """dest = value where compare(draw, threshold), else 0, chunk by chunk from one stream."""
    bitgen = np.random.SFC64([seed, stream])
    flags = np.empty(min(_CHUNK, dest.size), np.bool_)
    for start in range(0, dest.size, _CHUNK):
        n = min(_CHUNK, dest.size - start)  # a multiple of 4 but in the stream's last chunk
        compare(bitgen.random_raw((n + 3) // 4).view(np.int16)[:n], threshold, out=flags[:n])
        np.multiply(flags[:n], value, out=dest[start:start + n])


def _bf16_bits(flat: torch.Tensor, value: float):
    """bfloat16 memory as int16, and the bit pattern of `value` (numpy has no bfloat16)."""
    return flat.view(torch.int16).numpy(), np.int16(int(torch.tensor(value, dtype=torch.bfloat16).view(torch.int16)))


# the CPU output's memory as a numpy array, and the value in its dtype
_NUMPY = {
    torch.bfloat16: _bf16_bits,
    torch.float16: lambda flat, value: (flat.numpy(), np.float16(value)),
    torch.float32: lambda flat, value: (flat.numpy(), np.float32(value)),
    torch.float64: lambda flat, value: (flat.numpy(), np.float64(value)),
}


def _seed(p: float, training: bool) -> int:
    """A fresh seed from torch's generator when dropout is active, else 0 (no dropout)."""
    return int(torch.randint(0, 2 ** 62, (1,))) if training and p > 0 else 0
