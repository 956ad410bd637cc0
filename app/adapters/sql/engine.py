"""The engine for DATABASE_URL, with explicit timeouts, and the check that its schema is current.

SQLite (aiosqlite) runs in WAL mode with a busy timeout, so readers never wait on the writer
and writers wait on each other instead of failing at once. PostgreSQL (asyncpg) gets connect
and statement timeouts, a bounded pool and a pre-ping, so a connection the server (or
Supabase's pooler) dropped is replaced rather than failing a request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.config import ConfigError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Failures to reach the database that SQLAlchemy does not wrap: it wraps the driver's errors on a
# live connection, but asyncpg's while connecting (database gone, password refused, too many
# connections) and the socket's own come through as they are.
UNREACHABLE: tuple[type[Exception], ...] = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
_CANNOT_CONNECT: tuple[type[Exception], ...] = (SQLAlchemyError, TimeoutError, *UNREACHABLE)


def build_engine(url: str | URL, *, timeout_s: float = 5.0, pool_size: int = 5) -> AsyncEngine:
    """Create the async engine for `url` (nothing connects until first use)."""
    url = make_url(url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": timeout_s})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        return create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=timeout_s,
            pool_pre_ping=True,
            connect_args={
                "timeout": timeout_s,
                "command_timeout": timeout_s,
                "server_settings": {"application_name": "product-analyzer"},
            },
        )
    raise ConfigError(f"DATABASE_URL must be sqlite+aiosqlite:// or postgresql+asyncpg://, not {backend}.")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes; WAL makes it safe
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def alembic_config(url: str | URL | None = None) -> Config:
    """Alembic's configuration without alembic.ini; `url` overrides DATABASE_URL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser interpolates `%`, which URL-encoded passwords contain.
        rendered = make_url(url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


async def check_schema(engine: AsyncEngine) -> None:
    """Raise `ConfigError` unless the database answers and is migrated to the newest revision this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()

    def current(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    try:
        async with engine.connect() as connection:
            revision = await connection.run_sync(current)
    except _CANNOT_CONNECT as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise ConfigError(f"Cannot reach the database at {where} ({type(exc).__name__}).") from exc
    if revision != head:
        raise ConfigError(
            f"The database is at schema revision {revision or 'none'}, this code needs {head}: "
            "run `alembic upgrade head` (or `make migrate`) with the same DATABASE_URL."
        )
