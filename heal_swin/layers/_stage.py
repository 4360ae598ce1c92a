"""The run order of a U-Net stage, shared by the sphere and flat backbones."""

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class UNetStage(nn.Module):
    """Fuse the skip (decoder stages), run the blocks (with optional gradient checkpointing), then
    downsample (encoder) or upsample (decoder). Subclasses set `fuse`, `blocks`, `downsample`,
    `upsample` (None where absent) and `grad_checkpointing`."""

    def forward(self, x, skip=None):
        if self.fuse is not None:
            x = self.fuse(torch.cat([x, skip], dim=-1))
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        if self.downsample is not None:
            x = self.downsample(x)
        if self.upsample is not None:
            x = self.upsample(x)
        return x


def set_stage_checkpointing(model: nn.Module, enable: bool = True) -> None:
    """Turn gradient checkpointing on or off in every `UNetStage` of `model`."""
    for m in model.modules():
        if isinstance(m, UNetStage):
            m.grad_checkpointing = enable
