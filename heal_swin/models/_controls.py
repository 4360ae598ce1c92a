"""`PlainFaceCNN`, the earlier name of the chart CNN (`heal_swin.models.chart_cnn`), kept for callers of the
equivariance measurements: the non-equivariant reference of `heal_swin.equivariance.so3_errors` and of the
gauge CNN's and S2CNN's tests."""

from __future__ import annotations

from typing import Sequence

from .chart_cnn import ChartCNNUNet


def PlainFaceCNN(nside: int, faces: Sequence[int], in_chans: int, num_classes: int, widths: Sequence[int],
                 depths: Sequence[int]) -> ChartCNNUNet:  # noqa: N802 (was a class)
    """The gauge CNN's U-Net of `widths` fields with ordinary 3×3 convolutions on 2 × as many scalar
    channels (the same weights per convolution): `ChartCNNUNet(widths=2·widths)`.
    x: (B, in_chans, N) NESTED -> (B, num_classes, N)."""
    return ChartCNNUNet(nside=nside, base_pixels=faces, in_chans=in_chans, num_classes=num_classes,
                        widths=tuple(2 * int(w) for w in widths), depths=depths)
