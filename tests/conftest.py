"""Shared fixtures: settings for tests, fake backends, an ASGI client inside the lifespan,
and the tiny random-weight BLIP-2 built once per session."""

from __future__ import annotations

import os
import shutil

# Before anything imports huggingface_hub, which reads this once: tests never touch the hub.
os.environ["HF_HUB_OFFLINE"] = "1"

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.bootstrap import create_app
from app.config import Settings
from app.domain.ports import Backends
from tests.fakes import FakeStore, FakeVision, FakeWriter
from tests.postgres import postgres_server  # noqa: F401  (a session fixture: PostgreSQL for the tests that need it)

_FOLDER_MARKS = {"unit": "unit", "api": "api", "adapters": "adapters", "model": "model", "ops": "ops", "infra": "infra"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder, so `pytest -m unit` and friends select by layer."""
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in _FOLDER_MARKS:
            item.add_marker(_FOLDER_MARKS[folder])


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may reach AWS: fake credentials, no profile or config file from the machine, no proxy."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ca-central-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated to head once per session; tests copy it rather than migrate again."""
    from alembic import command

    from app.adapters.sql.engine import alembic_config

    path = tmp_path_factory.mktemp("db") / "template.db"
    command.upgrade(alembic_config(f"sqlite+aiosqlite:///{path}"), "head")
    return path


@pytest.fixture
def sqlite_url(migrated_sqlite: Path, tmp_path: Path) -> str:
    """A fresh, migrated SQLite database of this test's own."""
    path = tmp_path / "app.db"
    shutil.copyfile(migrated_sqlite, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """The database the app under test runs on; tests of the data layer override it for PostgreSQL too."""
    return sqlite_url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Settings for tests: embedded backends, a temporary storage folder and database, no .env file.

    Dedupe, the rate limit and the quota are off, so that tests of other features may send the
    same photo many times; their own tests turn them on.
    """
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        storage_dir=tmp_path / "uploads",
        database_url=database_url,
        log_format="json",
        cache_ttl_seconds=0,
        rate_limit_per_minute=0,
        daily_quota=0,
    )


@pytest.fixture
def backends() -> Backends:
    return Backends(store=FakeStore(), vision=FakeVision(), writer=FakeWriter())


@pytest.fixture
async def client(settings: Settings, backends: Backends) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client over the ASGI app, inside its lifespan, on fake backends."""
    app = create_app(settings, backends=backends)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight BLIP-2, built once per test session (a few seconds)."""
    from model.tiny import build

    return build(tmp_path_factory.mktemp("tiny-blip2"))
