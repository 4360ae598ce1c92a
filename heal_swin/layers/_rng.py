"""Cheap dropout masks from a seed.

A mask element is kept when a uniform 16-bit integer is at or above round(p·2^16) − 2^15, i.e. with
probability 1 − p to within 2^-17. On the CPU the integers come from numpy's SFC64 generator (four
per 64-bit draw; about 2.4× faster than torch's Mersenne twister and 12× faster than
`bernoulli_`; large masks are drawn in two halves on two threads), elsewhere from torch's
generator on the device. Either is seeded from torch's own generator, so `torch.manual_seed`
still makes runs reproducible, and the same seed gives the same mask again: backward passes
regenerate large masks instead of keeping them.

Masks are returned as 0/1 values in the compute dtype: multiplying by them is several times faster
on CPUs than `torch.where` or `masked_fill` with a bool mask. `_penalty` gives the same draws as
0 (kept) or a large negative value (dropped), to add before an activation that maps it to 0 with
zero gradient (GELU), so that the activation applies the dropout and the backward pass needs no mask.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

__all__ = ["_mask", "_penalty", "_seed"]


_SPLIT_WORDS = 1 << 16  # from this many 64-bit words on, two threads fill the halves of a mask
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _helper() -> ThreadPoolExecutor:
    """One helper thread, created per process (a forked child cannot use its parent's)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="heal_swin_rng"))
    return _pool[1]


def _words(seed: int, part: int, n: int) -> np.ndarray:
    return np.random.SFC64([seed, part]).random_raw(n)


def _bits(numel: int, seed: int, device: torch.device) -> list[torch.Tensor]:
    """`numel` uniform int16 values determined by `seed` (and `numel`), in one or two pieces."""
    words = (numel + 3) // 4
    if device.type == "cpu":
        if words < _SPLIT_WORDS:
            pieces = [_words(seed, 0, words)]
        else:  # numpy releases the GIL while it fills, so the halves are drawn in parallel
            half = words // 2
            later = _helper().submit(_words, seed, 1, words - half)
            pieces = [_words(seed, 0, half), later.result()]
        out = [torch.from_numpy(w.view(np.int16)) for w in pieces]
        padding = 4 * words - numel  # the last word's unused 16-bit values
        if padding:
            out[-1] = out[-1][:-padding]
        return out
    g = torch.Generator(device=device)
    g.manual_seed(seed)
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
    numel = 1
    for s in shape:
        numel *= s
    out = torch.empty(shape, dtype=dtype, device=device)
    threshold = int(round(p * 65536)) - 32768
    if not -32768 < threshold <= 32767:  # p below 2^-17 or above 1 − 2^-17: all kept or all dropped
        return out.fill_(kept if threshold <= -32768 else dropped)
    flat, start = out.view(-1), 0
    bits = device.type == "cpu" and dtype in (torch.bfloat16, torch.float16)
    if bits:  # on CPUs a comparison that writes a 16-bit float is 3× slower than three int16
        # passes: clamp to {threshold − 1, threshold}, shift to {0, 1} (kept) or {−1, 0} (dropped),
        # and multiply by the bit pattern of the non-zero value straight into the output's memory
        flat = flat.view(torch.int16)
        pattern = int(torch.tensor(kept or dropped, dtype=dtype).view(torch.int16))
        shift, factor = (threshold - 1, pattern) if kept else (threshold, -pattern)
    for piece in _bits(numel, seed, device):
        dest = flat[start:start + piece.numel()]
        if bits:
            torch.mul(piece.clamp_(threshold - 1, threshold).sub_(shift), factor, out=dest)
        elif kept:
            torch.ge(piece, threshold, out=dest)
            if kept != 1:
                dest.mul_(kept)
        else:
            torch.lt(piece, threshold, out=dest).mul_(dropped)
        start += piece.numel()
    return out


def _seed(p: float, training: bool) -> int:
    """A fresh seed from torch's generator when dropout is active, else 0 (no dropout)."""
    return int(torch.randint(0, 2 ** 62, (1,))) if training and p > 0 else 0
