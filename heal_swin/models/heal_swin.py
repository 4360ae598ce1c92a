"""HEAL-SWIN: a Swin-transformer U-Net on the nested HEALPix sequence.

Carlsson et al., "HEAL-SWIN: A Vision Transformer On The Sphere", CVPR 2024 (arXiv 2307.07313).
Tokens are (B, N, C) in NESTED order over a set of faces; four consecutive tokens are the children
of one coarser pixel, and a window of 4^k consecutive tokens is a square of one face.

Read top-down: stage geometry and shift tables → block → stage → decoder → model → conversion
of the original implementation's checkpoints (`checkpoint_filter_fn`, `load_original`) →
registered variants.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.init import trunc_normal_

from ..grid import (SHIFT_STRATEGIES, base_pixels_keyword, check_permutation, check_window_size, format_base_pixels,
                    grid_shift, invert_permutation, is_valid_window_size, nest_roll_shift, original_grid_shift,
                    polar_turn, ring_shift, symmetric_grid_shift, window_mask)
from ..layers import (CheckpointList, DropPath, Dropout, Mlp, NestedPatchEmbed, NestedPatchExpand,
                      NestedPatchMerge, UNetStage, WindowAttention, init_swin_weights)
from ._base import SphereBackbone
from ._registry import register_model

__all__ = ["HealSwinUNet", "HealSwinBlock", "HealSwinStage", "StageGeometry", "stage_geometry",
           "turned_windows", "checkpoint_filter_fn", "load_original"]

WINDOW_SPANS = ("face", "sequence")


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class StageGeometry:
    """Where a stage's attention looks: tokens at `nside` over `faces`, windows of `window`
    consecutive tokens, and the shift of its odd blocks (None: no shift). `symmetric`: the
    layout commutes with the grid's 90° polar turns (`symmetric_grid_shift`, see `HealSwinUNet`)."""

    nside: int
    faces: tuple[int, ...]
    window: int
    shift: str | None
    shift_size: int
    symmetric: bool = False

    @property
    def tokens(self) -> int:
        return len(self.faces) * self.nside ** 2

    def __str__(self) -> str:
        side = math.isqrt(self.window)
        if self.window == self.tokens:
            win = f"{self.window} (all tokens)"
        else:
            win = f"{self.window} ({side}×{side})" if side * side == self.window else str(self.window)
        shift = "none" if self.shift is None else (
            f"{self.shift} (half window)" if "grid" in self.shift else f"{self.shift} ({self.shift_size})")
        return (f"nside={self.nside}, faces={format_base_pixels(self.faces)}, tokens={self.tokens}, window={win}, "
                f"shift={shift}") + (", symmetric" if self.symmetric else "")


def stage_geometry(nside: int, faces: Sequence[int], window_size: int, shift_strategy: str | None,
                   shift_size: int | None, window_span: str = "face",
                   symmetric: bool = False) -> StageGeometry:
    """The window and shift of one stage.

    A stage with no more tokens than `window_size` attends globally and does not shift (as the
    original). With window_span="face" a window never leaves its face: where a face holds fewer
    tokens than `window_size`, the window is the whole face. With "sequence" (the original's
    behaviour) windows are `window_size` consecutive tokens even across faces.
    `shift_size` (tokens, nest_roll and ring_shift) defaults to half the window; grid_shift always
    moves half a window along both axes. `symmetric` (grid_shift or no shift, windows inside
    faces) lays the shifted windows out as `symmetric_grid_shift`.
    """
    faces = tuple(faces)
    symmetric = bool(symmetric)
    if symmetric and (shift_strategy not in (None, "grid_shift") or window_span != "face"):
        raise ValueError(f"symmetric=True needs shift_strategy 'grid_shift' or None and window_span='face' "
                         f"(got {shift_strategy!r}, {window_span!r}): the other layouts are not "
                         "turn-symmetric")
    tokens = len(faces) * nside ** 2
    if tokens <= window_size:
        return StageGeometry(nside, faces, tokens, None, 0, symmetric)
    window = window_size
    if window_span == "face":
        window = min(window_size, nside ** 2)
    if shift_strategy is None or shift_size == 0 or window == 1:
        return StageGeometry(nside, faces, window, None, 0, symmetric)
    if shift_strategy == "grid_shift":
        if window > nside ** 2:
            raise ValueError(f"shift_strategy='grid_shift' needs windows inside one face, but "
                             f"window_size={window} > nside²={nside ** 2} (use window_span='face')")
        return StageGeometry(nside, faces, window, "grid_shift", math.isqrt(window) // 2, symmetric)
    if shift_strategy == "nest_grid_shift":
        if faces != tuple(range(8)) or window > nside ** 2 or window < 4:
            raise ValueError(f"shift_strategy='nest_grid_shift' (the original's) needs faces 0–7 and "
                             f"4 ≤ window ≤ nside² (got faces={format_base_pixels(faces)}, window={window}, "
                             f"nside={nside}); grid_shift works on any faces")
        return StageGeometry(nside, faces, window, "nest_grid_shift", math.isqrt(window) // 2)
    size = window // 2 if shift_size is None else int(shift_size)
    if shift_strategy == "nest_roll" and not 0 < size <= window:
        raise ValueError(f"shift_size={size} must lie in (0, window={window}] for nest_roll")
    return StageGeometry(nside, faces, window, shift_strategy, size)


@functools.lru_cache(maxsize=256)
def shift_buffers(geometry: StageGeometry):
    """(index, inverse, mask) of a stage's shift, with the windows that need a mask moved last.

    index/inverse: int64 (N,) permutations (shifted = x[:, index], x = shifted[:, inverse]);
    mask: bool (m, ws, ws) for the last m windows, True where two tokens may attend.
    A symmetric geometry puts the windows that the polar turn maps onto themselves (the complete
    pole windows, see `turned_windows`) first.
    """
    g = geometry
    if g.shift == "nest_roll":
        table = nest_roll_shift(g.tokens, g.window, g.shift_size)
    elif g.shift == "ring_shift":
        table = ring_shift(g.nside, g.faces, g.shift_size)
    elif g.shift == "grid_shift" and g.symmetric:
        table = symmetric_grid_shift(g.nside, g.faces, g.window)
    elif g.shift == "grid_shift":
        table = grid_shift(g.nside, g.faces, g.window)
    elif g.shift == "nest_grid_shift":
        table = original_grid_shift(g.nside, g.window)
    else:
        raise ValueError(f"stage {g} has no shift")
    index = table.index.reshape(-1, g.window)
    labels = table.labels.reshape(-1, g.window)
    masked = (labels != labels[:, :1]).any(1)
    turned = _self_mapped(g, index)[0] & ~masked if g.symmetric else np.zeros_like(masked)
    order = np.argsort(np.where(masked, 2, np.where(turned, 0, 1)), kind="stable")
    index = np.ascontiguousarray(index[order].reshape(-1))
    inverse = invert_permutation(index)
    check_permutation(index, inverse, f"shift of stage ({g})")
    n_masked = int(masked.sum())
    return index, inverse, window_mask(labels[order][len(order) - n_masked:], g.window)


def _self_mapped(geometry: StageGeometry, windows: np.ndarray):
    """Which windows (W, ws) of tokens the grid's 90° polar turn maps onto themselves: bool (W,),
    and sigma int64 (W, ws), the slot that each slot's token moves to (−1 in other windows)."""
    turn = polar_turn(geometry.nside, geometry.faces)  # (g·x)[p] = x[turn[p]]: token turn[p] moves to p
    moves_to = invert_permutation(turn)
    ws = windows.shape[1]
    flat = windows.reshape(-1)
    window_of, slot_of = np.empty_like(flat), np.empty_like(flat)
    window_of[flat], slot_of[flat] = np.arange(flat.size) // ws, np.arange(flat.size) % ws
    target = moves_to[windows]
    mapped = (window_of[target] == np.arange(len(windows))[:, None]).all(1)
    return mapped, np.where(mapped[:, None], slot_of[target], -1)


@functools.lru_cache(maxsize=256)
def turned_windows(geometry: StageGeometry, shifted: bool):
    """(n, sigma): the first n windows of a symmetric stage's sequence (the shifted one with
    `shifted`) are mapped onto themselves by the grid's 90° polar turn, and sigma, int64 (ws,),
    is the slot that each slot's token moves to (the same turn of the layout in each of them, up
    to its powers). These are the complete windows around a pole, and the one window of a stage
    that attends globally; a bias over 2-D offsets turns with them, so they get its average over
    the four quarter turns. (0, None) for a geometry that is not symmetric or has no such window.
    """
    g = geometry
    if not g.symmetric:
        return 0, None
    if not shifted:
        if g.window != g.tokens:  # windows inside faces: the turn moves each to another face
            return 0, None
        windows = np.arange(g.tokens)[None]
        mapped, sigma = _self_mapped(g, windows)
    else:
        # a masked window may map onto itself too (a bin of one class's pieces), but its pieces
        # keep their chart offsets there, so its bias needs no average
        index, _, mask = shift_buffers(g)
        windows = index.reshape(-1, g.window)
        mapped, sigma = _self_mapped(g, windows)
        mapped[len(windows) - len(mask):] = False
    n = int(mapped.sum())
    if not mapped[:n].all():
        raise RuntimeError(f"stage ({g}): the turned windows are not first (a bug)")
    if n == 0:
        return 0, None

    def powers(s):
        p, out = np.arange(g.window), set()
        for _ in range(4):
            p = s[p]
            out.add(p.tobytes())
        return out

    if any(powers(sigma[w]) != powers(sigma[0]) for w in range(1, n)):
        raise RuntimeError(f"stage ({g}): the polar turn turns its pole windows differently (a bug)")
    return n, np.ascontiguousarray(sigma[0])


def _check_pow4(value, name, what):
    if not is_valid_window_size(value):
        raise ValueError(f"{name}={value!r} must be a power of 4 ({what})")
    return int(value)


# --------------------------------------------------------------------------- blocks


class _PermuteTokens(torch.autograd.Function):
    """x[:, index] for a permutation `index`, whose backward pass gathers with the inverse
    permutation instead of scatter-adding (`index_add_`, 10× slower on CPUs)."""

    @staticmethod
    def forward(ctx, x, index, inverse):
        ctx.inverse = inverse
        return x.index_select(1, index)

    @staticmethod
    def backward(ctx, grad):
        return grad.index_select(1, ctx.inverse), None, None


def _permute_tokens(x, index, inverse):
    """x[:, index] along the token axis; `inverse` is the inverse permutation."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _PermuteTokens.apply(x, index, inverse)
    return x.index_select(1, index)


class HealSwinBlock(nn.Module):
    """Window attention + MLP with residuals; `shift=True` applies the stage's shift around the
    attention. Pre-norm: x + A(LN(x)), x + M(LN(x)); post-norm (Swin V2): x + LN(A(x)),
    x + LN(M(x)). x: (B, N, C), N = tokens of the stage, NESTED. In a symmetric geometry the
    windows that the polar turn maps onto themselves (`turned_windows`) attend with the bias
    averaged over the four quarter turns, in a call of their own."""

    def __init__(self, dim: int, num_heads: int, geometry: StageGeometry, shift: bool = False, *,
                 bias_window_size: int | None = None, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_scale: float | None = None, cosine_attention: bool = True, post_norm: bool = True,
                 rel_pos_bias: str | None = "flat", mask_value: float = float("-inf"),
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, fused: bool = True):
        super().__init__()
        self.geometry = geometry
        self.shift = bool(shift and geometry.shift)
        self.post_norm = post_norm
        self.norm1 = nn.LayerNorm(dim)
        n_turned, bias_turn = turned_windows(geometry, self.shift)
        self.turned_tokens = n_turned * geometry.window  # leading tokens of the (shifted) sequence
        self.attn = WindowAttention(dim, num_heads, geometry.window, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                    cosine=cosine_attention, rel_pos_bias=rel_pos_bias,
                                    bias_window_size=bias_window_size, mask_value=mask_value,
                                    attn_drop=attn_drop, proj_drop=drop, bias_turn=bias_turn, fused=fused)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop, fused=fused)
        if self.shift:
            index, inverse, mask = shift_buffers(geometry)
            self.register_buffer("shift_index", torch.tensor(index), persistent=False)
            self.register_buffer("shift_inverse", torch.tensor(inverse), persistent=False)
            self.register_buffer("attn_mask", torch.tensor(mask), persistent=False)
        else:
            self.shift_index = self.shift_inverse = self.attn_mask = None

    def extra_repr(self) -> str:
        g = self.geometry
        shift = "none"
        if self.shift:
            shift = g.shift if "grid" in g.shift else f"{g.shift}({g.shift_size})"
        norm = "post" if self.post_norm else "pre"
        turned = f", turned={self.turned_tokens // g.window}" if self.turned_tokens else ""
        return f"nside={g.nside}, window={g.window}, shift={shift}, norm={norm}{turned}"

    def _attend(self, x):
        t = self.turned_tokens
        if not self.shift:
            return self.attn(x, turned=True) if t else self.attn(x)
        x = _permute_tokens(x, self.shift_index, self.shift_inverse)
        if t:  # the pole windows first, with the turn-averaged bias; the masked ones stay last
            x = torch.cat([self.attn(x[:, :t], turned=True), self.attn(x[:, t:], self.attn_mask)], 1)
        else:
            x = self.attn(x, self.attn_mask)
        return _permute_tokens(x, self.shift_inverse, self.shift_index)

    def forward(self, x):
        residual = self.drop_path.add_to  # x + drop_path(branch) in one pass
        if self.post_norm:
            x = residual(x, self.norm1(self._attend(x)))
            return residual(x, self.norm2(self.mlp(x)))
        x = residual(x, self._attend(self.norm1(x)))
        return residual(x, self.mlp(self.norm2(x)))


class HealSwinStage(UNetStage):
    """Optional skip fusion (Linear(2C → C) on [x, skip]), `depth` blocks alternating unshifted
    and shifted, then optional patch merging (encoder) or patch expansion (decoder).
    x: (B, N, C) -> (B, N/4, 2C) with downsample, (B, 4N, C/2) with upsample."""

    def __init__(self, dim: int, depth: int, num_heads: int, geometry: StageGeometry, *,
                 drop_path: Sequence[float] = (), fuse: bool = False, downsample: bool = False,
                 upsample: bool = False, **block_kwargs):
        super().__init__()
        self.geometry = geometry
        self.fuse = nn.Linear(2 * dim, dim) if fuse else None
        dpr = list(drop_path) or [0.0] * depth
        self.blocks = CheckpointList([
            HealSwinBlock(dim, num_heads, geometry, shift=i % 2 == 1, drop_path=dpr[i], **block_kwargs)
            for i in range(depth)])
        self.downsample = NestedPatchMerge(dim) if downsample else None
        self.upsample = NestedPatchExpand(dim, children=4, dim_scale=2) if upsample else None

    def extra_repr(self) -> str:
        return str(self.geometry)


class HealSwinDecoder(nn.Module):
    """U-Net decoder: expand the bottleneck, then for encoder stages L−2 … 0 fuse the skip, run
    that stage's blocks and expand (except after stage 0); LayerNorm at the end.
    Returns (B, N_0, embed_dim) tokens at the first stage's nside."""

    def __init__(self, dims: Sequence[int], depths: Sequence[int], num_heads: Sequence[int],
                 geometries: Sequence[StageGeometry], drop_paths: Sequence[Sequence[float]], **block_kwargs):
        super().__init__()
        L = len(dims)
        self.expand = NestedPatchExpand(dims[-1], children=4, dim_scale=2)
        self.stages = nn.ModuleList([
            HealSwinStage(dims[i], depths[i], num_heads[i], geometries[i], drop_path=drop_paths[i],
                          fuse=True, upsample=i > 0, **block_kwargs)
            for i in range(L - 2, -1, -1)])
        self.norm = nn.LayerNorm(dims[0])

    def forward(self, x, skips):
        x = self.expand(x)
        for stage, skip in zip(self.stages, reversed(skips)):
            x = stage(x, skip)
        return self.norm(x)


# --------------------------------------------------------------------------- model


class HealSwinUNet(SphereBackbone):
    """HEAL-SWIN U-Net over any set of HEALPix faces.

    x: (B, in_chans, N), N = len(base_pixels)·nside², NESTED, faces ascending.
    Returns (B, num_classes, N) for task="segmentation", (B, 1, N) (or (B, 2, N) with a
    log-variance channel) for task="depth".

    Geometry: `patch_size` (a power of 4) nested children form one token, so stage i works at
    nside_i = nside / (√patch_size · 2^i); `window_size` (a power of 4) consecutive tokens form a
    window; odd blocks of a stage shift by `shift_strategy` ("grid_shift", "ring_shift",
    "nest_roll" or None). Attention: cosine (Swin V2) or scaled; norms post (Swin V2) or pre;
    relative-position bias "flat" or None. `window_span="sequence"` and `mask_value=-100` give
    the original implementation's behaviour (see `load_original`). `fused=False` trains the
    attention and MLP blocks with plain autograd instead of the hand-written kernels of
    `layers._fused` (same function; the reference they are tested against).

    `symmetric=True` makes the model exactly equivariant to the grid's 90° turns about the polar
    axis (face f -> the next face of its ring, nested indices kept; faces 0–11, 0–7 or any set
    of whole rings): grid_shift lays its windows out as `grid.symmetric_grid_shift` (seam
    windows in a chart chosen by a turn-invariant rule, incomplete pieces moved by translations
    only) and the windows that a turn maps onto itself (around the poles, and a stage that
    attends globally) use the relative-position bias averaged over the four quarter turns. Same
    parameters and nearly the same cost; needs shift_strategy "grid_shift" or None,
    window_span="face" and ape=False. The 180° flips about equatorial axes remain broken (they
    turn every face chart by 180°, so the patch embedding and merging, which read the nested
    children in order, and every window's bias would have to be symmetric too).

    Backbone surface (see `heal_swin.models`; `SphereBackbone` owns the shared part):
    `forward_features(x)` returns the stage maps `[(B, C_i, N_i)]`, finest first, bottleneck last,
    described by `feature_info`; `forward_decoder(features)` returns `(B, embed_dim, N_0)`; the
    head maps that to the output. Token-major (B, N, C) inside: the surface's transposes are views.
    """

    def __init__(self, nside: int = 64, base_pixels: Sequence[int] | str = tuple(range(8)),
                 in_chans: int = 3, num_classes: int = 10, *, task: str = "segmentation",
                 log_variance: bool = False, patch_size: int = 4, window_size: int = 64,
                 shift_strategy: str | None = "grid_shift", shift_size: int | None = None,
                 embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_scale: float | None = None, cosine_attention: bool = True, post_norm: bool = True,
                 rel_pos_bias: str | None = "flat", drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, ape: bool = False, patch_norm: bool = False,
                 window_span: str = "face", mask_value: float = float("-inf"), head_bias: bool = False,
                 grad_checkpointing: bool = False, fused: bool = True, symmetric: bool = False):
        super().__init__(nside, base_pixels, in_chans, num_classes, task=task, log_variance=log_variance)
        self.patch_size = _check_pow4(patch_size, "patch_size", "the nested children of one token")
        check_window_size(window_size)
        if shift_strategy in ("none", "None"):
            shift_strategy = None
        if shift_strategy is not None and shift_strategy not in SHIFT_STRATEGIES:
            raise ValueError(f"shift_strategy={shift_strategy!r} must be one of {SHIFT_STRATEGIES} or None")
        if window_span not in WINDOW_SPANS:
            raise ValueError(f"window_span={window_span!r} must be one of {WINDOW_SPANS}")
        self.symmetric = bool(symmetric)
        if self.symmetric:
            if ape:
                raise ValueError("symmetric=True needs ape=False: a learned embedding per token is not "
                                 "turn-symmetric")
            if any(4 * (f // 4) + (f + 1) % 4 not in self.faces for f in self.faces):
                raise ValueError(f"symmetric=True needs faces that the polar turn maps onto themselves (each "
                                 f"ring's four faces all or none), got {format_base_pixels(self.faces)}")
        num_heads, depths, nsides = self.check_stages(num_heads, depths, name="num_heads", unit="head",
                                                      patch_size=self.patch_size)
        L = len(depths)
        dims = [embed_dim * 2 ** i for i in range(L)]
        for i, (d, h) in enumerate(zip(dims, num_heads)):
            if d % h:
                raise ValueError(f"stage {i}: width embed_dim·2^{i}={d} must be divisible by "
                                 f"num_heads[{i}]={h}")
        self.geometries = [stage_geometry(n, self.faces, window_size, shift_strategy, shift_size, window_span,
                                          self.symmetric) for n in nsides]
        self.window_size, self.shift_strategy, self.window_span = window_size, shift_strategy, window_span
        self.embed_dim, self.num_features = embed_dim, dims[-1]
        # stage i's map enters stage i: made by the patch embedding, then by stage i − 1's merging;
        # the bottleneck is the last stage's output after the norm
        self.feature_info = self.stage_info(
            (dims[i], nsides[i], "norm" if i == L - 1 else "patch_embed" if i == 0 else f"layers.{i - 1}")
            for i in range(L))

        self.patch_embed = NestedPatchEmbed(self.in_chans, embed_dim, self.patch_size, norm=patch_norm)
        n_tokens = self.geometries[0].tokens
        self.absolute_pos_embed = nn.Parameter(torch.zeros(1, n_tokens, embed_dim)) if ape else None
        self.pos_drop = Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        drop_paths = [dpr[sum(depths[:i]):sum(depths[:i + 1])] for i in range(L)]
        block_kwargs = dict(bias_window_size=window_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                            qk_scale=qk_scale, cosine_attention=cosine_attention, post_norm=post_norm,
                            rel_pos_bias=rel_pos_bias, mask_value=mask_value, drop=drop_rate,
                            attn_drop=attn_drop_rate, fused=fused)
        self.layers = nn.ModuleList([
            HealSwinStage(dims[i], depths[i], num_heads[i], self.geometries[i], drop_path=drop_paths[i],
                          downsample=i < L - 1, **block_kwargs) for i in range(L)])
        self.norm = nn.LayerNorm(dims[-1])
        self.decoder = HealSwinDecoder(dims, depths, num_heads, self.geometries, drop_paths, **block_kwargs) \
            if L > 1 and self.dense else None
        self.head = self.build_head(embed_dim if self.dense else dims[-1], self.patch_size, head_bias)
        self.apply(init_swin_weights)
        if ape:
            trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.set_grad_checkpointing(grad_checkpointing)

    def repr_args(self) -> list[str]:
        symmetric = ["symmetric=True"] if self.symmetric else []
        return [f"patch_size={self.patch_size}", f"window_size={self.window_size}",
                f"shift={self.shift_strategy}", f"window_span={self.window_span}", *symmetric]

    @torch.jit.ignore
    def no_weight_decay_keywords(self):
        return {"relative_position_bias_table", "logit_scale", "absolute_pos_embed"}

    def forward_features(self, x):
        """x: (B, in_chans, N) -> [(B, C_i, N_i) for each stage], finest first, bottleneck last;
        `feature_info[i]` gives channels, nside, reduction and the producing module of map i."""
        self.check_input(x)
        x = self.patch_embed(x)
        if self.absolute_pos_embed is not None:
            x = x + self.absolute_pos_embed
        x = self.pos_drop(x)
        features = []
        for layer in self.layers:
            features.append(x)
            x = layer(x)
        return [f.transpose(1, 2) for f in features[:-1] + [self.norm(x)]]

    def forward_decoder(self, features):
        """The stage maps of `forward_features` -> (B, embed_dim, N_0) at the first stage's nside; for
        classification the bottleneck map."""
        if self.decoder is None:
            return features[-1]
        tokens = [f.transpose(1, 2) for f in features]  # views back onto the token-major maps
        return self.decoder(tokens[-1], tokens[:-1]).transpose(1, 2)


# --------------------------------------------------------------------------- original checkpoints

# Defaults of the original's model config class, for fields a config leaves out.
_ORIGINAL_DEFAULTS = dict(patch_size=4, window_size=4, shift_size=2, shift_strategy="nest_roll",
                          rel_pos_bias=None, embed_dim=96, depths=[2, 2, 2, 2], num_heads=[3, 6, 12, 24],
                          mlp_ratio=4.0, qkv_bias=True, qk_scale=None, use_cos_attn=False, drop_rate=0.0,
                          attn_drop_rate=0.0, drop_path_rate=0.1, use_v2_norm_placement=False, ape=False,
                          use_checkpoint=False)

_KEY_MAP = (
    (re.compile(r"^decoder\.layers_up\.0\."), lambda m: "decoder.expand."),
    (re.compile(r"^decoder\.layers_up\.(\d+)\."), lambda m: f"decoder.stages.{int(m[1]) - 1}."),
    (re.compile(r"^decoder\.concat_back_dim\.(\d+)\."), lambda m: f"decoder.stages.{int(m[1]) - 1}.fuse."),
    (re.compile(r"^decoder\.norm_up\."), lambda m: "decoder.norm."),
    (re.compile(r"^decoder\.up\."), lambda m: "head.expand."),
    (re.compile(r"^decoder\.output\."), lambda m: "head.proj."),
)
_DERIVED = ("attn_mask", "relative_position_index")


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module | None = None):
    """Map an original HEAL-SWIN state_dict onto `HealSwinUNet` names.

    Derived buffers (shift masks, bias index tables) are dropped; decoder and head keys are
    renamed; keys already in our layout pass through unchanged. With `model`, shapes are checked.
    """
    out = {}
    for key, value in state_dict.items():
        if key.rsplit(".", 1)[-1] in _DERIVED:
            continue
        for pattern, repl in _KEY_MAP:
            key = pattern.sub(repl, key, count=1)
        out[key] = value
    if model is not None:
        own = model.state_dict()
        for key, value in out.items():
            if key in own and own[key].shape != value.shape:
                raise ValueError(f"checkpoint entry {key} has shape {tuple(value.shape)}, the model "
                                 f"expects {tuple(own[key].shape)}")
    return out


def _read_state_dict(source) -> dict:
    if isinstance(source, (str, os.PathLike)):
        try:
            source = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - the message names the file and the fix
            raise ValueError(f"{source}: cannot read a state_dict with weights_only=True ({err}); load it "
                             "yourself and pass the dict") from None
    if not isinstance(source, Mapping):
        raise TypeError(f"expected a state_dict, a checkpoint dict or a path, got {type(source).__name__}")
    if "state_dict" in source and isinstance(source["state_dict"], Mapping):
        source = source["state_dict"]
    anchor = "patch_embed.proj.weight"
    prefix = next((k[: -len(anchor)] for k in source if k.endswith(anchor)), None)
    if prefix is None:
        raise ValueError(f"not a HEAL-SWIN state_dict: no key ends with {anchor!r}")
    return {k[len(prefix):]: v for k, v in source.items() if k.startswith(prefix)}


def _config_get(config, name):
    if isinstance(config, Mapping):
        return config.get(name, _ORIGINAL_DEFAULTS.get(name))
    return getattr(config, name, _ORIGINAL_DEFAULTS.get(name))


def load_original(state_dict_or_path, model_config, nside: int, base_pixels=None, num_classes: int | None = None, *,
                  base_pix=None) -> HealSwinUNet:
    """Build the `HealSwinUNet` equivalent to an original HEAL-SWIN model and load its weights.

    state_dict_or_path: a state_dict, or a path to a `torch.save`d state_dict or Lightning
        checkpoint (`{"state_dict": {"<prefix>.<key>": ...}}`; the prefix is found and removed).
    model_config: the original's model config fields (a mapping or an object with attributes):
        window_size, patch_size, shift_size, shift_strategy, rel_pos_bias, embed_dim, depths,
        num_heads, mlp_ratio, qkv_bias, qk_scale, use_cos_attn, use_v2_norm_placement, ape,
        drop_rate, attn_drop_rate, drop_path_rate; missing fields take the original's defaults.
    nside, base_pixels: the input grid (base_pixels: the faces, or their number as the original's `base_pix`
        config value: 8 = faces 0-7; `base_pix=` still works with a DeprecationWarning).
    The result reproduces the original's outputs (windows of consecutive tokens, −100 masks).
    """
    sd = _read_state_dict(state_dict_or_path)
    get = functools.partial(_config_get, model_config)
    strategy, shift = get("shift_strategy"), get("shift_size")
    base_pix = base_pixels_keyword(base_pixels, base_pix, "load_original", old="base_pix")
    if base_pix is None or num_classes is None:
        raise TypeError("load_original needs base_pixels (the faces, or the original's base_pix count) and "
                        "num_classes")
    faces = tuple(range(int(base_pix))) if isinstance(base_pix, (int, np.integer)) else base_pix
    out_w = sd.get("decoder.output.weight")
    if out_w is not None and out_w.shape[0] != num_classes:
        raise ValueError(f"num_classes={num_classes} but the checkpoint's output layer has {out_w.shape[0]}")
    model = HealSwinUNet(
        nside=nside, base_pixels=faces, in_chans=sd["patch_embed.proj.weight"].shape[1],
        num_classes=num_classes, patch_size=get("patch_size"), window_size=get("window_size"),
        shift_strategy=strategy if shift else None, shift_size=shift, embed_dim=get("embed_dim"),
        depths=get("depths"), num_heads=get("num_heads"), mlp_ratio=get("mlp_ratio"),
        qkv_bias=get("qkv_bias"), qk_scale=get("qk_scale"), cosine_attention=bool(get("use_cos_attn")),
        post_norm=bool(get("use_v2_norm_placement")), rel_pos_bias=get("rel_pos_bias"),
        drop_rate=get("drop_rate"), attn_drop_rate=get("attn_drop_rate"),
        drop_path_rate=get("drop_path_rate"), ape=bool(get("ape")),
        patch_norm="patch_embed.norm.weight" in sd, window_span="sequence", mask_value=-100.0,
        head_bias=False, grad_checkpointing=bool(get("use_checkpoint")))
    state = checkpoint_filter_fn(sd, model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the config: missing {missing[:5]}"
                         f"{'…' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                         f"{'…' if len(unexpected) > 5 else ''}")
    return model


# --------------------------------------------------------------------------- variants
# Each variant's defaults are overridden by the caller's keywords: `dict(model_args, **kwargs)` (timm's).

_register = functools.partial(register_model, family="heal_swin", domain="healpix")
_NARROW = dict(nside=16, embed_dim=16, num_heads=(1, 2, 4, 8))  # test builds of the four-stage variants


@_register(test_kwargs=dict(nside=16))
def heal_swin_tiny(**kwargs) -> HealSwinUNet:
    """Small and fast on a CPU (tests, demo): embed 32, depths 2-2-2, window 16 (4×4), grid shift."""
    model_args = dict(nside=64, embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8), window_size=16,
                      patch_size=4, shift_strategy="grid_shift")
    return HealSwinUNet(**dict(model_args, **kwargs))


@_register(test_kwargs=_NARROW)
def heal_swin_small(**kwargs) -> HealSwinUNet:
    """Swin-T widths (embed 96, depths 2-2-6-2), window 64 (8×8), seam-exact grid shift."""
    model_args = dict(nside=256, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                      window_size=64, patch_size=4, shift_strategy="grid_shift")
    return HealSwinUNet(**dict(model_args, **kwargs))


@_register(test_kwargs=dict(_NARROW, depths=(2, 2, 4, 2)))
def heal_swin_base(**kwargs) -> HealSwinUNet:
    """Swin-B widths (embed 128, depths 2-2-18-2), window 64 (8×8), seam-exact grid shift."""
    model_args = dict(nside=256, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                      window_size=64, patch_size=4, shift_strategy="grid_shift", drop_path_rate=0.2)
    return HealSwinUNet(**dict(model_args, **kwargs))


@_register(test_kwargs=_NARROW)
def heal_swin_paper(**kwargs) -> HealSwinUNet:
    """The original's WoodScape architecture (41,279,688 parameters for 10 classes): nside 256,
    faces 0–7, window 64, patch 4, embed 96, depths 2-2-6-2, heads 3-6-12-24, cosine attention,
    post-norm, flat bias, ring shift by 4, the original's window and mask semantics."""
    model_args = dict(nside=256, base_pixels=tuple(range(8)), num_classes=10, embed_dim=96,
                      depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=64, patch_size=4,
                      shift_strategy="ring_shift", shift_size=4, cosine_attention=True, post_norm=True,
                      rel_pos_bias="flat", drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.1,
                      window_span="sequence", mask_value=-100.0)
    return HealSwinUNet(**dict(model_args, **kwargs))
