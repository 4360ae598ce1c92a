"""A flat backbone on the sphere: HEALPix maps in and out, an equirectangular (θ-φ) image in between.

    net = models.create_model("swin_unet_flat_tiny", in_chans=1, num_classes=11, img_size=(32, 96))
    model = models.EquirectangularAdapter(net, nside=16, base_pixels=range(12))   # (B, 1, N) -> (B, 11, N)

The image rows are equal steps in θ (0 … π over the full height), its columns equal steps in φ (0 … 2π);
every image pixel reads the sphere pixel that contains its centre, every sphere pixel reads back the image
pixel that contains its direction (nearest both ways, so values are moved, never blended). The default
image has as many pixels as the map: 2·nside rows of N / (2·nside) columns (32 × 96 at nside 16 on the
full sphere). Image pixels whose direction falls on a face the map does not hold read zero.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from .. import grid

__all__ = ["EquirectangularAdapter", "equirectangular_shape", "equirectangular_tables"]


def equirectangular_shape(nside: int, base_pixels) -> tuple[int, int]:
    """(H, W) with H·W = N: 2·nside rows."""
    n = len(grid.check_base_pixels(base_pixels)) * grid.check_nside(nside) ** 2
    return 2 * nside, n // (2 * nside)


@functools.lru_cache(maxsize=8)
def equirectangular_tables(nside: int, base_pixels: tuple, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(to_image (H·W,), to_sphere (N,)): the local sphere pixel each image pixel reads (N where the face is
    absent: a zero slot), and the flat image index each sphere pixel reads."""
    h, w = shape
    theta = (np.arange(h) + 0.5) * np.pi / h
    phi = (np.arange(w) + 0.5) * 2 * np.pi / w
    tt, pp = np.meshgrid(theta, phi, indexing="ij")
    local = np.asarray(grid.global_to_local(nside, base_pixels, grid.ang2pix(nside, tt.ravel(), pp.ravel())))
    n = len(base_pixels) * nside ** 2
    sph_theta, sph_phi = grid.pix2ang(nside, grid.base_pixel_indices(nside, base_pixels))
    row = np.clip((sph_theta / np.pi * h).astype(np.int64), 0, h - 1)
    col = np.clip((np.mod(sph_phi, 2 * np.pi) / (2 * np.pi) * w).astype(np.int64), 0, w - 1)
    return np.where(local >= 0, local, n), row * w + col


class EquirectangularAdapter(nn.Module):
    """`net` (a flat model, (B, C, H, W) -> (B, K, H, W)) on HEALPix maps: x (B, C, N) NESTED over
    `base_pixels` -> (B, K, N); a classifier's (B, K) passes unchanged. `image(x)` is the network's input, `to_sphere(y)` brings an image-shaped
    output back."""

    def __init__(self, net: nn.Module, nside: int, base_pixels, shape=None):
        super().__init__()
        self.net = net
        self.nside, self.base_pixels = grid.check_nside(nside), grid.check_base_pixels(base_pixels)
        self.shape = tuple(shape) if shape is not None else equirectangular_shape(self.nside, self.base_pixels)
        to_img, to_sph = equirectangular_tables(self.nside, self.base_pixels, self.shape)
        self.register_buffer("to_image", torch.as_tensor(to_img), persistent=False)
        self.register_buffer("to_sphere_index", torch.as_tensor(to_sph), persistent=False)

    def extra_repr(self) -> str:
        return f"nside={self.nside}, faces={grid.format_base_pixels(self.base_pixels)}, image={self.shape}"

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, N) -> (B, C, H, W)."""
        x = torch.cat([x, x.new_zeros(*x.shape[:-1], 1)], dim=-1)
        return x.index_select(-1, self.to_image).unflatten(-1, self.shape)

    def to_sphere(self, y: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) -> (B, K, N)."""
        return y.flatten(-2).index_select(-1, self.to_sphere_index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(self.image(x))
        return y if y.dim() == 2 else self.to_sphere(y)   # one prediction per sample (classification) as it is
