"""Who is calling. With AUTH_MODE=disabled every request acts as one local user.

Supabase token verification (AUTH_MODE=supabase) plugs in here; until it lands, startup
refuses that mode rather than letting requests through unchecked (see `app.bootstrap`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from app.api.state import settings_of


@dataclass(frozen=True, slots=True)
class User:
    id: str


async def current_user(request: Request) -> User:
    """The caller; runs before the upload is read, so a refused caller costs no upload."""
    return User(id=settings_of(request).local_user_id)
