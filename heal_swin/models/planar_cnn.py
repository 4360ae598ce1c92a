"""Planar CNN: a residual encoder–decoder CNN on the equirectangular θ–φ image of the sphere.

The non-equivariant baseline of Gerken et al., "Equivariance versus Augmentation for Spherical
Images", ICML 2022: an ordinary CNN that sees the sphere as a (θ, φ) image and learns rotations only
from augmented data. On HEALPix data it runs inside `models.EquirectangularAdapter` (the engine wraps
every flat model on a sphere source in it):

    net = models.create_model("planar_cnn_1x", in_chans=1, num_classes=11)        # img_size (32, 96)
    model = models.EquirectangularAdapter(net, nside=16, base_pixels=range(12))   # (B, 1, N) -> (B, 11, N)

What follows the paper's segmentation CNNs (`ConvNet_sem_seg` in the authors' repository
github.com/JanEGerken/sem_seg_s2cnn, examples/mnist_sem_seg/models.py and its README): an image on
an equiangular (θ, φ) grid in, an encoder of convolutions with ReLU, some of them with stride 2, a
decoder that mirrors it with stride-2 transposed convolutions, and a residual shortcut around every
layer: max pooling with the layer's stride and a 1×1 convolution on the way down, a 1×1 convolution
and nearest upsampling on the way up, added before the ReLU; the sizes of a ladder (their 218k, 1M and
5.5M models) differ in widths and depth.

What is chosen here (the paper's baselines use unpadded convolutions of mixed kernel sizes 3–9 found by
a hyperparameter search, no normalisation, and no encoder-to-decoder skips): every convolution is 3×3
with the sphere's padding, circular along φ (the image's width is periodic) and zeros along θ; a
residual unit is two 3×3 convolutions (ResNet's basic block) with a 1×1 shortcut where the channels
change; normalisation is GroupNorm with gcd(C, 8) groups after every convolution, as in the gauge CNN,
so that the two differ in their architecture, not their normalisation (`norm=False` gives the paper's
plain convolutions with biases); the decoder concatenates the encoder's map at each resolution
(U-Net skips, as every other family here); the sizes of the ladder differ in widths only (same depth).

Exactly equivariant to rolls of the image along φ by multiples of 2^(stages−1) columns (every
padding is circular along φ, every stride divides the roll), so to the sphere's rotations about the
polar axis by those steps of 360°/W; nothing else.

Read top-down: padding → blocks → stages → decoder → model → registered variants.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import CheckpointList
from ._base import FlatBackbone
from ._registry import register_model

__all__ = ["PlanarCNN", "PlanarResBlock", "PlanarStage", "PlanarUpBlock", "PlanarDecoder", "SphereConv2d",
           "pad_sphere"]


# --------------------------------------------------------------------------- padding


def pad_sphere(x: torch.Tensor, pad: int = 1) -> torch.Tensor:
    """x (B, C, H, W) on the θ–φ image -> (B, C, H + 2·pad, W + 2·pad): circular along W (φ wraps
    around), zeros along H (beyond the poles). Written as a concatenation so that every exporter
    sees slices and a Concat."""
    x = torch.cat([x[..., -pad:], x, x[..., :pad]], dim=-1)
    return F.pad(x, (0, 0, pad, pad))


class SphereConv2d(nn.Conv2d):
    """A 3×3 convolution (stride 1 or 2) with the sphere's padding (`pad_sphere`): (B, C_in, H, W) ->
    (B, C_out, H / stride, W / stride). The parameters are an `nn.Conv2d`'s (same state_dict keys)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, bias: bool = False):
        super().__init__(in_chs, out_chs, kernel_size=3, stride=stride, padding=0, bias=bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", pad=(zeros θ, circular φ)"

    def forward(self, x):
        return super().forward(pad_sphere(x, 1))


def _norm(channels: int, norm: bool) -> nn.Module:
    return nn.GroupNorm(math.gcd(channels, 8), channels) if norm else nn.Identity()


# --------------------------------------------------------------------------- blocks


class PlanarResBlock(nn.Module):
    """Residual unit: relu(norm(conv(relu(norm(conv(x))))) + shortcut(x)), both convolutions 3×3
    (`SphereConv2d`), the first with `stride` (1, or 2 to halve the image). Shortcut: 2×2 max pooling
    when strided, then a 1×1 convolution when the channels change (the paper's pooled 1×1 shortcut);
    else the identity. x (B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, norm: bool = True):
        super().__init__()
        self.conv1 = SphereConv2d(in_chs, out_chs, stride, bias=not norm)
        self.norm1 = _norm(out_chs, norm)
        self.conv2 = SphereConv2d(out_chs, out_chs, bias=not norm)
        self.norm2 = _norm(out_chs, norm)
        self.pool = nn.MaxPool2d(2) if stride == 2 else nn.Identity()
        self.shortcut = nn.Conv2d(in_chs, out_chs, 1, bias=False) if in_chs != out_chs else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x):
        y = self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))
        return self.act(y + self.shortcut(self.pool(x)))


class PlanarUpBlock(nn.Module):
    """Upsampling unit (the paper's decoder layer): relu(norm(convT(x)) + up(conv1×1(x))), a 2×2
    transposed convolution with stride 2 beside a 1×1 convolution followed by nearest upsampling.
    x (B, C_in, H, W) -> (B, C_out, 2H, 2W); no overlap of the transposed kernels, so no padding."""

    def __init__(self, in_chs: int, out_chs: int, norm: bool = True):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_chs, out_chs, kernel_size=2, stride=2, bias=not norm)
        self.norm = _norm(out_chs, norm)
        self.shortcut = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.act = nn.ReLU()

    def forward(self, x):
        skip = F.interpolate(self.shortcut(x), scale_factor=2.0, mode="nearest")
        return self.act(self.norm(self.up(x)) + skip)


# --------------------------------------------------------------------------- stages and decoder


class PlanarStage(nn.Module):
    """Encoder stage at `resolution` (H_i, W_i): `depth` residual units, the first strided when
    `down` (the previous stage's map is twice as large). (B, C_in, H_in, W_in) -> (B, C, H_i, W_i)."""

    def __init__(self, in_chs: int, channels: int, depth: int, resolution: tuple[int, int], *,
                 down: bool = False, norm: bool = True):
        super().__init__()
        self.resolution, self.channels = tuple(resolution), channels
        self.blocks = CheckpointList([
            PlanarResBlock(in_chs if i == 0 else channels, channels, 2 if down and i == 0 else 1, norm)
            for i in range(depth)])

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, channels={self.channels}"

    def forward(self, x):
        return self.blocks(x)


class PlanarDecoder(nn.Module):
    """U-Net decoder: for encoder stages L−2 … 0, an upsampling unit to that stage's channels,
    concatenation of that stage's map, and `depths[i]` residual units.
    bottleneck (B, C_{L−1}, H_{L−1}, W_{L−1}), skips [(B, C_i, H_i, W_i)] -> (B, C_0, H_0, W_0)."""

    def __init__(self, widths: Sequence[int], depths: Sequence[int], norm: bool = True):
        super().__init__()
        L = len(widths)
        self.ups = nn.ModuleList([PlanarUpBlock(widths[i + 1], widths[i], norm)
                                  for i in range(L - 2, -1, -1)])
        self.stages = nn.ModuleList([
            CheckpointList([PlanarResBlock(2 * widths[i] if j == 0 else widths[i], widths[i], 1, norm)
                            for j in range(depths[i])])
            for i in range(L - 2, -1, -1)])

    def forward(self, x, skips):
        for up, blocks, skip in zip(self.ups, self.stages, reversed(skips)):
            x = blocks(torch.cat([up(x), skip], dim=1))
        return x


# --------------------------------------------------------------------------- model


class PlanarCNN(FlatBackbone):
    """Residual encoder–decoder CNN on the equirectangular θ–φ image (rows θ from pole to pole, columns
    φ around the sphere; see `models.EquirectangularAdapter`).

    x: (B, in_chans, H, W) with (H, W) = img_size; returns (B, num_classes, H, W) for segmentation,
    (B, 1, H, W) (or 2 channels with log-variance) for depth. A stem (3×3 convolution, norm, ReLU) to
    `widths[0]` channels, then stage i at img_size / 2^i with `widths[i]` channels and `depths[i]`
    residual units (stage i > 0 starts with a strided one), so H and W must be divisible by
    2^(stages−1); the decoder mirrors the encoder with one unit count per stage. Every 3×3
    convolution pads circularly along W (φ) and with zeros along H (θ). `norm=False`: no
    normalisation, biases on the convolutions instead (the paper's plain layers).

    Backbone surface (see `heal_swin.models`; `FlatBackbone` owns the shared part):
    `forward_features(x)` returns the stage maps `[(B, widths[i], H_i, W_i)]`, finest first,
    bottleneck last; `forward_decoder` returns `(B, widths[0], H, W)` for the head.
    """

    def __init__(self, img_size=(32, 96), in_chans: int = 3, num_classes: int = 10, *,
                 task: str = "segmentation", log_variance: bool = False, widths: Sequence[int] = (12, 24, 40),
                 depths: Sequence[int] = (1, 1, 1), norm: bool = True, head_bias: bool = False,
                 grad_checkpointing: bool = False):
        super().__init__(img_size, in_chans, num_classes, task=task, log_variance=log_variance)
        widths, depths = self.check_stage_lists(widths, depths)
        L = len(widths)
        coarsest = 1 << (L - 1)
        h, w = self.img_size
        if h % coarsest or w % coarsest:
            raise ValueError(f"img_size={self.img_size} must be divisible by 2^(stages−1) = {coarsest} "
                             f"(stage i works at img_size / 2^i, {L} stages)")
        res = [(h >> i, w >> i) for i in range(L)]
        self.widths, self.depths, self.norm = widths, depths, bool(norm)
        self.embed_dim, self.num_features = widths[0], widths[-1]
        self.feature_info = self.stage_info((widths[i], res[i], f"stages.{i}") for i in range(L))

        self.stem = nn.Sequential(SphereConv2d(self.in_chans, widths[0], bias=not norm),
                                  _norm(widths[0], norm), nn.ReLU())
        self.stages = nn.ModuleList([
            PlanarStage(widths[max(i - 1, 0)], widths[i], depths[i], res[i], down=i > 0, norm=norm)
            for i in range(L)])
        self.decoder = PlanarDecoder(widths, depths, norm) if L > 1 and self.dense else None
        self.head = self.build_head(widths[0] if self.dense else widths[-1], bias=head_bias)
        self.set_grad_checkpointing(grad_checkpointing)

    def repr_args(self) -> list[str]:
        return [f"widths={self.widths}", f"depths={self.depths}", f"norm={'group' if self.norm else 'none'}",
                "pad=(zeros θ, circular φ)"]

    def forward_features(self, x):
        """x: (B, in_chans, H, W) -> [(B, widths[i], H / 2^i, W / 2^i) for each stage], finest first,
        bottleneck last; `feature_info[i]` gives channels, resolution, reduction, module."""
        self.check_input(x)
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def forward_decoder(self, features):
        """The stage maps of `forward_features` -> (B, widths[0], H, W); for classification the bottleneck."""
        if self.decoder is None:
            return features[-1]
        return self.decoder(features[-1], features[:-1])


# --------------------------------------------------------------------------- variants
# Each variant's defaults are overridden by the caller's keywords: `dict(model_args, **kwargs)` (timm's).
# The paper's ladder: CNNs of 218k, 1M and 5.5M parameters beside a 204k S2CNN (about 1×, 5×, 27×).
# Issue #26's: about 1×, 4× and 20× the parameters of gauge_cnn_tiny on the digits (60,240 at
# in_chans=1, num_classes=11), by widths alone; the default image is the digits' full sphere at nside 16
# (`equirectangular_shape(16, range(12))`). tests/test_planar_cnn.py checks the counts (±15 %).

_register = functools.partial(register_model, family="planar_cnn", domain="flat")


@_register(test_kwargs=dict(img_size=(16, 32), widths=(4, 8, 8)))
def planar_cnn_1x(**kwargs) -> PlanarCNN:
    """About gauge_cnn_tiny's parameters (62.6k, 1.04×): 12-24-40 channels, one residual unit per stage."""
    model_args = dict(img_size=(32, 96), widths=(12, 24, 40), depths=(1, 1, 1))
    return PlanarCNN(**dict(model_args, **kwargs))


@_register(test_kwargs=dict(img_size=(16, 32), widths=(8, 8, 16)))
def planar_cnn_4x(**kwargs) -> PlanarCNN:
    """About 4× gauge_cnn_tiny's parameters (249k, 4.13×): 24-48-80 channels, one residual unit per
    stage."""
    model_args = dict(img_size=(32, 96), widths=(24, 48, 80), depths=(1, 1, 1))
    return PlanarCNN(**dict(model_args, **kwargs))


@_register(test_kwargs=dict(img_size=(16, 32), widths=(8, 16, 16)))
def planar_cnn_20x(**kwargs) -> PlanarCNN:
    """About 20× gauge_cnn_tiny's parameters (1.18M, 19.5×): 52-104-176 channels, one residual unit per
    stage."""
    model_args = dict(img_size=(32, 96), widths=(52, 104, 176), depths=(1, 1, 1))
    return PlanarCNN(**dict(model_args, **kwargs))
