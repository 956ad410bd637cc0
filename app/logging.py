"""structlog setup: JSON lines (or a console renderer for humans), secrets redacted.

Every record carries the request id bound by `app.middleware`. The canonical per-request
line is emitted by the middleware with whatever the request's code added via `annotate`.
Standard-library loggers (uvicorn, botocore) go through the same renderer.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

# Keys whose values never reach a log line, wherever they appear in an event.
_SECRET_MARKERS = ("authorization", "token", "secret", "password", "api_key", "apikey", "cookie", "jwt")
_REDACTED = "[redacted]"

_canonical: ContextVar[dict[str, Any] | None] = ContextVar("canonical_log_fields", default=None)


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _REDACTED if _is_secret(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def _is_secret(key: object) -> bool:
    lowered = str(key).lower().replace("-", "_")
    return any(marker in lowered for marker in _SECRET_MARKERS)


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of any secret-looking key, at any depth, before rendering."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _REDACTED if _is_secret(key) else _redact(value)
    return event_dict


def configure_logging(*, fmt: str = "json", level: str = "INFO") -> None:
    """Route structlog and the standard library through one renderer on stdout."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # Our canonical line replaces uvicorn's access log; botocore is chatty at INFO; Pillow's DEBUG
    # lines print every EXIF tag it reads (camera, GPS), which must never reach a log.
    for name in ("uvicorn.access", "botocore", "httpx", "PIL"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True


def start_canonical() -> dict[str, Any]:
    """Open the field set of this request's canonical log line (the middleware calls this)."""
    fields: dict[str, Any] = {}
    _canonical.set(fields)
    return fields


def annotate(**fields: Any) -> None:
    """Add fields to the current request's canonical log line; a no-op outside a request."""
    current = _canonical.get()
    if current is not None:
        current.update(fields)
