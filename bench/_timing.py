"""Timing helper shared by the benchmark scripts (run as `python bench/<script>.py`)."""

import statistics
import time


def median_ms(fn, repeats: int, warmup: int = 2) -> float:
    """Median wall time of `fn()` in milliseconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)
