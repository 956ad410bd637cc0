"""PostHog events and the latency SLO through the app: the real SDK sending to a loopback capture server,
and the canonical log line's CloudWatch metrics checked against the embedded metric format spec."""

from __future__ import annotations

import hashlib
import hmac
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from app.config import Settings
from app.domain.ports import Backends
from app.errors import VisionModelError
from tests.api.accounts import OTHER_PHOTO, Supabase, app_client, logged, post_photo
from tests.emf_spec import violations
from tests.fakes import FakeStore, FakeVision, FakeWriter
from tests.posthog_fake import CaptureServer, posthog_capture

SALT = "pepper-for-tests"
ALICE = str(uuid.uuid4())


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with posthog_capture() as server:
        yield server


def with_posthog(settings: Settings, capture: CaptureServer, **overrides: Any) -> Settings:
    return Settings.model_validate(
        settings.model_dump()
        | {"posthog_api_key": "phc_project_key_for_tests", "posthog_host": capture.url, "posthog_id_salt": SALT}
        | overrides
    )


def hashed(user_id: str) -> str:
    return hmac.new(SALT.encode(), user_id.encode(), hashlib.sha256).hexdigest()


async def test_a_completed_analysis_arrives_with_its_timings_and_a_hashed_user(
    settings: Settings, backends: Backends, capture: CaptureServer, supabase: Supabase
) -> None:
    token = supabase.token(ALICE)
    async with app_client(supabase.settings(with_posthog(settings, capture)), backends) as client:
        response = await post_photo(client, {"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
    # The lifespan has ended: shutdown flushed the SDK's queue, so the event is there without waiting.
    (event,) = capture.events
    body = response.json()
    assert event["event"] == "analysis_completed"
    assert event["distinct_id"] == hashed(ALICE)
    props = event["properties"]
    timings = body["timings_ms"]
    assert {k: props[f"{k}_ms"] for k in timings} == timings
    assert props["model"] == "fake-blip2"
    assert props["writer"] == body["report"]["writer"]
    assert props["image_bytes"] == body["image"]["bytes"]
    assert (props["status"], props["error"], props["cached"], props["replayed"]) == (200, None, False, False)
    assert props["request_id"] == response.headers["x-request-id"]
    assert props["$lib"] == "posthog-python"
    assert capture.batches[0]["api_key"] == "phc_project_key_for_tests"
    # Neither the user's id nor their token ever leaves the process.
    raw = b"".join(capture.raw)
    assert ALICE.encode() not in raw
    assert token.encode() not in raw


async def test_a_failed_analysis_is_reported_with_its_error_code(settings: Settings, capture: CaptureServer) -> None:
    backends = Backends(store=FakeStore(), vision=FakeVision(fail_with=VisionModelError("boom")), writer=FakeWriter())
    async with app_client(with_posthog(settings, capture), backends) as client:
        response = await post_photo(client)
        assert response.status_code == 502
    (event,) = capture.events
    assert event["event"] == "analysis_failed"
    props = event["properties"]
    assert (props["status"], props["error"]) == (502, "vision_model_error")
    assert props["total_ms"] > 0
    assert "vision_ms" not in props  # no stage timings for an analysis that did not finish
    assert event["distinct_id"] == hashed(settings.local_user_id)


async def test_a_refused_caller_is_anonymous_and_makes_no_person(
    settings: Settings, backends: Backends, capture: CaptureServer, supabase: Supabase
) -> None:
    async with app_client(supabase.settings(with_posthog(settings, capture)), backends) as client:
        assert (await post_photo(client)).status_code == 401
    (event,) = capture.events
    assert event["event"] == "analysis_failed"
    assert event["distinct_id"] == "anonymous"
    assert event["properties"]["$process_person_profile"] is False
    assert event["properties"]["error"] == "unauthorized"


async def test_other_routes_send_nothing(settings: Settings, backends: Backends, capture: CaptureServer) -> None:
    async with app_client(with_posthog(settings, capture), backends) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/analyses")).status_code == 200
    assert capture.events == []


async def test_a_stuck_posthog_never_holds_up_a_request(
    settings: Settings, backends: Backends, capture: CaptureServer
) -> None:
    capture.release.clear()  # PostHog accepts the connection and never answers (until the test ends)
    async with app_client(with_posthog(settings, capture), backends) as client:
        for _ in range(3):
            assert (await post_photo(client)).status_code == 200
        capture.release.set()  # let the shutdown flush finish
    assert len(capture.named("analysis_completed")) == 3


async def test_without_a_key_there_is_no_client_and_the_slo_is_still_watched(
    settings: Settings, backends: Backends, caplog: pytest.LogCaptureFixture
) -> None:
    watched = Settings.model_validate(settings.model_dump() | {"latency_slo_ms": 1, "latency_min_samples": 1})
    async with app_client(watched, backends, caplog) as client:
        assert (await post_photo(client)).status_code == 200
        assert not [t for t in threading.enumerate() if type(t).__module__.startswith("posthog")]
    (warning,) = [e for e in logged(caplog) if e["event"] == "latency_slo_breached"]
    assert warning["samples"] == 1


async def test_the_slo_breach_is_one_event_and_one_warning_then_recovery(
    settings: Settings, capture: CaptureServer, caplog: pytest.LogCaptureFixture
) -> None:
    vision = FakeVision(delay_s=0.25)
    backends = Backends(store=FakeStore(), vision=vision, writer=FakeWriter())
    slo = with_posthog(settings, capture, latency_slo_ms=150, latency_min_samples=3, latency_window_seconds=600)
    async with app_client(slo, backends, caplog) as client:
        for _ in range(6):  # slow: the p95 crosses 150 ms at the third, and stays above
            assert (await post_photo(client)).status_code == 200
        vision.delay_s = 0.0
        for _ in range(120):  # fast: 6 slow of 126 is under 5%, so the p95 falls back
            assert (await post_photo(client)).status_code == 200
    breached, recovered = capture.named("latency_slo_breached"), capture.named("latency_slo_recovered")
    assert len(breached) == 1
    assert len(recovered) == 1
    props = breached[0]["properties"]
    assert props["samples"] == 3
    assert props["total_p95_ms"] > 150
    assert props["vision_p95_ms"] >= 250
    assert props["slo_ms"] == 150
    assert breached[0]["distinct_id"] == "service:product-analyzer"
    assert recovered[0]["properties"]["total_p95_ms"] <= 150
    warnings = [e for e in logged(caplog) if e["event"] == "latency_slo_breached"]
    assert len(warnings) == 1
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["total_p95_ms"] == props["total_p95_ms"]
    assert [e["event"] for e in logged(caplog)].count("latency_slo_recovered") == 1


async def test_cached_answers_do_not_feed_the_slo(
    settings: Settings, backends: Backends, capture: CaptureServer
) -> None:
    # Any analysis breaches a 1 ms SLO once two are in the window; cached answers must not count as one.
    cached = with_posthog(settings, capture, cache_ttl_seconds=3600, latency_slo_ms=1, latency_min_samples=2)
    async with app_client(cached, backends) as client:
        for _ in range(3):
            assert (await post_photo(client)).status_code == 200
        assert (await post_photo(client, photo=OTHER_PHOTO)).status_code == 200
    events = capture.named("analysis_completed")
    assert [e["properties"]["cached"] for e in events] == [False, True, True, False]
    assert "vision_ms" not in events[1]["properties"]
    (breach,) = capture.named("latency_slo_breached")
    assert breach["properties"]["samples"] == 2


async def test_the_request_log_line_carries_valid_cloudwatch_metrics(
    settings: Settings, backends: Backends, caplog: pytest.LogCaptureFixture
) -> None:
    async with app_client(settings, backends, caplog) as client:
        ok = await post_photo(client)
        bad = await client.post("/analyze", files={"image": ("a.txt", b"not an image", "text/plain")})
    assert (ok.status_code, bad.status_code) == (200, 415)
    lines = [e for e in logged(caplog) if e["event"] == "request"]
    assert len(lines) == 2
    for line in lines:
        assert violations(line) == [], line
    good, refused = lines
    assert good["Route"] == "/analyze"
    assert good["TotalLatency"] == ok.json()["timings_ms"]["total"]
    assert good["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "ProductAnalyzer"
    assert (refused["ErrorCode"], refused["Errors"], refused["Faults"]) == ("unsupported_image", 1, 0)


async def test_console_logs_and_an_empty_namespace_carry_no_metrics(
    settings: Settings, backends: Backends, caplog: pytest.LogCaptureFixture
) -> None:
    for overrides in ({"log_format": "console"}, {"metrics_namespace": ""}):
        caplog.clear()
        quiet = Settings.model_validate(settings.model_dump() | overrides)
        async with app_client(quiet, backends, caplog) as client:
            assert (await post_photo(client)).status_code == 200
        (line,) = [e for e in logged(caplog) if e["event"] == "request"]
        assert "_aws" not in line
