"""The latency SLO, watched in the process: percentiles over a rolling window, and its transitions.

Each analysis that ran the model adds its stage timings. When the window's p95 of `total`
rises above `LATENCY_SLO_MS` the monitor says `breached` once, then again at most once per
window while it stays above (a reminder, not one alert per request); when the p95 falls back
to the SLO or below it says `recovered`. Fewer than `min_samples` in the window decide
nothing, so one slow request at 3 a.m. pages nobody.

Pure and single-threaded (the event loop calls it): recording a sample is an append and one
`bisect.insort` into the sorted totals, so the p95 read per request costs O(1) on top of it.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

STAGES: Final = ("total", "upload", "store", "vision", "report")


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank `q` quantile (0 < q <= 1) of already sorted, non-empty `ordered`."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class Percentiles:
    p50: float
    p95: float
    p99: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Percentiles:
        ordered = sorted(samples)
        return cls(nearest_rank(ordered, 0.50), nearest_rank(ordered, 0.95), nearest_rank(ordered, 0.99))


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """The window as it stands: how many samples, and p50/p95/p99 per stage (ms)."""

    samples: int
    window_s: float
    slo_ms: float
    stages: Mapping[str, Percentiles]

    def properties(self) -> dict[str, float | int]:
        """Flat event properties: `total_p95_ms`, `vision_p99_ms`, …"""
        flat: dict[str, float | int] = {"samples": self.samples, "window_s": self.window_s, "slo_ms": self.slo_ms}
        for stage, p in self.stages.items():
            flat |= {f"{stage}_p50_ms": p.p50, f"{stage}_p95_ms": p.p95, f"{stage}_p99_ms": p.p99}
        return flat


@dataclass(frozen=True, slots=True)
class SloChange:
    kind: Literal["breached", "recovered"]
    summary: LatencySummary


class LatencyMonitor:
    """p50/p95/p99 of each stage over the last `window_s` seconds, and the SLO's state."""

    def __init__(
        self,
        *,
        slo_ms: float,
        window_s: float,
        min_samples: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.slo_ms = slo_ms
        self.window_s = window_s
        self.min_samples = min_samples
        self._clock = clock
        self._samples: deque[tuple[float, Mapping[str, float]]] = deque()
        self._totals: list[float] = []  # the window's `total`s, sorted
        self.breached = False
        self._alerted_at = -math.inf

    def observe(self, timings: Mapping[str, float]) -> SloChange | None:
        """Record one analysis's timings (ms by stage; `total` required); return a transition, if any."""
        now = self._clock()
        self._expire(now)
        self._samples.append((now, timings))
        bisect.insort(self._totals, timings["total"])
        if len(self._totals) < self.min_samples:
            return None
        above = nearest_rank(self._totals, 0.95) > self.slo_ms
        if above and (not self.breached or now - self._alerted_at >= self.window_s):
            self.breached, self._alerted_at = True, now
            return SloChange("breached", self.summary())
        if not above and self.breached:
            self.breached = False
            return SloChange("recovered", self.summary())
        return None

    def summary(self) -> LatencySummary:
        """Percentiles of every stage over the current window (sorting happens here, not per request)."""
        self._expire(self._clock())
        stages = {
            stage: Percentiles.of(values)
            for stage in STAGES
            if (values := [t[stage] for _, t in self._samples if stage in t])
        }
        return LatencySummary(len(self._samples), self.window_s, self.slo_ms, stages)

    def _expire(self, now: float) -> None:
        while self._samples and now - self._samples[0][0] > self.window_s:
            _, old = self._samples.popleft()
            del self._totals[bisect.bisect_left(self._totals, old["total"])]
