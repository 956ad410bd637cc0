"""The `analyses` store on SQLAlchemy 2 (async): SQLite by default, PostgreSQL (Supabase) in production.

tables.py      the schema, as SQLAlchemy models (Alembic migrations create it)
engine.py      the engine for DATABASE_URL, with timeouts, and the schema-version check
repository.py  `SqlAnalysisRepository`, the `AnalysisRepository` port
migrations/    Alembic: `alembic upgrade head` (alembic.ini at the repository root)
"""
