"""POST /analyze: a product photo in, a structured product report out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.deps import Analyzer, CurrentUser, ImageUploadDep
from app.api.uploads import ANALYZE_OPENAPI
from app.domain.models import AnalysisResponse, ErrorBody

router = APIRouter(tags=["analysis"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "missing_image, malformed_request",
        401: "unauthorized",
        413: "image_too_large",
        415: "unsupported_image",
        422: "invalid_field",
        429: "rate_limited",
        502: "vision_model_error, report_writer_error",
        503: "upstream_unavailable",
        504: "upstream_timeout",
    }.items()
}


@router.post("/analyze", response_model=AnalysisResponse, responses=_ERRORS, openapi_extra=ANALYZE_OPENAPI)
async def analyze(user: CurrentUser, upload: ImageUploadDep, analyzer: Analyzer) -> AnalysisResponse:
    """Store the photo, describe it with BLIP-2, and write the product report."""
    return await analyzer.analyze(upload, user_id=user.id)
