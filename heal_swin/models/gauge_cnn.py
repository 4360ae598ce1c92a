"""Gauge CNN: a gauge-equivariant convolutional U-Net on the HEALPix face charts.

Every feature map inside is a C4-regular field (`heal_swin.layers.FieldType`): at each pixel, C
channels × 4 orientations, the responses of a filter turned by 0–3 quarter-turns in its face's
chart. The layers commute with turning any face's chart by any multiple of 90° (the choice of
gauge), so the network's output does not depend on how the 12 charts are oriented, and it is
exactly equivariant to the grid's own symmetries (90° turns about the polar axis, the 180° flips
about the equatorial axes through face centres and vertices). Cohen, Weiler, Kicanaoglu, Welling,
"Gauge Equivariant Convolutional Networks and the Icosahedral CNN", ICML 2019; Gerken et al.,
"Geometric deep learning and equivariant neural networks", 2021.

`group="trivial"` builds the same U-Net without the equivariance (the control, registered as the
`chart_cnn` family): scalar channels and one ordinary 3×3 kernel per convolution in every chart, the
same neighbour padding (nothing to shift across the seams), the same stages, norms and pooling.

Architecture: a lifting convolution (scalars → regular fields) at the input nside, then L encoder
stages (stage i > 0 starts with nested 2×2 pooling, then `depths[i]` × (3×3 group convolution,
norm shared over orientations, ReLU)), a decoder that unpools, concatenates the encoder's map at
that nside and convolves, orientation max-pooling to invariant features, and the task head.

Read top-down: blocks → stages → decoder → model → registered variants.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch import nn

from ..grid import format_base_pixels
from ..layers import (ChartConv, CheckpointList, FieldNorm, FieldPool, FieldUnpool, GroupConv, LiftingConv,
                      OrientationPool, share_face_tables)
from ._base import SphereBackbone
from ._registry import register_model

__all__ = ["GROUPS", "GaugeCNNUNet", "GaugeBlock", "GaugeStage", "GaugeDecoder"]

# the structure group of the feature fields -> orientations per field: C4-regular fields (the gauge CNN) or
# scalars with ordinary kernels (the trivial group: the chart CNN)
GROUPS = {"c4": 4, "trivial": 1}


def _check_group(group: str) -> str:
    if group not in GROUPS:
        raise ValueError(f"group={group!r} must be one of {tuple(GROUPS)} (C4-regular fields, or the trivial "
                         "group: scalar channels and ordinary kernels)")
    return group


def _fields(x, fields: int, group: str):
    """Flattened channels (B, o·C, N) -> the field layout of `group`: regular (B, C, 4, N), trivial (B, C, N)."""
    return x.unflatten(1, (fields, 4)) if group == "c4" else x


def _flat(x, group: str):
    """The field layout of `group` -> (B, o·C, N) (channel 4c + r: field c, orientation r)."""
    return x.flatten(1, 2) if group == "c4" else x


# --------------------------------------------------------------------------- blocks


class GaugeBlock(nn.Module):
    """Convolution (lifting when `lift`, else group), FieldNorm, ReLU on regular fields.
    lift: x (B, C_in, N) scalars; else (B, C_in, 4, N). Returns (B, C_out, 4, N), NESTED.
    group="trivial": `ChartConv` on scalars, (B, C_in, N) -> (B, C_out, N)."""

    def __init__(self, in_fields: int, out_fields: int, nside: int, faces: Sequence[int],
                 turns: Sequence[int] | None = None, lift: bool = False, group: str = "c4"):
        super().__init__()
        conv = ChartConv if _check_group(group) == "trivial" else LiftingConv if lift else GroupConv
        self.conv = conv(in_fields, out_fields, nside, faces, 3, turns, bias=False)  # the norm removes a bias
        self.norm = FieldNorm(out_fields)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


class GaugeStage(nn.Module):
    """Encoder stage: optional nested 2×2 pooling, then `depth` blocks at `nside`.
    x: regular fields flattened, (B, 4·C_in, N_in) (channel 4c + r: field c, orientation r) ->
    (B, 4·C, N), N = len(faces)·nside², NESTED (group="trivial": (B, C_in, N_in) -> (B, C, N))."""

    def __init__(self, in_fields: int, fields: int, depth: int, nside: int, faces: Sequence[int],
                 turns: Sequence[int] | None = None, pool: bool = False, group: str = "c4"):
        super().__init__()
        self.nside, self.faces, self.in_fields, self.fields = nside, tuple(faces), in_fields, fields
        self.group = _check_group(group)
        self.pool = FieldPool("mean") if pool else None
        self.blocks = CheckpointList([GaugeBlock(in_fields if i == 0 else fields, fields, nside, faces, turns,
                                                 group=group) for i in range(depth)])

    def extra_repr(self) -> str:
        return f"nside={self.nside}, faces={format_base_pixels(self.faces)}, fields={self.fields}"

    def forward(self, x):
        x = _fields(x, self.in_fields, self.group)
        if self.pool is not None:
            x = self.pool(x)
        return _flat(self.blocks(x), self.group)


class GaugeDecoder(nn.Module):
    """U-Net decoder: for encoder stages L−2 … 0, unpool, concatenate that stage's map (fields
    side by side) and run `depths[i]` blocks; then max over orientations.
    bottleneck (B, 4·C_{L−1}, N_{L−1}), skips [(B, 4·C_i, N_i)] -> invariant (B, C_0, N_0)
    (group="trivial": scalars throughout, nothing to pool)."""

    def __init__(self, widths: Sequence[int], depths: Sequence[int], nsides: Sequence[int], faces: Sequence[int],
                 turns: Sequence[int] | None = None, group: str = "c4"):
        super().__init__()
        L = len(widths)
        self.widths, self.group = tuple(widths), _check_group(group)
        self.unpool = FieldUnpool()
        self.stages = nn.ModuleList([
            CheckpointList([GaugeBlock(widths[i + 1] + widths[i] if j == 0 else widths[i], widths[i],
                                       nsides[i], faces, turns, group=group) for j in range(depths[i])])
            for i in range(L - 2, -1, -1)])
        self.pool = OrientationPool("max") if group == "c4" else nn.Identity()

    def forward(self, x, skips):
        x = _fields(x, self.widths[-1], self.group)
        for blocks, skip in zip(self.stages, reversed(skips)):
            x = blocks(torch.cat([self.unpool(x), _fields(skip, -1, self.group)], dim=1))
        return self.pool(x)


# --------------------------------------------------------------------------- model


class GaugeCNNUNet(SphereBackbone):
    """Gauge-equivariant CNN U-Net over any set of HEALPix faces.

    x: (B, in_chans, N), N = len(base_pixels)·nside², NESTED, faces ascending.
    Returns (B, num_classes, N) for task="segmentation", (B, 1, N) (or (B, 2, N) with a
    log-variance channel) for task="depth".

    Stage i works at nside / 2^i with `widths[i]` regular fields (4·widths[i] channels) and
    `depths[i]` blocks; the decoder mirrors the encoder with one block count per stage.
    `turns`: the gauge, one chart turn (quarter-turns) per face; any choice computes the same
    function (up to moving the pixels with the charts), which the tests check.
    `group`: "c4" (the gauge CNN) or "trivial" (the chart CNN: `widths[i]` scalar channels, ordinary
    kernels; `turns` then chooses the direction its kernels point in each chart and changes the function).

    Backbone surface (see `heal_swin.models`; `SphereBackbone` owns the shared part):
    `forward_features(x)` returns the stage maps `[(B, 4·C_i, N_i)]`, finest first, bottleneck
    last: C4-regular fields flattened, channel 4c + r = field c at orientation r
    (`feature_info[i]["field"] == "regular"`); `forward_decoder` returns invariant
    `(B, widths[0], N_0)` (orientations max-pooled) for the head. With group="trivial" the maps are
    `(B, C_i, N_i)` scalars (`"field": "trivial"`).
    """

    def __init__(self, nside: int = 64, base_pixels: Sequence[int] | str = tuple(range(8)), in_chans: int = 3,
                 num_classes: int = 10, *, task: str = "segmentation", log_variance: bool = False,
                 widths: Sequence[int] = (16, 32, 64, 128), depths: Sequence[int] = (2, 2, 2, 2),
                 turns: Sequence[int] | None = None, group: str = "c4", head_bias: bool = False,
                 grad_checkpointing: bool = False):
        super().__init__(nside, base_pixels, in_chans, num_classes, task=task, log_variance=log_variance)
        self.group = _check_group(group)
        o = GROUPS[group]
        widths, depths, nsides = self.check_stages(widths, depths, unit="field" if o > 1 else "channel")
        L = len(widths)
        self.turns = None if turns is None else tuple(int(t) % 4 for t in turns)
        self.widths, self.depths = widths, depths
        self.embed_dim, self.num_features = widths[0], o * widths[-1]
        self.feature_info = self.stage_info(((o * widths[i], nsides[i], f"stages.{i}") for i in range(L)),
                                            field="regular" if o > 1 else "trivial")

        self.stem = GaugeBlock(self.in_chans, widths[0], self.nside, self.faces, self.turns, lift=True, group=group)
        self.stages = nn.ModuleList([
            GaugeStage(widths[max(i - 1, 0)], widths[i], depths[i], nsides[i], self.faces, self.turns, pool=i > 0,
                       group=group) for i in range(L)])
        self.decoder = GaugeDecoder(widths, depths, nsides, self.faces, self.turns, group) \
            if L > 1 and self.dense else None
        self.orientation_pool = OrientationPool("max") if o > 1 else nn.Identity()
        self.head = self.build_head(widths[0] if self.dense else widths[-1], bias=head_bias)
        # one padding / raster table per nside (and field kind), not one per convolution
        share_face_tables(self)
        self.set_grad_checkpointing(grad_checkpointing)

    def repr_args(self) -> list[str]:
        turned = [f"turns={self.turns}"] if self.turns and any(self.turns) else []
        group = [] if self.group == "c4" else [f"group={self.group}"]
        return [f"widths={self.widths}", f"depths={self.depths}", *group, *turned]

    def forward_features(self, x):
        """x: (B, in_chans, N) -> [(B, 4·C_i, N_i) for each stage], finest first, bottleneck last:
        flattened regular fields; `feature_info[i]` gives channels, nside, reduction, module."""
        self.check_input(x)
        x = _flat(self.stem(x), self.group)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def forward_decoder(self, features):
        """The stage maps of `forward_features` -> invariant (B, widths[0], N_0); for classification the
        bottleneck's fields, orientations max-pooled, (B, widths[-1], N_{L-1})."""
        if self.decoder is None:
            return self.orientation_pool(_fields(features[-1], self.widths[-1], self.group))
        return self.decoder(features[-1], features[:-1])


# --------------------------------------------------------------------------- variants
# Each variant's defaults are overridden by the caller's keywords: `dict(model_args, **kwargs)` (timm's).

_register = functools.partial(register_model, family="gauge_cnn", domain="healpix")


@_register(test_kwargs=dict(nside=8))
def gauge_cnn_tiny(**kwargs) -> GaugeCNNUNet:
    """Small and fast on a CPU (tests, demo): 8-16-32 regular fields, one block per stage."""
    model_args = dict(nside=64, widths=(8, 16, 32), depths=(1, 1, 1))
    return GaugeCNNUNet(**dict(model_args, **kwargs))


@_register(test_kwargs=dict(nside=16, widths=(4, 8, 8, 16), depths=(1, 1, 1, 1)))
def gauge_cnn_small(**kwargs) -> GaugeCNNUNet:
    """12-24-48-96 regular fields, two blocks per stage."""
    model_args = dict(nside=256, widths=(12, 24, 48, 96), depths=(2, 2, 2, 2))
    return GaugeCNNUNet(**dict(model_args, **kwargs))


@_register(test_kwargs=dict(nside=16, widths=(4, 8, 8, 16)))
def gauge_cnn_base(**kwargs) -> GaugeCNNUNet:
    """16-32-64-128 regular fields, two blocks per stage: FLOPs close to heal_swin_small's at the
    same nside (bench/README.md)."""
    model_args = dict(nside=256, widths=(16, 32, 64, 128), depths=(2, 2, 2, 2))
    return GaugeCNNUNet(**dict(model_args, **kwargs))
