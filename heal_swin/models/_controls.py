"""Control networks for equivariance measurements: what a backbone is compared with (not registered).

`PlainFaceCNN` is the gauge CNN's U-Net without its gauge equivariance, the non-equivariant reference of
`heal_swin.equivariance.so3_errors` and of the gauge CNN's and S2CNN's tests.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import layers
from ..layers import trivial


class PlainFaceCNN(nn.Module):
    """The gauge CNN's U-Net with ordinary 3×3 convolutions on scalar channels (2 × the fields:
    the same weights per convolution), each face padded from its neighbours as read, without
    turning anything: its kernels point along chart axes that turn from face to face.
    x: (B, in_chans, N) NESTED -> (B, num_classes, N)."""

    def __init__(self, nside, faces, in_chans, num_classes, widths, depths):
        super().__init__()
        self.faces, self.widths = faces, [2 * w for w in widths]
        nsides = [nside >> i for i in range(len(widths))]

        def block(cin, cout, ns):
            return nn.ModuleDict(dict(pad=layers.FacePadding(trivial(cin), ns, faces),
                                      conv=nn.Conv2d(cin, cout, 3, bias=False),
                                      back=layers.FaceUnraster(trivial(cout), ns, faces),
                                      norm=nn.GroupNorm(math.gcd(cout, 8), cout)))

        w = self.widths
        self.stem = block(in_chans, w[0], nside)
        self.enc = nn.ModuleList([nn.ModuleList([block(w[max(i - 1, 0)] if j == 0 else w[i], w[i], nsides[i])
                                                 for j in range(depths[i])]) for i in range(len(w))])
        self.dec = nn.ModuleList([nn.ModuleList([block(w[i + 1] + w[i] if j == 0 else w[i], w[i], nsides[i])
                                                 for j in range(depths[i])]) for i in range(len(w) - 2, -1, -1)])
        self.head = nn.Conv1d(w[0], num_classes, 1, bias=False)

    @staticmethod
    def _run(blk, x):
        return torch.relu(blk["norm"](blk["back"](blk["conv"](blk["pad"](x)))))

    def forward(self, x):
        x = self._run(self.stem, x)
        skips = []
        for i, blocks in enumerate(self.enc):
            if i:
                x = x.unflatten(-1, (-1, 4)).mean(-1)
            for blk in blocks:
                x = self._run(blk, x)
            skips.append(x)
        for blocks, skip in zip(self.dec, reversed(skips[:-1])):
            x = torch.cat([x.repeat_interleave(4, -1), skip], 1)
            for blk in blocks:
                x = self._run(blk, x)
        return self.head(x)
