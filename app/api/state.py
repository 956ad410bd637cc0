"""Typed access to what the lifespan put in the request state (see `app.bootstrap.lifespan`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from fastapi import Request

if TYPE_CHECKING:
    from anyio import CapacityLimiter

    from app.config import Settings
    from app.domain.ports import Backends
    from app.services.analysis import AnalysisService


def settings_of(request: Request) -> Settings:
    return cast("Settings", request.state.settings)


def backends_of(request: Request) -> Backends:
    return cast("Backends", request.state.backends)


def analyzer_of(request: Request) -> AnalysisService:
    return cast("AnalysisService", request.state.analyzer)


def request_id_of(request: Request) -> str:
    """The id `app.middleware` gave this request (empty outside the middleware)."""
    return str(request.scope.get("state", {}).get("request_id", ""))


def image_limiter_of(request: Request) -> CapacityLimiter:
    """Bounds how many uploads are decoded at once, so a burst of big photos cannot exhaust memory."""
    return cast("CapacityLimiter", request.state.image_limiter)
