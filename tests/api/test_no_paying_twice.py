"""Idempotency-Key and dedupe: a retried request or the same photo again does not call the model twice.

Every test runs on SQLite and on PostgreSQL, with Supabase auth (ES256 tokens, loopback JWKS).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import anyio
import httpx
import pytest
from sqlalchemy import select, update

from app.adapters.sql.engine import build_engine
from app.adapters.sql.tables import AnalysisRow
from app.config import Settings
from app.domain.ports import Backends
from app.errors import VisionModelError
from tests.api.accounts import OTHER_PHOTO, Supabase, app_client, post_photo
from tests.dbs import sqlite_and_postgresql  # noqa: F401
from tests.fakes import FakeVision, FakeWriter

ALICE = str(uuid.uuid4())
BOB = str(uuid.uuid4())


@pytest.fixture
def dedupe_seconds() -> int:
    return 0


@pytest.fixture
async def client(
    settings: Settings, backends: Backends, supabase: Supabase, dedupe_seconds: int
) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(supabase.settings(settings, cache_ttl_seconds=dedupe_seconds), backends) as http:
        yield http


def calls(backends: Backends) -> tuple[int, int]:
    """How many times the model and the writer ran."""
    assert isinstance(backends.vision, FakeVision)
    assert isinstance(backends.writer, FakeWriter)
    return len(backends.vision.calls), len(backends.writer.calls)


def keyed(supabase: Supabase, user: str, key: str) -> dict[str, str]:
    return supabase.auth(user) | {"Idempotency-Key": key}


async def age_rows(database_url: str, by: timedelta) -> None:
    """Move every analysis `by` into the past, as if the clock had moved on."""
    engine = build_engine(database_url)
    try:
        async with engine.begin() as connection:
            # In Python, not SQL: SQLite has no interval arithmetic on its text timestamps.
            rows = (await connection.execute(select(AnalysisRow.id, AnalysisRow.created_at))).all()
            for row_id, created_at in rows:
                moved = update(AnalysisRow).where(AnalysisRow.id == row_id).values(created_at=created_at - by)
                await connection.execute(moved)
    finally:
        await engine.dispose()


# -- Idempotency-Key ---------------------------------------------------------------------------------------------


async def test_the_same_key_and_request_returns_the_saved_response(
    client: httpx.AsyncClient, supabase: Supabase, backends: Backends
) -> None:
    first = await post_photo(client, keyed(supabase, ALICE, "order-1"), questions=["Is it new?"])
    again = await post_photo(client, keyed(supabase, ALICE, "order-1"), questions=["Is it new?"])

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert calls(backends) == (1, 1)
    history = (await client.get("/analyses", headers=supabase.auth(ALICE))).json()
    assert [item["id"] for item in history["items"]] == [first.json()["id"]]


async def test_the_same_key_with_another_request_is_422(
    client: httpx.AsyncClient, supabase: Supabase, backends: Backends
) -> None:
    assert (await post_photo(client, keyed(supabase, ALICE, "order-2"))).status_code == 200

    other_photo = await post_photo(client, keyed(supabase, ALICE, "order-2"), photo=OTHER_PHOTO)
    other_options = await post_photo(client, keyed(supabase, ALICE, "order-2"), locale="fr")
    for response in (other_photo, other_options):
        assert response.status_code == 422
        assert response.json()["error"] == "idempotency_key_reused"
    assert calls(backends) == (1, 1)


async def test_the_same_key_while_the_first_request_runs_is_409(
    client: httpx.AsyncClient, supabase: Supabase, backends: Backends
) -> None:
    assert isinstance(backends.vision, FakeVision)
    backends.vision.delay_s = 0.5
    responses: dict[str, httpx.Response] = {}

    async def send(name: str, delay: float) -> None:
        await anyio.sleep(delay)
        responses[name] = await post_photo(client, keyed(supabase, ALICE, "order-3"))

    async with anyio.create_task_group() as group:
        group.start_soon(send, "first", 0)
        group.start_soon(send, "second", 0.2)

    assert responses["first"].status_code == 200
    assert responses["second"].status_code == 409
    assert responses["second"].json()["error"] == "idempotency_key_in_use"
    assert int(responses["second"].headers["retry-after"]) >= 1
    assert calls(backends) == (1, 1)
    # Once the first has finished, the retry gets its response.
    backends.vision.delay_s = 0
    retried = await post_photo(client, keyed(supabase, ALICE, "order-3"))
    assert retried.json() == responses["first"].json()


async def test_simultaneous_requests_with_one_key_run_the_model_once(
    client: httpx.AsyncClient, supabase: Supabase, backends: Backends
) -> None:
    assert isinstance(backends.vision, FakeVision)
    backends.vision.delay_s = 0.3
    statuses: list[int] = []

    async def send() -> None:
        statuses.append((await post_photo(client, keyed(supabase, ALICE, "order-4"))).status_code)

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(send)
    assert sorted(statuses) == [200, 409, 409, 409, 409]
    assert calls(backends) == (1, 1)


async def test_a_failed_request_frees_its_key_for_the_retry(
    client: httpx.AsyncClient, supabase: Supabase, backends: Backends
) -> None:
    assert isinstance(backends.vision, FakeVision)
    backends.vision.fail_with = VisionModelError()
    assert (await post_photo(client, keyed(supabase, ALICE, "order-5"))).status_code == 502

    backends.vision.fail_with = None
    retried = await post_photo(client, keyed(supabase, ALICE, "order-5"))
    assert retried.status_code == 200
    assert "idempotent-replayed" not in retried.headers
    assert calls(backends) == (2, 1)


async def test_keys_belong_to_one_user(client: httpx.AsyncClient, supabase: Supabase, backends: Backends) -> None:
    alices = await post_photo(client, keyed(supabase, ALICE, "shared-key"))
    bobs = await post_photo(client, keyed(supabase, BOB, "shared-key"), photo=OTHER_PHOTO)
    assert alices.status_code == bobs.status_code == 200
    assert alices.json()["id"] != bobs.json()["id"]
    assert calls(backends) == (2, 2)


async def test_a_key_older_than_a_day_runs_again(
    client: httpx.AsyncClient, supabase: Supabase, backends: Backends, database_url: str
) -> None:
    first = await post_photo(client, keyed(supabase, ALICE, "order-6"))
    await age_rows(database_url, timedelta(hours=25))
    again = await post_photo(client, keyed(supabase, ALICE, "order-6"))
    assert again.status_code == 200
    assert again.json()["id"] != first.json()["id"]
    assert calls(backends) == (2, 2)


@pytest.mark.parametrize("key", ["", "has space", "ключ", "x" * 256])
async def test_a_malformed_key_is_422_before_the_upload_is_read(
    client: httpx.AsyncClient, supabase: Supabase, key: str
) -> None:
    response = await client.post(
        "/analyze",
        files={"image": ("photo.jpg", b"irrelevant", "image/jpeg")},
        headers=[*supabase.auth(ALICE).items(), ("Idempotency-Key", key.encode())],
    )
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_field"


# -- dedupe ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dedupe_seconds", [3600])
async def test_the_same_photo_and_options_again_are_served_from_the_stored_result(
    client: httpx.AsyncClient, supabase: Supabase, backends: Backends
) -> None:
    first = await post_photo(client, supabase.auth(ALICE), questions=["Is it new?"])
    again = await post_photo(client, supabase.auth(ALICE), questions=["Is it new?"])

    assert first.status_code == again.status_code == 200
    assert calls(backends) == (1, 1)
    assert first.json()["cached"] is False
    cached = again.json()
    assert cached["cached"] is True
    assert cached["id"] != first.json()["id"]
    for field in ("image", "vision", "report"):
        assert cached[field] == first.json()[field]
    assert cached["timings_ms"]["vision"] == cached["timings_ms"]["report"] == 0
    # It is in the history as an analysis of its own, and reads back as cached.
    record = (await client.get(f"/analyses/{cached['id']}", headers=supabase.auth(ALICE))).json()
    assert record["cached"] is True
    assert record["report"] == first.json()["report"]


@pytest.mark.parametrize("dedupe_seconds", [3600])
async def test_other_options_another_photo_or_another_user_run_the_model(
    client: httpx.AsyncClient, supabase: Supabase, backends: Backends
) -> None:
    await post_photo(client, supabase.auth(ALICE))
    responses = [
        await post_photo(client, supabase.auth(ALICE), locale="fr"),
        await post_photo(client, supabase.auth(ALICE), questions=["Is it new?"]),
        await post_photo(client, supabase.auth(ALICE), hints="box included"),
        await post_photo(client, supabase.auth(ALICE), photo=OTHER_PHOTO),
        await post_photo(client, supabase.auth(BOB)),
    ]
    assert [response.json()["cached"] for response in responses] == [False] * 5
    assert calls(backends) == (6, 6)


@pytest.mark.parametrize("dedupe_seconds", [3600])
async def test_a_result_older_than_the_ttl_is_not_reused(
    client: httpx.AsyncClient, supabase: Supabase, backends: Backends, database_url: str
) -> None:
    await post_photo(client, supabase.auth(ALICE))
    await age_rows(database_url, timedelta(seconds=3601))
    again = await post_photo(client, supabase.auth(ALICE))
    assert again.json()["cached"] is False
    assert calls(backends) == (2, 2)
    # The cached copies do not stretch the window: the TTL counts from the run of the model.
    await age_rows(database_url, timedelta(seconds=1800))
    third = await post_photo(client, supabase.auth(ALICE))
    assert third.json()["cached"] is True
    await age_rows(database_url, timedelta(seconds=1801))
    assert (await post_photo(client, supabase.auth(ALICE))).json()["cached"] is False
    assert calls(backends) == (3, 3)


@pytest.mark.parametrize("dedupe_seconds", [3600])
async def test_a_failed_analysis_is_not_reused(
    client: httpx.AsyncClient, supabase: Supabase, backends: Backends
) -> None:
    assert isinstance(backends.vision, FakeVision)
    backends.vision.fail_with = VisionModelError()
    assert (await post_photo(client, supabase.auth(ALICE))).status_code == 502
    backends.vision.fail_with = None
    assert (await post_photo(client, supabase.auth(ALICE))).json()["cached"] is False


@pytest.mark.parametrize("dedupe_seconds", [3600])
async def test_a_replayed_key_after_a_cached_answer_returns_that_answer(
    client: httpx.AsyncClient, supabase: Supabase, backends: Backends
) -> None:
    await post_photo(client, supabase.auth(ALICE))
    cached = await post_photo(client, keyed(supabase, ALICE, "order-7"))
    replayed = await post_photo(client, keyed(supabase, ALICE, "order-7"))
    assert cached.json()["cached"] is True
    assert replayed.json() == cached.json()
    assert replayed.headers["idempotent-replayed"] == "true"
    assert calls(backends) == (1, 1)
