"""Alembic's migrations on SQLite and PostgreSQL: they build exactly the schema tables.py describes.

Every test runs on both databases, each time on a fresh one: a temporary SQLite file, and a new
database on the session's PostgreSQL server. Alembic runs in a worker thread, since its env.py
calls asyncio.run and these tests already run in an event loop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.adapters.sql.engine import alembic_config, build_engine, check_schema
from app.adapters.sql.tables import AnalysisRow, Base
from app.config import ConfigError

ALL_TABLES = {"alembic_version", "analyses", "daily_usage"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty (unmigrated) database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    url = server.create_database()
    yield url
    server.drop_database(url)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = build_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def alembic(action: str, url: str, revision: str) -> None:
    """`alembic upgrade|downgrade REVISION` on `url`, in a worker thread (env.py runs its own event loop)."""
    await asyncio.to_thread(getattr(command, action), alembic_config(url), revision)


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


def schema_differences(connection: Connection) -> list[Any]:
    """What `alembic revision --autogenerate` would write: the models against the migrated database."""
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def analysis(created_at: datetime) -> AnalysisRow:
    return AnalysisRow(
        id=uuid.uuid4(),
        user_id="user-1",
        status="succeeded",
        cached=False,
        image_sha256="a" * 64,
        image_key="user-1/image.jpg",
        image={"width": 1024, "height": 768},
        options={"locale": "en"},
        options_hash="b" * 64,
        created_at=created_at,
    )


async def test_the_migrations_build_exactly_the_models(database_url: str, engine: AsyncEngine) -> None:
    await alembic("upgrade", database_url, "head")
    assert await table_names(engine) == ALL_TABLES
    async with engine.connect() as connection:
        assert await connection.run_sync(schema_differences) == []


async def test_downgrade_to_base_drops_everything_and_upgrade_works_again(
    database_url: str, engine: AsyncEngine
) -> None:
    await alembic("upgrade", database_url, "head")
    await alembic("downgrade", database_url, "base")
    assert await table_names(engine) == {"alembic_version"}
    await alembic("upgrade", database_url, "head")
    assert await table_names(engine) == ALL_TABLES
    async with engine.connect() as connection:
        assert await connection.run_sync(schema_differences) == []


async def test_check_schema_refuses_an_unmigrated_database(database_url: str, engine: AsyncEngine) -> None:
    with pytest.raises(ConfigError, match=r"revision none.*alembic upgrade head"):
        await check_schema(engine)
    await alembic("upgrade", database_url, "head")
    await check_schema(engine)


async def test_timestamps_come_back_aware_and_in_utc(database_url: str, engine: AsyncEngine) -> None:
    await alembic("upgrade", database_url, "head")
    toronto_winter = timezone(timedelta(hours=-5))
    created = datetime(2026, 11, 21, 15, 30, 45, 123456, tzinfo=toronto_winter)
    row = analysis(created)
    async with AsyncSession(engine) as session:
        session.add(row)
        await session.commit()

    async with AsyncSession(engine) as session:  # a new session: read from the database, not the identity map
        stored = await session.scalar(select(AnalysisRow.created_at))
    assert stored == created  # the same instant
    assert stored is not None
    assert stored.tzinfo is UTC
    assert stored.replace(tzinfo=None) == datetime(2026, 11, 21, 20, 30, 45, 123456)


async def test_a_naive_timestamp_is_refused(database_url: str, engine: AsyncEngine) -> None:
    await alembic("upgrade", database_url, "head")
    async with AsyncSession(engine) as session:
        session.add(analysis(datetime(2026, 11, 21, 15, 30)))  # naive: the point of the test
        with pytest.raises(StatementError, match="naive datetime"):
            await session.commit()
    async with engine.connect() as connection:
        assert (await connection.execute(select(AnalysisRow.id))).all() == []
