"""Turning an Edge Function log batch into log lines: shapes, timestamps, limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from app.api.log_batches import MAX_EVENTS, to_log_lines
from app.api.routes.edge_logs import token_matches
from app.errors import InvalidField, MalformedRequest

RECEIVED = 1_763_700_000_123
T = datetime(2026, 11, 21, 12, 30, 15, 250_000, tzinfo=UTC)
T_MS = int(T.timestamp() * 1000)


def lines_of(document: object) -> list[tuple[int, dict[str, object]]]:
    return [
        (line.timestamp_ms, json.loads(line.message)) for line in to_log_lines(json.dumps(document).encode(), RECEIVED)
    ]


def test_a_bare_array_and_an_events_object_are_the_same_batch() -> None:
    events = [{"timestamp": T.isoformat(), "level": "info", "event_message": "booted"}]
    assert lines_of(events) == lines_of({"events": events}) == [(T_MS, events[0])]


@pytest.mark.parametrize(
    "timestamp",
    [
        T.isoformat(),  # ISO 8601 with offset
        T.isoformat().replace("+00:00", "Z"),
        T.replace(tzinfo=None).isoformat(),  # naive: taken as UTC
        T.timestamp(),  # seconds (Deno's Date.now()/1000)
        T_MS,  # milliseconds (Date.now())
        T_MS * 1000,  # microseconds (Supabase's log drains)
    ],
)
def test_timestamps_in_every_common_unit(timestamp: object) -> None:
    ((when, _),) = lines_of([{"timestamp": timestamp, "msg": "x"}])
    assert when == T_MS


def test_an_event_without_a_timestamp_takes_the_time_it_arrived() -> None:
    assert lines_of([{"msg": "x"}])[0][0] == RECEIVED


def test_the_event_is_kept_whole_as_compact_json() -> None:
    event = {"timestamp": T_MS, "metadata": [{"function_id": "f-1", "deployment": 3}], "msg": "héllo"}
    (line,) = to_log_lines(json.dumps([event]).encode(), RECEIVED)
    assert json.loads(line.message) == event
    assert ", " not in line.message
    assert "héllo" in line.message


@pytest.mark.parametrize(
    ("body", "error", "says"),
    [
        (b"{not json", MalformedRequest, "not valid JSON"),
        (b'"a string"', MalformedRequest, "array of events"),
        (b'{"logs": []}', MalformedRequest, "array of events"),
        (b'[{"msg": "ok"}, 3]', InvalidField, "Event 1"),
        (b'[{"timestamp": "yesterday"}]', InvalidField, "Event 0"),
        (b'[{"timestamp": true}]', InvalidField, "Event 0"),
        (json.dumps([{}] * (MAX_EVENTS + 1)).encode(), InvalidField, "At most 10000"),
    ],
)
def test_bad_batches_are_refused_whole_with_a_reason(body: bytes, error: type[Exception], says: str) -> None:
    with pytest.raises(error, match=says):
        to_log_lines(body, RECEIVED)


def test_an_empty_batch_is_fine() -> None:
    assert to_log_lines(b"[]", RECEIVED) == []


def test_token_comparison() -> None:
    assert token_matches("s3cret-token", "s3cret-token")
    assert not token_matches("s3cret-tokem", "s3cret-token")
    assert not token_matches("", "s3cret-token")
    assert not token_matches("s3cret-token-and-more", "s3cret-token")
