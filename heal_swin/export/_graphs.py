"""What gets exported: a trained model with its deployment pre- and post-processing.

SphereGraph:  x (B, 3, N) normalised sphere maps -> (B, K, N): segmentation logits, or depth in
              metres (the network's log / inverse depth converted back).
FisheyeGraph: the raw fisheye image (B, 3, H, W) of one calibrated camera, uint8 or float 0–255
              -> (B, K, H, W) in the fisheye, plus `covered` (B, H, W) bool: the image pixels whose
              ray falls on the model's faces (elsewhere logits are 0 and depth NaN). The sampling
              maps, the normalisation and the back-projection are constants of the graph.
"""

from __future__ import annotations

import torch
from torch import nn

from ..projection import FisheyeToHealpix, HealpixToFisheye
from ..tasks import from_prediction

__all__ = ["SphereGraph", "FisheyeGraph"]


class SphereGraph(nn.Module):
    """A model that offers `for_export()` (the flat Swin-UNet) is exported in that form: an
    inference copy with the same outputs whose constant tables are compact (see the model)."""

    def __init__(self, model: nn.Module, task: str, depth_target: str = "log"):
        super().__init__()
        for_export = getattr(model, "for_export", None)
        self.model = for_export() if callable(for_export) else model
        self.task, self.depth_target = task, depth_target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if self.task == "depth":
            return from_prediction(out[:, :1], self.depth_target)
        return out


class FisheyeGraph(nn.Module):
    def __init__(self, model: nn.Module, camera, nside: int, base_pixels, orientation: str, mean, std,
                 task: str, depth_target: str = "log"):
        super().__init__()
        self.head = SphereGraph(model, task, depth_target)
        self.task = task
        proj = FisheyeToHealpix(camera, nside, base_pixels, orientation)
        self.sample = proj.module()
        self.back = HealpixToFisheye(camera, nside, base_pixels, orientation).module("nearest")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1), persistent=False)
        self.height, self.width = camera.height, camera.width

    def forward(self, image: torch.Tensor):
        x = self.sample(image.float())                       # (B, 3, N), 0 where the sphere sees nothing
        x = (x - self.mean) / self.std * self.sample.valid   # the datasets' normalisation
        out = self.head(x)                                   # (B, K, N)
        fill = 0.0 if self.task == "segmentation" else float("nan")
        fisheye = self.back(out, fill)                       # (B, K, H, W)
        covered = self.back.covered.reshape(1, self.height, self.width).expand(image.shape[0], -1, -1)
        return fisheye, covered
