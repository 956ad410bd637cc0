"""The schema. Alembic migrations under `migrations/` create it; a test checks they agree.

Timestamps are stored in UTC and read back timezone-aware on both databases (SQLite keeps no
zone, so `UTCDateTime` attaches it). JSON columns are JSONB on PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Date, DateTime, Index, Integer, MetaData, String, Text, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Constraint names fixed by convention, so migrations can name (and later drop) them on any database.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONDoc = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime, stored as UTC; refuses naive values rather than guess their zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class AnalysisRow(Base):
    """One `POST /analyze`: who asked, for what image and options, and what came of it."""

    __tablename__ = "analyses"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # Supabase's auth.users.id (a uuid) as text, so AUTH_MODE=disabled's local user fits too.
    user_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    cached: Mapped[bool] = mapped_column(default=False)
    # For a cached result: the analysis whose vision output and report it repeats.
    source_id: Mapped[uuid.UUID | None]
    image_sha256: Mapped[str] = mapped_column(String(64))
    image_key: Mapped[str] = mapped_column(String(1024))
    image: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    options: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    options_hash: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    vision: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    timings: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="status"),
        # History, newest first, and its cursor.
        Index("ix_analyses_user_history", "user_id", "created_at", "id"),
        # Dedupe: the same user, image and options.
        Index("ix_analyses_user_image", "user_id", "image_sha256", "options_hash", "created_at"),
        # One live analysis per (user, Idempotency-Key); NULL keys never collide.
        Index("uq_analyses_user_idempotency_key", "user_id", "idempotency_key", unique=True),
    )


class DailyUsageRow(Base):
    """Analyses run per user per UTC day: the DAILY_QUOTA counter, shared by every instance."""

    __tablename__ = "daily_usage"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    analyses: Mapped[int] = mapped_column(Integer)
