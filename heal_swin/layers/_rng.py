"""Cheap dropout masks from a seed.

Four 16-bit uniform integers come from each 64-bit draw of a generator seeded from torch's own
(so `torch.manual_seed` still makes runs reproducible); an element is kept when its integer is at
or above round(p·2^16) − 2^15, i.e. with probability 1 − p to within 2^-17. The same seed gives
the same mask again, so backward passes regenerate masks instead of keeping them.
"""

from __future__ import annotations

import torch

__all__ = ["_keep", "_seed"]


def _keep(shape, p: float, seed: int, device) -> torch.Tensor:
    """bool mask of `shape`, True with probability 1 − p."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    numel = 1
    for s in shape:
        numel *= s
    bits = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device)
    bits.random_(-2 ** 63, 2 ** 63 - 1, generator=g)
    return (bits.view(torch.int16)[:numel] >= int(round(p * 65536)) - 32768).view(shape)


def _seed(p: float, training: bool) -> int:
    """A fresh seed from torch's generator when dropout is active, else 0 (no dropout)."""
    return int(torch.randint(0, 2 ** 62, (1,))) if training and p > 0 else 0
