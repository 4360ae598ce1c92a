"""Token-wise feed-forward network."""

from __future__ import annotations

import torch
from torch import nn

from ._dropout import Dropout
from ._fused import mlp_gelu

__all__ = ["Mlp"]


class Mlp(nn.Module):
    """Linear(C → hidden) → act → Linear(hidden → C), dropout after the activation and the output.

    x: (..., C) -> (..., out_features or C). `act_layer`: the activation's class (exact-erf GELU
    by default). With gradients, `fused=True` and exact GELU, training runs `_fused.mlp_gelu`,
    which keeps only x and fc1's output for the backward pass; any other activation, or
    `fused=False`, trains with plain autograd (the reference the fused kernel is tested against).
    """

    def __init__(self, in_features: int, hidden_features: int | None = None,
                 out_features: int | None = None, drop: float = 0.0, act_layer: type[nn.Module] = nn.GELU,
                 fused: bool = True):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = Dropout(drop)
        self.fused = bool(fused)

    @property
    def runs_fused(self) -> bool:
        """Whether training takes the fused kernel (exact GELU and `fused`)."""
        return self.fused and type(self.act) is nn.GELU and self.act.approximate == "none"

    def extra_repr(self) -> str:
        return f"fused={self.runs_fused}"

    def forward(self, x):
        if torch.is_grad_enabled() and self.runs_fused:  # training: keep only x and fc1's output (see _fused)
            return mlp_gelu(x, self.fc1, self.fc2, self.drop.p, self.training, p_out=self.drop.p)
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
