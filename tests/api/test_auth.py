"""AUTH_MODE=supabase through the app: 401s with `WWW-Authenticate`, before the upload is read;
a Supabase outage; the configurations that cannot start; the database at startup and in an outage.

Token verification itself (every failure, JWKS rotation) is tested in tests/adapters/test_auth_supabase.py.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager

from app.bootstrap import create_app
from app.config import ConfigError, Settings
from app.domain.ports import Backends
from tests.api.accounts import Supabase, app_client, app_for, logged, post_photo
from tests.loopback import free_port
from tests.postgres import PostgresServer, migrated_url
from tests.supabase_fake import claims, ec_signer

ALICE = str(uuid.uuid4())
SECRET = "legacy-jwt-secret-for-tests-0123456789"


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["error"] == "unauthorized"
    assert body["detail"] == "A valid bearer token is required."
    assert body["request_id"] == response.headers["x-request-id"]


async def test_a_valid_token_analyzes_as_its_user(settings: Settings, backends: Backends, supabase: Supabase) -> None:
    async with app_client(supabase.settings(settings), backends) as client:
        response = await post_photo(client, supabase.auth(ALICE))
        assert response.status_code == 200, response.text
        assert f"/{ALICE}/" in response.json()["image"]["storage_key"]
        ready = await client.get("/readyz")
        assert ready.json()["checks"] == {"auth": "ok", "database": "ok", "storage": "ok", "vision": "ok"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": "Bearer two tokens"},
    ],
    ids=["none", "empty", "no-token", "basic", "malformed", "two-parts"],
)
async def test_a_request_without_a_valid_token_is_401_before_its_upload_is_read(
    settings: Settings, backends: Backends, supabase: Supabase, headers: dict[str, str]
) -> None:
    async with app_client(supabase.settings(settings), backends) as client:
        # Not an image: had the upload been read, this would be a 415.
        response = await client.post(
            "/analyze", files={"image": ("x.jpg", b"not an image", "image/jpeg")}, headers=headers
        )
    assert_unauthorized(response)


async def test_tokens_that_fail_verification_are_401_and_never_logged(
    settings: Settings, backends: Backends, supabase: Supabase, caplog: pytest.LogCaptureFixture
) -> None:
    issuer = f"{supabase.url}/auth/v1"
    stranger = ec_signer(supabase.signer.kid)  # another project's key under our kid
    tokens = [
        supabase.token(ALICE, exp=int(time.time()) - 60),
        supabase.token(ALICE, aud="anon-app"),
        supabase.token(ALICE, iss="https://evil.example/auth/v1"),
        supabase.token(ALICE, role="anon"),
        stranger.token(claims(issuer=issuer, sub=ALICE)),
        jwt.encode(claims(issuer=issuer, sub=ALICE), SECRET, "HS256"),  # HS256 is not configured here
    ]
    async with app_client(supabase.settings(settings), backends, caplog) as client:
        for token in tokens:
            assert_unauthorized(await post_photo(client, {"Authorization": f"Bearer {token}"}))
    reasons = [event["reason"] for event in logged(caplog) if event["event"] == "token_rejected"]
    assert reasons == [
        "expired",
        "wrong_audience",
        "wrong_issuer",
        "wrong_role",
        "bad_signature",
        "algorithm_not_allowed",
    ]
    for token in tokens:
        for part in token.split("."):
            assert part not in caplog.text


async def test_legacy_hs256_secret_alone_works_without_jwks(settings: Settings, backends: Backends) -> None:
    legacy = settings.model_copy(update={"auth_mode": "supabase", "supabase_jwt_secret": SECRET})
    token = jwt.encode(claims(sub=ALICE), SECRET, "HS256")  # no SUPABASE_URL: `iss` is not checked
    async with app_client(Settings.model_validate(legacy.model_dump()), backends) as client:
        assert (await post_photo(client, {"Authorization": f"Bearer {token}"})).status_code == 200
        forged = jwt.encode(claims(sub=ALICE), "another-secret-of-enough-length-000", "HS256")
        assert_unauthorized(await post_photo(client, {"Authorization": f"Bearer {forged}"}))


async def test_supabase_down_at_startup_starts_the_service_but_not_ready(
    settings: Settings, backends: Backends, caplog: pytest.LogCaptureFixture
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    signer = ec_signer("k1")
    token = signer.token(claims(issuer=f"{down}/auth/v1", sub=ALICE))
    config = Settings.model_validate(settings.model_dump() | {"auth_mode": "supabase", "supabase_url": down})
    async with app_client(config, backends, caplog) as client:
        assert "jwks_unavailable_at_startup" in [event["event"] for event in logged(caplog)]
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["auth"] == "not_ready"
        # Not the caller's fault: a 503 to retry, not a 401.
        response = await post_photo(client, {"Authorization": f"Bearer {token}"})
        assert response.status_code == 503
        assert response.json()["error"] == "upstream_unavailable"


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"auth_mode": "supabase"}, "needs SUPABASE_URL"),
        (
            {"auth_mode": "supabase", "supabase_url": "https://x.supabase.co", "supabase_jwt_algorithms": ["HS256"]},
            "needs SUPABASE_JWT_SECRET",
        ),
        (
            {"auth_mode": "supabase", "supabase_jwt_secret": SECRET, "supabase_jwt_algorithms": ["ES256"]},
            "need SUPABASE_URL",
        ),
    ],
)
def test_auth_settings_that_cannot_verify_tokens_are_refused(
    settings: Settings, update: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        create_app(Settings.model_validate(settings.model_dump() | update))


@pytest.mark.parametrize("algorithms", ["none", "HS256,none", "HS512"])
def test_unsupported_algorithms_are_a_configuration_error(algorithms: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_JWT_ALGORITHMS", algorithms)
    with pytest.raises(ValueError, match=r"(?i)supabase_jwt_algorithms"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_algorithms_follow_the_configured_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    def algorithms(**env: str) -> tuple[str, ...]:
        for name in ("SUPABASE_URL", "SUPABASE_JWT_SECRET", "SUPABASE_JWT_ALGORITHMS"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return Settings(_env_file=None).jwt_algorithms()  # type: ignore[call-arg]

    assert algorithms(SUPABASE_URL="https://x.supabase.co/") == ("ES256", "RS256")
    assert algorithms(SUPABASE_JWT_SECRET=SECRET) == ("HS256",)
    assert algorithms(SUPABASE_URL="https://x.supabase.co", SUPABASE_JWT_SECRET=SECRET) == ("ES256", "RS256", "HS256")
    assert algorithms(SUPABASE_URL="https://x.supabase.co", SUPABASE_JWT_ALGORITHMS="ES256") == ("ES256",)


# -- the database at startup and in an outage ---------------------------------------------------------------------


async def test_startup_refuses_an_unmigrated_database(
    settings: Settings, backends: Backends, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    empty = settings.model_copy(update={"database_url": f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"})
    app = app_for(empty, backends, caplog)
    with pytest.raises(ConfigError, match=r"schema revision none, this code needs 0001: run `alembic upgrade head`"):
        async with LifespanManager(app):
            pass
    assert "startup_failed" in [event["event"] for event in logged(caplog)]


async def test_startup_names_an_unreachable_database_without_its_password(
    settings: Settings, backends: Backends
) -> None:
    url = f"postgresql+asyncpg://app:s3cret-pw@127.0.0.1:{free_port()}/app"
    unreachable = settings.model_copy(update={"database_url": url, "database_timeout_seconds": 2.0})
    with pytest.raises(ConfigError, match="Cannot reach the database") as caught:
        async with LifespanManager(create_app(unreachable, backends=backends)):
            pass
    assert "s3cret-pw" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


async def test_a_database_outage_is_a_503_and_not_ready(
    settings: Settings, backends: Backends, postgres_server: PostgresServer
) -> None:
    url = migrated_url(postgres_server)
    async with app_client(settings.model_copy(update={"database_url": url}), backends) as client:
        assert (await post_photo(client)).status_code == 200
        postgres_server.drop_database(url)  # disconnects the pool's connections, and they cannot come back
        for response in (await post_photo(client), await client.get("/analyses")):
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "upstream_unavailable"
            assert response.json()["detail"] == "The database is unavailable; retry later."
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "not_ready"
