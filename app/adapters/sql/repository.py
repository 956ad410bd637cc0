"""`AnalysisRepository` on SQLAlchemy 2 (async), the same code on SQLite and PostgreSQL.

Every query names the user, so one user's id can never reach another's row. Database
failures become `UpstreamUnavailable` / `UpstreamTimeout` (503 / 504): the request can be
retried, and nothing is half-written because each method is one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, and_, delete, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.adapters.sql.engine import UNREACHABLE
from app.adapters.sql.tables import AnalysisRow, DailyUsageRow
from app.domain.models import AnalysisOptions, ImageInfo, ProductReport, StoredAnalysis, Timings, VisionResult
from app.domain.ports import DuplicateIdempotencyKey
from app.errors import AppError, NotReady, UpstreamTimeout, UpstreamUnavailable

_OUTAGE: tuple[type[Exception], ...] = (OperationalError, DBAPIError, *UNREACHABLE)


class SqlAnalysisRepository:
    """Analyses and daily usage in the `analyses` and `daily_usage` tables."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        try:
            async with self._sessions() as session:
                yield session
        except (PoolTimeout, TimeoutError) as exc:
            raise UpstreamTimeout("The database did not answer in time.") from exc
        except IntegrityError:
            raise  # a constraint, not an outage: the caller decides
        except _OUTAGE as exc:
            raise UpstreamUnavailable("The database is unavailable; retry later.") from exc

    async def add(self, analysis: StoredAnalysis) -> None:
        try:
            async with self._session() as session, session.begin():
                session.add(_to_row(analysis))
        except IntegrityError as exc:
            if analysis.idempotency_key is None:
                raise
            raise DuplicateIdempotencyKey(analysis.idempotency_key) from exc

    async def save(self, analysis: StoredAnalysis) -> None:
        values = {
            "status": analysis.status,
            "vision": _dump(analysis.vision),
            "report": _dump(analysis.report),
            "timings": _dump(analysis.timings),
            "error_code": analysis.error_code,
            "error_detail": analysis.error_detail,
            "idempotency_key": analysis.idempotency_key,
            "completed_at": analysis.completed_at,
        }
        statement = (
            update(AnalysisRow)
            .where(AnalysisRow.id == analysis.id, AnalysisRow.user_id == analysis.user_id)
            .values(**values)
        )
        async with self._session() as session, session.begin():
            await session.execute(statement)

    async def get(self, user_id: str, analysis_id: uuid.UUID) -> StoredAnalysis | None:
        return await self._one(_of_user(user_id).where(AnalysisRow.id == analysis_id))

    async def by_idempotency_key(self, user_id: str, key: str) -> StoredAnalysis | None:
        return await self._one(_of_user(user_id).where(AnalysisRow.idempotency_key == key))

    async def fresh_result(
        self, user_id: str, image_sha256: str, options_hash: str, *, since: datetime
    ) -> StoredAnalysis | None:
        statement = (
            _of_user(user_id)
            .where(
                AnalysisRow.image_sha256 == image_sha256,
                AnalysisRow.options_hash == options_hash,
                AnalysisRow.status == "succeeded",
                AnalysisRow.cached.is_(False),
                AnalysisRow.created_at >= since,
            )
            .order_by(AnalysisRow.created_at.desc())
            .limit(1)
        )
        return await self._one(statement)

    async def history(
        self, user_id: str, *, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[StoredAnalysis]:
        statement = _of_user(user_id)
        if after is not None:
            created_at, analysis_id = after
            statement = statement.where(
                or_(
                    AnalysisRow.created_at < created_at,
                    and_(AnalysisRow.created_at == created_at, AnalysisRow.id < analysis_id),
                )
            )
        statement = statement.order_by(AnalysisRow.created_at.desc(), AnalysisRow.id.desc()).limit(limit)
        async with self._session() as session:
            rows = (await session.scalars(statement)).all()
        return [_from_row(row) for row in rows]

    async def delete(
        self, user_id: str, analysis_id: uuid.UUID, *, remove_image: Callable[[str], Awaitable[None]]
    ) -> StoredAnalysis | None:
        async with self._session() as session, session.begin():
            # The DELETE comes first, so the transaction holds the write lock from its first statement.
            row = (
                await session.scalars(
                    delete(AnalysisRow)
                    .where(AnalysisRow.user_id == user_id, AnalysisRow.id == analysis_id)
                    .returning(AnalysisRow)
                )
            ).one_or_none()
            if row is None:
                return None
            sharing = await session.scalar(
                select(func.count())
                .select_from(AnalysisRow)
                .where(AnalysisRow.user_id == user_id, AnalysisRow.image_key == row.image_key)
            )
            if not sharing:
                await remove_image(row.image_key)  # raises: the transaction rolls back, the row stays
        return _from_row(row)

    async def take_quota(self, user_id: str, day: date, limit: int) -> bool:
        insert = postgresql.insert if self._engine.dialect.name == "postgresql" else sqlite.insert
        statement = (
            insert(DailyUsageRow)
            .values(user_id=user_id, day=day, analyses=1)
            .on_conflict_do_update(
                index_elements=[DailyUsageRow.user_id, DailyUsageRow.day],
                set_={"analyses": DailyUsageRow.analyses + 1},
                where=DailyUsageRow.analyses < limit,
            )
            .returning(DailyUsageRow.analyses)
        )
        # One statement, atomic on both databases: concurrent requests on any instance cannot overshoot.
        async with self._session() as session, session.begin():
            taken = (await session.execute(statement)).scalar_one_or_none()
        return taken is not None

    async def return_quota(self, user_id: str, day: date) -> None:
        statement = (
            update(DailyUsageRow)
            .where(DailyUsageRow.user_id == user_id, DailyUsageRow.day == day, DailyUsageRow.analyses > 0)
            .values(analyses=DailyUsageRow.analyses - 1)
        )
        async with self._session() as session, session.begin():
            await session.execute(statement)

    async def check(self) -> None:
        try:
            async with self._session() as session:
                await session.execute(text("SELECT 1"))
        except (AppError, SQLAlchemyError) as exc:
            raise NotReady("The database does not answer.") from exc

    async def _one(self, statement: Select[tuple[AnalysisRow]]) -> StoredAnalysis | None:
        async with self._session() as session:
            row = (await session.scalars(statement)).first()
        return _from_row(row) if row is not None else None


def _of_user(user_id: str) -> Select[tuple[AnalysisRow]]:
    return select(AnalysisRow).where(AnalysisRow.user_id == user_id)


def _dump(model: Any) -> dict[str, Any] | None:
    return model.model_dump(mode="json") if model is not None else None


def _to_row(analysis: StoredAnalysis) -> AnalysisRow:
    return AnalysisRow(
        id=analysis.id,
        user_id=analysis.user_id,
        status=analysis.status,
        cached=analysis.cached,
        source_id=analysis.source_id,
        image_sha256=analysis.image.sha256,
        image_key=analysis.image.storage_key,
        image=analysis.image.model_dump(mode="json"),
        options=analysis.options.to_json(),
        options_hash=analysis.options_hash,
        idempotency_key=analysis.idempotency_key,
        vision=_dump(analysis.vision),
        report=_dump(analysis.report),
        timings=_dump(analysis.timings),
        error_code=analysis.error_code,
        error_detail=analysis.error_detail,
        created_at=analysis.created_at,
        completed_at=analysis.completed_at,
    )


def _from_row(row: AnalysisRow) -> StoredAnalysis:
    return StoredAnalysis(
        id=row.id,
        user_id=row.user_id,
        status=row.status,  # type: ignore[arg-type]  # the CHECK constraint holds it to AnalysisStatus
        created_at=row.created_at,
        image=ImageInfo.model_validate(row.image),
        options=AnalysisOptions.from_json(row.options),
        options_hash=row.options_hash,
        idempotency_key=row.idempotency_key,
        cached=row.cached,
        source_id=row.source_id,
        vision=VisionResult.model_validate(row.vision) if row.vision is not None else None,
        report=ProductReport.model_validate(row.report) if row.report is not None else None,
        timings=Timings.model_validate(row.timings) if row.timings is not None else None,
        error_code=row.error_code,
        error_detail=row.error_detail,
        completed_at=row.completed_at,
    )
