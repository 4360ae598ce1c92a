"""Task heads: per-pixel predictions from a decoder's token features, or one per sample.

A pixel head expands each token into the pixels it stands for (its `expand` nested children, or a
p × p block on a flat grid) and projects every pixel with a 1 × 1 convolution:
segmentation → `num_classes` logits, depth → 1 channel (+ a log-variance channel when asked).
A pooled head (classification) pools the encoder's bottleneck map over its whole grid (mean and max;
a classifier builds no decoder) and projects it to `num_classes` logits: invariant to every permutation
of the pixels, so a backbone whose bottleneck is equivariant to a grid symmetry gives class scores
invariant to it.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from ..data import TASKS
from ..layers import FlatPatchExpand, NestedPatchExpand

__all__ = ["PixelHead", "PooledHead", "create_head", "head_channels"]


class PixelHead(nn.Module):
    """layout "nested": x (B, C, N) -> (B, out_chs, N·expand);
    layout "flat": x (B, C, H, W) -> (B, out_chs, H·expand, W·expand)."""

    def __init__(self, in_chs: int, out_chs: int, expand: int = 1, layout: str = "nested",
                 bias: bool = False):
        super().__init__()
        if layout not in ("nested", "flat"):
            raise ValueError(f"layout={layout!r} must be 'nested' or 'flat'")
        self.layout, self.out_chs = layout, out_chs
        if expand == 1:
            self.expand = nn.Identity()
        elif layout == "nested":
            self.expand = NestedPatchExpand(in_chs, children=expand, dim_scale=expand)
        else:
            self.expand = FlatPatchExpand(in_chs, scale=expand, dim_scale=expand * expand)
        conv = nn.Conv1d if layout == "nested" else nn.Conv2d
        self.proj = conv(in_chs, out_chs, kernel_size=1, bias=bias)

    def forward(self, x):
        # the 1 × 1 convolution as a matrix product on channels-last pixels: no full-size transposes
        w = self.proj.weight.reshape(self.out_chs, -1)
        if self.layout == "nested":
            return F.linear(self.expand(x.transpose(1, 2)), w, self.proj.bias).transpose(1, 2).contiguous()
        y = F.linear(self.expand(x.permute(0, 2, 3, 1)), w, self.proj.bias)
        return y.permute(0, 3, 1, 2).contiguous()


class PooledHead(nn.Module):
    """One prediction per sample: the features pooled over every pixel, then a linear map.
    layout "nested": x (B, C, N) -> (B, out_chs); "flat": x (B, C, H, W) -> (B, out_chs).

    `pool`: "mean" (on the sphere the mean over HEALPix pixels, equal areas, is the integral over the
    input's faces), "max", or "meanmax" (the default: both, side by side, 2·C features). Every backbone
    ends in a per-sample GroupNorm and ReLU, which fix each channel's mean over the map; the mean alone then
    keeps little but the shape of the distribution, and on digits that cover a few percent of the sphere it
    did not learn at all in a few hundred steps, where mean and max together learn (bench/README.md, "The
    paper's controls"). Any of the three is invariant to every permutation of the pixels. Backbones give it
    their bottleneck (more channels, a receptive field of the whole digit): pooled after the decoder
    instead, the gauge CNN's 8 invariant fields did not learn the digits' classes (same section)."""

    POOLS = ("mean", "max", "meanmax")

    def __init__(self, in_chs: int, out_chs: int, layout: str = "nested", bias: bool = True, pool: str = "meanmax"):
        super().__init__()
        if layout not in ("nested", "flat"):
            raise ValueError(f"layout={layout!r} must be 'nested' or 'flat'")
        if pool not in self.POOLS:
            raise ValueError(f"pool={pool!r} must be one of {self.POOLS}")
        self.layout, self.out_chs, self.pool = layout, out_chs, pool
        self.proj = nn.Linear(in_chs * (2 if pool == "meanmax" else 1), out_chs, bias=bias)

    def extra_repr(self) -> str:
        return f"pool={self.pool}"

    def forward(self, x):
        x = x.flatten(2)                                   # (B, C, pixels): nested maps and flat images alike
        if self.pool == "mean":
            return self.proj(x.mean(-1))
        if self.pool == "max":
            return self.proj(x.amax(-1))
        return self.proj(torch.cat([x.mean(-1), x.amax(-1)], dim=1))


def head_channels(task: str, num_classes: int, log_variance: bool = False) -> int:
    """The output channels of a task's head, or ValueError naming the value and the rule:
    segmentation and classification: `num_classes` (a positive integer); depth: 1, plus a
    log-variance channel if asked (num_classes is not used)."""
    if task in ("segmentation", "classification"):
        if log_variance:
            raise ValueError("log_variance=True needs task='depth'")
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r} must be a positive integer (the {task} classes)")
        return int(num_classes)
    if task == "depth":
        return 2 if log_variance else 1
    raise ValueError(f"task={task!r} must be one of {TASKS}")


def create_head(task: str, in_chs: int, num_classes: int, expand: int, layout: str = "nested",
                log_variance: bool = False, bias: bool = False) -> nn.Module:
    """Segmentation: `num_classes` channels per pixel; depth: 1 channel, plus log-variance if asked;
    classification: `PooledHead`, `num_classes` logits per sample (always with a bias)."""
    channels = head_channels(task, num_classes, log_variance)
    if task == "classification":
        return PooledHead(in_chs, channels, layout)
    return PixelHead(in_chs, channels, expand, layout, bias)
