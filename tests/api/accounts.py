"""Helpers for API tests: signed-in users (Supabase's JWKS on loopback, ES256 access tokens, settings
that use them), an app client on given settings, and the app's captured log events."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.bootstrap import create_app
from app.config import Settings
from app.domain.ports import Backends
from tests.imagegen import product_jpeg
from tests.supabase_fake import JWKSServer, Signer, claims

PHOTO = product_jpeg((800, 600))
OTHER_PHOTO = product_jpeg((800, 600), seed=11)


@dataclass
class Supabase:
    """The project's Auth: its JWKS server and the key it signs access tokens with."""

    server: JWKSServer
    signer: Signer

    @property
    def url(self) -> str:
        return self.server.base_url

    def token(self, user_id: str, **overrides: Any) -> str:
        return self.signer.token(claims(issuer=f"{self.url}/auth/v1", sub=user_id, **overrides))

    def auth(self, user_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id)}"}

    def settings(self, base: Settings, **overrides: Any) -> Settings:
        """`base` with AUTH_MODE=supabase against this project (JWKS, ES256)."""
        return Settings.model_validate(
            base.model_dump() | {"auth_mode": "supabase", "supabase_url": self.url} | overrides
        )


def app_for(settings: Settings, backends: Backends, caplog: pytest.LogCaptureFixture | None = None) -> FastAPI:
    """`create_app`, with pytest's log capture put back on the root logger that `configure_logging` reset."""
    app = create_app(settings, backends=backends)
    if caplog is not None:
        logging.getLogger().addHandler(caplog.handler)
    return app


def logged(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The structlog events the app logged, after our processors (context, redaction), before rendering."""
    return [record.msg for record in caplog.records if isinstance(record.msg, dict)]


@asynccontextmanager
async def app_client(
    settings: Settings, backends: Backends, caplog: pytest.LogCaptureFixture | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client over a fresh app on `settings`, inside its lifespan."""
    app = app_for(settings, backends, caplog)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


async def post_photo(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, *, photo: bytes = PHOTO, **data: Any
) -> httpx.Response:
    return await client.post(
        "/analyze", files={"image": ("photo.jpg", photo, "image/jpeg")}, data=data, headers=headers or {}
    )
