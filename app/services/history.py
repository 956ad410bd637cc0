"""The caller's analyses: one by id, a page of history, and deletion with the stored image.

Every lookup is scoped to the caller, so another user's id is answered exactly like an id that
does not exist (404): a client cannot learn which ids are taken.
History pages by an opaque cursor, the `(created_at, id)` of the last item seen, rather than by
offset: a page stays correct while new analyses arrive, and each costs one index range scan.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime

from app.domain.models import Analysis, AnalysisPage
from app.domain.ports import AnalysisRepository, ImageStore
from app.errors import AnalysisRunning, InvalidField, NotFound
from app.services.analysis import ABANDONED_AFTER

MAX_PAGE_SIZE = 100


def encode_cursor(created_at: datetime, analysis_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{analysis_id.hex}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Raise `InvalidField` for anything `encode_cursor` did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, hex_id = raw.partition("|")
        created_at = datetime.fromisoformat(created)
        if created_at.tzinfo is None:
            raise ValueError("naive cursor time")
        return created_at, uuid.UUID(hex=hex_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidField("The cursor is not one this API returned.") from exc


def parse_id(analysis_id: str) -> uuid.UUID:
    """An analysis id as the API shows it (32 hex digits, or a dashed UUID); NotFound otherwise."""
    try:
        return uuid.UUID(analysis_id)
    except ValueError as exc:
        raise NotFound("No such analysis.") from exc


class HistoryService:
    def __init__(self, *, repository: AnalysisRepository, store: ImageStore) -> None:
        self.repository = repository
        self.store = store

    async def get(self, user_id: str, analysis_id: str) -> Analysis:
        found = await self.repository.get(user_id, parse_id(analysis_id))
        if found is None:
            raise NotFound("No such analysis.")
        return found.to_analysis()

    async def page(self, user_id: str, *, limit: int, cursor: str | None) -> AnalysisPage:
        after = decode_cursor(cursor) if cursor else None
        # One row more than asked says whether there is a next page without a second query.
        rows = await self.repository.history(user_id, limit=limit + 1, after=after)
        items = rows[:limit]
        next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
        return AnalysisPage(items=[row.to_analysis() for row in items], next_cursor=next_cursor)

    async def delete(self, user_id: str, analysis_id: str) -> None:
        """Delete the analysis and, unless another of the user's analyses shares it, its stored image."""
        parsed = parse_id(analysis_id)
        found = await self.repository.get(user_id, parsed)
        if found is None:
            raise NotFound("No such analysis.")
        if found.status == "running" and found.created_at > datetime.now(UTC) - ABANDONED_AFTER:
            raise AnalysisRunning()  # its request would write to a row that is gone
        if await self.repository.delete(user_id, parsed, remove_image=self.store.delete) is None:
            raise NotFound("No such analysis.")  # deleted by a concurrent request
