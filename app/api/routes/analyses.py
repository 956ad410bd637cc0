"""The caller's analyses: `GET /analyses`, `GET /analyses/{id}`, `DELETE /analyses/{id}`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api.deps import CurrentUser, History
from app.domain.models import Analysis, AnalysisPage
from app.errors_http import error_responses
from app.services.history import MAX_PAGE_SIZE

router = APIRouter(prefix="/analyses", tags=["analyses"])


@router.get("", response_model=AnalysisPage, responses=error_responses({401: "unauthorized", 422: "invalid_field"}))
async def list_analyses(
    user: CurrentUser,
    history: History,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    cursor: Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page")] = None,
) -> AnalysisPage:
    """The caller's analyses, newest first."""
    return await history.page(user.id, limit=limit, cursor=cursor)


@router.get(
    "/{analysis_id}", response_model=Analysis, responses=error_responses({401: "unauthorized", 404: "not_found"})
)
async def get_analysis(analysis_id: str, user: CurrentUser, history: History) -> Analysis:
    """One of the caller's analyses; another user's id is a 404, like one that does not exist."""
    return await history.get(user.id, analysis_id)


@router.delete(
    "/{analysis_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses({401: "unauthorized", 404: "not_found", 409: "analysis_running"}),
)
async def delete_analysis(analysis_id: str, user: CurrentUser, history: History) -> Response:
    """Delete the analysis and its stored image (kept while another of the caller's analyses uses it)."""
    await history.delete(user.id, analysis_id)
    return Response(status_code=204)
