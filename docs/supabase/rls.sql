-- Row-level security for product-analyzer's tables on Supabase.
--
-- App clients (supabase-js with the signed-in user's session, i.e. the `authenticated` role)
-- may READ their own rows of public.analyses directly. Nothing else: no other table, no
-- writes, and nothing at all for `anon`. Writes go through the API, which also deletes the
-- stored image of a deleted analysis and keeps the daily quota honest.
--
-- Apply AFTER the schema exists (`alembic upgrade head` with the same database), with either
--   * Supabase dashboard -> SQL editor: paste this file and run it, or
--   * psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f docs/supabase/rls.sql
--     (DATABASE_URL without SQLAlchemy's `+asyncpg`: postgresql://postgres:...@db.<ref>.supabase.co:5432/postgres)
-- It is idempotent: run it again after every migration. A migration that adds a table must
-- add that table here too: Supabase grants ALL on every new table in `public` to `anon` and
-- `authenticated` (default privileges), so a table missing from this file is open to anyone
-- holding the project's public anon key. The check at the end warns about such tables.
--
-- The service itself connects as the tables' owner (`postgres`, the role that ran the
-- migrations). Row-level security does not apply to a table's owner (this file deliberately
-- does not FORCE it), nor to roles with BYPASSRLS such as Supabase's `service_role`, so the
-- API keeps reading and writing every row. Never hand the owner's credentials or the
-- service_role key to a client.
--
-- tests/adapters/test_supabase_rls.py applies this file to a real PostgreSQL and checks it.

begin;

-- 1. Row-level security on every table of ours: with RLS on and no policy, a role that still
--    holds a privilege sees no rows and can change none. Default deny, in depth.
alter table public.analyses enable row level security;
alter table public.daily_usage enable row level security;
alter table public.alembic_version enable row level security;

-- 2. Privileges: take back what Supabase's default privileges granted (ALL, to anon and
--    authenticated), then give back the one thing clients may do: read analyses.
revoke all on table public.analyses, public.daily_usage, public.alembic_version from anon, authenticated;
grant select on table public.analyses to authenticated;

-- 3. Which analyses: the signed-in user's own. `user_id` is text holding auth.users.id (a
--    uuid); auth.uid() is the `sub` claim of the request's JWT, null without one (so no rows).
--    `(select auth.uid())` is evaluated once per statement rather than once per row, as
--    Supabase recommends; the comparison then uses the (user_id, created_at, id) index.
drop policy if exists "analyses: users read their own" on public.analyses;
create policy "analyses: users read their own"
    on public.analyses
    for select
    to authenticated
    using (user_id = (select auth.uid())::text);

-- No insert, update or delete policies, on purpose: clients never write these tables.

commit;

-- 4. Warn (without failing) about tables in `public` that have no row-level security: a new
--    table a migration added and this file does not cover yet.
do $$
declare
    missing text;
begin
    for missing in
        select c.relname
        from pg_class c
        join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relrowsecurity
        order by c.relname
    loop
        raise warning 'public.% has no row level security: add it to docs/supabase/rls.sql', missing;
    end loop;
end
$$;
