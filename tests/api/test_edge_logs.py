"""POST /v1/logs/edge through the app: who may send, what is accepted, and where the events end up
(this service's own log by default; CloudWatch Logs, against moto, with EDGE_LOG_GROUP)."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from moto import mock_aws

from app.config import ConfigError, Settings
from app.domain.ports import Backends
from tests.api.accounts import app_client, logged

TOKEN = "edge-token-for-tests-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GROUP = "/product-analyzer/test/supabase-edge"


def edge(settings: Settings, **overrides: Any) -> Settings:
    return Settings.model_validate(
        settings.model_dump() | {"edge_log_token": TOKEN, "edge_log_flush_seconds": 0.05} | overrides
    )


# A minute ago: CloudWatch refuses events older than 14 days, and so does the shipper.
NOW_MS = (time.time_ns() // 1_000_000) - 60_000


def events(n: int, start_ms: int = NOW_MS) -> list[dict[str, Any]]:
    return [{"timestamp": start_ms + i, "level": "info", "event_message": f"line {i}"} for i in range(n)]


async def send(client: httpx.AsyncClient, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.post("/v1/logs/edge", json=body, headers=AUTH if headers is None else headers)


def edge_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [e for e in logged(caplog) if e["event"] == "edge_log"]


async def test_without_a_token_configured_the_endpoint_does_not_exist(settings: Settings, backends: Backends) -> None:
    async with app_client(settings, backends) as client:
        response = await send(client, events(1))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}],
)
async def test_a_wrong_or_missing_token_is_401(settings: Settings, backends: Backends, headers: dict[str, str]) -> None:
    async with app_client(edge(settings), backends) as client:
        response = await send(client, events(1), headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_batch_is_accepted_at_once_and_reaches_the_service_log(
    settings: Settings, backends: Backends, caplog: pytest.LogCaptureFixture
) -> None:
    async with app_client(edge(settings), backends, caplog) as client:
        first = await send(client, events(3))
        second = await send(client, {"events": events(2, start_ms=NOW_MS + 1000)})
    assert (first.status_code, first.json()) == (202, {"accepted": 3, "dropped": 0})
    assert (second.status_code, second.json()) == (202, {"accepted": 2, "dropped": 0})
    lines = edge_lines(caplog)  # the lifespan has ended: shutdown flushed the queue
    assert [json.loads(line["message"])["event_message"] for line in lines] == [
        "line 0", "line 1", "line 2", "line 0", "line 1"
    ]  # fmt: skip
    assert lines[0]["edge_timestamp_ms"] == NOW_MS


async def test_a_gzipped_batch_is_accepted(
    settings: Settings, backends: Backends, caplog: pytest.LogCaptureFixture
) -> None:
    body = gzip.compress(json.dumps(events(50)).encode())
    headers = AUTH | {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with app_client(edge(settings), backends, caplog) as client:
        response = await client.post("/v1/logs/edge", content=body, headers=headers)
    assert (response.status_code, response.json()["accepted"]) == (202, 50)
    assert len(edge_lines(caplog)) == 50


@pytest.mark.parametrize(
    ("content", "headers", "status", "error"),
    [
        (b"[]" + b" " * 5000, {}, 413, "payload_too_large"),
        (gzip.compress(b"[" + b" " * 100_000 + b"]"), {"Content-Encoding": "gzip"}, 413, "payload_too_large"),
        (b"\x1f\x8b not really gzip", {"Content-Encoding": "gzip"}, 400, "malformed_request"),
        (gzip.compress(b"[]")[:-6], {"Content-Encoding": "gzip"}, 400, "malformed_request"),
        (b"[]", {"Content-Encoding": "br"}, 415, "unsupported_media_type"),
        (b"[]", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b"{oops", {}, 400, "malformed_request"),
        (b'[{"event_message": "ok"}, "not an object"]', {}, 422, "invalid_field"),
    ],
)
async def test_bad_bodies_get_a_clear_4xx(
    settings: Settings, backends: Backends, content: bytes, headers: dict[str, str], status: int, error: str
) -> None:
    async with app_client(edge(settings, edge_log_max_body_bytes=4096), backends) as client:
        response = await client.post(
            "/v1/logs/edge", content=content, headers=AUTH | {"Content-Type": "application/json"} | headers
        )
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


async def test_a_full_queue_drops_the_oldest_and_says_so(
    settings: Settings, backends: Backends, caplog: pytest.LogCaptureFixture
) -> None:
    # A long flush interval keeps everything queued while the batches arrive.
    tight = edge(settings, edge_log_queue_max=100, edge_log_flush_seconds=60)
    async with app_client(tight, backends, caplog) as client:
        assert (await send(client, events(80))).json() == {"accepted": 80, "dropped": 0}
        assert (await send(client, events(50, start_ms=NOW_MS + 100_000))).json() == {"accepted": 50, "dropped": 30}
    lines = edge_lines(caplog)
    assert len(lines) == 100
    assert lines[0]["edge_timestamp_ms"] == NOW_MS + 30  # the 30 oldest went


def test_a_log_group_without_a_token_does_not_start(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="EDGE_LOG_TOKEN"):
        Settings.model_validate(settings.model_dump() | {"edge_log_group": GROUP}).check_backends()


@pytest.fixture
def cloudwatch() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("logs", region_name="ca-central-1")
        client.create_log_group(logGroupName=GROUP)
        yield client


async def test_with_a_log_group_the_events_reach_cloudwatch_logs(
    settings: Settings, backends: Backends, cloudwatch: Any
) -> None:
    shipped = edge(settings, edge_log_group=GROUP, edge_log_stream="edge/test-task")
    async with app_client(shipped, backends) as client:
        for start in range(0, 3000, 1000):
            response = await send(client, events(1000, start_ms=NOW_MS + start))
            assert (response.status_code, response.json()) == (202, {"accepted": 1000, "dropped": 0})
    pages = cloudwatch.get_paginator("filter_log_events").paginate(
        logGroupName=GROUP, logStreamNames=["edge/test-task"]
    )
    got = [event for page in pages for event in page["events"]]
    assert [event["timestamp"] for event in got] == [NOW_MS + i for i in range(3000)]
    assert json.loads(got[1234]["message"]) == events(1000, start_ms=NOW_MS + 1000)[234]
