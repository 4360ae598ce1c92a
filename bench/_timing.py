"""Timing helper shared by the benchmark scripts (run as `python bench/<script>.py`)."""

import statistics
import time


def median_ms(fn, repeats: int, warmup: int = 2, sync=None, desc: str | None = None) -> float:
    """Median wall time of `fn()` in milliseconds, after `warmup` untimed calls (caches, allocator, kernel
    selection); `sync()` waits for the device before and after each timed call (CUDA); `desc`: a progress bar."""
    from tqdm import tqdm

    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in tqdm(range(repeats), desc=desc, leave=False, mininterval=1.0, disable=desc is None):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)
