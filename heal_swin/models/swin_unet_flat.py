"""Flat Swin-UNet baseline on (B, C, H, W) images, built from timm's Swin V2 blocks.

The planar counterpart of HEAL-SWIN that the paper compares against: the same U-Net (patch
embedding, stages of window attention with cosine attention and post-norm, patch merging, a
decoder with skips and patch expansion, the same task heads), on a rectangular pixel grid. With
patch_size 2 a token covers 4 pixels like HEAL-SWIN's patch_size 4, and img_size (512, 1024) has
exactly as many pixels as nside 256 over 8 faces, so the two models see the same token counts and
have nearly the same number of parameters (they differ only in the relative-position bias: timm's
continuous bias MLP here, the flat table there).

Read top-down: stage → decoder → model → registered variants.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..layers import FlatPatchExpand, UNetStage, init_swin_weights, set_stage_checkpointing
from ._heads import create_head
from ._registry import register_model

__all__ = ["SwinUNetFlat"]


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


class FlatStage(UNetStage):
    """Optional skip fusion (Linear(2C → C)), `depth` Swin V2 blocks (odd ones shifted by half a
    window), then optional merging or expansion. x: (B, H, W, C)."""

    def __init__(self, dim: int, depth: int, num_heads: int, resolution: tuple[int, int], window_size: int, *,
                 drop_path: Sequence[float], fuse: bool = False, downsample: bool = False,
                 upsample: bool = False, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0):
        # timm is imported here, not at module level: HEAL-SWIN models do not need it
        from timm.models.swin_transformer_v2 import PatchMerging, SwinTransformerV2Block

        super().__init__()
        self.resolution, self.window_size = resolution, window_size
        self.grad_checkpointing = False
        self.fuse = nn.Linear(2 * dim, dim) if fuse else None
        self.blocks = nn.ModuleList([
            SwinTransformerV2Block(dim, resolution, num_heads, window_size=window_size,
                                   shift_size=0 if i % 2 == 0 else window_size // 2, mlp_ratio=mlp_ratio,
                                   qkv_bias=qkv_bias, proj_drop=drop, attn_drop=attn_drop,
                                   drop_path=drop_path[i])
            for i in range(depth)])
        self.downsample = PatchMerging(dim, 2 * dim) if downsample else None
        self.upsample = FlatPatchExpand(dim, scale=2, dim_scale=2) if upsample else None

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, window={self.window_size}"


class SwinUNetFlat(nn.Module):
    """Swin-UNet on flat images.

    x: (B, in_chans, H, W) with (H, W) = img_size; returns (B, num_classes, H, W) for
    segmentation, (B, 1, H, W) (or 2 channels with log-variance) for depth. Stage i works at
    img_size / (patch_size·2^i), which must be divisible by the window (or fit inside one).
    """

    def __init__(self, img_size=(256, 256), in_chans: int = 3, num_classes: int = 10, *,
                 task: str = "segmentation", log_variance: bool = False, patch_size: int = 2,
                 window_size: int = 8, embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 head_bias: bool = False, grad_checkpointing: bool = False):
        super().__init__()
        self.img_size, self.in_chans, self.task = _pair(img_size), int(in_chans), task
        self.patch_size, self.window_size = int(patch_size), int(window_size)
        depths, num_heads = tuple(depths), tuple(num_heads)
        if not depths or len(depths) != len(num_heads):
            raise ValueError(f"depths={depths} and num_heads={num_heads} must be non-empty and of equal "
                             "length")
        L = len(depths)
        coarsest = self.patch_size << (L - 1)
        if self.img_size[0] % coarsest or self.img_size[1] % coarsest:
            raise ValueError(f"img_size={self.img_size} must be divisible by patch_size·2^(stages−1) = "
                             f"{coarsest}")
        res = [(self.img_size[0] // (self.patch_size << i), self.img_size[1] // (self.patch_size << i))
               for i in range(L)]
        for i, (h, w) in enumerate(res):
            if any(n > window_size and n % window_size for n in (h, w)):
                raise ValueError(f"stage {i}: resolution {(h, w)} must be divisible by "
                                 f"window_size={window_size} (or fit inside one window)")
        dims = [embed_dim * 2 ** i for i in range(L)]
        self.embed_dim, self.num_features = embed_dim, dims[-1]
        self.feature_info = [dict(num_chs=dims[i], resolution=res[i], reduction=self.patch_size << i,
                                  module="patch_embed" if i == 0 else f"layers.{i - 1}") for i in range(L - 1)]
        self.feature_info.append(dict(num_chs=dims[-1], resolution=res[-1],
                                      reduction=self.patch_size << (L - 1), module="norm"))

        self.patch_embed = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        drop_paths = [dpr[sum(depths[:i]):sum(depths[:i + 1])] for i in range(L)]
        kw = dict(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate)
        self.layers = nn.ModuleList([
            FlatStage(dims[i], depths[i], num_heads[i], res[i], window_size, drop_path=drop_paths[i],
                      downsample=i < L - 1, **kw) for i in range(L)])
        self.norm = nn.LayerNorm(dims[-1])
        if L > 1:
            self.expand = FlatPatchExpand(dims[-1], scale=2, dim_scale=2)
            self.decoder = nn.ModuleList([
                FlatStage(dims[i], depths[i], num_heads[i], res[i], window_size, drop_path=drop_paths[i],
                          fuse=True, upsample=i > 0, **kw) for i in range(L - 2, -1, -1)])
        else:
            self.expand, self.decoder = None, nn.ModuleList()
        self.decoder_norm = nn.LayerNorm(dims[0])
        self.head = create_head(task, embed_dim, num_classes, self.patch_size, "flat", log_variance,
                                head_bias)
        self.num_classes = self.head.out_chs
        self.apply(init_swin_weights)  # as timm's Swin V2: the attention's logit scale keeps log(10)
        self.set_grad_checkpointing(grad_checkpointing)

    def set_grad_checkpointing(self, enable: bool = True):
        set_stage_checkpointing(self, enable)

    def extra_repr(self) -> str:
        return (f"img_size={self.img_size}, in_chans={self.in_chans}, task={self.task}, "
                f"out_chans={self.num_classes}, patch_size={self.patch_size}, window_size={self.window_size}")

    def _encode(self, x):
        """Channels-last stage maps [(B, H_i, W_i, C_i)], finest first, bottleneck (normalised) last."""
        if x.dim() != 4 or x.shape[1] != self.in_chans or tuple(x.shape[2:]) != self.img_size:
            raise ValueError(f"expected x of shape (B, {self.in_chans}, {self.img_size[0]}, "
                             f"{self.img_size[1]}), "
                             f"got {tuple(x.shape)}")
        x = self.pos_drop(self.patch_embed(x).permute(0, 2, 3, 1))
        features = []
        for layer in self.layers:
            features.append(x)
            x = layer(x)
        return features[:-1] + [self.norm(x)]

    def _decode(self, features):
        """Channels-last stage maps -> (B, H_0, W_0, embed_dim)."""
        x = features[-1]
        if self.expand is not None:
            x = self.expand(x)
            for stage, skip in zip(self.decoder, reversed(features[:-1])):
                x = stage(x, skip)
        return self.decoder_norm(x)

    def forward_features(self, x):
        """x: (B, C, H, W) -> [(B, C_i, H_i, W_i) for each stage], finest first, bottleneck last."""
        return [f.permute(0, 3, 1, 2) for f in self._encode(x)]

    def forward_decoder(self, features):
        """The stage maps of `forward_features` -> (B, embed_dim, H_0, W_0)."""
        return self._decode([f.permute(0, 2, 3, 1) for f in features]).permute(0, 3, 1, 2)

    def forward(self, x):
        return self.head(self._decode(self._encode(x)).permute(0, 3, 1, 2))


def _create(defaults: dict, overrides: dict) -> SwinUNetFlat:
    return SwinUNetFlat(**{**defaults, **overrides})


@register_model(family="swin_unet_flat", domain="flat", test_kwargs=dict(img_size=(32, 64)))
def swin_unet_flat_tiny(**kwargs) -> SwinUNetFlat:
    """Flat counterpart of heal_swin_tiny: embed 32, depths 2-2-2, window 4 (16 tokens)."""
    return _create(dict(img_size=(64, 128), embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8),
                        window_size=4, patch_size=2), kwargs)


@register_model(family="swin_unet_flat", domain="flat",
                test_kwargs=dict(img_size=(32, 64), embed_dim=16, num_heads=(1, 2, 4, 8), window_size=4))
def swin_unet_flat_paper(**kwargs) -> SwinUNetFlat:
    """Flat counterpart of heal_swin_paper: embed 96, depths 2-2-6-2, heads 3-6-12-24, window 8×8,
    512 × 1024 pixels (as many as nside 256 over 8 faces)."""
    return _create(dict(img_size=(512, 1024), num_classes=10, embed_dim=96, depths=(2, 2, 6, 2),
                        num_heads=(3, 6, 12, 24), window_size=8, patch_size=2, drop_rate=0.1,
                        attn_drop_rate=0.1, drop_path_rate=0.1), kwargs)
