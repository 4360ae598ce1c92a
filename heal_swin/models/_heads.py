"""Task heads: per-pixel predictions from a decoder's token features.

A head expands each token into the pixels it stands for (its `expand` nested children, or a
p × p block on a flat grid) and projects every pixel with a 1 × 1 convolution:
segmentation → `num_classes` logits, depth → 1 channel (+ a log-variance channel when asked).
"""

from __future__ import annotations

import numbers

import torch.nn.functional as F
from torch import nn

from ..data import TASKS
from ..layers import FlatPatchExpand, NestedPatchExpand

__all__ = ["PixelHead", "create_head", "head_channels"]


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


def head_channels(task: str, num_classes: int, log_variance: bool = False) -> int:
    """The output channels of a task's head, or ValueError naming the value and the rule:
    segmentation: `num_classes` (a positive integer); depth: 1, plus a log-variance channel if asked
    (num_classes is not used)."""
    if task == "segmentation":
        if log_variance:
            raise ValueError("log_variance=True needs task='depth'")
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r} must be a positive integer (the segmentation "
                             "classes)")
        return int(num_classes)
    if task == "depth":
        return 2 if log_variance else 1
    raise ValueError(f"task={task!r} must be one of {TASKS}")


def create_head(task: str, in_chs: int, num_classes: int, expand: int, layout: str = "nested",
                log_variance: bool = False, bias: bool = False) -> PixelHead:
    """Segmentation: `num_classes` channels; depth: 1 channel, plus log-variance if asked."""
    return PixelHead(in_chs, head_channels(task, num_classes, log_variance), expand, layout, bias)
