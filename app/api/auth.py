"""Who is calling, and whether they may analyze now.

AUTH_MODE=supabase: `Authorization: Bearer <Supabase access token>`, checked by the
`TokenVerifier` the lifespan built (signature, expiry, audience, issuer, subject, role).
AUTH_MODE=disabled: every request acts as the one local user (startup logs a warning, and
refuses the mode in production).
Both run before the upload is read, so a refused caller costs no upload.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Final

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.state import USER_ID_SCOPE_KEY, backends_of, rate_limiter_of, settings_of
from app.domain.models import User
from app.errors import InvalidField, RateLimited, Unauthorized

IDEMPOTENCY_KEY_MAX_CHARS: Final = 255
_IDEMPOTENCY_KEY: Final = re.compile(rf"[!-~]{{1,{IDEMPOTENCY_KEY_MAX_CHARS}}}")

# auto_error=False: a missing header is our 401 with the JSON body, not FastAPI's 403.
# Declaring it documents the scheme in OpenAPI, so /docs has an "Authorize" button.
_bearer = HTTPBearer(auto_error=False, description="A Supabase access token (AUTH_MODE=supabase).")
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def current_user(request: Request, credentials: BearerCredentials) -> User:
    """The caller; 401 `unauthorized` for a missing, malformed or invalid token.

    The user id is left in the request's scope for the monitor (`app.services.monitoring`),
    which hashes it before anything leaves the process.
    """
    verifier = backends_of(request).verifier
    if verifier is None:
        user = User(id=settings_of(request).local_user_id)
    elif credentials is None or not credentials.credentials or " " in credentials.credentials.strip():
        raise Unauthorized()
    else:
        user = await verifier.verify(credentials.credentials.strip())
    request.scope[USER_ID_SCOPE_KEY] = user.id
    return user


async def rate_limited_user(request: Request, user: Annotated[User, Depends(current_user)]) -> User:
    """The caller, within RATE_LIMIT_PER_MINUTE; 429 `rate_limited` with `Retry-After` beyond it."""
    limiter = rate_limiter_of(request)
    if limiter is not None and (wait := limiter.acquire(user.id)) > 0:
        raise RateLimited(math.ceil(wait))
    return user


async def idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Retrying with the same key within 24 h returns the first response instead of paying again.",
        ),
    ] = None,
) -> str | None:
    """The `Idempotency-Key` header: 1 to 255 printable ASCII characters without spaces, or absent."""
    # Checked here, not by Header(pattern=...): FastAPI collects parameter errors and still runs the
    # upload dependency, whereas an exception raised here refuses the request before the upload is read.
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidField(
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} printable ASCII characters without spaces."
        )
    return key
