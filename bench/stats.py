"""Timing helpers shared by the benchmarks, and what they record about the run (versions, machine, loop)."""

from __future__ import annotations

import asyncio
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from importlib import metadata

from app.services.latency import nearest_rank


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
    """Return the nearest-rank `q` quantile (0 < q <= 1) of `samples`, as the service's SLO monitor reads it."""
    return nearest_rank(sorted(samples), q)


def median_difference_ci(
    samples: list[float], baseline: list[float], *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """A bootstrap `level` confidence interval of median(samples) - median(baseline), in their unit."""
    rng = random.Random(seed)
    differences = sorted(
        statistics.median(rng.choices(samples, k=len(samples)))
        - statistics.median(rng.choices(baseline, k=len(baseline)))
        for _ in range(resamples)
    )
    tail = (1 - level) / 2
    return differences[int(tail * resamples)], differences[min(resamples - 1, int((1 - tail) * resamples))]


def event_loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    """uvloop where installed, as uvicorn's loop="auto" picks it in production."""
    try:
        import uvloop
    except ImportError:
        return None, "asyncio"
    return uvloop.new_event_loop, f"uvloop {metadata.version('uvloop')}"


def versions(*distributions: str) -> dict[str, str | None]:
    """The installed version of each distribution that ran (None when it is not installed), and Python's."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for distribution in distributions:
        try:
            found[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            found[distribution] = None
    return found


def machine() -> dict[str, object]:
    """The machine the benchmark ran on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
