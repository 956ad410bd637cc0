"""Run a test module on both databases: `from tests.dbs import sqlite_and_postgresql  # noqa: F401`.

The import registers a `database_url` fixture that overrides conftest's SQLite-only one, so every
test in the module runs once on SQLite and once on a fresh, migrated PostgreSQL database.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres import migrated_url


@pytest.fixture(name="database_url", params=["sqlite", "postgresql"])
def sqlite_and_postgresql(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url
        return
    server = request.getfixturevalue("postgres_server")
    url = migrated_url(server)
    yield url
    server.drop_database(url)
