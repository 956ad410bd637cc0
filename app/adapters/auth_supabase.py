"""Verify Supabase access tokens locally with PyJWT, against the project's JWKS or its legacy HS256 secret.

Not supabase-py's `auth.get_claims`: it checks only the signature and expiry (not `aud`, `iss` or
`role`), and for HS256 tokens it calls the Auth server on every request. Here every request is
verified in-process; the network is touched only to load the signing keys (JWKS), which are
cached for `jwks_ttl_s`.

The allowed algorithms come from configuration, never from the token. HS256 tokens are checked
with the shared secret only; asymmetric tokens only with the JWKS key named by their `kid`, and
only when that key's own algorithm is the token's, so a public key can never act as an HMAC
secret. A token with an unknown `kid` triggers at most one JWKS refetch per
`jwks_refetch_min_s`, so key rotation is picked up while a flood of made-up kids is not
amplified into a flood of fetches. Concurrent callers share the one fetch in flight.

Every token problem is the same `Unauthorized` for the client; the reason is logged for
operators as `token_rejected`, without the token. An unreachable JWKS with nothing cached is
`UpstreamUnavailable` (503): a Supabase outage is not the caller's fault.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from typing import Any

import httpx
import jwt
import structlog

from app.config import JWT_ALGORITHMS
from app.domain.models import User
from app.errors import NotReady, Unauthorized, UpstreamUnavailable

log = structlog.stdlib.get_logger(__name__)

SUPPORTED_ALGORITHMS = frozenset(JWT_ALGORITHMS)
ASYMMETRIC_ALGORITHMS = SUPPORTED_ALGORITHMS - {"HS256"}

# Supabase access tokens are about 1 KB; anything far larger is refused before it is parsed.
MAX_TOKEN_CHARS = 8192
JWKS_FETCH_TIMEOUT_S = 5.0

# Most specific first: InvalidSignatureError is a DecodeError, so it must be tried before it.
_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidAudienceError, "wrong_audience"),
    (jwt.InvalidIssuerError, "wrong_issuer"),
    (jwt.InvalidAlgorithmError, "algorithm_not_allowed"),
    (jwt.InvalidKeyError, "bad_key"),
    (jwt.DecodeError, "malformed"),
)


class _Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _FetchFailed(Exception):
    def __init__(self, reason: str, **fields: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fields = fields


class SupabaseVerifier:
    """Turn a Supabase access token into the `User` it speaks for, or refuse it."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient | None,
        jwks_url: str | None,
        issuer: str | None,
        hs256_secret: bytes | None,
        algorithms: Collection[str],
        audience: str = "authenticated",
        role: str = "authenticated",
        leeway_s: float = 10.0,
        jwks_ttl_s: float = 600.0,
        jwks_refetch_min_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        allowed = frozenset(algorithms)
        if not allowed:
            raise ValueError("at least one token algorithm must be allowed")
        if any(alg.lower() == "none" for alg in allowed):
            raise ValueError('the "none" algorithm is never allowed')
        if unsupported := allowed - SUPPORTED_ALGORITHMS:
            raise ValueError(f"unsupported token algorithms {sorted(unsupported)}; use {sorted(SUPPORTED_ALGORITHMS)}")
        if "HS256" in allowed and not hs256_secret:
            raise ValueError("HS256 is allowed but no HS256 secret is configured")
        if allowed & ASYMMETRIC_ALGORITHMS and not jwks_url:
            raise ValueError("asymmetric token algorithms are allowed but no JWKS URL is configured")
        if jwks_url and http is None:
            raise ValueError("a JWKS URL needs an HTTP client")
        self._http = http
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._hs256_secret = hs256_secret
        self._algorithms = allowed
        self._audience = audience
        self._role = role
        self._leeway_s = leeway_s
        self._jwks_ttl_s = jwks_ttl_s
        self._jwks_refetch_min_s = jwks_refetch_min_s
        self._clock = clock
        self._required = ["exp", "aud", "sub", "role"] + (["iss"] if issuer is not None else [])

        self._keys: dict[str, jwt.PyJWK] | None = None
        self._refresh_due_at = float("-inf")  # clock time after which the cached keys are refetched
        self._kid_refetch_at = float("-inf")  # clock time from which an unknown kid may refetch again
        self._inflight: asyncio.Task[None] | None = None  # the one JWKS fetch running; everyone else awaits it

    async def verify(self, token: str) -> User:
        """Return the user of a valid token; raise `Unauthorized` for any problem with it."""
        try:
            return await self._verify(token)
        except _Rejected as exc:
            log.info("token_rejected", reason=exc.reason)
            # The reason is logged; nothing derived from the token travels with the exception.
            raise Unauthorized() from None

    async def check(self) -> None:
        """Return when tokens can be verified; raise `NotReady` when no JWKS key set can be loaded."""
        if self._jwks_url is None:
            return
        try:
            await self._current_keys()
        except UpstreamUnavailable as exc:
            raise NotReady("The sign-in service's signing keys cannot be loaded.") from exc

    async def _verify(self, token: str) -> User:
        if len(token) > MAX_TOKEN_CHARS:
            raise _Rejected("too_long")
        if not token.isascii():
            raise _Rejected("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _Rejected("malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise _Rejected("algorithm_not_allowed")

        key: jwt.PyJWK | bytes
        if alg == "HS256":
            assert self._hs256_secret is not None  # the constructor allows HS256 only with a secret
            key = self._hs256_secret
        else:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise _Rejected("unknown_kid")
            jwk = await self._signing_key(kid)
            if jwk is None:
                raise _Rejected("unknown_kid")
            if jwk.algorithm_name != alg:
                raise _Rejected("algorithm_mismatch")
            key = jwk

        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                options={"require": self._required},
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
            )
        except jwt.PyJWTError as exc:
            raise _Rejected(_reason(exc)) from None

        sub = claims["sub"]
        if not isinstance(sub, str) or not sub.strip():
            raise _Rejected("missing_claim")
        if claims["role"] != self._role:
            raise _Rejected("wrong_role")
        return User(id=sub)

    async def _signing_key(self, kid: str) -> jwt.PyJWK | None:
        """Return the JWKS key named `kid`, refetching once per window when it is unknown."""
        keys, fresh = await self._current_keys()
        key = keys.get(kid)
        if key is not None or fresh:
            return key
        now = self._clock()
        start = now >= self._kid_refetch_at
        if start and self._inflight is None:
            self._kid_refetch_at = now + self._jwks_refetch_min_s
        # Wait for a fetch already in flight even outside the window: it may bring this very kid.
        await self._load_keys(start=start)
        return (self._keys or {}).get(kid)

    async def _current_keys(self) -> tuple[dict[str, jwt.PyJWK], bool]:
        """Return the cached keys, loading them when none are cached or they are due; and whether it loaded."""
        fresh = False
        if self._keys is None or self._clock() >= self._refresh_due_at:
            await self._load_keys(start=True)
            fresh = True
        if self._keys is None:
            raise UpstreamUnavailable("The sign-in service is unavailable; retry later.")
        return self._keys, fresh

    async def _load_keys(self, *, start: bool) -> None:
        """Wait for the JWKS fetch in flight, if any; else fetch now when `start`."""
        fetch = self._inflight
        if fetch is None:
            if not start:
                return
            # Its own task, so that it runs to its end (bounded by its timeout) and every waiter gets
            # its result even when the request that started it is cancelled.
            fetch = self._inflight = asyncio.create_task(self._fetch(), name="jwks-fetch")
        await asyncio.shield(fetch)

    async def _fetch(self) -> None:
        """Load the JWKS into the cache; on failure keep what is cached. Runs as the one shared fetch task."""
        try:
            keys = await self._download()
        except _FetchFailed as exc:
            if self._keys is None:
                log.warning("jwks_fetch_failed", reason=exc.reason, **exc.fields)
            else:
                log.warning("jwks_refresh_failed", reason=exc.reason, **exc.fields)
                # Keep the stale keys, and do not hold every request on a down server: retry later.
                self._refresh_due_at = self._clock() + self._jwks_refetch_min_s
            return
        finally:
            self._inflight = None
        self._keys = keys
        self._refresh_due_at = self._clock() + self._jwks_ttl_s
        log.info("jwks_loaded", keys=len(keys))

    async def _download(self) -> dict[str, jwt.PyJWK]:
        # Only reached through an asymmetric algorithm or check(), both of which need a JWKS URL.
        assert self._http is not None
        assert self._jwks_url is not None
        try:
            response = await self._http.get(self._jwks_url, timeout=JWKS_FETCH_TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise _FetchFailed("unreachable", error=type(exc).__name__) from exc
        if response.status_code != 200:
            raise _FetchFailed("bad_status", status=response.status_code)
        try:
            document = response.json()
        except ValueError as exc:
            raise _FetchFailed("invalid_json") from exc
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise _FetchFailed("invalid_jwks")
        # Only signing keys, named by a kid; PyJWKSet skips the ones PyJWT cannot use.
        candidates = [
            jwk
            for jwk in document["keys"]
            if isinstance(jwk, dict) and jwk.get("use", "sig") == "sig" and isinstance(jwk.get("kid"), str)
        ]
        try:
            key_set = jwt.PyJWKSet.from_dict({"keys": candidates})
        except jwt.PyJWTError as exc:
            raise _FetchFailed("no_usable_keys") from exc
        # A symmetric ("oct") key or one for an algorithm we do not allow never verifies anything.
        keys = {
            key.key_id: key
            for key in key_set
            if key.key_id is not None and key.algorithm_name in self._algorithms & ASYMMETRIC_ALGORITHMS
        }
        if not keys:
            raise _FetchFailed("no_usable_keys")
        return keys


def _reason(exc: jwt.PyJWTError) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "invalid_claim"
