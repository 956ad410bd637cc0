"""`SupabaseVerifier` over real HTTP: a loopback JWKS server, real keys, tokens made with PyJWT.

The JWKS server counts its fetches and can be told to rotate keys, fail or answer garbage; a
fake monotonic clock drives the TTL and the unknown-kid refetch window. Token expiry is checked
by PyJWT against the wall clock, so tokens are minted relative to `time.time()`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from structlog.testing import capture_logs

from app.adapters import auth_supabase
from app.adapters.auth_supabase import MAX_TOKEN_CHARS, SupabaseVerifier
from app.domain.models import User
from app.errors import NotReady, Unauthorized, UpstreamUnavailable
from tests.loopback import free_port
from tests.supabase_fake import (
    DROP,
    ISSUER,
    JWKS_PATH,
    JWKSServer,
    Signer,
    b64url,
    claims,
    ec_signer,
    hand_made,
    jwks_serving,
)

SECRET = b"legacy-supabase-jwt-secret-0123456789abcdef"
UNAVAILABLE = "The sign-in service is unavailable; retry later."


@dataclass(frozen=True)
class Keys:
    ec: Signer
    rsa: Signer
    impostor: Signer  # another EC key that claims the kid of `ec`


@pytest.fixture(autouse=True)
def fresh_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    """A logger proxy not yet bound, so `capture_logs` sees its events even after an earlier test built the
    app, whose logging configuration caches each logger on first use."""
    monkeypatch.setattr(auth_supabase, "log", structlog.stdlib.get_logger(auth_supabase.__name__))


@pytest.fixture(scope="module")
def keys() -> Keys:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # slow: once per module
    return Keys(
        ec=ec_signer("ec-1"),
        rsa=Signer("rsa-1", "RS256", rsa_key),
        impostor=Signer("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1())),
    )


def hs256(payload: dict[str, Any] | None = None, secret: bytes = SECRET) -> str:
    return jwt.encode(claims() if payload is None else payload, secret, "HS256")


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JWKSServer]:
    with jwks_serving() as server:
        yield server


@pytest.fixture
def jwks(jwks_server: JWKSServer, keys: Keys) -> JWKSServer:
    """The module's JWKS server, reset: serving the EC and RSA keys, nothing fetched yet."""
    jwks_server.keys = [keys.ec.jwk(), keys.rsa.jwk()]
    jwks_server.mode = "ok"
    jwks_server.fetches = 0
    return jwks_server


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


Factory = Callable[..., SupabaseVerifier]


@pytest.fixture
def make_verifier(http: httpx.AsyncClient, jwks: JWKSServer, clock: FakeClock) -> Factory:
    """Build a verifier for ES256 and RS256 against the loopback JWKS; keyword arguments override."""

    def make(**overrides: Any) -> SupabaseVerifier:
        arguments: dict[str, Any] = {
            "http": http,
            "jwks_url": jwks.url,
            "issuer": ISSUER,
            "hs256_secret": None,
            "algorithms": ("ES256", "RS256"),
            "clock": clock,
        }
        return SupabaseVerifier(**(arguments | overrides))

    return make


@pytest.fixture
def verifier(make_verifier: Factory) -> SupabaseVerifier:
    return make_verifier()


def hs256_only(**overrides: Any) -> SupabaseVerifier:
    arguments: dict[str, Any] = {
        "http": None,
        "jwks_url": None,
        "issuer": None,
        "hs256_secret": SECRET,
        "algorithms": ("HS256",),
    }
    return SupabaseVerifier(**(arguments | overrides))


def assert_not_logged(logs: list[MutableMapping[str, Any]], token: str) -> None:
    rendered = repr(logs)
    # Short strings (an empty token, "abc") could match log text by chance and prove nothing.
    for part in [token, *token.split(".")]:
        if len(part) >= 8:
            assert part not in rendered


async def assert_rejected(verifier: SupabaseVerifier, token: str, reason: str) -> list[MutableMapping[str, Any]]:
    """Assert the generic 401, one `token_rejected` line with `reason`, and no trace of the token in logs."""
    with capture_logs() as logs, pytest.raises(Unauthorized) as caught:
        await verifier.verify(token)
    error = caught.value
    assert error.status_code == 401
    assert error.code == "unauthorized"
    assert error.headers == {"WWW-Authenticate": "Bearer"}
    assert error.detail == Unauthorized.detail
    assert error.__cause__ is None
    rejected = [entry for entry in logs if entry["event"] == "token_rejected"]
    assert rejected == [{"event": "token_rejected", "reason": reason, "log_level": "info"}]
    assert_not_logged(logs, token)
    return logs


# --- valid tokens ---------------------------------------------------------------------------------


async def test_valid_es256_token_gives_its_principal(verifier: SupabaseVerifier, keys: Keys) -> None:
    payload = claims()
    assert await verifier.verify(keys.ec.token(payload)) == User(id=payload["sub"])


async def test_valid_rs256_token_gives_its_principal(verifier: SupabaseVerifier, keys: Keys) -> None:
    payload = claims()
    assert await verifier.verify(keys.rsa.token(payload)) == User(id=payload["sub"])


async def test_valid_hs256_token_is_checked_with_the_secret_only(keys: Keys) -> None:
    payload = claims()
    principal = await hs256_only().verify(hs256(payload))
    assert principal == User(id=payload["sub"])


async def test_hs256_next_to_jwks_never_fetches(make_verifier: Factory, jwks: JWKSServer) -> None:
    verifier = make_verifier(algorithms=("ES256", "HS256"), hs256_secret=SECRET)
    payload = claims()
    assert (await verifier.verify(hs256(payload))).id == payload["sub"]
    assert jwks.fetches == 0


@pytest.mark.parametrize(
    "make_claims",
    [
        pytest.param(lambda: claims(exp=int(time.time()) - 5), id="expired-within-leeway"),
        pytest.param(lambda: claims(nbf=int(time.time()) + 5), id="nbf-within-leeway"),
        pytest.param(lambda: claims(aud=["authenticated", "other"]), id="audience-list"),
        pytest.param(lambda: claims(iat=DROP), id="no-iat"),
    ],
)
async def test_accepted_edge_cases(
    verifier: SupabaseVerifier, keys: Keys, make_claims: Callable[[], dict[str, Any]]
) -> None:
    await verifier.verify(keys.ec.token(make_claims()))


async def test_keys_are_fetched_once_and_cached(verifier: SupabaseVerifier, keys: Keys, jwks: JWKSServer) -> None:
    for _ in range(5):
        await verifier.verify(keys.ec.token())
        await verifier.verify(keys.rsa.token())
    assert jwks.fetches == 1


# --- rejected tokens ------------------------------------------------------------------------------


def _tampered(keys: Keys) -> str:
    header, _, signature = keys.ec.token(claims(sub="victim")).split(".")
    return f"{header}.{b64url(json.dumps(claims(sub='attacker')).encode())}.{signature}"


def _alg_none(name: str) -> Callable[[Keys], str]:
    return lambda keys: hand_made({"alg": name, "typ": "JWT"}, claims())


def _hs256_with_public_pem(keys: Keys) -> str:
    """The algorithm-confusion attack: HMAC keyed with the server's own public RSA key."""
    pem = keys.rsa.public_pem()
    return hand_made(
        {"alg": "HS256", "typ": "JWT", "kid": keys.rsa.kid},
        claims(),
        lambda data: hmac.new(pem, data, hashlib.sha256).digest(),
    )


REJECTED = [
    pytest.param(lambda keys: "not-a-jwt", "malformed", id="not-a-jwt"),
    pytest.param(lambda keys: "", "malformed", id="empty"),
    pytest.param(lambda keys: "abc.def", "malformed", id="two-segments"),
    pytest.param(lambda keys: "!!!!.@@@@.####", "malformed", id="garbage-base64"),
    pytest.param(lambda keys: "é" + keys.ec.token()[1:], "malformed", id="non-ascii"),
    pytest.param(lambda keys: b64url(b"[1]") + ".e30.c2ln", "malformed", id="header-not-an-object"),
    pytest.param(lambda keys: hand_made({"alg": "ES256", "kid": "ec-1"}, claims()), "bad_signature", id="no-signature"),
    pytest.param(_tampered, "bad_signature", id="payload-tampered"),
    pytest.param(lambda keys: keys.impostor.token(), "bad_signature", id="wrong-key-same-kid"),
    pytest.param(lambda keys: keys.ec.token(claims(exp=int(time.time()) - 60)), "expired", id="expired"),
    pytest.param(lambda keys: keys.ec.token(claims(nbf=int(time.time()) + 60)), "not_yet_valid", id="nbf-future"),
    pytest.param(lambda keys: keys.ec.token(claims(iat=int(time.time()) + 60)), "not_yet_valid", id="iat-future"),
    pytest.param(lambda keys: keys.ec.token(claims(exp=DROP)), "missing_claim", id="missing-exp"),
    pytest.param(lambda keys: keys.ec.token(claims(aud="anon")), "wrong_audience", id="wrong-audience"),
    pytest.param(lambda keys: keys.ec.token(claims(aud=DROP)), "missing_claim", id="missing-aud"),
    pytest.param(
        lambda keys: keys.ec.token(claims(iss="https://evil.supabase.co/auth/v1")), "wrong_issuer", id="wrong-issuer"
    ),
    pytest.param(lambda keys: keys.ec.token(claims(iss=DROP)), "missing_claim", id="missing-issuer"),
    pytest.param(lambda keys: keys.ec.token(claims(sub=DROP)), "missing_claim", id="missing-sub"),
    pytest.param(lambda keys: keys.ec.token(claims(sub="")), "missing_claim", id="empty-sub"),
    pytest.param(lambda keys: keys.ec.token(claims(sub=12345)), "invalid_claim", id="sub-not-a-string"),
    pytest.param(lambda keys: keys.ec.token(claims(role="anon")), "wrong_role", id="role-anon"),
    pytest.param(lambda keys: keys.ec.token(claims(role="service_role")), "wrong_role", id="role-service"),
    pytest.param(lambda keys: keys.ec.token(claims(role=DROP)), "missing_claim", id="missing-role"),
    pytest.param(_alg_none("none"), "algorithm_not_allowed", id="alg-none"),
    pytest.param(_alg_none("None"), "algorithm_not_allowed", id="alg-None"),
    pytest.param(_alg_none("NONE"), "algorithm_not_allowed", id="alg-NONE"),
    pytest.param(lambda keys: hand_made({"typ": "JWT", "kid": "ec-1"}, claims()), "algorithm_not_allowed", id="no-alg"),
    pytest.param(lambda keys: hs256(), "algorithm_not_allowed", id="hs256-not-configured"),
    pytest.param(_hs256_with_public_pem, "algorithm_not_allowed", id="hs256-keyed-with-public-pem"),
    pytest.param(lambda keys: keys.ec.token(kid="rsa-1"), "algorithm_mismatch", id="es256-naming-the-rsa-key"),
    pytest.param(lambda keys: jwt.encode(claims(), keys.ec.private_key, "ES256"), "unknown_kid", id="no-kid"),
    pytest.param(lambda keys: "a" * (MAX_TOKEN_CHARS + 1), "too_long", id="too-long-garbage"),
    pytest.param(lambda keys: keys.ec.token(claims(pad="x" * MAX_TOKEN_CHARS)), "too_long", id="too-long-signed"),
]


@pytest.mark.parametrize(("make_token", "reason"), REJECTED)
async def test_bad_token_is_a_generic_401_with_the_reason_logged(
    verifier: SupabaseVerifier, keys: Keys, make_token: Callable[[Keys], str], reason: str
) -> None:
    await assert_rejected(verifier, make_token(keys), reason)


async def test_rs256_token_is_refused_when_only_es256_is_allowed(make_verifier: Factory, keys: Keys) -> None:
    verifier = make_verifier(algorithms=("ES256",))
    await assert_rejected(verifier, keys.rsa.token(), "algorithm_not_allowed")


async def test_public_pem_as_hmac_secret_fails_even_where_hs256_is_allowed(make_verifier: Factory, keys: Keys) -> None:
    # HS256 tokens are checked with the configured secret, never with a JWKS key: the forgery fails.
    verifier = make_verifier(algorithms=("RS256", "HS256"), hs256_secret=SECRET)
    await assert_rejected(verifier, _hs256_with_public_pem(keys), "bad_signature")


async def test_hs256_token_with_the_wrong_secret_is_refused() -> None:
    await assert_rejected(hs256_only(), hs256(secret=b"x" * 48), "bad_signature")


async def test_hs256_issuer_is_checked_when_configured() -> None:
    verifier = hs256_only(issuer=ISSUER)
    assert await verifier.verify(hs256())
    await assert_rejected(verifier, hs256(claims(iss="https://elsewhere/auth/v1")), "wrong_issuer")


async def test_unusable_and_non_signing_keys_are_skipped(
    verifier: SupabaseVerifier, keys: Keys, jwks: JWKSServer
) -> None:
    encryption = ec_signer("enc-1")
    jwks.keys = [
        {"kty": "EC", "crv": "P-999", "x": "AA", "y": "AA", "kid": "broken"},
        {"kty": "oct", "k": b64url(SECRET), "kid": "oct-1"},
        "not a key",  # type: ignore[list-item]
        encryption.jwk(use="enc"),
        keys.ec.jwk(),
    ]
    assert await verifier.verify(keys.ec.token())
    await assert_rejected(verifier, encryption.token(), "unknown_kid")


# --- JWKS rotation, refetch window, concurrency, TTL ------------------------------------------------


async def test_rotated_in_key_is_picked_up_with_one_refetch(
    verifier: SupabaseVerifier, keys: Keys, jwks: JWKSServer
) -> None:
    await verifier.verify(keys.ec.token())
    rotated = ec_signer("ec-2")
    jwks.keys = [keys.ec.jwk(), rotated.jwk()]
    payload = claims()
    assert await verifier.verify(rotated.token(payload)) == User(id=payload["sub"])
    assert jwks.fetches == 2
    await verifier.verify(rotated.token())
    assert jwks.fetches == 2


async def test_unknown_kids_refetch_at_most_once_per_window(
    verifier: SupabaseVerifier, keys: Keys, jwks: JWKSServer, clock: FakeClock
) -> None:
    await verifier.verify(keys.ec.token())
    assert jwks.fetches == 1

    for _ in range(20):
        await assert_rejected(verifier, keys.ec.token(kid=uuid.uuid4().hex), "unknown_kid")
    assert jwks.fetches == 2

    clock.advance(29.9)
    await assert_rejected(verifier, keys.ec.token(kid=uuid.uuid4().hex), "unknown_kid")
    assert jwks.fetches == 2

    clock.advance(0.1)
    for _ in range(5):
        await assert_rejected(verifier, keys.ec.token(kid=uuid.uuid4().hex), "unknown_kid")
    assert jwks.fetches == 3


async def test_concurrent_tokens_with_a_new_kid_share_one_fetch(
    verifier: SupabaseVerifier, keys: Keys, jwks: JWKSServer
) -> None:
    await verifier.verify(keys.ec.token())
    rotated = ec_signer("ec-2")
    jwks.keys = [rotated.jwk()]
    tokens = [rotated.token() for _ in range(50)]

    principals = await asyncio.gather(*(verifier.verify(token) for token in tokens))

    assert len(principals) == 50
    assert jwks.fetches == 2


async def test_concurrent_random_kids_share_one_fetch(verifier: SupabaseVerifier, keys: Keys, jwks: JWKSServer) -> None:
    await verifier.verify(keys.ec.token())
    tokens = [keys.ec.token(kid=uuid.uuid4().hex) for _ in range(50)]

    results = await asyncio.gather(*(verifier.verify(token) for token in tokens), return_exceptions=True)

    assert all(isinstance(result, Unauthorized) for result in results)
    assert jwks.fetches == 2


async def test_concurrent_first_requests_share_one_fetch(
    verifier: SupabaseVerifier, keys: Keys, jwks: JWKSServer
) -> None:
    tokens = [keys.ec.token() for _ in range(50)] + [keys.rsa.token() for _ in range(10)]
    await asyncio.gather(*(verifier.verify(token) for token in tokens))
    assert jwks.fetches == 1


async def test_fetch_outlives_the_cancelled_request_that_started_it(
    verifier: SupabaseVerifier, keys: Keys, jwks: JWKSServer
) -> None:
    starter = asyncio.create_task(verifier.verify(keys.ec.token()))
    await asyncio.sleep(0)  # the starter now awaits the JWKS fetch
    payload = claims()
    waiter = asyncio.create_task(verifier.verify(keys.rsa.token(payload)))
    await asyncio.sleep(0)  # the waiter now awaits the same fetch
    starter.cancel()

    assert await waiter == User(id=payload["sub"])
    with pytest.raises(asyncio.CancelledError):
        await starter
    assert jwks.fetches == 1


async def test_keys_are_refetched_after_the_ttl_and_stale_keys_survive_a_failed_refresh(
    make_verifier: Factory, keys: Keys, jwks: JWKSServer, clock: FakeClock
) -> None:
    verifier = make_verifier(jwks_ttl_s=600.0, jwks_refetch_min_s=30.0)
    await verifier.verify(keys.ec.token())
    clock.advance(599)
    await verifier.verify(keys.ec.token())
    assert jwks.fetches == 1

    clock.advance(1)
    await verifier.verify(keys.ec.token())
    assert jwks.fetches == 2

    jwks.mode = "error"
    clock.advance(600)
    with capture_logs() as logs:
        assert await verifier.verify(keys.ec.token())
    assert jwks.fetches == 3
    assert {"event": "jwks_refresh_failed", "reason": "bad_status", "status": 500, "log_level": "warning"} in logs

    # A down server is retried once per refetch window, not on every request.
    await verifier.verify(keys.ec.token())
    assert jwks.fetches == 3
    clock.advance(30)
    jwks.mode = "ok"
    await verifier.verify(keys.ec.token())
    assert jwks.fetches == 4


async def test_key_removed_from_the_jwks_stops_verifying_after_the_ttl(
    verifier: SupabaseVerifier, keys: Keys, jwks: JWKSServer, clock: FakeClock
) -> None:
    await verifier.verify(keys.rsa.token())
    jwks.keys = [keys.ec.jwk()]
    clock.advance(600)
    await assert_rejected(verifier, keys.rsa.token(), "unknown_kid")
    assert await verifier.verify(keys.ec.token())


async def test_unknown_kid_with_cached_keys_and_jwks_down_is_401(
    verifier: SupabaseVerifier, keys: Keys, jwks: JWKSServer
) -> None:
    await verifier.verify(keys.ec.token())
    jwks.mode = "error"
    logs = await assert_rejected(verifier, keys.ec.token(kid="ec-9"), "unknown_kid")
    assert jwks.fetches == 2
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == ["jwks_refresh_failed"]


# --- JWKS unavailable ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["error", "garbage", "not_an_object", "empty"])
async def test_jwks_failing_with_nothing_cached_is_503(
    verifier: SupabaseVerifier, keys: Keys, jwks: JWKSServer, mode: str
) -> None:
    jwks.mode = mode
    with capture_logs() as logs, pytest.raises(UpstreamUnavailable) as caught:
        await verifier.verify(keys.ec.token())
    assert caught.value.status_code == 503
    assert caught.value.detail == UNAVAILABLE
    assert [entry["event"] for entry in logs] == ["jwks_fetch_failed"]

    # Nothing is remembered about the failure: the next request after recovery succeeds.
    jwks.mode = "ok"
    assert await verifier.verify(keys.ec.token())


async def test_jwks_server_down_with_nothing_cached_is_503(
    make_verifier: Factory, keys: Keys, jwks: JWKSServer
) -> None:
    verifier = make_verifier(jwks_url=f"http://127.0.0.1:{free_port()}{JWKS_PATH}")
    tokens = [keys.ec.token() for _ in range(10)]
    results = await asyncio.gather(*(verifier.verify(token) for token in tokens), return_exceptions=True)
    assert all(isinstance(result, UpstreamUnavailable) for result in results)
    assert all(result.detail == UNAVAILABLE for result in results if isinstance(result, UpstreamUnavailable))


# --- configuration and readiness ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"algorithms": ("none",)}, "none", id="none"),
        pytest.param({"algorithms": ("ES256", "none")}, "none", id="none-among-others"),
        pytest.param({"algorithms": ("NONE",)}, "none", id="none-uppercase"),
        pytest.param({"algorithms": ("HS512",)}, "unsupported", id="unsupported"),
        pytest.param({"algorithms": ()}, "at least one", id="empty"),
        pytest.param({"algorithms": ("HS256",), "hs256_secret": None}, "secret", id="hs256-without-secret"),
        pytest.param({"algorithms": ("HS256",), "hs256_secret": b""}, "secret", id="hs256-empty-secret"),
        pytest.param({"algorithms": ("ES256",), "jwks_url": None}, "JWKS URL", id="es256-without-jwks"),
        pytest.param({"algorithms": ("EdDSA",), "jwks_url": None}, "JWKS URL", id="eddsa-without-jwks"),
        pytest.param({"http": None}, "HTTP client", id="jwks-without-client"),
    ],
)
def test_constructor_refuses_unsafe_configuration(
    make_verifier: Factory, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_verifier(**overrides)


async def test_check_is_ok_when_the_jwks_loads(verifier: SupabaseVerifier, keys: Keys, jwks: JWKSServer) -> None:
    await verifier.check()
    assert jwks.fetches == 1
    await verifier.verify(keys.ec.token())
    assert jwks.fetches == 1


async def test_check_is_not_ready_when_the_jwks_is_down_and_nothing_is_cached(make_verifier: Factory) -> None:
    verifier = make_verifier(jwks_url=f"http://127.0.0.1:{free_port()}{JWKS_PATH}")
    with pytest.raises(NotReady) as caught:
        await verifier.check()
    assert caught.value.status_code == 503


async def test_check_stays_ok_on_stale_keys(verifier: SupabaseVerifier, jwks: JWKSServer, clock: FakeClock) -> None:
    await verifier.check()
    jwks.mode = "error"
    clock.advance(600)
    await verifier.check()
    assert jwks.fetches == 2


async def test_check_without_jwks_needs_no_network() -> None:
    await hs256_only().check()
