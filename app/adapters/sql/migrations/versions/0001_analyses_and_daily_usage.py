"""analyses and daily usage

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Migrations spell their types out rather than import them from `tables.py`, so that a
migration keeps meaning what it meant when the schema changes later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "analyses",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("source_id", sa.Uuid(), nullable=True),
        sa.Column("image_sha256", sa.String(length=64), nullable=False),
        sa.Column("image_key", sa.String(length=1024), nullable=False),
        sa.Column("image", JSONDoc, nullable=False),
        sa.Column("options", JSONDoc, nullable=False),
        sa.Column("options_hash", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("vision", JSONDoc, nullable=True),
        sa.Column("report", JSONDoc, nullable=True),
        sa.Column("timings", JSONDoc, nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed')", name=op.f("ck_analyses_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analyses")),
    )
    op.create_index("ix_analyses_user_history", "analyses", ["user_id", "created_at", "id"])
    op.create_index("ix_analyses_user_image", "analyses", ["user_id", "image_sha256", "options_hash", "created_at"])
    op.create_index("uq_analyses_user_idempotency_key", "analyses", ["user_id", "idempotency_key"], unique=True)
    op.create_table(
        "daily_usage",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("analyses", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "day", name=op.f("pk_daily_usage")),
    )


def downgrade() -> None:
    op.drop_table("daily_usage")
    op.drop_index("uq_analyses_user_idempotency_key", table_name="analyses")
    op.drop_index("ix_analyses_user_image", table_name="analyses")
    op.drop_index("ix_analyses_user_history", table_name="analyses")
    op.drop_table("analyses")
