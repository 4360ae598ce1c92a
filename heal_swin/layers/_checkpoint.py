"""Gradient checkpointing, one mechanism for every backbone: lists of blocks whose activations may be
recomputed in the backward pass instead of kept (timm's `checkpoint_seq`, as a module that holds its
own switch so that a model turns all of them on with one call)."""

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["CheckpointList", "set_checkpointing"]


class CheckpointList(nn.ModuleList):
    """A ModuleList of blocks that may run with gradient checkpointing: while `grad_checkpointing` is
    set, the list is in training mode and autograd records, each block keeps only its inputs and runs
    a second time in the backward pass (activation memory of one block instead of all of them, for
    one more forward). Dropout and drop path draw the same values both times (torch restores the RNG
    state), so the gradients are those of the plain run.

    `forward(x)` runs the blocks in order; `run(i, *args)` runs block i alone, for loops that do more
    between the blocks (a decoder's unpooling and skips). A plain ModuleList to the state_dict: keys
    `<name>.<i>.…`, as a list or an nn.Sequential in the same place, so checkpoints load either way."""

    grad_checkpointing = False

    def extra_repr(self) -> str:
        return "grad_checkpointing=True" if self.grad_checkpointing else ""

    def run(self, i: int, *args):
        block = self[i]
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, x):
        for i in range(len(self)):
            x = self.run(i, x)
        return x


def set_checkpointing(module: nn.Module, enable: bool = True) -> None:
    """Turn gradient checkpointing on or off in every `CheckpointList` inside `module`."""
    for m in module.modules():
        if isinstance(m, CheckpointList):
            m.grad_checkpointing = bool(enable)
