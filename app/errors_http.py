"""Render every error as the JSON body of DESIGN.md: `{"error", "detail", "request_id"}`.

One place decides what a client sees: our `AppError`s as they are; FastAPI's own validation
errors as 422 `invalid_field`; Starlette's HTTP errors (404 for unknown routes, 405) with a
snake_case code; nothing else ever reaches a client except the generic 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.state import request_id_of
from app.domain.models import ErrorBody
from app.errors import AppError, InvalidField
from app.logging import annotate

log = structlog.get_logger("app.errors")

_HTTP_CODES = {
    400: "malformed_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
}


def error_responses(codes: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """A route's OpenAPI `responses=`: each status answers the error body, with the codes it may carry."""
    return {status: {"model": ErrorBody, "description": text} for status, text in codes.items()}


def error_response(error: AppError, request_id: str) -> JSONResponse:
    """The JSON response for `error`, with its extra headers."""
    return _render(error.status_code, error.code, error.detail, request_id, error.headers)


def _render(status: int, code: str, detail: str, request_id: str, headers: Mapping[str, str] | None) -> JSONResponse:
    body = ErrorBody(error=code, detail=detail, request_id=request_id)
    return JSONResponse(body.model_dump(), status_code=status, headers=dict(headers or {}))


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    annotate(error=exc.code)
    if exc.status_code >= 500:
        # The cause's type tells operators which SDK error it was; its message may echo upstream
        # bodies (or a key a proxy put there), so it goes neither to the client nor to the log.
        cause = exc.__cause__
        log.warning("upstream_failure", error=exc.code, cause=type(cause).__name__ if cause else None)
    return error_response(exc, request_id_of(request))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path"))
    return await _app_error(
        request, InvalidField(f"Invalid value for {where or 'a field'}: {first.get('msg', 'invalid')}.")
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    annotate(error=code)
    return _render(exc.status_code, code, str(exc.detail), request_id_of(request), exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; unexpected exceptions fall through to the middleware's 500."""
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
