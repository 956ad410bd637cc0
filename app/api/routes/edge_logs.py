"""POST /v1/logs/edge: Supabase Edge Function logs in, queued for CloudWatch Logs, 202 at once.

The shipper (`app.services.edge_logs`) sends them in the background; this handler only checks
the caller, reads and validates the batch, and enqueues it. Without EDGE_LOG_TOKEN the
endpoint does not exist (404), so an unconfigured service accepts nobody's logs.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.log_batches import parse_batch, read_body
from app.api.state import edge_shipper_of, settings_of
from app.domain.models import EdgeLogsAccepted
from app.errors import NotFound, Unauthorized
from app.errors_http import error_responses

router = APIRouter(tags=["logs"])

_bearer = HTTPBearer(auto_error=False, scheme_name="EdgeLogToken", description="EDGE_LOG_TOKEN.")

_ERRORS = error_responses(
    {
        400: "malformed_request",
        401: "unauthorized",
        404: "not_found (EDGE_LOG_TOKEN is not set)",
        413: "payload_too_large",
        415: "unsupported_media_type",
        422: "invalid_field",
    }
)


def token_matches(given: str, expected: str) -> bool:
    """Compare in constant time; hashing first also hides the expected token's length."""
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())


@router.post("/v1/logs/edge", status_code=202, response_model=EdgeLogsAccepted, responses=_ERRORS)
async def ingest_edge_logs(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> EdgeLogsAccepted:
    """Queue a batch of Edge Function log events (a JSON array, or `{"events": [...]}`; gzip allowed)."""
    settings = settings_of(request)
    shipper = edge_shipper_of(request)
    if settings.edge_log_token is None or shipper is None:
        raise NotFound("There is no such endpoint here.")
    if credentials is None or not token_matches(credentials.credentials, settings.edge_log_token.get_secret_value()):
        raise Unauthorized()
    body = await read_body(request, limit=settings.edge_log_max_body_bytes)
    lines = await parse_batch(body, received_ms=time.time_ns() // 1_000_000)
    offered = shipper.offer(lines)
    return EdgeLogsAccepted(accepted=offered.accepted, dropped=offered.dropped)
