"""The run order of a U-Net stage, shared by the sphere and flat backbones."""

import torch
from torch import nn

from ._checkpoint import set_checkpointing


class UNetStage(nn.Module):
    """Fuse the skip (decoder stages), run the blocks, then downsample (encoder) or upsample
    (decoder). Subclasses set `fuse`, `blocks` (a `CheckpointList`: gradient checkpointing per
    block), `downsample` and `upsample` (None where absent)."""

    def forward(self, x, skip=None):
        if self.fuse is not None:
            x = self.fuse(torch.cat([x, skip], dim=-1))
        x = self.blocks(x)
        if self.downsample is not None:
            x = self.downsample(x)
        if self.upsample is not None:
            x = self.upsample(x)
        return x


# the earlier name, from when only the U-Net stages could checkpoint
set_stage_checkpointing = set_checkpointing
