"""Token-wise feed-forward network."""

from __future__ import annotations

import torch
from torch import nn

from ._dropout import Dropout
from ._fused import mlp_gelu

__all__ = ["Mlp"]


class Mlp(nn.Module):
    """Linear(C → hidden) → GELU (exact erf) → Linear(hidden → C), dropout after each linear.

    x: (..., C) -> (..., out_features or C).
    """

    def __init__(self, in_features: int, hidden_features: int | None = None,
                 out_features: int | None = None, drop: float = 0.0):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = Dropout(drop)

    def forward(self, x):
        if torch.is_grad_enabled():  # training: keep only x and fc1's output (see _fused)
            return mlp_gelu(x, self.fc1, self.fc2, self.drop.p, self.training, p_out=self.drop.p)
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
