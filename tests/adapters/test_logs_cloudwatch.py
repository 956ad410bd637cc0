"""CloudWatchLogsDestination against moto, alone and under the real EdgeLogShipper.

Every PutLogEvents attempt is recorded by a botocore hook on the client; a second hook can answer
an attempt with an error instead of sending it (botocore's `before-call` short-circuit).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws

from app.adapters.aws import build_logs_client
from app.adapters.logs_cloudwatch import CloudWatchLogsDestination, default_stream_name, rejected_count
from app.config import Settings
from app.domain.ports import LogLine
from app.errors import AppError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from app.services.edge_logs import MAX_EVENT_BYTES, EdgeLogShipper

if TYPE_CHECKING:
    from mypy_boto3_logs import CloudWatchLogsClient

REGION = "ca-central-1"
GROUP = "/product-analyzer/edge-functions"
STREAM = "edge/test-host/1-abcd"
HOUR_MS = 3600 * 1000
MAX_CALL_EVENTS = 10_000
MAX_CALL_BYTES = 1_048_576


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def logs(aws_env: None) -> Iterator[CloudWatchLogsClient]:
    with mock_aws():
        client = build_logs_client(Settings(_env_file=None, aws_region=REGION))
        client.create_log_group(logGroupName=GROUP)
        yield client


@dataclass
class PutLogEventsSpy:
    """Records each PutLogEvents attempt; answers attempt i with `failures[i]` = (code, status) when given."""

    client: CloudWatchLogsClient
    failures: list[tuple[str, int] | None] = field(default_factory=list)
    attempts: list[list[tuple[int, str]]] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        events: Any = self.client.meta.events
        events.register("before-parameter-build.cloudwatch-logs.PutLogEvents", self._record)
        events.register("before-call.cloudwatch-logs.PutLogEvents", self._answer)

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.attempts.append([(event["timestamp"], event["message"]) for event in params["logEvents"]])

    def _answer(self, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        failure = self.failures.pop(0) if self.failures else None
        if failure is None:
            self.outcomes.append("sent")
            return None
        code, status = failure
        self.outcomes.append(code)
        http = AWSResponse("https://logs.ca-central-1.amazonaws.com/", status, HTTPHeaders(), None)
        return http, {"Error": {"Code": code, "Message": "injected"}, "ResponseMetadata": {"HTTPStatusCode": status}}

    @property
    def sent(self) -> list[list[tuple[int, str]]]:
        return [events for events, outcome in zip(self.attempts, self.outcomes, strict=True) if outcome == "sent"]


@dataclass
class RecordingSleep:
    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def stored(client: CloudWatchLogsClient, stream: str = STREAM) -> list[tuple[int, str]]:
    """Every event of the stream, oldest first, over all pages."""
    found: list[tuple[int, str]] = []
    kwargs: dict[str, Any] = {"logGroupName": GROUP, "logStreamName": stream, "startFromHead": True}
    while True:
        page = client.get_log_events(**kwargs)
        found += [(event["timestamp"], event["message"]) for event in page["events"]]
        if not page["events"] or page["nextForwardToken"] == kwargs.get("nextToken"):
            return found
        kwargs["nextToken"] = page["nextForwardToken"]


def assert_within_limits(calls: Sequence[list[tuple[int, str]]]) -> None:
    """PutLogEvents' rules, call by call."""
    assert calls
    for events in calls:
        assert 1 <= len(events) <= MAX_CALL_EVENTS
        assert sum(len(message.encode("utf-8")) + 26 for _, message in events) <= MAX_CALL_BYTES
        stamps = [stamp for stamp, _ in events]
        assert stamps == sorted(stamps)
        assert stamps[-1] - stamps[0] < 24 * HOUR_MS


def as_pairs(lines: Sequence[LogLine]) -> list[tuple[int, str]]:
    return [(line.timestamp_ms, line.message) for line in lines]


def small_lines(count: int, *, start_ms: int, tag: str = "edge") -> list[LogLine]:
    return [LogLine(start_ms + i, f'{{"fn":"checkout","n":{i},"tag":"{tag}"}}') for i in range(count)]


def shipper(client: CloudWatchLogsClient, **kwargs: Any) -> EdgeLogShipper:
    return EdgeLogShipper(CloudWatchLogsDestination(client, GROUP, STREAM), **({"flush_interval_s": 0.05} | kwargs))


# -- the client builder and the stream name -------------------------------------------------------------------


def test_builder_sets_region_timeouts_and_one_attempt(aws_env: None) -> None:
    client = build_logs_client(Settings(_env_file=None, aws_region=REGION))

    config: Any = client.meta.config
    assert client.meta.service_model.service_name == "logs"
    assert client.meta.region_name == REGION
    assert config.connect_timeout <= 5
    assert config.read_timeout <= 15
    # The shipper retries with its own backoff; botocore must not retry underneath it.
    assert config.retries == {"mode": "standard", "total_max_attempts": 1}


def test_default_stream_names_are_valid_and_unique_per_process_start() -> None:
    first, second = default_stream_name(), default_stream_name()

    assert first != second
    for name in (first, second):
        assert re.fullmatch(r"edge/[^:*\s]+/\d+-[0-9a-f]{8}", name)
        assert len(name) <= 512


# -- the destination alone -----------------------------------------------------------------------------------------


async def test_first_put_creates_the_stream_and_writes_the_events(logs: CloudWatchLogsClient) -> None:
    destination = CloudWatchLogsDestination(logs, GROUP, STREAM)
    assert logs.describe_log_streams(logGroupName=GROUP)["logStreams"] == []
    batch = small_lines(3, start_ms=now_ms() - 1000)

    assert await destination.put(batch) == 0

    assert [s["logStreamName"] for s in logs.describe_log_streams(logGroupName=GROUP)["logStreams"]] == [STREAM]
    assert stored(logs) == as_pairs(batch)


async def test_an_existing_stream_is_used_as_it_is(logs: CloudWatchLogsClient) -> None:
    logs.create_log_stream(logGroupName=GROUP, logStreamName=STREAM)
    logs.put_log_events(logGroupName=GROUP, logStreamName=STREAM, logEvents=[{"timestamp": now_ms(), "message": "a"}])

    await CloudWatchLogsDestination(logs, GROUP, STREAM).put([LogLine(now_ms(), "b")])

    assert [message for _, message in stored(logs)] == ["a", "b"]


async def test_a_deleted_stream_is_created_again(logs: CloudWatchLogsClient) -> None:
    spy = PutLogEventsSpy(logs)
    destination = CloudWatchLogsDestination(logs, GROUP, STREAM)
    await destination.put([LogLine(now_ms(), "before")])
    logs.delete_log_stream(logGroupName=GROUP, logStreamName=STREAM)

    await destination.put([LogLine(now_ms(), "after")])

    assert [message for _, message in stored(logs)] == ["after"]
    assert len(spy.attempts) == 3  # before; after (ResourceNotFound); after, once the stream was back


async def test_a_missing_log_group_is_not_retryable(logs: CloudWatchLogsClient) -> None:
    destination = CloudWatchLogsDestination(logs, "/no/such/group", STREAM)

    with pytest.raises(UpstreamError) as caught:
        await destination.put([LogLine(now_ms(), "x")])

    assert type(caught.value) is UpstreamError
    assert "/no/such/group" not in caught.value.detail
    assert isinstance(caught.value.__cause__, ClientError)


async def test_rejected_events_are_counted_from_rejected_log_events_info(logs: CloudWatchLogsClient) -> None:
    destination = CloudWatchLogsDestination(logs, GROUP, STREAM)
    now = now_ms()
    batch = [
        LogLine(now - 15 * 24 * HOUR_MS, "too old 1"),
        LogLine(now - 15 * 24 * HOUR_MS + 1, "too old 2"),
        LogLine(now, "fine"),
        LogLine(now + 3 * HOUR_MS, "too new"),
    ]

    assert await destination.put(batch) == 3

    assert [message for _, message in stored(logs)] == ["fine"]


@pytest.mark.parametrize(
    ("info", "sent", "expected"),
    [
        ({}, 5, 0),
        ({"tooOldLogEventEndIndex": 1}, 5, 2),
        ({"expiredLogEventEndIndex": 2}, 5, 3),
        ({"tooOldLogEventEndIndex": 0, "expiredLogEventEndIndex": 2}, 5, 3),
        ({"tooNewLogEventStartIndex": 3}, 5, 2),
        ({"tooOldLogEventEndIndex": 1, "tooNewLogEventStartIndex": 4}, 5, 3),
        ({"tooOldLogEventEndIndex": 3, "tooNewLogEventStartIndex": 2}, 5, 5),  # overlapping: never more than sent
        ({"tooNewLogEventStartIndex": 9}, 5, 0),
    ],
)
def test_rejected_count(info: Any, sent: int, expected: int) -> None:
    assert rejected_count(info, sent) == expected


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ThrottlingException", 400, UpstreamUnavailable),
        ("ServiceUnavailableException", 503, UpstreamUnavailable),
        ("InternalFailure", 500, UpstreamUnavailable),
        ("SomethingNew", 502, UpstreamUnavailable),
        ("InvalidParameterException", 400, UpstreamError),
        ("AccessDeniedException", 400, UpstreamError),
        ("UnrecognizedClientException", 400, UpstreamError),
    ],
)
async def test_errors_are_mapped_to_retryable_or_not(
    logs: CloudWatchLogsClient, code: str, status: int, expected: type[AppError]
) -> None:
    PutLogEventsSpy(logs, failures=[(code, status)])

    with pytest.raises(AppError) as caught:
        await CloudWatchLogsDestination(logs, GROUP, STREAM).put([LogLine(now_ms(), "x")])

    assert type(caught.value) is expected
    assert code not in caught.value.detail


def closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_attempt_client(endpoint_url: str) -> CloudWatchLogsClient:
    config = Config(connect_timeout=0.3, read_timeout=0.3, retries={"total_max_attempts": 1})
    return boto3.client("logs", region_name=REGION, endpoint_url=endpoint_url, config=config)


async def test_an_unreachable_endpoint_is_retryable(aws_env: None) -> None:
    client = one_attempt_client(f"http://127.0.0.1:{closed_loopback_port()}")

    with pytest.raises(UpstreamUnavailable):
        await CloudWatchLogsDestination(client, GROUP, STREAM).put([LogLine(now_ms(), "x")])


async def test_a_silent_endpoint_is_a_timeout(aws_env: None) -> None:
    # A listening socket that never accepts: the TCP handshake completes, no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        client = one_attempt_client(f"http://127.0.0.1:{silent.getsockname()[1]}")

        with pytest.raises(UpstreamTimeout):
            await CloudWatchLogsDestination(client, GROUP, STREAM).put([LogLine(now_ms(), "x")])


# -- through the shipper -----------------------------------------------------------------------------------------


async def test_25000_events_arrive_complete_and_in_order_within_the_call_limits(logs: CloudWatchLogsClient) -> None:
    spy = PutLogEventsSpy(logs)
    sent = small_lines(25_000, start_ms=now_ms() - 30_000)

    async with shipper(logs) as ship:
        for start in range(0, len(sent), 500):  # as 50 POSTs would
            ship.offer(sent[start : start + 500])

    assert stored(logs) == as_pairs(sent)
    assert_within_limits(spy.sent)
    assert [len(call) for call in spy.sent] == [10_000, 10_000, 5_000]
    stats = ship.stats
    assert (stats.received, stats.shipped, stats.queued, stats.rejected) == (25_000, 25_000, 0, 0)


async def test_big_events_are_split_by_bytes_and_a_huge_one_is_truncated(logs: CloudWatchLogsClient) -> None:
    spy = PutLogEventsSpy(logs)
    start = now_ms() - 10_000
    big = [LogLine(start + i, f"{i:03d}" + "b" * 150_000) for i in range(40)]  # ~6 MB in all
    huge = LogLine(start + 100, "h" * (3 * MAX_CALL_BYTES))

    async with shipper(logs) as ship:
        ship.offer([*big, huge])

    assert_within_limits(spy.sent)
    assert len(spy.sent) >= 7  # 40 x 150 KB need at least 6 calls, and the huge event one of its own
    got = stored(logs)
    assert got[:40] == as_pairs(big)
    stamp, message = got[40]
    assert stamp == huge.timestamp_ms
    assert MAX_EVENT_BYTES - 64 < len(message.encode()) <= MAX_EVENT_BYTES
    assert message.startswith("hhhh")
    assert message.endswith(f"[truncated: {3 * MAX_CALL_BYTES} bytes]")
    assert ship.stats.truncated == 1


async def test_events_out_of_order_across_offers_are_sorted_in_each_call(logs: CloudWatchLogsClient) -> None:
    spy = PutLogEventsSpy(logs)
    start = now_ms() - 60_000
    late = [LogLine(start + 1000 + i, f"late {i}") for i in range(5)]
    early = [LogLine(start + i, f"early {i}") for i in range(5)]
    mixed = [LogLine(start + 500, "middle"), LogLine(start + 2, "tie with early 2")]

    async with shipper(logs, flush_interval_s=60) as ship:
        ship.offer(late)
        ship.offer(early)
        ship.offer(mixed)

    assert len(spy.sent) == 1
    assert_within_limits(spy.sent)
    # CloudWatch (and moto) refuse an unsorted call outright: all of them arriving proves the sort too.
    assert [message for _, message in stored(logs)] == [
        "early 0",
        "early 1",
        "early 2",
        "tie with early 2",
        "early 3",
        "early 4",
        "middle",
        *[f"late {i}" for i in range(5)],
    ]
    assert ship.stats.failed_batches == 0


async def test_a_day_and_more_of_events_is_split_into_calls_under_24_hours(logs: CloudWatchLogsClient) -> None:
    spy = PutLogEventsSpy(logs)
    now = now_ms()
    sent = [LogLine(now - 30 * HOUR_MS + i * HOUR_MS // 2, f"half-hour {i}") for i in range(60)]

    async with shipper(logs) as ship:
        ship.offer(reversed(sent))

    assert len(spy.sent) == 2
    assert_within_limits(spy.sent)
    assert stored(logs) == as_pairs(sent)


async def test_throttling_is_retried_with_backoff_and_nothing_is_lost(logs: CloudWatchLogsClient) -> None:
    failures: list[tuple[str, int] | None] = [("ThrottlingException", 400)] * 3
    failures += [("ServiceUnavailableException", 503), None, ("Throttling", 400)]
    spy = PutLogEventsSpy(logs, failures=failures)
    sleep = RecordingSleep()
    sent = small_lines(15_000, start_ms=now_ms() - 20_000)

    async with shipper(logs, sleep=sleep, jitter=lambda: 1.0) as ship:
        ship.offer(sent)

    assert stored(logs) == as_pairs(sent)
    assert spy.outcomes == [*["ThrottlingException"] * 3, "ServiceUnavailableException", "sent", "Throttling", "sent"]
    assert sleep.delays == pytest.approx([0.2, 0.4, 0.8, 1.6, 0.2])  # the second batch starts its own backoff
    assert ship.stats.retries == 5
    assert (ship.stats.shipped, ship.stats.dropped_failed) == (15_000, 0)
    # The retried calls carried the very same events.
    assert spy.attempts[0] == spy.attempts[4]


async def test_a_full_queue_drops_the_oldest_and_counts_them(logs: CloudWatchLogsClient) -> None:
    start = now_ms() - 10_000
    ship = shipper(logs, max_queue=100)
    offered = ship.offer(small_lines(250, start_ms=start))

    async with ship:
        pass

    assert offered.dropped == 150
    assert ship.stats.dropped_overflow == 150
    assert stored(logs) == as_pairs(small_lines(250, start_ms=start)[150:])


async def test_leaving_ships_what_is_queued(logs: CloudWatchLogsClient) -> None:
    spy = PutLogEventsSpy(logs)
    sent = small_lines(1234, start_ms=now_ms() - 5000)

    async with shipper(logs, flush_interval_s=60) as ship:
        ship.offer(sent)
        assert spy.attempts == []  # the interval has not passed: nothing sent yet

    assert stored(logs) == as_pairs(sent)
    assert len(spy.sent) == 1


async def test_a_missing_stream_is_created_by_the_shipper(logs: CloudWatchLogsClient) -> None:
    sent = small_lines(10, start_ms=now_ms() - 1000)

    async with shipper(logs) as ship:
        ship.offer(sent[:5])
        await ship.flush()
        logs.delete_log_stream(logGroupName=GROUP, logStreamName=STREAM)
        ship.offer(sent[5:])

    assert stored(logs) == as_pairs(sent[5:])
    assert (ship.stats.shipped, ship.stats.failed_batches) == (10, 0)


async def test_a_non_retryable_error_drops_only_that_batch(logs: CloudWatchLogsClient) -> None:
    spy = PutLogEventsSpy(logs, failures=[None, ("InvalidParameterException", 400), None])
    sent = small_lines(25_000, start_ms=now_ms() - 30_000)

    async with shipper(logs) as ship:
        ship.offer(sent)

    assert spy.outcomes == ["sent", "InvalidParameterException", "sent"]
    assert stored(logs) == as_pairs(sent[:10_000] + sent[20_000:])
    stats = ship.stats
    assert (stats.shipped, stats.dropped_failed, stats.failed_batches, stats.retries) == (15_000, 10_000, 1, 0)
