"""Dropout with cheap random bits.

`nn.Dropout` on a CPU draws one Bernoulli sample per element from a sequential generator, which
costs several times more than the matrix products of a window-attention block. Here the mask
comes from `_rng._mask` (16-bit integers from a fast generator seeded from torch's, so
`torch.manual_seed` still makes runs reproducible), and only the seed is kept for the backward
pass.
"""

from __future__ import annotations

import torch
from torch import nn

from ._rng import _mask, _seed

__all__ = ["Dropout", "dropout", "DropPath"]


class _DropoutFn(torch.autograd.Function):
    """Keeps a seed rather than the mask: the backward pass draws the same bits again."""

    @staticmethod
    def forward(ctx, x, p, seed):
        ctx.p, ctx.seed = p, seed
        return x * _mask(x.shape, p, seed, x.dtype, x.device, 1.0 / (1.0 - p))

    @staticmethod
    def backward(ctx, grad):
        return grad * _mask(grad.shape, ctx.p, ctx.seed, grad.dtype, grad.device, 1.0 / (1.0 - ctx.p)), None, None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Zero each element with probability p and scale the rest by 1/(1 − p) (training only)."""
    if not training or p <= 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    return _DropoutFn.apply(x, p, _seed(p, True))


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


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's residual branch with probability p and scale
    the kept ones by 1/(1 − p). x: (B, ...)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"

    def _mask(self, x):
        keep = 1.0 - self.drop_prob
        return x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep).div_(keep)

    def forward(self, x):
        if not self.training or self.drop_prob <= 0.0:
            return x
        return x * self._mask(x)

    def add_to(self, x, branch):
        """x + self(branch) in one pass (a residual connection)."""
        if not self.training or self.drop_prob <= 0.0:
            return x + branch
        return torch.addcmul(x, branch, self._mask(branch))
