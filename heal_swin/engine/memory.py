"""Keep freed host memory in the process, so that CPU training steps do not fault it in again.

glibc's malloc serves blocks from 128 KiB up (a threshold it raises to at most 32 MiB) with
fresh `mmap` pages, and gives its heap back to the kernel whenever 64 MiB at its top are free.
A training step allocates and frees its activations and gradients, about as many bytes as its
peak memory, so every step the kernel faults much of that memory in again page by page and
zeroes it: about a tenth of a CPU step at nside 64, and most of the cost of drawing dropout
masks there. `retain_freed_memory()` makes malloc serve every block of up to 32 MiB from its
heap and trim the heap only when 2 GiB at its top are free: a freed block is reused as it is.

Larger blocks (at nside 256 the first stages' activations) still come from `mmap` and go back
when freed. `retain_freed_memory(large=True)` keeps them too: nside-256 fp32 steps are then
about a quarter faster, but heap fragmentation raises their peak by about 2.3 GB (measured in
bench/README.md). Either way the process keeps its high-water mark until it exits instead of
returning memory between steps. The trainer calls this on CPU runs (`run.retain_memory`: small,
the default; all; none); call it yourself in your own CPU training loop. Only glibc is
configured; other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["retain_freed_memory"]

# mallopt parameters from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_LARGEST_THRESHOLD = 32 * 2 ** 20  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit systems


def retain_freed_memory(large: bool = False) -> bool:
    """Serve blocks of up to 32 MiB (all blocks if `large`) from malloc's heap, and trim the heap
    only when 2 GiB at its top are free.

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
    blocks = mallopt(_M_MMAP_MAX, 0) if large else mallopt(_M_MMAP_THRESHOLD, _LARGEST_THRESHOLD)
    return bool(blocks) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
