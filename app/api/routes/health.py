"""Liveness and readiness."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.deps import BackendsDep
from app.api.state import request_id_of
from app.errors import AppError

router = APIRouter(tags=["health"])

READY_CHECK_TIMEOUT_S = 3.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. Checks no dependency, so a slow upstream never restarts tasks."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency is not usable"}})
async def readyz(request: Request, backends: BackendsDep) -> JSONResponse:
    """Readiness: 200 only when storage, the vision model, the database and (with auth) the signing keys are usable."""
    checks: dict[str, str] = {}

    async def run(name: str, check: Callable[[], Awaitable[None]]) -> None:
        try:
            with anyio.fail_after(READY_CHECK_TIMEOUT_S):
                await check()
            checks[name] = "ok"
        except TimeoutError:
            checks[name] = "timeout"
        except AppError as exc:
            checks[name] = exc.code

    async with anyio.create_task_group() as group:
        group.start_soon(run, "storage", backends.store.check)
        group.start_soon(run, "vision", backends.vision.check)
        if backends.repository is not None:
            group.start_soon(run, "database", backends.repository.check)
        if backends.verifier is not None:
            group.start_soon(run, "auth", backends.verifier.check)
    ready = all(value == "ok" for value in checks.values())
    body: dict[str, object] = {"status": "ready" if ready else "not_ready", "checks": dict(sorted(checks.items()))}
    if not ready:
        body |= {
            "error": "not_ready",
            "detail": "A dependency is not usable.",
            "request_id": request_id_of(request),
        }
    return JSONResponse(body, status_code=200 if ready else 503)
