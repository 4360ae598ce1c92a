"""Nested 2×2 pooling and unpooling on HEALPix maps, shared by the gauge CNN and the S2CNN U-Net.

In NESTED order the 4 children of a pixel at nside/2 are 4 consecutive pixels at nside (a 2×2 block of
one face), so pooling is a reshape of the pixel axis and a reduction, and unpooling a copy.
"""

from torch import nn

__all__ = ["NestedPool", "NestedUnpool"]

POOL_MODES = ("mean", "max")


class NestedPool(nn.Module):
    """The 4 NESTED children of each coarser pixel averaged ("mean") or maximised ("max"), on the last
    axis: (…, N) -> (…, N/4). A 2×2 block maps onto itself under any turn of its face's chart, so the
    pooling commutes with the charts' turns and with the grid's symmetries."""

    def __init__(self, mode: str = "mean"):
        super().__init__()
        if mode not in POOL_MODES:
            raise ValueError(f"{type(self).__name__} mode={mode!r} must be 'mean' or 'max'")
        self.mode = mode

    def extra_repr(self) -> str:
        return f"mode={self.mode}"

    def forward(self, x):
        if x.shape[-1] % 4:
            raise ValueError(f"{type(self).__name__}: N={x.shape[-1]} is not a multiple of 4 (a NESTED "
                             "map at nside ≥ 2)")
        x = x.unflatten(-1, (-1, 4))
        return x.mean(-1) if self.mode == "mean" else x.amax(-1)


class NestedUnpool(nn.Module):
    """Each pixel copied to its 4 NESTED children, on the last axis: (…, N) -> (…, 4N)."""

    def forward(self, x):
        return x.unsqueeze(-1).expand(*([-1] * x.dim()), 4).flatten(-2)
