"""POST /analyze through the ASGI app on fake backends: the contract, errors, logs, readiness."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.bootstrap import create_app
from app.config import DEFAULT_QUESTIONS, ConfigError, Settings
from app.domain.ports import Backends
from app.errors import ReportWriterError, UpstreamTimeout, UpstreamUnavailable, VisionModelError
from tests.api.accounts import logged
from tests.fakes import FakeStore, FakeVision, FakeWriter
from tests.imagegen import product_jpeg

PHOTO = product_jpeg((800, 600))


async def analyze(client: httpx.AsyncClient, **data: Any) -> httpx.Response:
    headers = data.pop("headers", {})
    return await client.post(
        "/analyze", files={"image": ("photo.jpg", PHOTO, "image/jpeg")}, data=data, headers=headers
    )


def fakes(backends: Backends) -> tuple[FakeStore, FakeVision, FakeWriter]:
    assert isinstance(backends.store, FakeStore)
    assert isinstance(backends.vision, FakeVision)
    assert isinstance(backends.writer, FakeWriter)
    return backends.store, backends.vision, backends.writer


async def test_analyze_returns_the_contract(client: httpx.AsyncClient, backends: Backends) -> None:
    store, vision, writer = fakes(backends)
    response = await analyze(client, questions=["Is it waterproof?"], locale="fr-CA", hints="barely used")

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {
        "id",
        "status",
        "schema_version",
        "created_at",
        "cached",
        "image",
        "vision",
        "report",
        "timings_ms",
    }
    assert body["status"] == "succeeded"
    assert body["schema_version"] == "1"
    assert body["cached"] is False
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    # The image block describes the stored, normalized JPEG under the documented key.
    image = body["image"]
    stored, content_type = store.objects[image["storage_key"]]
    assert content_type == image["content_type"] == "image/jpeg"
    assert image["sha256"] == hashlib.sha256(stored).hexdigest()
    assert image["bytes"] == len(stored)
    assert (image["width"], image["height"]) == (800, 600)
    assert re.fullmatch(r"uploads/local/\d{4}/\d{2}/[0-9a-f]{64}\.jpg", image["storage_key"])
    # The model got the smaller copy, the default questions then the client's, and the budgets.
    sent_image, questions = vision.calls[0]
    assert len(sent_image) < len(stored)
    assert questions == (*DEFAULT_QUESTIONS, "Is it waterproof?")
    assert [a["question"] for a in body["vision"]["answers"]] == list(questions)
    # The writer got what the model saw, the locale and the hints.
    assert writer.calls[0][1:] == ("fr-CA", "barely used")
    assert body["report"]["writer"] == "fake-writer"
    assert set(body["timings_ms"]) == {"upload", "store", "vision", "report", "total"}
    assert body["timings_ms"]["total"] >= body["timings_ms"]["upload"]
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


async def test_store_and_describe_run_at_the_same_time(client: httpx.AsyncClient, backends: Backends) -> None:
    """The store waits for the model to start: run one after the other, this would deadlock."""
    store, vision, _ = fakes(backends)
    vision_started = anyio.Event()
    real_put, real_describe = store.put, vision.describe

    async def put(key: str, data: bytes, content_type: str) -> None:
        await vision_started.wait()
        await real_put(key, data, content_type)

    async def describe(*args: Any, **kwargs: Any) -> Any:
        vision_started.set()
        return await real_describe(*args, **kwargs)

    store.put = put  # type: ignore[method-assign]
    vision.describe = describe  # type: ignore[method-assign]
    with anyio.fail_after(5):
        response = await analyze(client)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("where", "error", "status", "code"),
    [
        ("vision", VisionModelError(), 502, "vision_model_error"),
        ("vision", UpstreamTimeout(), 504, "upstream_timeout"),
        ("vision", UpstreamUnavailable(), 503, "upstream_unavailable"),
        ("store", UpstreamUnavailable(), 503, "upstream_unavailable"),
        ("writer", ReportWriterError(), 502, "report_writer_error"),
        ("writer", UpstreamTimeout(), 504, "upstream_timeout"),
    ],
)
async def test_upstream_failures_map_to_their_status(
    client: httpx.AsyncClient, backends: Backends, where: str, error: Exception, status: int, code: str
) -> None:
    store, vision, writer = fakes(backends)
    {"store": store, "vision": vision, "writer": writer}[where].fail_with = error  # type: ignore[attr-defined]
    response = await analyze(client, headers={"X-Request-ID": "req-123"})
    assert response.status_code == status
    assert response.json() == {"error": code, "detail": error.detail, "request_id": "req-123"}  # type: ignore[attr-defined]
    assert response.headers["x-request-id"] == "req-123"


async def test_a_failed_store_stops_the_model_call(client: httpx.AsyncClient, backends: Backends) -> None:
    store, vision, writer = fakes(backends)
    store.fail_with = UpstreamUnavailable()
    vision.delay_s = 5.0
    with anyio.fail_after(2):  # the model's 5 s are cancelled, not waited for
        response = await analyze(client)
    assert response.status_code == 503
    assert writer.calls == []


async def test_an_unexpected_error_is_a_generic_500_with_the_traceback_logged(
    caplog: pytest.LogCaptureFixture, client: httpx.AsyncClient, backends: Backends
) -> None:
    _, _, writer = fakes(backends)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internal state")

    writer.write = broken  # type: ignore[method-assign]
    response = await analyze(client, headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal_error",
        "detail": "The server failed to handle this request.",
        "request_id": "boom-1",
    }
    assert "secret internal state" not in response.text
    assert response.headers["x-request-id"] == "boom-1"
    unhandled = [entry for entry in logged(caplog) if entry["event"] == "unhandled_error"]
    assert len(unhandled) == 1
    assert unhandled[0]["level"] == "error"
    assert unhandled[0]["request_id"] == "boom-1"
    assert "RuntimeError: secret internal state" in unhandled[0]["exception"]  # for us, not the client


@pytest.mark.parametrize("given", ["x" * 200, "spaces are bad", "semi;colon", ""])
async def test_an_unusable_request_id_is_replaced(client: httpx.AsyncClient, given: str) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": given})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


async def test_one_canonical_log_line_per_request_without_secrets(
    caplog: pytest.LogCaptureFixture, client: httpx.AsyncClient
) -> None:
    response = await analyze(
        client,
        hints="my phone number is 555-0100",
        headers={"Authorization": "Bearer eyJ.secret.token", "X-Request-ID": "log-1"},
    )
    assert response.status_code == 200
    logs = logged(caplog)
    lines = [entry for entry in logs if entry["event"] == "request"]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "log-1"
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")
    assert line["status"] == 200
    assert line["route"] == "/analyze"
    assert line["method"] == "POST"
    assert set(line["timings_ms"]) == {"upload", "store", "vision", "report", "total"}
    assert line["image_bytes"] > 0
    assert line["model_bytes"] > 0
    assert line["received_bytes"] == len(PHOTO)
    assert line["model"] == "fake-blip2"
    assert line["writer"] == "fake-writer"
    everything = repr(logs)
    assert "eyJ.secret.token" not in everything
    assert "555-0100" not in everything  # the seller's notes are data, not log material


async def test_errors_for_unknown_routes_and_methods_are_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nope")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    wrong = await client.get("/analyze")
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "method_not_allowed"
    assert wrong.json()["request_id"] == wrong.headers["x-request-id"]


async def test_health_and_readiness(client: httpx.AsyncClient, backends: Backends) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "storage": "ok", "vision": "ok"}}

    store, _, _ = fakes(backends)
    store.ready = False
    not_ready = await client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"] == {"database": "ok", "storage": "not_ready", "vision": "ok"}
    assert not_ready.json()["error"] == "not_ready"


async def test_docs_and_openapi_are_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/analyze"]["post"]
    form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["image"]
    assert set(form["properties"]) == {"image", "questions", "locale", "hints"}
    assert form["properties"]["questions"]["maxItems"] == 8
    assert {"200", "413", "415", "502", "504"} <= set(operation["responses"])


@pytest.fixture
async def cors_client(settings: Settings, backends: Backends) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"cors_origins": ("http://localhost:*",)}), backends=backends)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


async def test_cors_allows_configured_origins_only(cors_client: httpx.AsyncClient) -> None:
    preflight = {"Access-Control-Request-Method": "POST"}
    allowed = await cors_client.options("/analyze", headers={"Origin": "http://localhost:5173", **preflight})
    assert allowed.headers.get("access-control-allow-origin") == "http://localhost:5173"
    refused = await cors_client.options("/analyze", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"environment": "production", "auth_mode": "disabled"}, "AUTH_MODE=disabled is refused"),
        ({"storage_backend": "s3", "s3_bucket": None}, "needs S3_BUCKET"),
        ({"report_writer": "openai", "openai_api_key": None}, "needs OPENAI_API_KEY"),
        ({"model_dir": Path("/nonexistent/blip2")}, "holds no BLIP-2 model"),
    ],
)
def test_settings_that_cannot_start_the_service_are_refused(
    settings: Settings, update: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        create_app(settings.model_copy(update=update))


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"STORAGE_BACKEND": "ftp"}, "configuration error: STORAGE_BACKEND: Input should be 'local' or 's3'"),
        ({"REPORT_WRITER": "openai"}, "configuration error: REPORT_WRITER=openai needs OPENAI_API_KEY."),
        (
            {"LOCAL_USER_ID": ".."},
            "configuration error: LOCAL_USER_ID: Value error, must be 1 to 64 characters and not '.' or '..'",
        ),
        (
            {"VISION_QUESTIONS": '["What is it?", ""]'},
            "configuration error: VISION_QUESTIONS: Value error, each question must be 1 to 200 characters",
        ),
        (
            {"VISION_QUESTIONS": '["Q?", "Q?", "Q?", "Q?", "Q?", "Q?", "Q?", "Q?", "Q?"]'},
            "configuration error: VISION_QUESTIONS: Value error, at most 8 questions, leaving room for the client's",
        ),
    ],
)
def test_uvicorn_entry_point_exits_with_one_line(env: dict[str, str], expected: str, tmp_path: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import app.main"],
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", **env},
        cwd=tmp_path,  # no .env here
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == expected
