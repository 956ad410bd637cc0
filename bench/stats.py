"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


def timed(fn: Callable[[], object], runs: int, warmup: int = 2) -> list[float]:
    """Call `fn` `warmup` times, then `runs` times; return each timed call in milliseconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def percentile(samples: list[float], q: float) -> float:
    """Return the nearest-rank `q` quantile (0 < q <= 1) of `samples`."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
