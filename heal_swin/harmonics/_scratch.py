"""Per-thread scratch buffers for the transforms' large intermediates (inference only)."""

from __future__ import annotations

import math
import threading
import weakref

import torch

__all__ = ["scratch_wanted", "release_scratch", "cached_plan"]


class _Scratch(threading.local):
    """Per-thread flat buffers that the transforms reuse between calls for their large intermediates when
    running without gradients (`SO3Activation`, RealSHT without iterations, InverseRealSHT): on the CPU every
    fresh tensor of a few MiB costs its page faults again (glibc hands large blocks back to the system),
    about a third of an activation's time at b = 12-16. Numbered slots, used in turn by the stages; each
    grows to the largest request of its slot and is kept (the SO(3) activation uses two: 2 x 12 MiB at
    b = 16, 96 maps, float32; the SHT five, together about 3x the maps' values); requests above `limit`
    (32 MiB: where the products outweigh the page faults) get None, a fresh tensor, so at most 5 x 32 MiB
    per thread and dtype stay held. `release_scratch()` frees them. Nothing a transform returns lives
    here."""

    def __init__(self):
        self.bufs = {}
        self.plans = {}               # transforms' prepared calls viewing these buffers (`_sht._Transform._plan`)

    limit = 32 * 2 ** 20          # bytes per slot: larger intermediates are fresh tensors (get returns None)

    def get(self, slot: int, shape, like: torch.Tensor):
        n = math.prod(shape)
        if n * like.element_size() > self.limit:
            return None
        key = (slot, like.dtype, like.device)
        buf = self.bufs.get(key)
        if buf is None or buf.numel() < n:
            self.plans.clear()                                         # they view the old block
            self.bufs[key] = buf = None                                # free the old block before growing
            buf = self.bufs[key] = torch.empty(n, dtype=like.dtype, device=like.device)
        return buf[:n].view(shape)

    def release(self):
        self.plans.clear()
        self.bufs.clear()


_SCRATCH = _Scratch()


def scratch_wanted(x: torch.Tensor) -> bool:
    """Whether a transform may keep its intermediates in the scratch buffers: no gradients, not tracing or
    exporting (the graph must not see the buffers), on the CPU (CUDA's caching allocator already reuses)."""
    return (not torch.is_grad_enabled() and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()
            and x.device.type == "cpu")


class NoScratch(Exception):
    """Raised while a plan is built when an intermediate gets no scratch block (above the limit): that call
    runs unplanned (`cached_plan` returns None)."""


def cached_plan(owner, key: tuple, build):
    """A plan of `owner` (a transform's call without gradients: its out= operations bound to views of this
    thread's scratch buffers) for `key`, built by `build()` when there is none (None: the call cannot be
    planned, e.g. an intermediate above the scratch limit). Plans are kept beside the buffers they view and
    dropped when a slot grows or the buffers are released; `key` should name what the views depend on (batch,
    dtype, device, the owner's table version). Built twice on a miss: a slot grown while building drops the
    plans, and the second build finds every slot at its size."""
    full = (id(owner),) + tuple(key)
    entry = _SCRATCH.plans.get(full)
    if entry is not None and entry[0]() is owner:
        return entry[1]
    for _ in range(2):
        try:
            plan = build()
        except NoScratch:
            plan = None
        if plan is None:
            return None
    _SCRATCH.plans[full] = (weakref.ref(owner), plan)
    return plan


def release_scratch():
    """Free this thread's scratch buffers (they are kept between calls: see `_Scratch`)."""
    _SCRATCH.release()
