"""Flat Swin-UNet baseline on (B, C, H, W) images, built from timm's Swin V2 blocks.

The planar counterpart of HEAL-SWIN that the paper compares against: the same U-Net (patch
embedding, stages of window attention with cosine attention and post-norm, patch merging, a
decoder with skips and patch expansion, the same task heads), on a rectangular pixel grid. With
patch_size 2 a token covers 4 pixels like HEAL-SWIN's patch_size 4, and img_size (512, 1024) has
exactly as many pixels as nside 256 over 8 faces, so the two models see the same token counts and
have nearly the same number of parameters (they differ only in the relative-position bias: timm's
continuous bias MLP here, the flat table there).

Export (`SwinUNetFlat.for_export`, which `heal_swin.export.SphereGraph` calls) uses an inference
copy with the same outputs bit for bit: timm's blocks keep per-block tables that the ONNX exporter
would store as constants, many times larger than the weights (the continuous bias MLP's first layer
evaluated on the 49 offsets, the shift mask of every window); the copy computes each block's
position bias once and applies the shift mask from two per-axis band tables.

Read top-down: inference attention → stage → decoder → model → registered variants.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import CheckpointList, FlatPatchExpand, UNetStage, init_swin_weights
from ._base import FlatBackbone
from ._registry import register_model

__all__ = ["SwinUNetFlat", "InferenceWindowAttention"]


_MASKED = -100.0  # timm's shift-mask value between tokens of different bands


def _bands(size: int, window: int, shift: int) -> torch.Tensor:
    """Band id (0, 1, 2) of each row (or column) of the padded map: the three bands that timm's
    shift mask separates (`SwinTransformerV2Block.get_attn_mask`, written along one axis; without a
    shift the whole axis is one band)."""
    ids = torch.zeros(size, dtype=torch.long)
    for band, (lo, hi) in enumerate(((0, -window), (-window, -shift), (-shift, None))):
        ids[lo:hi] = band
    return ids


def _axis_mask(size: int, window: int, shift: int) -> torch.Tensor:
    """(size // window, window, window) float: _MASKED where two tokens' rows (columns) of a window
    lie in different bands, else 0."""
    ids = _bands(size, window, shift).reshape(-1, window)
    return torch.where(ids[:, :, None] != ids[:, None, :], _MASKED, 0.0)


class InferenceWindowAttention(nn.Module):
    """timm's Swin V2 `WindowAttention` (cosine attention, continuous position bias) in an
    inference form: the position bias 16·sigmoid(cpb_mlp(offsets)) is evaluated once into an
    (heads, N, N) table, the logit scale and the q/k/v bias are folded, and the shift mask is two
    per-axis tables instead of a (windows, N, N) one.

    Windows of a shifted block differ from each other only in which rows and which columns fall in
    different bands, so mask = min(row part, column part) (0 or −100); attention + mask is taken as
    min(attention + row part, attention + column part), which rounds identically (x ↦ fl(a + x) is
    monotone) and leaves nothing (windows, N, N)-sized for the exporter to store as a constant.
    Evaluation only: no dropout. x: (B·windows, N, C), windows in row-major order of the padded map.
    """

    def __init__(self, block):
        super().__init__()
        attn = block.attn
        self.num_heads, self.window_size = attn.num_heads, tuple(block.window_size)
        self.qkv, self.proj = attn.qkv, attn.proj
        wh, ww = self.window_size
        n = wh * ww
        with torch.no_grad():
            table = attn.cpb_mlp(attn.relative_coords_table).view(-1, self.num_heads)
            bias = table[attn.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
            self.register_buffer("bias", 16 * torch.sigmoid(bias), persistent=False)
            self.register_buffer("logit_scale", torch.clamp(attn.logit_scale, max=math.log(1. / 0.01)).exp(),
                                 persistent=False)
            qkv_bias = None if attn.q_bias is None else torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
            self.register_buffer("qkv_bias", qkv_bias, persistent=False)
        self.qkv_bias_separate = attn.qkv_bias_separate
        self.register_buffer("row_mask", None, persistent=False)
        self.register_buffer("col_mask", None, persistent=False)
        if any(block.shift_size):
            (h, w), (sh, sw) = block.input_resolution, block.shift_size
            hp, wp = math.ceil(h / wh) * wh, math.ceil(w / ww) * ww
            dtype = block.attn_mask.dtype
            rows, cols = _axis_mask(hp, wh, sh).to(dtype), _axis_mask(wp, ww, sw).to(dtype)
            self.row_mask = rows.reshape(1, -1, 1, 1, wh, 1, wh, 1).to(block.attn_mask.device)
            self.col_mask = cols.reshape(1, 1, -1, 1, 1, ww, 1, ww).to(block.attn_mask.device)
            full = torch.minimum(self.row_mask, self.col_mask).reshape(-1, n, n)
            if not torch.equal(full, block.attn_mask):  # timm changed its mask layout: do not export wrong
                raise RuntimeError(f"{type(block).__name__} at resolution {block.input_resolution}: the "
                                   "per-axis shift masks do not reproduce the block's attention mask")

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, window={self.window_size}, shifted={self.row_mask is not None}"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            raise ValueError("InferenceWindowAttention applies its own shift mask; got an explicit mask")
        b, n, c = x.shape
        if self.qkv_bias is None:
            qkv = self.qkv(x)
        elif self.qkv_bias_separate:
            qkv = self.qkv(x) + self.qkv_bias
        else:
            qkv = F.linear(x, weight=self.qkv.weight, bias=self.qkv_bias)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * self.logit_scale
        attn = attn + self.bias.unsqueeze(0)
        if self.row_mask is not None:
            wh, ww = self.window_size
            grid = attn.view(-1, self.row_mask.shape[1], self.col_mask.shape[2], self.num_heads, wh, ww, wh, ww)
            attn = torch.minimum(grid + self.row_mask, grid + self.col_mask).view(b, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


@functools.cache
def _pre_norm_block():
    """timm's Swin V2 block run pre-norm, x + A(LN(x)), x + M(LN(x)), instead of its post-norm
    x + LN(A(x)), x + LN(M(x)); the same parameters, and still a `SwinTransformerV2Block` (export)."""
    from timm.models.swin_transformer_v2 import SwinTransformerV2Block

    class PreNormSwinV2Block(SwinTransformerV2Block):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            B, H, W, C = x.shape
            x = x + self.drop_path1(self._attn(self.norm1(x)))
            x = x.reshape(B, -1, C)
            x = x + self.drop_path2(self.mlp(self.norm2(x)))
            return x.reshape(B, H, W, C)

    return PreNormSwinV2Block


class FlatStage(UNetStage):
    """Optional skip fusion (Linear(2C → C)), `depth` Swin V2 blocks (odd ones shifted by half a
    window; post-norm as timm's, or pre-norm with post_norm=False), then optional merging or
    expansion. x: (B, H, W, C)."""

    def __init__(self, dim: int, depth: int, num_heads: int, resolution: tuple[int, int], window_size: int, *,
                 drop_path: Sequence[float], fuse: bool = False, downsample: bool = False,
                 upsample: bool = False, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, post_norm: bool = True):
        # timm is imported here, not at module level: HEAL-SWIN models do not need it
        from timm.models.swin_transformer_v2 import PatchMerging, SwinTransformerV2Block

        super().__init__()
        self.resolution, self.window_size = resolution, window_size
        self.fuse = nn.Linear(2 * dim, dim) if fuse else None
        block = SwinTransformerV2Block if post_norm else _pre_norm_block()
        self.blocks = CheckpointList([
            block(dim, resolution, num_heads, window_size=window_size,
                  shift_size=0 if i % 2 == 0 else window_size // 2, mlp_ratio=mlp_ratio,
                  qkv_bias=qkv_bias, proj_drop=drop, attn_drop=attn_drop, drop_path=drop_path[i])
            for i in range(depth)])
        self.downsample = PatchMerging(dim, 2 * dim) if downsample else None
        self.upsample = FlatPatchExpand(dim, scale=2, dim_scale=2) if upsample else None

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, window={self.window_size}"


class SwinUNetFlat(FlatBackbone):
    """Swin-UNet on flat images.

    x: (B, in_chans, H, W) with (H, W) = img_size; returns (B, num_classes, H, W) for
    segmentation, (B, 1, H, W) (or 2 channels with log-variance) for depth. Stage i works at
    img_size / (patch_size·2^i), which must be divisible by the window (or fit inside one).
    `post_norm=False` runs the blocks pre-norm (x + A(LN(x))): the same parameters; on the rotated digits
    it learns where timm's post-norm stalls (bench/README.md, issue #28 item 4).
    Backbone surface (see `heal_swin.models`; `FlatBackbone` owns the shared part): stage maps
    (B, C_i, H_i, W_i); channels-last (B, H, W, C) inside, the surface's permutes are views.
    """

    def __init__(self, img_size=(256, 256), in_chans: int = 3, num_classes: int = 10, *,
                 task: str = "segmentation", log_variance: bool = False, patch_size: int = 2,
                 window_size: int = 8, embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 head_bias: bool = False, grad_checkpointing: bool = False, post_norm: bool = True):
        super().__init__(img_size, in_chans, num_classes, task=task, log_variance=log_variance)
        self.patch_size, self.window_size = int(patch_size), int(window_size)
        num_heads, depths = self.check_stage_lists(num_heads, depths, name="num_heads", unit="head")
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
        self.feature_info = self.stage_info(
            (dims[i], res[i], "norm" if i == L - 1 else "patch_embed" if i == 0 else f"layers.{i - 1}")
            for i in range(L))

        self.patch_embed = nn.Conv2d(self.in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        drop_paths = [dpr[sum(depths[:i]):sum(depths[:i + 1])] for i in range(L)]
        kw = dict(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate,
                  post_norm=post_norm)
        self.layers = nn.ModuleList([
            FlatStage(dims[i], depths[i], num_heads[i], res[i], window_size, drop_path=drop_paths[i],
                      downsample=i < L - 1, **kw) for i in range(L)])
        self.norm = nn.LayerNorm(dims[-1])
        if L > 1 and self.dense:
            self.expand = FlatPatchExpand(dims[-1], scale=2, dim_scale=2)
            self.decoder = nn.ModuleList([
                FlatStage(dims[i], depths[i], num_heads[i], res[i], window_size, drop_path=drop_paths[i],
                          fuse=True, upsample=i > 0, **kw) for i in range(L - 2, -1, -1)])
        else:
            self.expand, self.decoder = None, nn.ModuleList()
        self.decoder_norm = nn.LayerNorm(dims[0]) if self.dense else None
        self.head = self.build_head(embed_dim if self.dense else dims[-1], self.patch_size, head_bias)
        self.apply(init_swin_weights)  # as timm's Swin V2: the attention's logit scale keeps log(10)
        self.set_grad_checkpointing(grad_checkpointing)

    def for_export(self) -> "SwinUNetFlat":
        """An evaluation-mode copy for export whose blocks use `InferenceWindowAttention`: the same
        outputs bit for bit, and no per-block constant larger than its weights. A snapshot: later
        changes to this model's weights do not reach the copy."""
        from timm.models.swin_transformer_v2 import SwinTransformerV2Block

        model = copy.deepcopy(self).eval()
        for block in model.modules():
            if isinstance(block, SwinTransformerV2Block):
                block.attn = InferenceWindowAttention(block)
                block.attn_mask = None
        return model

    def repr_args(self) -> list[str]:
        return [f"patch_size={self.patch_size}", f"window_size={self.window_size}"]

    def forward_features(self, x):
        """x: (B, C, H, W) -> [(B, C_i, H_i, W_i) for each stage], finest first, bottleneck last."""
        self.check_input(x)
        x = self.pos_drop(self.patch_embed(x).permute(0, 2, 3, 1))
        features = []
        for layer in self.layers:
            features.append(x)
            x = layer(x)
        return [f.permute(0, 3, 1, 2) for f in features[:-1] + [self.norm(x)]]

    def forward_decoder(self, features):
        """The stage maps of `forward_features` -> (B, embed_dim, H_0, W_0); for classification the
        bottleneck map (already normed)."""
        if not self.dense:
            return features[-1]
        maps = [f.permute(0, 2, 3, 1) for f in features]  # views back onto the channels-last maps
        x = maps[-1]
        if self.expand is not None:
            x = self.expand(x)
            for stage, skip in zip(self.decoder, reversed(maps[:-1])):
                x = stage(x, skip)
        return self.decoder_norm(x).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------- variants
# Each variant's defaults are overridden by the caller's keywords: `dict(model_args, **kwargs)` (timm's).


@register_model(family="swin_unet_flat", domain="flat", test_kwargs=dict(img_size=(32, 64)))
def swin_unet_flat_tiny(**kwargs) -> SwinUNetFlat:
    """Flat counterpart of heal_swin_tiny: embed 32, depths 2-2-2, window 4 (16 tokens)."""
    model_args = dict(img_size=(64, 128), embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8), window_size=4,
                      patch_size=2)
    return SwinUNetFlat(**dict(model_args, **kwargs))


@register_model(family="swin_unet_flat", domain="flat",
                test_kwargs=dict(img_size=(32, 64), embed_dim=16, num_heads=(1, 2, 4, 8), window_size=4))
def swin_unet_flat_paper(**kwargs) -> SwinUNetFlat:
    """Flat counterpart of heal_swin_paper: embed 96, depths 2-2-6-2, heads 3-6-12-24, window 8×8,
    512 × 1024 pixels (as many as nside 256 over 8 faces)."""
    model_args = dict(img_size=(512, 1024), num_classes=10, embed_dim=96, depths=(2, 2, 6, 2),
                      num_heads=(3, 6, 12, 24), window_size=8, patch_size=2, drop_rate=0.1,
                      attn_drop_rate=0.1, drop_path_rate=0.1)
    return SwinUNetFlat(**dict(model_args, **kwargs))
