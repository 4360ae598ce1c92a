"""Depth regression: masked losses and the usual depth metrics.

Depth is metres along the ray; pixels that are not valid (outside the image, not finite) are
left out. The network may predict depth, log-depth or inverse depth (`target`); the loss compares
in that space and the metrics always in metres.

Metrics accumulate per-pixel sums over a whole split (AbsRel, SqRel, RMSE, RMSE-log, δ < 1.25^k),
so they are exact over the split and reduce over DDP ranks by summing one tensor.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["DepthLoss", "DepthMetrics", "to_target", "from_prediction", "METRICS"]

TARGETS = ("depth", "log", "inverse")
LOSSES = ("l1", "l2", "silog")
# The scalar figures of `DepthMetrics.summary()` that can select a checkpoint, with the direction
# that is better (errors down, δ-accuracies up).
METRICS = {"abs_rel": "min", "sq_rel": "min", "rmse": "min", "rmse_log": "min", "d1": "max", "d2": "max",
           "d3": "max"}


def to_target(depth: torch.Tensor, target: str) -> torch.Tensor:
    """Metres -> the space the network predicts in."""
    if target == "depth":
        return depth
    if target == "log":
        return torch.log(depth.clamp_min(1e-3))
    if target == "inverse":
        return 1.0 / depth.clamp_min(1e-3)
    raise ValueError(f"depth target={target!r} must be one of {TARGETS}")


def from_prediction(pred: torch.Tensor, target: str) -> torch.Tensor:
    """The network's output -> metres."""
    if target == "depth":
        return pred.clamp_min(1e-3)
    if target == "log":
        return torch.exp(pred.clamp(max=20.0))
    if target == "inverse":
        return 1.0 / pred.clamp_min(1e-6)
    raise ValueError(f"depth target={target!r} must be one of {TARGETS}")


class DepthLoss(nn.Module):
    """L1 / L2 / scale-invariant log (Eigen et al., with weight `silog_lambda`) over valid pixels.

    pred (B, 1, ...) or (B, ...) in the target space; depth (B, ...) metres; valid (B, ...) bool."""

    def __init__(self, kind: str = "l1", target: str = "log", silog_lambda: float = 0.85):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"depth loss={kind!r} must be one of {LOSSES}")
        if target not in TARGETS:
            raise ValueError(f"depth target={target!r} must be one of {TARGETS}")
        self.kind, self.target, self.silog_lambda = kind, target, float(silog_lambda)

    def forward(self, pred: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if pred.dim() == depth.dim() + 1:
            pred = pred[:, 0]
        valid = valid & torch.isfinite(depth) & (depth > 0)
        if not valid.any():
            return pred.sum() * 0.0  # keeps the graph (and DDP) alive on an empty batch
        p = pred.float()[valid]
        d = depth.float()[valid]
        if self.kind == "silog":
            g = torch.log(from_prediction(p, self.target)) - torch.log(d)
            return torch.sqrt((g**2).mean() - self.silog_lambda * g.mean() ** 2 + 1e-12)
        diff = p - to_target(d, self.target)
        return diff.abs().mean() if self.kind == "l1" else (diff**2).mean()


class DepthMetrics:
    """Accumulates AbsRel, SqRel, RMSE, RMSE-log and δ < 1.25, 1.25², 1.25³ over valid pixels.

    `update(pred_m, depth, valid)`: predicted and true depth in metres (same shape), valid bool."""

    _KEYS = ("n", "abs_rel", "sq_rel", "sq", "sq_log", "d1", "d2", "d3")

    def __init__(self, max_depth: float | None = None, device=None):
        self.max_depth = max_depth
        self.sums = torch.zeros(len(self._KEYS), dtype=torch.float64, device=device)

    def update(self, pred: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        pred = torch.as_tensor(pred).to(self.sums.device).double().reshape(-1)
        depth = torch.as_tensor(depth).to(self.sums.device).double().reshape(-1)
        keep = torch.isfinite(depth) & (depth > 0) & torch.isfinite(pred)
        if valid is not None:
            keep &= torch.as_tensor(valid).to(self.sums.device).reshape(-1).bool()
        if self.max_depth is not None:
            keep &= depth <= self.max_depth
        p, d = pred[keep].clamp_min(1e-3), depth[keep]
        ratio = torch.maximum(p / d, d / p)
        self.sums += torch.stack([
            torch.tensor(float(len(d)), dtype=torch.float64, device=d.device),
            ((p - d).abs() / d).sum(), ((p - d) ** 2 / d).sum(), ((p - d) ** 2).sum(),
            ((torch.log(p) - torch.log(d)) ** 2).sum(),
            (ratio < 1.25).sum().double(), (ratio < 1.25**2).sum().double(), (ratio < 1.25**3).sum().double(),
        ])

    def merge(self, other: "DepthMetrics") -> None:
        self.sums += other.sums.to(self.sums.device)

    def all_reduce(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.sums)

    def summary(self) -> dict:
        s = dict(zip(self._KEYS, self.sums.cpu().tolist()))
        n = s["n"]
        if n == 0:
            return {k: float("nan") for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "d1", "d2", "d3")} | {"pixels": 0}
        return {"abs_rel": s["abs_rel"] / n, "sq_rel": s["sq_rel"] / n, "rmse": math.sqrt(s["sq"] / n),
                "rmse_log": math.sqrt(s["sq_log"] / n), "d1": s["d1"] / n, "d2": s["d2"] / n, "d3": s["d3"] / n,
                "pixels": int(n)}
