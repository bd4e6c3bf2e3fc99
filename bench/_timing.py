"""Shared timing helper for the benchmark scripts: median wall time of a callable."""
import statistics
import time


def median_time(fn, repeats: int = 5, warmup: int = 1, budget_s: float = 20.0) -> float:
    """Median seconds per call; fewer repeats when one call is slow (at least one timed)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if sum(times) > budget_s:
            break
    return statistics.median(times)
