"""Where a run executes: processes and devices (torchrun DDP), the epoch sampler, mixed precision,
seeding. Nothing here reads a config: callers pass the values.
"""

from __future__ import annotations

import os
import random
from contextlib import nullcontext

import numpy as np
import torch

from .config import ConfigError

__all__ = ["Distributed", "EpochSampler", "autocast", "seed_everything"]


class Distributed:
    """Rank, world size and device of this process; DDP is set up when torchrun started it."""

    def __init__(self, device: str = "auto"):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"
        elif device == "cuda":
            device = f"cuda:{self.local_rank}"
        self.device = torch.device(device)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"run.device={device!r} but CUDA is not available on this machine")
            torch.cuda.set_device(self.device)
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            torch.distributed.all_reduce(tensor)
        return tensor


class EpochSampler(torch.utils.data.Sampler):
    """This rank's share of a seeded permutation per epoch (or the plain order), optionally
    starting part-way into the epoch, so a resumed run sees exactly the remaining samples."""

    def __init__(self, length: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1,
                 drop_last: bool = True):
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank, self.world, self.drop_last = rank, world, drop_last
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        if self.drop_last:
            order = order[: len(order) - len(order) % self.world]
        return order[self.rank::self.world]

    def __iter__(self):
        return iter(self._indices()[self.start:])

    def __len__(self) -> int:
        return max(0, len(self._indices()) - self.start)


def autocast(amp: str, device: torch.device):
    """The autocast context of `amp` ("none" | "bf16" | "fp16") on `device`."""
    if amp == "none":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
