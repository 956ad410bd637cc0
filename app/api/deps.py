"""Dependencies as named `Annotated` aliases; handlers declare what they need by these names.

Order matters in a handler's signature: FastAPI resolves dependencies in order, so
`CurrentUser` comes before `ImageUploadDep` and a refused caller's upload is never read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.auth import User, current_user
from app.api.state import analyzer_of, backends_of
from app.api.uploads import ImageUploadDep
from app.domain.ports import Backends
from app.services.analysis import AnalysisService


async def _analyzer(request: Request) -> AnalysisService:
    return analyzer_of(request)


async def _backends(request: Request) -> Backends:
    return backends_of(request)


Analyzer = Annotated[AnalysisService, Depends(_analyzer)]
BackendsDep = Annotated[Backends, Depends(_backends)]
CurrentUser = Annotated[User, Depends(current_user)]

__all__ = ["Analyzer", "BackendsDep", "CurrentUser", "ImageUploadDep"]
