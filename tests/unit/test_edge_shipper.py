"""EdgeLogShipper's pure logic on a fake destination: batch cutting, truncation, overflow, backoff, shutdown."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from app.domain.ports import LogLine
from app.errors import AppError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from app.logging import configure_logging
from app.services.edge_logs import (
    EVENT_OVERHEAD_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    BatchLimits,
    EdgeLogShipper,
    EventQueue,
    Offered,
    PendingEvent,
    ShipperStats,
)

NOW_MS = 1_750_000_000_000
HOUR_MS = 3600 * 1000
SECRET = "card=4111111111111111"


@dataclass
class FakeDestination:
    """Records every batch; fails the calls listed in `failures` (None: succeed), in order."""

    name: str = "fake"
    batches: list[list[LogLine]] = field(default_factory=list)
    attempts: int = 0
    failures: list[AppError | Exception | None] = field(default_factory=list)
    always_fail: AppError | None = None
    reject: int = 0

    async def put(self, lines: Sequence[LogLine]) -> int:
        self.attempts += 1
        if self.always_fail is not None:
            raise self.always_fail
        if self.failures:
            failure = self.failures.pop(0)
            if failure is not None:
                raise failure
        self.batches.append(list(lines))
        return self.reject

    @property
    def lines(self) -> list[LogLine]:
        return [line for batch in self.batches for line in batch]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class RecordingSleep:
    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def lines(count: int, *, start_ms: int = NOW_MS, step_ms: int = 1, size: int = 10, tag: str = "e") -> list[LogLine]:
    return [LogLine(start_ms + i * step_ms, f"{tag}{i:07d}".ljust(size, "x")) for i in range(count)]


def shipper(destination: FakeDestination, **kwargs: Any) -> EdgeLogShipper:
    defaults: dict[str, Any] = {"wall_clock_ms": lambda: NOW_MS, "sleep": RecordingSleep(), "jitter": lambda: 1.0}
    return EdgeLogShipper(destination, **(defaults | kwargs))


def assert_accounted(stats: ShipperStats) -> None:
    """Every line received is in exactly one bucket."""
    assert stats.received == (
        stats.shipped
        + stats.rejected
        + stats.dropped_overflow
        + stats.dropped_shutdown
        + stats.dropped_failed
        + stats.queued
        + stats.in_flight
    )


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Route structlog through the app's logging setup into `caplog`, whichever loggers structlog has cached."""
    configure_logging(fmt="json", level="DEBUG")
    logging.getLogger().addHandler(caplog.handler)
    yield
    logging.getLogger().removeHandler(caplog.handler)


def events(caplog: pytest.LogCaptureFixture, name: str | None = None) -> list[dict[str, Any]]:
    found = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    return [e for e in found if name is None or e.get("event") == name]


# -- batch cutting -------------------------------------------------------------------------------------------


def pending(line: LogLine, *, overhead: int = EVENT_OVERHEAD_BYTES) -> PendingEvent:
    return PendingEvent(line=line, size=len(line.message.encode()) + overhead, enqueued_at=0.0)


def queue_of(items: Sequence[LogLine], max_events: int = 100_000) -> EventQueue:
    queue = EventQueue(max_events)
    for item in items:
        queue.push(pending(item))
    return queue


def test_batches_hold_at_most_10000_events() -> None:
    queue = queue_of(lines(25_000))

    sizes = []
    while len(queue):
        sizes.append(len(queue.take_batch(BatchLimits(), now_ms=NOW_MS).events))

    assert sizes == [10_000, 10_000, 5_000]
    assert queue.bytes == 0


def test_batches_hold_at_most_1_mib_counting_26_bytes_an_event() -> None:
    # 100 events of 100,000 bytes: 100,026 each, so 10 fit in 1,048,576 bytes and the 11th does not.
    queue = queue_of(lines(100, size=100_000))

    batches = []
    while len(queue):
        batches.append(queue.take_batch(BatchLimits(), now_ms=NOW_MS).events)

    assert [len(b) for b in batches] == [10] * 10
    assert all(sum(e.size for e in b) <= MAX_BATCH_BYTES for b in batches)
    assert batches[0][0].size == 100_000 + 26


def test_a_batch_is_filled_to_the_exact_byte_limit() -> None:
    exact = MAX_BATCH_BYTES // 4 - EVENT_OVERHEAD_BYTES  # four of these fill 1,048,576 bytes exactly
    queue = queue_of([LogLine(NOW_MS, "a" * exact)] * 4 + [LogLine(NOW_MS, "b")])

    first = queue.take_batch(BatchLimits(), now_ms=NOW_MS)

    assert len(first.events) == 4
    assert sum(e.size for e in first.events) == MAX_BATCH_BYTES
    assert len(queue) == 1


def test_drained_events_are_sorted_by_timestamp_keeping_arrival_order_for_ties() -> None:
    arrived = [
        LogLine(NOW_MS + 5, "late"),
        LogLine(NOW_MS + 1, "tie-1"),
        LogLine(NOW_MS + 1, "tie-2"),
        LogLine(NOW_MS, "first"),
    ]
    queue = queue_of(arrived)

    batch = queue.take_batch(BatchLimits(), now_ms=NOW_MS)

    assert [e.line.message for e in batch.events] == ["first", "tie-1", "tie-2", "late"]


def test_events_beyond_24_hours_of_the_first_go_back_to_the_front() -> None:
    # Four days of history (within 14 days), one event an hour, arriving newest first.
    history = list(reversed(lines(96, start_ms=NOW_MS - 96 * HOUR_MS, step_ms=HOUR_MS)))
    queue = queue_of([*history, LogLine(NOW_MS, "fresh")])

    spans = []
    sent: list[int] = []
    while len(queue):
        batch = queue.take_batch(BatchLimits(), now_ms=NOW_MS)
        stamps = [e.line.timestamp_ms for e in batch.events]
        assert stamps == sorted(stamps)
        spans.append(stamps[-1] - stamps[0])
        sent += stamps

    assert all(span < 24 * HOUR_MS for span in spans)
    assert len(spans) == 5  # 97 hours of events need five 24 h windows
    assert sorted(sent) == sorted([line.timestamp_ms for line in history] + [NOW_MS])


def test_put_back_events_keep_the_queue_byte_count_right() -> None:
    queue = queue_of([LogLine(NOW_MS - 30 * HOUR_MS, "old"), LogLine(NOW_MS, "new")])

    batch = queue.take_batch(BatchLimits(), now_ms=NOW_MS)

    assert [e.line.message for e in batch.events] == ["old"]
    assert batch.put_back == 1
    assert queue.bytes == len("new") + EVENT_OVERHEAD_BYTES


def test_too_old_too_new_and_empty_events_are_rejected_not_sent() -> None:
    ok = [LogLine(NOW_MS - 14 * 24 * HOUR_MS, "oldest ok"), LogLine(NOW_MS + 2 * HOUR_MS, "newest ok")]
    bad = [
        LogLine(NOW_MS - 14 * 24 * HOUR_MS - 1, "too old"),
        LogLine(NOW_MS + 2 * HOUR_MS + 1, "too new"),
        LogLine(NOW_MS, ""),
        LogLine(-5, "negative"),
    ]
    queue = queue_of(bad + ok)

    first = queue.take_batch(BatchLimits(), now_ms=NOW_MS)
    second = queue.take_batch(BatchLimits(), now_ms=NOW_MS)  # 14 days apart: not one batch

    assert [e.line.message for e in first.events + second.events] == ["oldest ok", "newest ok"]
    assert (first.rejected, second.rejected) == (4, 0)


def test_queue_drops_the_oldest_when_full() -> None:
    queue = EventQueue(3)
    dropped = [queue.push(pending(line)) for line in lines(5)]

    assert dropped == [0, 0, 0, 1, 1]
    assert [e.line.message for e in queue.take_batch(BatchLimits(), now_ms=NOW_MS).events] == [
        "e0000002xx",
        "e0000003xx",
        "e0000004xx",
    ]
    assert queue.bytes == 0


# -- offer, truncation, overflow ---------------------------------------------------------------------------------


def test_offer_is_synchronous_and_counts_what_it_took() -> None:
    ship = shipper(FakeDestination())

    result = ship.offer(lines(5))

    assert result == Offered(accepted=5, dropped=0)
    assert ship.stats.queued == 5
    assert ship.stats.received == 5


def test_overflow_drops_the_oldest_and_counts_them(caplog: pytest.LogCaptureFixture, logged: None) -> None:
    destination = FakeDestination()
    ship = shipper(destination, max_queue=100)

    first = ship.offer(lines(80, tag="a"))
    second = ship.offer(lines(50, tag="b"))
    third = ship.offer(lines(250, tag="c"))  # more than the whole queue in one offer

    assert (first.dropped, second.dropped, third.dropped) == (0, 30, 250)
    assert third.accepted == 250
    stats = ship.stats
    assert stats.dropped_overflow == 280
    assert stats.queued == 100
    assert_accounted(stats)

    anyio.run(ship.flush)

    # What survives is the newest 100 events, in order.
    assert [line.message for line in destination.lines] == [line.message for line in lines(250, tag="c")[-100:]]
    assert_accounted(ship.stats)


def test_an_oversized_event_is_truncated_with_a_marker_on_a_character_boundary() -> None:
    destination = FakeDestination()
    ship = shipper(destination)
    # 3-byte characters, so that the byte limit falls inside one of them.
    huge = "€" * (MAX_EVENT_BYTES // 3 + 1000)

    ship.offer([LogLine(NOW_MS, huge), LogLine(NOW_MS + 1, "small")])
    anyio.run(ship.flush)

    sent = destination.lines[0].message
    assert len(sent.encode("utf-8")) <= MAX_EVENT_BYTES
    assert len(sent.encode("utf-8")) > MAX_EVENT_BYTES - 100
    assert sent.endswith(f"[truncated: {len(huge.encode())} bytes]")
    assert sent.startswith("€€€")
    assert ship.stats.truncated == 1
    # The truncated event and the small one do not fit one batch together: each went alone.
    assert [len(b) for b in destination.batches] == [1, 1]


def test_a_smaller_per_event_limit_is_honoured() -> None:
    destination = FakeDestination()
    ship = shipper(destination, max_event_bytes=262_144 - EVENT_OVERHEAD_BYTES)

    ship.offer([LogLine(NOW_MS, "x" * 300_000)])
    anyio.run(ship.flush)

    assert len(destination.lines[0].message.encode()) <= 262_144 - EVENT_OVERHEAD_BYTES


def test_lone_surrogates_are_replaced_so_the_event_can_be_encoded() -> None:
    destination = FakeDestination()
    ship = shipper(destination)

    ship.offer([LogLine(NOW_MS, "bad \ud800 half")])
    anyio.run(ship.flush)

    assert destination.lines[0].message.encode("utf-8") == b"bad ? half"


def test_flush_ships_everything_in_limit_sized_sorted_batches() -> None:
    destination = FakeDestination()
    ship = shipper(destination)
    offered = lines(25_000)
    ship.offer(offered[12_000:])
    ship.offer(offered[:12_000])  # the earlier half arrives second

    anyio.run(ship.flush)

    assert [len(b) for b in destination.batches] == [10_000, 10_000, 5_000]
    for batch in destination.batches:
        stamps = [line.timestamp_ms for line in batch]
        assert stamps == sorted(stamps)
    assert sorted(destination.lines, key=lambda line: line.timestamp_ms) == offered
    assert ship.stats.shipped == 25_000
    assert_accounted(ship.stats)


def test_rejections_reported_by_the_destination_are_counted() -> None:
    destination = FakeDestination(reject=2)
    ship = shipper(destination)
    ship.offer(lines(10))

    anyio.run(ship.flush)

    assert (ship.stats.shipped, ship.stats.rejected) == (8, 2)


# -- retries and failures ---------------------------------------------------------------------------------------


def test_retryable_errors_back_off_exponentially_to_the_cap_and_nothing_is_lost() -> None:
    failures: list[AppError | Exception | None] = [UpstreamUnavailable()] * 8 + [UpstreamTimeout()]
    destination = FakeDestination(failures=failures)
    sleep = RecordingSleep()
    ship = shipper(destination, sleep=sleep, jitter=lambda: 1.0)
    ship.offer(lines(10))

    anyio.run(ship.flush)

    assert sleep.delays == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0])
    assert ship.stats.retries == 9
    assert ship.stats.shipped == 10
    assert destination.lines == lines(10)


def test_backoff_uses_full_jitter() -> None:
    draws = iter([0.0, 0.5, 0.25])
    ship = shipper(FakeDestination(), jitter=lambda: next(draws))

    assert [ship.backoff_s(1), ship.backoff_s(3), ship.backoff_s(100)] == pytest.approx([0.0, 0.4, 2.5])
    # A very long outage does not overflow the exponent.
    assert shipper(FakeDestination(), jitter=lambda: 1.0).backoff_s(10_000) == 10.0


def test_a_non_retryable_error_drops_only_that_batch(caplog: pytest.LogCaptureFixture, logged: None) -> None:
    destination = FakeDestination(failures=[None, UpstreamError("CloudWatch Logs refused."), None])
    ship = shipper(destination)
    ship.offer([LogLine(NOW_MS + i, f"{SECRET} {i}") for i in range(25_000)])

    anyio.run(ship.flush)

    stats = ship.stats
    assert (stats.shipped, stats.dropped_failed, stats.failed_batches, stats.retries) == (15_000, 10_000, 1, 0)
    assert [len(b) for b in destination.batches] == [10_000, 5_000]
    assert_accounted(stats)
    failed = events(caplog, "edge_log_batch_failed")
    assert len(failed) == 1
    assert failed[0]["events"] == 10_000
    assert failed[0]["level"] == "error"


def test_an_unexpected_exception_drops_the_batch_without_logging_its_text(
    caplog: pytest.LogCaptureFixture, logged: None
) -> None:
    destination = FakeDestination(failures=[ValueError(f"could not send {SECRET}")])
    ship = shipper(destination)
    ship.offer([LogLine(NOW_MS, SECRET)])

    anyio.run(ship.flush)

    assert ship.stats.dropped_failed == 1
    assert events(caplog, "edge_log_batch_failed")[0]["cause"] == "ValueError"
    assert SECRET not in caplog.text
    assert all(SECRET not in str(e) for e in events(caplog))


def test_drop_warnings_are_rate_limited_and_carry_counts(caplog: pytest.LogCaptureFixture, logged: None) -> None:
    clock = FakeClock()
    ship = shipper(FakeDestination(), max_queue=100, clock=clock, drop_log_interval_s=60.0)
    ship.offer(lines(100))

    for _ in range(50):  # 50 offers, each pushing out 10 of the oldest
        ship.offer([LogLine(NOW_MS, SECRET)] * 10)
        clock.now += 1.0
    clock.now += 60.0
    ship.offer([LogLine(NOW_MS, "one more")])

    warnings = events(caplog, "edge_log_events_lost")
    # The first at once; then nothing for 60 s; then one line with the sum of what was dropped meanwhile.
    assert [w["dropped_overflow"] for w in warnings] == [10, 491]
    assert warnings[-1]["total_dropped_overflow"] == 501
    assert SECRET not in caplog.text


# -- the background task -----------------------------------------------------------------------------------------


async def test_a_small_offer_ships_once_the_flush_interval_has_passed() -> None:
    destination = FakeDestination()
    async with shipper(destination, flush_interval_s=0.5, sleep=anyio.sleep) as ship:
        ship.offer(lines(3))
        await anyio.sleep(0.1)
        assert destination.batches == []  # not yet: it waits for more

        with anyio.fail_after(2):
            while not destination.batches:
                await anyio.sleep(0.01)

    assert destination.lines == lines(3)


async def test_a_full_batch_ships_without_waiting_for_the_interval() -> None:
    destination = FakeDestination()
    async with shipper(destination, flush_interval_s=60, sleep=anyio.sleep) as ship:
        ship.offer(lines(MAX_BATCH_EVENTS + 5))
        with anyio.fail_after(2):
            while not destination.batches:
                await anyio.sleep(0.01)
        assert len(destination.batches[0]) == MAX_BATCH_EVENTS
        await anyio.sleep(0.1)
        assert len(destination.batches) == 1  # the 5 left over wait for the interval
        assert ship.stats.queued == 5


async def test_leaving_flushes_what_is_queued() -> None:
    destination = FakeDestination()
    async with shipper(destination, flush_interval_s=60, sleep=anyio.sleep) as ship:
        ship.offer(lines(12_345))
        started = time.monotonic()

    assert time.monotonic() - started < 2
    assert len(destination.lines) == 12_345
    assert ship.stats.shipped == 12_345
    assert ship.stats.dropped_shutdown == 0


async def test_leaving_gives_up_at_the_deadline_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture, logged: None
) -> None:
    destination = FakeDestination(always_fail=UpstreamUnavailable())
    started = time.monotonic()
    async with shipper(destination, shutdown_timeout_s=0.3, backoff_base_s=0.01, sleep=anyio.sleep) as ship:
        ship.offer(lines(MAX_BATCH_EVENTS + 100))
        await anyio.sleep(0.1)

    assert time.monotonic() - started < 2
    stats = ship.stats
    assert stats.dropped_shutdown == MAX_BATCH_EVENTS + 100
    assert stats.retries > 3
    assert (stats.queued, stats.in_flight) == (0, 0)
    assert_accounted(stats)
    stopped = events(caplog, "edge_log_shipper_stopped")
    assert stopped[0]["dropped_shutdown"] == MAX_BATCH_EVENTS + 100
    # A long outage logs a handful of retry lines, not one per attempt.
    assert len(events(caplog, "edge_log_batch_retry")) < stats.retries


async def test_retries_continue_while_new_events_fill_the_queue_dropping_the_oldest() -> None:
    destination = FakeDestination(failures=[UpstreamUnavailable()] * 5)
    async with shipper(
        destination, max_queue=200, flush_interval_s=0.01, backoff_base_s=0.02, sleep=anyio.sleep
    ) as ship:
        ship.offer(lines(50, tag="a"))  # the batch that will be retried
        await anyio.sleep(0.05)
        ship.offer(lines(300, tag="b"))  # arrives while it is retried: the oldest 100 are dropped

    assert destination.attempts >= 6
    assert ship.stats.dropped_overflow == 100
    assert [line.message for line in destination.batches[0]] == [line.message for line in lines(50, tag="a")]
    assert [line.message for line in destination.lines[50:]] == [line.message for line in lines(300, tag="b")[100:]]
    assert_accounted(ship.stats)


async def test_offers_after_leaving_are_counted_as_dropped_at_shutdown() -> None:
    async with shipper(FakeDestination()) as ship:
        pass

    assert ship.offer(lines(4)) == Offered(accepted=0, dropped=4)
    assert ship.stats.dropped_shutdown == 4
    assert_accounted(ship.stats)
    with pytest.raises(RuntimeError):
        async with ship:
            pass


async def test_an_error_in_the_body_still_flushes_and_propagates() -> None:
    destination = FakeDestination()

    async def body() -> None:
        async with shipper(destination, flush_interval_s=60) as ship:
            ship.offer(lines(3))
            raise LookupError("boom")

    with pytest.raises(LookupError):  # itself, not wrapped in an ExceptionGroup
        await body()

    assert destination.lines == lines(3)


async def test_cancelling_the_host_still_flushes_within_the_deadline() -> None:
    destination = FakeDestination()
    with anyio.move_on_after(0.1):
        async with shipper(destination, flush_interval_s=60) as ship:
            ship.offer(lines(3))
            await anyio.sleep(10)

    assert destination.lines == lines(3)
    assert ship.stats.dropped_shutdown == 0


def test_limits_that_cannot_hold_one_event_are_refused() -> None:
    with pytest.raises(ValueError, match="max_event_bytes"):
        EdgeLogShipper(FakeDestination(), limits=BatchLimits(max_bytes=1000), max_event_bytes=5000)
    with pytest.raises(ValueError, match="max_events"):
        EventQueue(0)
