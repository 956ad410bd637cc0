"""Dependencies as named `Annotated` aliases; handlers declare what they need by these names.

Order matters in a handler's signature: FastAPI resolves dependencies in order, so
`CurrentUser` (or `RateLimitedUser`) comes before `ImageUploadDep` and a refused caller's
upload is never read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.auth import current_user, idempotency_key, rate_limited_user
from app.api.state import analyzer_of, backends_of, history_of
from app.api.uploads import ImageUploadDep
from app.domain.models import User
from app.domain.ports import Backends
from app.services.analysis import AnalysisService
from app.services.history import HistoryService


async def _analyzer(request: Request) -> AnalysisService:
    return analyzer_of(request)


async def _history(request: Request) -> HistoryService:
    return history_of(request)


async def _backends(request: Request) -> Backends:
    return backends_of(request)


Analyzer = Annotated[AnalysisService, Depends(_analyzer)]
History = Annotated[HistoryService, Depends(_history)]
BackendsDep = Annotated[Backends, Depends(_backends)]
CurrentUser = Annotated[User, Depends(current_user)]
RateLimitedUser = Annotated[User, Depends(rate_limited_user)]
IdempotencyKey = Annotated[str | None, Depends(idempotency_key)]

__all__ = [
    "Analyzer",
    "BackendsDep",
    "CurrentUser",
    "History",
    "IdempotencyKey",
    "ImageUploadDep",
    "RateLimitedUser",
]
