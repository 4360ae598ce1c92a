"""Patch embedding, merging and expansion on the nested HEALPix sequence and on flat images.

Nested: four consecutive NESTED indices are the four children of one coarser pixel, so merging
and expanding are reshapes of the token sequence (children consecutive, child p's channels at
p·C … (p+1)·C − 1). Flat: the same on a (B, H, W, C) grid with p × p pixel blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NestedPatchEmbed", "NestedPatchMerge", "NestedPatchExpand", "FlatPatchExpand"]


class NestedPatchEmbed(nn.Module):
    """(B, C_in, N) -> (B, N / patch_size, embed_dim): a Conv1d with kernel = stride = patch_size
    over the patch_size nested children of each coarse pixel, optionally LayerNorm."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, norm: bool = False):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv1d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if norm else nn.Identity()

    def forward(self, x):
        # the convolution as one matrix product over each token's (channel, child) block
        B, C, N = x.shape
        p = self.patch_size
        patches = x.reshape(B, C, N // p, p).transpose(1, 2).reshape(B, N // p, C * p)
        w = self.proj.weight.reshape(self.proj.out_channels, C * p)
        return self.norm(F.linear(patches, w, self.proj.bias))


class NestedPatchMerge(nn.Module):
    """(B, N, C) -> (B, N/4, out_dim): the 4 children's channels side by side (child 0 first),
    LayerNorm(4C), Linear(4C → out_dim, no bias)."""

    def __init__(self, dim: int, out_dim: int | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim or 2 * dim, bias=False)

    def forward(self, x):
        B, N, C = x.shape
        return self.reduction(self.norm(x.reshape(B, N // 4, 4 * C)))


class NestedPatchExpand(nn.Module):
    """(B, N, C) -> (B, N·children, C·dim_scale/children): Linear(C → dim_scale·C, no bias), each
    token's channels split into `children` consecutive children, LayerNorm per child."""

    def __init__(self, dim: int, children: int = 4, dim_scale: int = 2):
        super().__init__()
        if (dim * dim_scale) % children:
            raise ValueError(f"dim={dim}·{dim_scale} does not split into {children} children")
        self.children_, self.out_dim = children, dim * dim_scale // children
        self.expand = nn.Linear(dim, dim * dim_scale, bias=False)
        self.norm = nn.LayerNorm(self.out_dim)

    def extra_repr(self) -> str:
        return f"children={self.children_}, out_dim={self.out_dim}"

    def forward(self, x):
        B, N, _ = x.shape
        return self.norm(self.expand(x).reshape(B, N * self.children_, self.out_dim))


class FlatPatchExpand(nn.Module):
    """(B, H, W, C) -> (B, H·p, W·p, C·dim_scale/p²): Linear(C → dim_scale·C, no bias), channels
    split into a p × p block of pixels (row-major), LayerNorm per pixel."""

    def __init__(self, dim: int, scale: int = 2, dim_scale: int = 2):
        super().__init__()
        if (dim * dim_scale) % (scale * scale):
            raise ValueError(f"dim={dim}·{dim_scale} does not split into {scale}×{scale} pixels")
        self.scale, self.out_dim = scale, dim * dim_scale // (scale * scale)
        self.expand = nn.Linear(dim, dim * dim_scale, bias=False)
        self.norm = nn.LayerNorm(self.out_dim)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, out_dim={self.out_dim}"

    def forward(self, x: torch.Tensor):
        B, H, W, _ = x.shape
        p = self.scale
        x = self.expand(x).view(B, H, W, p, p, self.out_dim).permute(0, 1, 3, 2, 4, 5)
        return self.norm(x.reshape(B, H * p, W * p, self.out_dim))
