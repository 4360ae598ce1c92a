"""Keep freed host memory in the process, so that CPU training steps do not fault it in again.

glibc's malloc serves large blocks (from 128 KiB, rising to 32 MiB) with fresh `mmap` pages and
gives them back to the kernel when they are freed. A training step allocates and frees its
activations and gradients, about as many bytes as its peak memory, so every step the kernel
faults the same memory in again page by page and zeroes it: about a tenth of a CPU step at
nside 64, and most of the cost of drawing dropout masks. `retain_freed_memory()` makes malloc
serve every block from its heap and never shrink it: a freed block is reused as it is.

The price: the process keeps its peak resident memory until it exits instead of returning
it between steps. The trainer calls this on CPU runs (`run.retain_memory`, on by default);
call it yourself in your own CPU training loop. Other C libraries than glibc are left alone.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["retain_freed_memory"]

# mallopt parameters from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def retain_freed_memory() -> bool:
    """Tell glibc's malloc to serve large blocks from its heap and never trim the heap.

    Process-wide, for allocations made from now on. Returns whether it took effect (False on
    platforms without glibc, e.g. macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: musl's mallopt does nothing
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # no mmap'd blocks, and trim the heap only when more than 2 GiB at its top are free
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
