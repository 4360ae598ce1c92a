"""What gets exported: a trained model with its deployment pre- and post-processing.

SphereGraph:  x (B, 3, N) normalised sphere maps -> (B, K, N): segmentation logits, or depth in
              metres (the network's log / inverse depth converted back).
FisheyeGraph: the raw fisheye image (B, 3, H, W) of one calibrated camera, uint8 or float 0–255
              -> (B, K, H, W) in the fisheye, plus `covered` (B, H, W) bool: the image pixels whose
              ray falls on the model's faces (elsewhere logits are 0 and depth NaN). The sampling
              maps, the normalisation and the back-projection are constants of the graph.
RigGraph:     the raw images of every camera of a rig, one input per camera named after it
              (`FV`, `MVL`, …: (B, 3, H_c, W_c), uint8 or float 0–255), fused on one vehicle-frame
              sphere by `RigToHealpix`'s rule, the model run once, and its one sphere prediction
              back-projected into every camera: outputs `output_<CAM>` (B, K, H_c, W_c) and
              `covered_<CAM>` (B, H_c, W_c) per camera, then `sphere` (B, K, N).
"""

from __future__ import annotations

import torch
from torch import nn

from ..projection import FisheyeToHealpix, HealpixToFisheye, RigToHealpix
from ..tasks import from_prediction

__all__ = ["SphereGraph", "FisheyeGraph", "RigGraph", "FUSION_RULE"]

# what RigToHealpix does, as the ONNX metadata states it
FUSION_RULE = ("each sphere pixel from the camera that sees it closest to its optical axis "
               "(RigToHealpix.source; ties: the earlier camera of the order)")


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


class RigGraph(nn.Module):
    """The vehicle's view in one graph: every camera of a rig -> one sphere -> every camera.

    graph = RigGraph(model, {"FV": cam_fv, "MVL": cam_mvl, …}, nside, faces, mean, std, task)
    outputs = graph(image_fv, image_mvl, …)    # positional, in `graph.names` order

    Inputs: one raw image per camera, (B, 3, H_c, W_c) uint8 or float 0–255, in the order of
    `cameras` (the cameras' order is part of the graph: `RigToHealpix` breaks ties between equally
    good cameras by it; the rig datasets use the sorted names, FV, MVL, MVR, RV, and export does
    too). Inside: each camera's bilinear sampling map into the vehicle-frame sphere; the fusion of
    `RigToHealpix` with the very same `source` table the rig datasets use in training (each sphere
    pixel from one camera, 0 where none sees); the datasets' normalisation; the model once; and the
    nearest back-projection of the one sphere prediction into each camera.

    Outputs, in order: per camera `output_<CAM>` (B, K, H_c, W_c) logits, or depth in metres, and
    `covered_<CAM>` (B, H_c, W_c) bool (the pixel's ray falls on the model's faces; elsewhere logits
    are 0 and depth NaN); last `sphere` (B, K, N), the fused prediction on the sphere.

    Consistency by construction: every covered image pixel of every camera reads the one sphere
    prediction at the HEALPix pixel that contains its ray, so two pixels of two cameras whose rays
    fall in the same sphere pixel receive exactly the same values (no second network, no second
    opinion on the overlap). tests/test_rig_graph.py checks it on the exported graph.
    """

    def __init__(self, model: nn.Module, cameras, nside: int, base_pixels, mean, std, task: str,
                 depth_target: str = "log", cache_dir=None):
        super().__init__()
        rig = RigToHealpix(cameras, nside, base_pixels, cache_dir=cache_dir)
        self.rig = rig
        self.names = list(rig.names)
        self.task = task
        self.head = SphereGraph(model, task, depth_target)
        self.sample = nn.ModuleList(p.module() for p in rig.projectors)
        self.back = nn.ModuleList(HealpixToFisheye(cameras[n], nside, rig.base_pixels, "vehicle",
                                                   cache_dir=cache_dir).module("nearest") for n in self.names)
        source = torch.from_numpy(rig.source)
        # (n_cameras, 1, N) 0/1: masks of disjoint support, so Σ_i mask_i·x_i is the fused map exactly
        select = torch.stack([(source == i) for i in range(len(self.names))]).unsqueeze(1)
        self.register_buffer("fusion_masks", select.float(), persistent=False)
        self.register_buffer("valid", torch.from_numpy(rig.valid_mask), persistent=False)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1), persistent=False)
        self.sizes = {n: (int(cameras[n].height), int(cameras[n].width)) for n in self.names}

    def extra_repr(self) -> str:
        return (f"cameras={self.names}, nside={self.rig.nside}, base_pixels={list(self.rig.base_pixels)}, "
                f"valid={self.rig.valid_mask.mean():.1%}")

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.names)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(x for n in self.names for x in (f"output_{n}", f"covered_{n}")) + ("sphere",)

    def fuse(self, *images: torch.Tensor) -> torch.Tensor:
        """The normalised model input (B, 3, N) of one frame, as the rig datasets build it."""
        if len(images) != len(self.names):
            raise ValueError(f"RigGraph takes {len(self.names)} images ({', '.join(self.names)}, in that order); "
                             f"got {len(images)}")
        x = None
        for i, (sample, image) in enumerate(zip(self.sample, images)):
            term = sample(image.float()) * self.fusion_masks[i]
            x = term if x is None else x + term
        return (x - self.mean) / self.std * self.valid

    def forward(self, *images: torch.Tensor):
        out = self.head(self.fuse(*images))                  # (B, K, N): the one prediction
        fill = 0.0 if self.task == "segmentation" else float("nan")
        result = []
        for back, image in zip(self.back, images):
            covered = back.covered.reshape(1, back.height, back.width).expand(image.shape[0], -1, -1)
            result += [back(out, fill), covered]
        return tuple(result) + (out,)
