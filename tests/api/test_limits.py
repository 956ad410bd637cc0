"""RATE_LIMIT_PER_MINUTE and DAILY_QUOTA: 429 `rate_limited` with `Retry-After`, per user.

The quota is counted in the database, so two app instances on one database share it; every
test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import anyio
import httpx

from app.config import Settings
from app.domain.ports import Backends
from app.errors import VisionModelError
from app.services.analysis import seconds_to_midnight
from tests.api.accounts import OTHER_PHOTO, Supabase, app_client, post_photo
from tests.dbs import sqlite_and_postgresql  # noqa: F401
from tests.fakes import FakeStore, FakeVision, FakeWriter

ALICE = str(uuid.uuid4())
BOB = str(uuid.uuid4())


def assert_rate_limited(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    assert response.json()["error"] == "rate_limited"
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1
    return retry_after


async def test_the_burst_limit_refuses_before_the_upload_is_read(
    settings: Settings, backends: Backends, supabase: Supabase
) -> None:
    limited = supabase.settings(settings, rate_limit_per_minute=2)
    async with app_client(limited, backends) as client:
        for index in range(2):
            assert (await post_photo(client, supabase.auth(ALICE), questions=[f"Q{index}?"])).status_code == 200
        refused = await client.post(
            "/analyze", files={"image": ("x.jpg", b"not an image", "image/jpeg")}, headers=supabase.auth(ALICE)
        )
        assert assert_rate_limited(refused) <= 30  # one request per 30 s refills at 2 a minute
        # Another user has a bucket of their own.
        assert (await post_photo(client, supabase.auth(BOB))).status_code == 200
        # Reading history is not limited.
        assert (await client.get("/analyses", headers=supabase.auth(ALICE))).status_code == 200


async def test_the_daily_quota_holds_across_instances_on_one_database(
    settings: Settings, backends: Backends, supabase: Supabase
) -> None:
    quota = supabase.settings(settings, daily_quota=3)
    other_instance = Backends(store=FakeStore(), vision=FakeVision(), writer=FakeWriter())
    async with app_client(quota, backends) as first, app_client(quota, other_instance) as second:
        statuses = []
        for index, client in enumerate([first, second, first, second]):
            response = await post_photo(client, supabase.auth(ALICE), questions=[f"Q{index}?"])
            statuses.append(response.status_code)
        assert statuses == [200, 200, 200, 429]
        refused = await post_photo(first, supabase.auth(ALICE), questions=["Q9?"])
        retry_after = assert_rate_limited(refused)
        assert abs(retry_after - seconds_to_midnight(datetime.now(UTC))) <= 5
        assert "daily quota" in refused.json()["detail"]
        # Bob's quota is his own.
        assert (await post_photo(second, supabase.auth(BOB))).status_code == 200


async def test_concurrent_requests_cannot_overshoot_the_quota(
    settings: Settings, backends: Backends, supabase: Supabase
) -> None:
    async with app_client(supabase.settings(settings, daily_quota=3), backends) as client:
        statuses: list[int] = []

        async def send(index: int) -> None:
            response = await post_photo(client, supabase.auth(ALICE), questions=[f"Q{index}?"])
            statuses.append(response.status_code)

        async with anyio.create_task_group() as group:
            for index in range(8):
                group.start_soon(send, index)
    assert sorted(statuses) == [200] * 3 + [429] * 5


async def test_failed_analyses_and_cached_answers_do_not_count(
    settings: Settings, backends: Backends, supabase: Supabase
) -> None:
    assert isinstance(backends.vision, FakeVision)
    limited = supabase.settings(settings, daily_quota=2, cache_ttl_seconds=3600)
    async with app_client(limited, backends) as client:
        backends.vision.fail_with = VisionModelError()
        for _ in range(3):
            assert (await post_photo(client, supabase.auth(ALICE))).status_code == 502
        backends.vision.fail_with = None

        assert (await post_photo(client, supabase.auth(ALICE))).status_code == 200
        for _ in range(3):  # the same photo again: served from the stored result, free
            cached = await post_photo(client, supabase.auth(ALICE))
            assert cached.json()["cached"] is True
        assert (await post_photo(client, supabase.auth(ALICE), photo=OTHER_PHOTO)).status_code == 200
        assert_rate_limited(await post_photo(client, supabase.auth(ALICE), locale="fr"))
    assert len(backends.vision.calls) == 5
