"""Dropout with cheap random bits.

`nn.Dropout` on a CPU draws one Bernoulli sample per element from a sequential generator, which
costs several times more than the matrix products of a window-attention block. Here four 16-bit
uniform integers come from each 64-bit draw of torch's own generator (so `torch.manual_seed`
still makes runs reproducible); an element is kept when its integer is at or above round(p·2^16),
i.e. with probability 1 − p to within 2^-17. Only a bool mask is kept for the backward pass.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Dropout", "dropout"]


def _keep_mask(shape, p: float, device) -> torch.Tensor:
    numel = 1
    for s in shape:
        numel *= s
    bits = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(-2 ** 63, 2 ** 63 - 1)
    threshold = int(round(p * 65536)) - 32768
    return (bits.view(torch.int16)[:numel] >= threshold).view(shape)


class _DropoutFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        keep = _keep_mask(x.shape, p, x.device)
        scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, x, 0).mul_(scale)  # where: far cheaper than a bool product

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0).mul_(ctx.scale), None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Zero each element with probability p and scale the rest by 1/(1 − p) (training only)."""
    if not training or p <= 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    return _DropoutFn.apply(x, p)


class Dropout(nn.Module):
    """Drop-in for `nn.Dropout` using `dropout` above."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p={p} must lie in [0, 1]")
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x):
        return dropout(x, self.p, self.training)
