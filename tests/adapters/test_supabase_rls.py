"""docs/supabase/rls.sql on a real PostgreSQL: app clients read their own analyses, and nothing else.

The database is migrated with Alembic, then given the parts of Supabase the SQL relies on: the
roles `anon` and `authenticated`, `auth.uid()` as Supabase defines it, and Supabase's default
grants (ALL on every table in `public` to both roles). So what keeps clients out here is
rls.sql, as on Supabase, not a grant that was never made.

Each check acts as PostgREST does for a request: inside a transaction, `set local role` and the
JWT's claims in `request.jwt.claims`; the transaction is always rolled back.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.postgres import PostgresServer, migrated_url

RLS_SQL = Path(__file__).resolve().parents[2] / "docs" / "supabase" / "rls.sql"

ALICE = "6f1c2a0e-8d4b-4c55-9a57-2b1e0c3d4f01"
BOB = "0d9e8f7a-1b2c-4d3e-8f4a-5b6c7d8e9f02"
ROWS = {  # analysis id -> owner
    uuid.UUID("00000000-0000-4000-8000-00000000a001"): ALICE,
    uuid.UUID("00000000-0000-4000-8000-00000000a002"): ALICE,
    uuid.UUID("00000000-0000-4000-8000-00000000b001"): BOB,
}
NEW_ID = uuid.UUID("00000000-0000-4000-8000-00000000a003")
OUR_TABLES = ("analyses", "daily_usage", "alembic_version")

# What a Supabase project has before rls.sql runs (from supabase/postgres's init scripts).
SUPABASE = """
do $$
begin
    if not exists (select from pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
    end if;
    if not exists (select from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin noinherit;
    end if;
end
$$;

create schema if not exists auth;
create or replace function auth.uid() returns uuid
    language sql stable
as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
$$;
grant usage on schema auth to anon, authenticated;

grant usage on schema public to anon, authenticated;
grant all on all tables in schema public to anon, authenticated;
"""

INSERT_ANALYSIS = """
insert into public.analyses
    (id, user_id, status, cached, image_sha256, image_key, image, options, options_hash, created_at)
values ($1, $2, 'succeeded', false, repeat('a', 64), $3, '{}', '{}', repeat('b', 64), now())
"""


async def run_rls_sql(connection: asyncpg.Connection) -> list[str]:
    """Run docs/supabase/rls.sql; return the warnings it raised."""
    warnings: list[str] = []

    def listen(_connection: object, message: asyncpg.PostgresLogMessage) -> None:
        if message.severity == "WARNING":
            warnings.append(message.message)

    connection.add_log_listener(listen)
    try:
        await connection.execute(RLS_SQL.read_text())
    finally:
        connection.remove_log_listener(listen)
    return warnings


async def _prepare(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(SUPABASE)
        for _run in range(2):  # idempotent: a second run fails nothing (and the end state is checked below)
            assert await run_rls_sql(connection) == []  # every table in `public` covered: no warning
        for analysis_id, user_id in ROWS.items():  # as the owner, as the API writes them
            await connection.execute(INSERT_ANALYSIS, analysis_id, user_id, f"{user_id}/{analysis_id}.jpg")
        await connection.execute(
            "insert into public.daily_usage (user_id, day, analyses) values ($1, current_date, 2)", ALICE
        )
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def rls_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """A migrated database with Supabase's roles, auth.uid() and default grants, rls.sql applied twice, and rows."""
    url = migrated_url(postgres_server)
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    asyncio.run(_prepare(dsn))  # a sync fixture: no event loop is running here
    yield dsn
    postgres_server.drop_database(url)


@pytest.fixture
async def db(rls_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the tables' owner (the service's role), which may switch to the clients' roles."""
    connection = await asyncpg.connect(rls_dsn)
    try:
        yield connection
    finally:
        await connection.close()


def claims(sub: str, role: str = "authenticated") -> str:
    return json.dumps({"sub": sub, "role": role, "aud": "authenticated"})


@asynccontextmanager
async def acting_as(db: asyncpg.Connection, role: str | None = None, sub: str | None = None) -> AsyncIterator[None]:
    """As PostgREST runs a request: a transaction, `set local role`, the JWT's claims; then roll it all back.

    Without a role, the transaction runs as the connection's own role: the tables' owner.
    """
    transaction = db.transaction()
    await transaction.start()
    try:
        if role is not None:
            await db.execute(f"set local role {role}")
        if sub is not None:
            await db.execute("select set_config('request.jwt.claims', $1, true)", claims(sub, role or "authenticated"))
        yield
    finally:
        await transaction.rollback()


async def test_rls_is_on_and_only_the_read_policy_exists(db: asyncpg.Connection) -> None:
    flags = await db.fetch(
        "select relname, relrowsecurity, relforcerowsecurity from pg_class"
        " where relnamespace = 'public'::regnamespace and relname = any($1::text[])",
        list(OUR_TABLES),
    )
    # On for every table; not forced, so the owner (the service) is not subject to it.
    assert {row["relname"]: (row["relrowsecurity"], row["relforcerowsecurity"]) for row in flags} == {
        table: (True, False) for table in OUR_TABLES
    }
    policies = await db.fetch(
        "select tablename, cmd, roles::text[] as roles from pg_policies where schemaname = 'public'"
    )
    assert [(p["tablename"], p["cmd"], p["roles"]) for p in policies] == [("analyses", "SELECT", ["authenticated"])]
    grants = await db.fetch(
        "select grantee, table_name, privilege_type from information_schema.role_table_grants"
        " where table_schema = 'public' and grantee in ('anon', 'authenticated')"
    )
    assert [tuple(g) for g in grants] == [("authenticated", "analyses", "SELECT")]


async def test_rls_sql_warns_about_a_table_it_does_not_cover(db: asyncpg.Connection) -> None:
    await db.execute("create table public.added_later (id integer primary key)")
    try:
        warnings = await run_rls_sql(db)
    finally:
        await db.execute("drop table public.added_later")
    assert warnings == ["public.added_later has no row level security: add it to docs/supabase/rls.sql"]


@pytest.mark.parametrize("user", [ALICE, BOB], ids=["alice", "bob"])
async def test_a_user_reads_exactly_their_own_analyses(db: asyncpg.Connection, user: str) -> None:
    async with acting_as(db, "authenticated", sub=user):
        rows = await db.fetch("select id, user_id from public.analyses")
        by_id = await db.fetch("select id from public.analyses where id = any($1::uuid[])", list(ROWS))
    assert {row["id"] for row in rows} == {analysis_id for analysis_id, owner in ROWS.items() if owner == user}
    assert {row["user_id"] for row in rows} == {user}
    assert len(by_id) == len(rows)  # asking for the others' ids by name finds nothing more


async def test_authenticated_without_claims_reads_nothing(db: asyncpg.Connection) -> None:
    async with acting_as(db, "authenticated"):
        assert await db.fetchval("select count(*) from public.analyses") == 0


@pytest.mark.parametrize(
    ("statement", "args"),
    [
        pytest.param(INSERT_ANALYSIS, (NEW_ID, ALICE, "alice/new.jpg"), id="insert"),
        pytest.param("update public.analyses set status = 'failed' where user_id = $1", (ALICE,), id="update"),
        pytest.param("delete from public.analyses where user_id = $1", (ALICE,), id="delete"),
    ],
)
async def test_a_user_cannot_write_analyses(db: asyncpg.Connection, statement: str, args: tuple[object, ...]) -> None:
    async with acting_as(db, "authenticated", sub=ALICE):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for table analyses"):
            await db.execute(statement, *args)
    assert await db.fetchval("select count(*) from public.analyses where status = 'succeeded'") == len(ROWS)


async def test_without_write_policies_a_stray_grant_still_writes_nothing(db: asyncpg.Connection) -> None:
    """Defence in depth: were insert/update/delete granted by mistake, RLS alone still refuses every write."""
    async with acting_as(db):  # the owner's transaction: the grant is rolled back with it
        await db.execute("grant insert, update, delete on public.analyses to authenticated")
        await db.execute("set local role authenticated")
        await db.execute("select set_config('request.jwt.claims', $1, true)", claims(ALICE))
        assert await db.execute("update public.analyses set status = 'failed' where user_id = $1", ALICE) == "UPDATE 0"
        assert await db.execute("delete from public.analyses where user_id = $1", ALICE) == "DELETE 0"
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="violates row-level security policy"):
            await db.execute(INSERT_ANALYSIS, NEW_ID, ALICE, "alice/new.jpg")
    assert await db.fetchval("select count(*) from public.analyses where status = 'succeeded'") == len(ROWS)


@pytest.mark.parametrize(
    ("role", "sub", "table"),
    [
        ("authenticated", ALICE, "daily_usage"),
        ("authenticated", ALICE, "alembic_version"),
        ("anon", None, "analyses"),
        ("anon", None, "daily_usage"),
        ("anon", None, "alembic_version"),
        ("anon", ALICE, "analyses"),  # a `sub` claim does not make anon anyone
    ],
)
async def test_other_tables_and_anon_read_nothing(
    db: asyncpg.Connection, role: str, sub: str | None, table: str
) -> None:
    async with acting_as(db, role, sub=sub):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=f"permission denied for table {table}"):
            await db.fetch(f"select * from public.{table}")


async def test_the_owner_reads_and_writes_every_row(db: asyncpg.Connection) -> None:
    """The service connects as the tables' owner; on Supabase that role is no superuser, so emulate that too."""
    owner = f"owner_{uuid.uuid4().hex[:8]}"
    async with acting_as(db):
        await db.execute(f"create role {owner} nologin; alter table public.analyses owner to {owner}")
        await db.execute(f"set local role {owner}")
        assert await db.fetchval("select rolsuper from pg_roles where rolname = current_user") is False
        assert await db.fetchval("select count(*) from public.analyses") == len(ROWS)
        assert await db.execute("update public.analyses set status = 'failed'") == f"UPDATE {len(ROWS)}"
