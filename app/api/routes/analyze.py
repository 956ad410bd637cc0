"""POST /analyze: a product photo in, a structured product report out."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import Analyzer, IdempotencyKey, ImageUploadDep, RateLimitedUser
from app.api.uploads import ANALYZE_OPENAPI
from app.domain.models import AnalysisResponse
from app.errors_http import error_responses

router = APIRouter(tags=["analysis"])

_ERRORS = error_responses(
    {
        400: "missing_image, malformed_request",
        401: "unauthorized",
        409: "idempotency_key_in_use",
        413: "image_too_large",
        415: "unsupported_image",
        422: "invalid_field, idempotency_key_reused",
        429: "rate_limited",
        502: "vision_model_error, report_writer_error",
        503: "upstream_unavailable",
        504: "upstream_timeout",
    }
)


@router.post("/analyze", response_model=AnalysisResponse, responses=_ERRORS, openapi_extra=ANALYZE_OPENAPI)
async def analyze(
    user: RateLimitedUser, key: IdempotencyKey, upload: ImageUploadDep, analyzer: Analyzer, response: Response
) -> AnalysisResponse:
    """Store the photo, describe it with BLIP-2, and write the product report.

    The same photo and options again within CACHE_TTL_SECONDS answer from the stored result
    (`"cached": true`); a retry with the same `Idempotency-Key` answers with the first response
    (header `Idempotent-Replayed: true`).
    """
    outcome = await analyzer.analyze(upload, user_id=user.id, idempotency_key=key)
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return outcome.response
