"""Pure ASGI middleware: request id, one canonical log line per request, the last-resort 500.

It sits outside FastAPI's exception handling, so it sees the final status of every request,
including the ones our handlers in `app.errors_http` rendered. An exception that escapes
everything is logged with its traceback here and answered with the generic 500 body.

The canonical line carries the request's CloudWatch metrics as an embedded metric format
block (`app.metrics`), and once it is written the request goes to the lifespan's
`RequestMonitor` (PostHog events, the latency SLO) when there is one.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.state import USER_ID_SCOPE_KEY
from app.errors import AppError
from app.errors_http import error_response
from app.logging import start_canonical
from app.metrics import emf_fields
from app.services.monitoring import RequestMonitor, RequestRecord

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
log = structlog.get_logger("app.request")


def request_id_from(scope: Scope) -> str:
    """Take the caller's X-Request-ID when it is a sane token, else make one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = str(value.decode("latin-1"))
            if _REQUEST_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Bind the request id, echo it as a header, and log one canonical line per request."""

    def __init__(self, app: ASGIApp, *, metrics_namespace: str = "") -> None:
        self.app = app
        self.metrics_namespace = metrics_namespace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        fields = start_canonical()
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:  # the last resort: nothing above us may answer with a stack trace
            log.exception("unhandled_error", path=scope.get("path"))
            fields.setdefault("error", AppError.code)
            if not response_started:
                await error_response(AppError(), request_id)(scope, receive, send_with_id)
            else:  # the body was half sent; nothing to do but let the server drop the connection
                raise exc from None
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            state = scope.get("state", {})
            record = RequestRecord(
                method=scope.get("method"),
                route=getattr(scope.get("route"), "path", None),
                status=status,
                duration_ms=duration_ms,
                request_id=request_id,
                user_id=scope.get(USER_ID_SCOPE_KEY),
                fields=fields,
            )
            self._log(scope, record)
            structlog.contextvars.unbind_contextvars("request_id")
            monitor: RequestMonitor | None = state.get("monitor")
            if monitor is not None:
                monitor.finished(record)

    def _log(self, scope: Scope, record: RequestRecord) -> None:
        log_fields: dict[str, Any] = {
            "method": record.method,
            "path": scope.get("path"),
            "route": record.route,
            "status": record.status,
            "duration_ms": round(record.duration_ms, 2),
            **record.fields,
        }
        if self.metrics_namespace:
            log_fields |= emf_fields(
                namespace=self.metrics_namespace,
                route=record.route,
                status=record.status,
                duration_ms=record.duration_ms,
                timings=record.model_timings(),
                error=record.fields.get("error"),
                timestamp_ms=time.time_ns() // 1_000_000,
            )
        level = "error" if record.status >= 500 else "warning" if record.status >= 400 else "info"
        getattr(log, level)("request", **log_fields)
