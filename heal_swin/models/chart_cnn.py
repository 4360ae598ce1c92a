"""Chart CNN: the gauge CNN with the trivial group, the controlled experiment for its equivariance.

The same U-Net on the 12 HEALPix face charts as `gauge_cnn.py` (the same neighbour padding, stages,
pooling, norms and head), with ordinary scalar channels and one ordinary 3×3 kernel per convolution
(`layers.ChartConv`): no orientation fields, no kernel turns, nothing shifted across the polar seams.
The kernels' axes are the charts' axes, which turn from face to face, so the network is not
equivariant to the grid's symmetries (the tests measure how far from it it is); what it differs in
from the gauge CNN is that alone (Gerken et al. 2022 compare equivariant S2CNNs with ordinary CNNs in
the same way, "Equivariance versus augmentation for spherical images", ICML 2022).

The variants form the ladder of that paper against the gauge CNN they control (`gauge_cnn_tiny` for
the digits and the demos, `gauge_cnn_base` for full-resolution fisheye): `chart_cnn_tiny` and
`chart_cnn_base` have the gauge CNN's
parameter count (2× its fields as channels: a group convolution holds 4× the weights of an ordinary
one with as many fields), `*_4x` its activation width and FLOPs (4× its fields; ≈ 4× the parameters),
`*_20x` ≈ 20× its parameters (9× its fields). bench/README.md tabulates parameters and FLOPs.
"""

from __future__ import annotations

import functools

from ._registry import register_model
from .gauge_cnn import GaugeCNNUNet

__all__ = ["ChartCNNUNet"]


class ChartCNNUNet(GaugeCNNUNet):
    """`GaugeCNNUNet(group="trivial")`: x (B, in_chans, N) NESTED -> (B, num_classes, N); `widths[i]`
    scalar channels at stage i; every other argument as the gauge CNN's."""

    def __init__(self, *args, **kwargs):
        if kwargs.get("group", "trivial") != "trivial":
            raise ValueError(f"group={kwargs['group']!r}: a chart CNN has the trivial group; build "
                             "GaugeCNNUNet for C4-regular fields")
        super().__init__(*args, **dict(kwargs, group="trivial"))


# --------------------------------------------------------------------------- variants
# Each variant's defaults are overridden by the caller's keywords: `dict(model_args, **kwargs)` (timm's).

_register = functools.partial(register_model, family="chart_cnn", domain="healpix")
_TINY = dict(nside=64, depths=(1, 1, 1))         # gauge_cnn_tiny: 8-16-32 fields
_BASE = dict(nside=256, depths=(2, 2, 2, 2))     # gauge_cnn_base: 16-32-64-128 fields


@_register(test_kwargs=dict(nside=8))
def chart_cnn_tiny(**kwargs) -> ChartCNNUNet:
    """gauge_cnn_tiny's parameter count: 16-32-64 channels, one block per stage."""
    return ChartCNNUNet(**dict(dict(_TINY, widths=(16, 32, 64)), **kwargs))


@_register(test_kwargs=dict(nside=8, widths=(8, 16, 32)))
def chart_cnn_tiny_4x(**kwargs) -> ChartCNNUNet:
    """gauge_cnn_tiny's activation width and FLOPs (≈ 4× its parameters): 32-64-128 channels."""
    return ChartCNNUNet(**dict(dict(_TINY, widths=(32, 64, 128)), **kwargs))


@_register(test_kwargs=dict(nside=8, widths=(8, 16, 32)))
def chart_cnn_tiny_20x(**kwargs) -> ChartCNNUNet:
    """≈ 20× gauge_cnn_tiny's parameters: 72-144-288 channels."""
    return ChartCNNUNet(**dict(dict(_TINY, widths=(72, 144, 288)), **kwargs))


@_register(test_kwargs=dict(nside=16, widths=(4, 8, 8, 16), depths=(1, 1, 1, 1)))
def chart_cnn_base(**kwargs) -> ChartCNNUNet:
    """gauge_cnn_base's parameter count: 32-64-128-256 channels, two blocks per stage."""
    return ChartCNNUNet(**dict(dict(_BASE, widths=(32, 64, 128, 256)), **kwargs))


@_register(test_kwargs=dict(nside=16, widths=(4, 8, 8, 16), depths=(1, 1, 1, 1)))
def chart_cnn_base_4x(**kwargs) -> ChartCNNUNet:
    """gauge_cnn_base's activation width and FLOPs (≈ 4× its parameters): 64-128-256-512 channels."""
    return ChartCNNUNet(**dict(dict(_BASE, widths=(64, 128, 256, 512)), **kwargs))


@_register(test_kwargs=dict(nside=16, widths=(4, 8, 8, 16), depths=(1, 1, 1, 1)))
def chart_cnn_base_20x(**kwargs) -> ChartCNNUNet:
    """≈ 20× gauge_cnn_base's parameters: 144-288-576-1152 channels."""
    return ChartCNNUNet(**dict(dict(_BASE, widths=(144, 288, 576, 1152)), **kwargs))
