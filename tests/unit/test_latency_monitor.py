"""The in-process SLO monitor: percentiles over a rolling window, one alert per window, recovery."""

from __future__ import annotations

import random

import pytest

from app.services.latency import LatencyMonitor, Percentiles, nearest_rank


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def timings(total: float, vision: float | None = None) -> dict[str, float]:
    return {"total": total, "upload": 5.0, "store": 10.0, "vision": vision or total * 0.7, "report": total * 0.2}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def monitor(clock: Clock) -> LatencyMonitor:
    return LatencyMonitor(slo_ms=1000, window_s=60, min_samples=10, clock=clock)


def feed(monitor: LatencyMonitor, clock: Clock, totals: list[float], every_s: float = 0.1) -> list[str]:
    kinds = []
    for total in totals:
        clock.now += every_s
        change = monitor.observe(timings(total))
        if change is not None:
            kinds.append(change.kind)
    return kinds


def test_a_healthy_window_says_nothing(monitor: LatencyMonitor, clock: Clock) -> None:
    assert feed(monitor, clock, [400.0] * 200) == []
    assert not monitor.breached


def test_nothing_is_decided_below_the_minimum_number_of_samples(monitor: LatencyMonitor, clock: Clock) -> None:
    assert feed(monitor, clock, [5000.0] * 9) == []
    assert feed(monitor, clock, [5000.0]) == ["breached"]


def test_a_breach_is_announced_once_per_window_not_per_request(monitor: LatencyMonitor, clock: Clock) -> None:
    assert feed(monitor, clock, [400.0] * 20) == []
    # 300 slow requests over 30 s: the p95 crosses the SLO once, and stays above.
    assert feed(monitor, clock, [3000.0] * 300) == ["breached"]
    # Still slow, one request a second for another minute: exactly one reminder, a window after the first.
    assert feed(monitor, clock, [3000.0] * 60, every_s=1.0) == ["breached"]


def test_recovery_is_announced_once_when_the_p95_falls_back(monitor: LatencyMonitor, clock: Clock) -> None:
    feed(monitor, clock, [3000.0] * 20)
    assert monitor.breached
    # Fast requests push the slow ones out of the p95 (and then out of the window).
    kinds = feed(monitor, clock, [200.0] * 600, every_s=0.2)
    assert kinds == ["recovered"]
    assert not monitor.breached
    # A later breach is announced again.
    assert feed(monitor, clock, [3000.0] * 400, every_s=0.01) == ["breached"]


def test_old_samples_leave_the_window(monitor: LatencyMonitor, clock: Clock) -> None:
    feed(monitor, clock, [9000.0] * 5)
    clock.now += 61
    feed(monitor, clock, [100.0] * 10)
    summary = monitor.summary()
    assert summary.samples == 10
    assert summary.stages["total"].p99 == 100.0
    clock.now += 61
    assert monitor.summary().samples == 0


def test_the_p95_sits_exactly_at_the_slo_is_not_a_breach(monitor: LatencyMonitor, clock: Clock) -> None:
    assert feed(monitor, clock, [1000.0] * 50) == []


def test_summary_percentiles_per_stage_match_a_sorted_reference(monitor: LatencyMonitor, clock: Clock) -> None:
    rng = random.Random(3)
    totals = [rng.uniform(100, 5000) for _ in range(500)]
    for total in totals:
        clock.now += 0.01
        monitor.observe(timings(total))
    summary = monitor.summary()
    ordered = sorted(totals)
    assert summary.stages["total"] == Percentiles(
        nearest_rank(ordered, 0.5), nearest_rank(ordered, 0.95), nearest_rank(ordered, 0.99)
    )
    assert summary.stages["vision"].p95 == pytest.approx(nearest_rank(ordered, 0.95) * 0.7)
    assert set(summary.stages) == {"total", "upload", "store", "vision", "report"}
    props = summary.properties()
    assert props["samples"] == 500
    assert props["total_p95_ms"] == summary.stages["total"].p95
    assert props["slo_ms"] == 1000


def test_failed_requests_without_stages_count_in_total_only(monitor: LatencyMonitor, clock: Clock) -> None:
    for _ in range(10):
        clock.now += 0.1
        monitor.observe({"total": 20_000.0})
    stages = monitor.summary().stages
    assert set(stages) == {"total"}


def test_nearest_rank() -> None:
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert nearest_rank([float(i) for i in range(1, 101)], 0.95) == 95.0
    assert nearest_rank([7.0], 0.99) == 7.0
