"""Typed access to what the lifespan put in the request state (see `app.bootstrap.lifespan`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from fastapi import Request

if TYPE_CHECKING:
    from anyio import CapacityLimiter

    from app.config import Settings
    from app.domain.ports import Backends
    from app.services.analysis import AnalysisService
    from app.services.edge_logs import EdgeLogShipper
    from app.services.history import HistoryService
    from app.services.ratelimit import RateLimiter


def settings_of(request: Request) -> Settings:
    return cast("Settings", request.state.settings)


def backends_of(request: Request) -> Backends:
    return cast("Backends", request.state.backends)


def analyzer_of(request: Request) -> AnalysisService:
    return cast("AnalysisService", request.state.analyzer)


def history_of(request: Request) -> HistoryService:
    return cast("HistoryService", request.state.history)


def rate_limiter_of(request: Request) -> RateLimiter | None:
    """The per-user limiter of POST /analyze, or None when RATE_LIMIT_PER_MINUTE=0."""
    return cast("RateLimiter | None", request.state.rate_limiter)


# The caller's id, for the monitor; in the request's own scope, since lifespan state may be shared.
USER_ID_SCOPE_KEY = "product_analyzer.user_id"


def request_id_of(request: Request) -> str:
    """The id `app.middleware` gave this request (empty outside the middleware)."""
    return str(request.scope.get("state", {}).get("request_id", ""))


def image_limiter_of(request: Request) -> CapacityLimiter:
    """Bounds how many uploads are decoded at once, so a burst of big photos cannot exhaust memory."""
    return cast("CapacityLimiter", request.state.image_limiter)


def edge_shipper_of(request: Request) -> EdgeLogShipper | None:
    """The Edge Function log shipper, or None when EDGE_LOG_TOKEN is not set."""
    return cast("EdgeLogShipper | None", request.state.edge_shipper)
