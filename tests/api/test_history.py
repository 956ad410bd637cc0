"""GET /analyses, GET /analyses/{id}, DELETE /analyses/{id}: owners only, newest first, with the image.

Every test runs on SQLite and on PostgreSQL, with Supabase auth (ES256 tokens, loopback JWKS).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest
from sqlalchemy import update

from app.adapters.sql.engine import build_engine
from app.adapters.sql.tables import AnalysisRow
from app.config import Settings
from app.domain.ports import Backends
from app.errors import UpstreamUnavailable
from app.services.analysis import ABANDONED_AFTER
from tests.api.accounts import OTHER_PHOTO, Supabase, app_client, post_photo
from tests.dbs import sqlite_and_postgresql  # noqa: F401
from tests.fakes import FakeStore

ALICE = str(uuid.uuid4())
BOB = str(uuid.uuid4())


@pytest.fixture
async def client(settings: Settings, backends: Backends, supabase: Supabase) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(supabase.settings(settings), backends) as http:
        yield http


async def test_an_analysis_is_kept_and_read_back_by_its_owner(client: httpx.AsyncClient, supabase: Supabase) -> None:
    posted = await post_photo(client, supabase.auth(ALICE), questions=["Is it waterproof?"])
    assert posted.status_code == 200, posted.text
    body = posted.json()

    got = await client.get(f"/analyses/{body['id']}", headers=supabase.auth(ALICE))
    assert got.status_code == 200
    record = got.json()
    assert record["status"] == "succeeded"
    assert record["error"] is None
    assert record["completed_at"] is not None
    # A succeeded analysis reads back exactly as POST /analyze answered it.
    for field in ("id", "schema_version", "cached", "image", "vision", "report", "timings_ms"):
        assert record[field] == body[field], field
    assert record["created_at"].replace("Z", "+00:00")[:19] == body["created_at"].replace("Z", "+00:00")[:19]
    # A dashed UUID names the same analysis.
    dashed = str(uuid.UUID(body["id"]))
    assert (await client.get(f"/analyses/{dashed}", headers=supabase.auth(ALICE))).json()["id"] == body["id"]


async def test_another_users_analysis_is_a_404_like_a_missing_one(
    client: httpx.AsyncClient, supabase: Supabase, backends: Backends
) -> None:
    alices = (await post_photo(client, supabase.auth(ALICE))).json()["id"]

    for probe in (alices, uuid.uuid4().hex, "not-an-id"):
        response = await client.get(f"/analyses/{probe}", headers=supabase.auth(BOB))
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
    denied = await client.delete(f"/analyses/{alices}", headers=supabase.auth(BOB))
    assert denied.status_code == 404
    assert (await client.get("/analyses", headers=supabase.auth(BOB))).json() == {"items": [], "next_cursor": None}

    # Bob's attempts changed nothing of Alice's.
    assert (await client.get(f"/analyses/{alices}", headers=supabase.auth(ALICE))).status_code == 200
    assert isinstance(backends.store, FakeStore)
    assert len(backends.store.objects) == 1


async def test_every_analyses_endpoint_needs_a_token(client: httpx.AsyncClient) -> None:
    some_id = uuid.uuid4().hex
    for method, path in (("GET", "/analyses"), ("GET", f"/analyses/{some_id}"), ("DELETE", f"/analyses/{some_id}")):
        response = await client.request(method, path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] == "unauthorized"


async def test_history_pages_newest_first_by_cursor(client: httpx.AsyncClient, supabase: Supabase) -> None:
    ids = []
    for index in range(5):
        response = await post_photo(client, supabase.auth(ALICE), questions=[f"Question {index}?"])
        ids.append(response.json()["id"])
    await post_photo(client, supabase.auth(BOB))  # not Alice's: never in her pages

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/analyses", params=params, headers=supabase.auth(ALICE))).json()
        pages += 1
        seen += [item["id"] for item in page["items"]]
        assert len(page["items"]) <= 2
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))

    everything = (await client.get("/analyses", headers=supabase.auth(ALICE))).json()
    assert [item["id"] for item in everything["items"]] == list(reversed(ids))
    assert everything["next_cursor"] is None


async def test_a_page_ending_exactly_at_the_last_item_has_no_next_cursor(
    client: httpx.AsyncClient, supabase: Supabase
) -> None:
    for index in range(2):
        await post_photo(client, supabase.auth(ALICE), questions=[f"Question {index}?"])
    page = (await client.get("/analyses", params={"limit": 2}, headers=supabase.auth(ALICE))).json()
    assert len(page["items"]) == 2
    assert page["next_cursor"] is None


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 101}, {"limit": "many"}, {"cursor": "garbage!"}, {"cursor": "bm90fGEgY3Vyc29y"}]
)
async def test_bad_paging_parameters_are_422(
    client: httpx.AsyncClient, supabase: Supabase, params: dict[str, str | int]
) -> None:
    response = await client.get("/analyses", params=params, headers=supabase.auth(ALICE))
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_field"


async def test_delete_removes_the_row_and_the_stored_image(
    client: httpx.AsyncClient, supabase: Supabase, backends: Backends
) -> None:
    assert isinstance(backends.store, FakeStore)
    body = (await post_photo(client, supabase.auth(ALICE))).json()
    assert body["image"]["storage_key"] in backends.store.objects

    deleted = await client.delete(f"/analyses/{body['id']}", headers=supabase.auth(ALICE))
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert body["image"]["storage_key"] not in backends.store.objects
    assert (await client.get(f"/analyses/{body['id']}", headers=supabase.auth(ALICE))).status_code == 404
    assert (await client.delete(f"/analyses/{body['id']}", headers=supabase.auth(ALICE))).status_code == 404


async def test_an_image_two_analyses_share_is_kept_until_the_last_is_deleted(
    client: httpx.AsyncClient, supabase: Supabase, backends: Backends
) -> None:
    assert isinstance(backends.store, FakeStore)
    first = (await post_photo(client, supabase.auth(ALICE), questions=["Is it new?"])).json()
    second = (await post_photo(client, supabase.auth(ALICE), questions=["Is it old?"])).json()
    other = (await post_photo(client, supabase.auth(ALICE), photo=OTHER_PHOTO)).json()
    key = first["image"]["storage_key"]
    assert second["image"]["storage_key"] == key != other["image"]["storage_key"]

    assert (await client.delete(f"/analyses/{first['id']}", headers=supabase.auth(ALICE))).status_code == 204
    assert key in backends.store.objects
    assert (await client.delete(f"/analyses/{second['id']}", headers=supabase.auth(ALICE))).status_code == 204
    assert key not in backends.store.objects
    assert other["image"]["storage_key"] in backends.store.objects


async def test_a_failed_image_delete_keeps_the_row_and_can_be_retried(
    client: httpx.AsyncClient, supabase: Supabase, backends: Backends
) -> None:
    assert isinstance(backends.store, FakeStore)
    body = (await post_photo(client, supabase.auth(ALICE))).json()

    backends.store.fail_with = UpstreamUnavailable("The image store could not delete the image.")
    failed = await client.delete(f"/analyses/{body['id']}", headers=supabase.auth(ALICE))
    assert failed.status_code == 503
    assert failed.json()["error"] == "upstream_unavailable"
    assert (await client.get(f"/analyses/{body['id']}", headers=supabase.auth(ALICE))).status_code == 200

    backends.store.fail_with = None
    assert (await client.delete(f"/analyses/{body['id']}", headers=supabase.auth(ALICE))).status_code == 204
    assert body["image"]["storage_key"] not in backends.store.objects


async def test_a_failed_analysis_is_kept_with_its_error(
    client: httpx.AsyncClient, supabase: Supabase, backends: Backends
) -> None:
    from app.errors import VisionModelError
    from tests.fakes import FakeVision

    assert isinstance(backends.vision, FakeVision)
    backends.vision.fail_with = VisionModelError()
    assert (await post_photo(client, supabase.auth(ALICE))).status_code == 502

    page = (await client.get("/analyses", headers=supabase.auth(ALICE))).json()
    [failed] = page["items"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "vision_model_error", "detail": VisionModelError.detail}
    assert failed["vision"] is None
    assert failed["report"] is None
    # A finished failure may be deleted like any other analysis.
    assert (await client.delete(f"/analyses/{failed['id']}", headers=supabase.auth(ALICE))).status_code == 204


async def test_a_running_analysis_cannot_be_deleted_until_it_is_abandoned(
    client: httpx.AsyncClient, supabase: Supabase, database_url: str
) -> None:
    body = (await post_photo(client, supabase.auth(ALICE))).json()
    engine = build_engine(database_url)
    try:
        # As if the process running it had died: the row stays "running".
        async with engine.begin() as connection:
            await connection.execute(update(AnalysisRow).values(status="running"))
        refused = await client.delete(f"/analyses/{body['id']}", headers=supabase.auth(ALICE))
        assert refused.status_code == 409
        assert refused.json()["error"] == "analysis_running"

        created = datetime.fromisoformat(body["created_at"].replace("Z", "+00:00"))
        async with engine.begin() as connection:
            await connection.execute(update(AnalysisRow).values(created_at=created - ABANDONED_AFTER))
        assert (await client.delete(f"/analyses/{body['id']}", headers=supabase.auth(ALICE))).status_code == 204
    finally:
        await engine.dispose()
