"""Ship Supabase Edge Function logs to a `LogDestination` in the background, in CloudWatch-sized batches.

    POST /v1/logs/edge ──offer()──▶ bounded queue ──background task──▶ batches ──▶ LogDestination.put
                       (sync, never   (drops the      (full batch, or the          (retried with backoff
                        waits)         oldest)         oldest waited flush_interval) while retryable)

`EdgeLogShipper` is an async context manager: entering starts its task in its own task group;
leaving ships what is queued within `shutdown_timeout_s` and counts the rest as dropped. Batches
obey PutLogEvents' limits: at most 10,000 events and 1,048,576 bytes (UTF-8 message + 26 bytes
each), sorted by timestamp, spanning less than 24 h. An event larger than CloudWatch's per-event
maximum (1 MB since April 2025; it was 256 KB) is truncated with a marker; events older than
14 days, more than 2 h in the future or empty are counted as rejected and never sent.

Delivery is at least once: a call that timed out may have been accepted, and is sent again.
Message contents are never logged here; only counts are.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import anyio
import anyio.abc
import structlog

from app.domain.ports import LogDestination, LogLine
from app.errors import AppError, UpstreamTimeout, UpstreamUnavailable

log = structlog.get_logger("app.edge_logs")

# PutLogEvents' limits (https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutLogEvents.html).
MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD_BYTES = 26
# The per-event limit is 1 MB; one such event must also fit a batch with its 26 bytes of overhead.
MAX_EVENT_BYTES = MAX_BATCH_BYTES - EVENT_OVERHEAD_BYTES
MAX_BATCH_SPAN_MS = 24 * 3600 * 1000
MAX_EVENT_AGE_MS = 14 * 24 * 3600 * 1000
MAX_EVENT_FUTURE_MS = 2 * 3600 * 1000

TRUNCATION_MARKER = "…[truncated: {size} bytes]"


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Offered:
    """What one `offer` did: lines taken into the queue, and queued events dropped (oldest first) to fit them."""

    accepted: int
    dropped: int


@dataclass(frozen=True, slots=True)
class ShipperStats:
    """Counters since the shipper was built. Every line received ends up in exactly one of
    shipped, rejected, dropped_overflow, dropped_shutdown, dropped_failed, queued, in_flight."""

    received: int
    shipped: int
    rejected: int
    dropped_overflow: int
    dropped_shutdown: int
    dropped_failed: int
    truncated: int
    retries: int
    failed_batches: int
    queued: int
    in_flight: int


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """What one destination call may hold; CloudWatch's PutLogEvents limits by default."""

    max_events: int = MAX_BATCH_EVENTS
    max_bytes: int = MAX_BATCH_BYTES
    max_span_ms: int = MAX_BATCH_SPAN_MS
    max_age_ms: int = MAX_EVENT_AGE_MS
    max_future_ms: int = MAX_EVENT_FUTURE_MS

    def __post_init__(self) -> None:
        if self.max_events < 1 or self.max_span_ms < 1:
            raise ValueError("max_events and max_span_ms must be positive")


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """A queued line: its size as PutLogEvents counts it, and when it was queued (the shipper's clock)."""

    line: LogLine
    size: int
    enqueued_at: float


@dataclass(frozen=True, slots=True)
class Batch:
    """What `EventQueue.take_batch` took: events to send (sorted by time) and how many it rejected."""

    events: list[PendingEvent]
    rejected: int
    put_back: int


class EventQueue:
    """A FIFO of pending events bounded by count, dropping the oldest; it keeps their total size."""

    def __init__(self, max_events: int) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.max_events = max_events
        self._events: deque[PendingEvent] = deque()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._events)

    def oldest_enqueued_at(self) -> float | None:
        return self._events[0].enqueued_at if self._events else None

    def push(self, event: PendingEvent) -> int:
        """Append `event`; return how many of the oldest events were dropped to stay within bounds (0 or 1)."""
        self._events.append(event)
        self.bytes += event.size
        if len(self._events) > self.max_events:
            self.bytes -= self._events.popleft().size
            return 1
        return 0

    def clear(self) -> int:
        """Empty the queue; return how many events it held."""
        count = len(self._events)
        self._events.clear()
        self.bytes = 0
        return count

    def take_batch(self, limits: BatchLimits, *, now_ms: int) -> Batch:
        """Take the next batch: drain from the front within the count and byte limits, reject what is too
        old, too new or empty, sort by timestamp, and put what exceeds the time span back at the front."""
        drained: list[PendingEvent] = []
        total = 0
        while self._events and len(drained) < limits.max_events:
            size = self._events[0].size
            if drained and total + size > limits.max_bytes:
                break
            event = self._events.popleft()
            self.bytes -= size
            total += size
            drained.append(event)

        oldest_ok = now_ms - limits.max_age_ms
        newest_ok = now_ms + limits.max_future_ms
        sendable = [e for e in drained if e.line.message and oldest_ok <= e.line.timestamp_ms <= newest_ok]
        rejected = len(drained) - len(sendable)
        # Stable: events with the same timestamp keep their arrival order.
        sendable.sort(key=lambda e: e.line.timestamp_ms)

        cut = len(sendable)
        if sendable:
            first = sendable[0].line.timestamp_ms
            for index, event in enumerate(sendable):
                if event.line.timestamp_ms - first >= limits.max_span_ms:
                    cut = index
                    break
        later = sendable[cut:]
        for event in reversed(later):
            self._events.appendleft(event)
            self.bytes += event.size
        return Batch(events=sendable[:cut], rejected=rejected, put_back=len(later))


class EdgeLogShipper:
    """Queue log lines without waiting; ship them to `destination` in batches from a background task.

    `async with EdgeLogShipper(destination, max_queue=..., flush_interval_s=...) as shipper:` then
    `shipper.offer(lines)` from request handlers. `clock` (monotonic seconds), `wall_clock_ms`,
    `sleep` (the backoff pause) and `jitter` (a float in [0, 1)) are injectable for tests.
    """

    def __init__(
        self,
        destination: LogDestination,
        *,
        max_queue: int = 50_000,
        flush_interval_s: float = 2.0,
        limits: BatchLimits | None = None,
        event_overhead_bytes: int = EVENT_OVERHEAD_BYTES,
        max_event_bytes: int = MAX_EVENT_BYTES,
        backoff_base_s: float = 0.2,
        backoff_cap_s: float = 10.0,
        shutdown_timeout_s: float = 5.0,
        drop_log_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ms: Callable[[], int] = _wall_clock_ms,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._limits = limits or BatchLimits()
        if flush_interval_s <= 0 or shutdown_timeout_s < 0 or drop_log_interval_s < 0:
            raise ValueError("flush_interval_s must be positive, the other intervals not negative")
        if backoff_base_s <= 0 or backoff_cap_s < backoff_base_s:
            raise ValueError("backoff_base_s must be positive and backoff_cap_s at least backoff_base_s")
        marker_room = len(TRUNCATION_MARKER.format(size=10**12).encode())
        if not marker_room < max_event_bytes <= self._limits.max_bytes - event_overhead_bytes:
            raise ValueError("max_event_bytes must leave room for the marker and fit one batch with its overhead")
        self.destination = destination
        self._queue = EventQueue(max_queue)
        self._flush_interval_s = flush_interval_s
        self._overhead = event_overhead_bytes
        self._max_event_bytes = max_event_bytes
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._shutdown_timeout_s = shutdown_timeout_s
        self._drop_log_interval_s = drop_log_interval_s
        self._clock = clock
        self._wall_clock_ms = wall_clock_ms
        self._sleep = sleep
        self._jitter = jitter

        self._lock = anyio.Lock()
        self._wake = anyio.Event()
        self._stopped = anyio.Event()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._run_scope: anyio.CancelScope | None = None
        self._running = False
        self._closing = False
        self._closed = False
        # Set when a batch left events behind for the 24 h span: they were due already.
        self._urgent = False

        self._received = 0
        self._shipped = 0
        self._rejected = 0
        self._dropped_overflow = 0
        self._dropped_shutdown = 0
        self._dropped_failed = 0
        self._truncated = 0
        self._retries = 0
        self._failed_batches = 0
        self._in_flight = 0
        self._reported: tuple[int, int, int] = (0, 0, 0)
        self._last_report_at: float | None = None

    # -- the API -------------------------------------------------------------------------------

    @property
    def stats(self) -> ShipperStats:
        return ShipperStats(
            received=self._received,
            shipped=self._shipped,
            rejected=self._rejected,
            dropped_overflow=self._dropped_overflow,
            dropped_shutdown=self._dropped_shutdown,
            dropped_failed=self._dropped_failed,
            truncated=self._truncated,
            retries=self._retries,
            failed_batches=self._failed_batches,
            queued=len(self._queue),
            in_flight=self._in_flight,
        )

    @property
    def running(self) -> bool:
        return self._running and not self._closing

    def offer(self, lines: Iterable[LogLine]) -> Offered:
        """Queue `lines` for shipping; O(len(lines)), never blocks, never awaits. Call it on the event loop's
        thread (a request handler). When the queue is full the oldest events are dropped and counted; once
        the shipper has stopped, the lines are refused and counted as dropped at shutdown."""
        if self._closed:
            refused = sum(1 for _ in lines)
            self._received += refused
            self._dropped_shutdown += refused
            return Offered(accepted=0, dropped=refused)
        queue = self._queue
        was_empty = len(queue) == 0
        now = self._clock()
        accepted = dropped = 0
        for line in lines:
            dropped += queue.push(self._pending(line, now))
            accepted += 1
        self._received += accepted
        self._dropped_overflow += dropped
        if dropped:
            self._report_drops()
        if was_empty or self._full_batch_queued():
            self._wake.set()
        return Offered(accepted=accepted, dropped=dropped)

    async def flush(self) -> None:
        """Ship everything queued now (retrying as the background task does); return once the queue is empty."""
        async with self._lock:
            while len(self._queue):
                await self._ship_one()
        self._report_drops()

    async def __aenter__(self) -> Self:
        if self._running or self._closed:
            raise RuntimeError("an EdgeLogShipper runs once")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self._running = True
        await task_group.start(self._run, name="edge-log-shipper")
        log.info("edge_log_shipper_started", destination=self.destination.name)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._task_group is not None
        assert self._run_scope is not None
        self._closing = True
        self._wake.set()
        # Shielded, like the task itself: a cancelled lifespan still gets its bounded flush.
        with anyio.move_on_after(self._shutdown_timeout_s, shield=True):
            await self._stopped.wait()
        self._run_scope.cancel()
        try:
            # Not handed the body's exception: the task group would wrap it in an ExceptionGroup.
            await self._task_group.__aexit__(None, None, None)
        finally:
            self._closed = True
            self._running = False
            left = self._queue.clear() + self._in_flight
            self._in_flight = 0
            self._dropped_shutdown += left
            self._report_drops(force=True)
            stats = self.stats
            if left:
                log.warning(
                    "edge_log_shipper_stopped",
                    destination=self.destination.name,
                    dropped_shutdown=left,
                    shipped=stats.shipped,
                    received=stats.received,
                )
            else:
                log.info(
                    "edge_log_shipper_stopped",
                    destination=self.destination.name,
                    shipped=stats.shipped,
                    received=stats.received,
                )
        return None

    def backoff_s(self, attempt: int) -> float:
        """The pause after failed attempt `attempt` (1-based): full jitter under a doubling, capped ceiling."""
        ceiling = min(self._backoff_cap_s, self._backoff_base_s * 2.0 ** min(attempt - 1, 60))
        return self._jitter() * ceiling

    # -- queueing --------------------------------------------------------------------------------

    def _pending(self, line: LogLine, now: float) -> PendingEvent:
        message = line.message
        try:
            encoded = message.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates (JSON allows "\ud800") cannot be sent as UTF-8; replace them.
            encoded = message.encode("utf-8", "replace")
            message = encoded.decode("utf-8")
            line = LogLine(line.timestamp_ms, message)
        if len(encoded) > self._max_event_bytes:
            marker = TRUNCATION_MARKER.format(size=len(encoded))
            keep = self._max_event_bytes - len(marker.encode("utf-8"))
            # "ignore" drops a character cut in half at the end.
            message = encoded[:keep].decode("utf-8", "ignore") + marker
            encoded = message.encode("utf-8")
            line = LogLine(line.timestamp_ms, message)
            self._truncated += 1
        return PendingEvent(line=line, size=len(encoded) + self._overhead, enqueued_at=now)

    def _full_batch_queued(self) -> bool:
        return len(self._queue) >= self._limits.max_events or self._queue.bytes >= self._limits.max_bytes

    def _due_in(self) -> float | None:
        """Seconds until a batch should go (0: now), None while there is nothing to ship."""
        oldest = self._queue.oldest_enqueued_at()
        if oldest is None:
            return None
        if self._closing or self._urgent or self._full_batch_queued():
            return 0.0
        return max(0.0, oldest + self._flush_interval_s - self._clock())

    # -- the background task ------------------------------------------------------------------------

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # Shielded from the host's cancellation (a lifespan torn down by a signal): only __aexit__ stops it,
        # after its flush or at its deadline.
        with anyio.CancelScope(shield=True) as scope:
            self._run_scope = scope
            task_status.started()
            try:
                while True:
                    await self._wait_until_due()
                    if not len(self._queue):
                        if self._closing:
                            return
                        continue
                    async with self._lock:
                        if len(self._queue):
                            await self._ship_one()
                    self._report_drops()
            finally:
                self._stopped.set()

    async def _wait_until_due(self) -> None:
        while True:
            due_in = self._due_in()
            if due_in == 0.0 or (due_in is None and self._closing):
                return
            report_in = self._report_due_in()
            timeout = min((t for t in (due_in, report_in) if t is not None), default=math.inf)
            # offer() runs on this thread and only between awaits: nothing is missed between the check and here.
            self._wake = anyio.Event()
            with anyio.move_on_after(timeout):
                await self._wake.wait()
            self._report_drops()

    async def _ship_one(self) -> None:
        batch = self._queue.take_batch(self._limits, now_ms=self._wall_clock_ms())
        self._rejected += batch.rejected
        self._urgent = batch.put_back > 0
        if not batch.events:
            return
        self._in_flight = len(batch.events)
        await self._send([event.line for event in batch.events])
        self._in_flight = 0

    async def _send(self, lines: list[LogLine]) -> None:
        attempt = 0
        while True:
            try:
                rejected = await self.destination.put(lines)
            except (UpstreamUnavailable, UpstreamTimeout) as exc:
                attempt += 1
                self._retries += 1
                delay = self.backoff_s(attempt)
                if attempt & (attempt - 1) == 0:  # 1, 2, 4, 8, ...: a long outage logs a handful of lines
                    log.warning(
                        "edge_log_batch_retry",
                        destination=self.destination.name,
                        error=exc.code,
                        attempt=attempt,
                        delay_s=round(delay, 3),
                        events=len(lines),
                    )
                self._report_drops()
                await self._sleep(delay)
                continue
            except AppError as exc:
                self._fail(lines, error=exc.code, cause=type(exc.__cause__).__name__ if exc.__cause__ else None)
                return
            except Exception as exc:
                # A bug in a destination must not stop shipping; the exception's text may quote messages.
                self._fail(lines, error="unexpected", cause=type(exc).__name__)
                return
            rejected = min(max(rejected, 0), len(lines))
            self._shipped += len(lines) - rejected
            self._rejected += rejected
            if attempt:
                log.info("edge_log_batch_recovered", destination=self.destination.name, retries=attempt)
            return

    def _fail(self, lines: list[LogLine], *, error: str, cause: str | None) -> None:
        self._failed_batches += 1
        self._dropped_failed += len(lines)
        log.error(
            "edge_log_batch_failed", destination=self.destination.name, error=error, cause=cause, events=len(lines)
        )

    # -- reporting losses ------------------------------------------------------------------------------

    def _lost(self) -> tuple[int, int, int]:
        return (self._dropped_overflow, self._rejected, self._dropped_failed)

    def _report_due_in(self) -> float | None:
        if self._lost() == self._reported:
            return None
        if self._last_report_at is None:
            return 0.0
        return max(0.0, self._last_report_at + self._drop_log_interval_s - self._clock())

    def _report_drops(self, *, force: bool = False) -> None:
        """Log one warning with what was lost since the last one, at most once per `drop_log_interval_s`."""
        lost = self._lost()
        if lost == self._reported:
            return
        now = self._clock()
        if not force and self._last_report_at is not None and now - self._last_report_at < self._drop_log_interval_s:
            return
        overflow, rejected, failed = (a - b for a, b in zip(lost, self._reported, strict=True))
        self._reported = lost
        self._last_report_at = now
        log.warning(
            "edge_log_events_lost",
            destination=self.destination.name,
            dropped_overflow=overflow,
            rejected=rejected,
            dropped_failed=failed,
            total_dropped_overflow=lost[0],
            total_rejected=lost[1],
            total_dropped_failed=lost[2],
            queued=len(self._queue),
        )
