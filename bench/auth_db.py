"""Benchmark what auth and the database add to each `POST /analyze` (p50), in one process.

    python -m bench.auth_db [--requests 300] [--out bench/results/auth_db.json] [--no-postgres]

Every request goes through the real app (`create_app`, `httpx.ASGITransport` inside
`asgi_lifespan.LifespanManager`) as a real multipart upload of a small real JPEG (640x480, `tests.imagegen`),
so the upload is streamed, sniffed, decoded and re-encoded as in production (in a worker thread,
as the app does it); only the socket and uvicorn's HTTP parsing are left out, on every line alike.
The image store, the vision model and the report writer are the tests' in-memory fakes, which
answer at once, so what remains is the service's own work plus what auth and the database add.
The lines, all on one machine, one request at a time:

- baseline:          AUTH_MODE=disabled and a null repository (stores nothing; lookups None, quota
                     always granted): the service as it was before auth and persistence;
- auth:              AUTH_MODE=supabase, an ES256 access token checked against a loopback JWKS
                     (keys fetched once at startup, cached after) + the null repository;
- auth+sqlite:       ES256 + a migrated SQLite file database (WAL) with the production defaults on:
                     CACHE_TTL_SECONDS=86400 and a DAILY_QUOTA never reached. Each request asks a
                     different question, so dedupe never hits and every request takes the full path:
                     dedupe lookup, quota, insert, update;
- auth+postgresql:   the same on a throwaway local PostgreSQL (tests/postgres.py: loopback TCP, fsync
                     and synchronous_commit off), so a floor: a real Supabase adds its network round
                     trips, one per SQL statement or transaction step (the `SQL stmts/commits` column);
- auth+sqlite+idempotency-key: auth+sqlite with a fresh `Idempotency-Key` per request (one more lookup);
- replay:            the same `Idempotency-Key` again: the saved response is returned (SQLite);
- cached:            the same photo and options again within the TTL: a dedupe hit (SQLite).

RATE_LIMIT_PER_MINUTE=0 everywhere (the limiter would refuse the benchmark), and the same
CACHE_TTL_SECONDS / DAILY_QUOTA on every line, so that only auth and the repository differ.
Settings are built with `_env_file=None`, ENVIRONMENT=test, a temporary STORAGE_DIR,
LOG_FORMAT=json and LOG_LEVEL=WARNING: the one canonical log line per request is INFO, so it is
not rendered, and logging does not dominate what is measured. The event loop is uvloop when it is
installed, as under uvicorn (loop "auto") in production.

The lines are interleaved in rounds (`--round-size` requests of each line, in a shuffled order every
round) so that drift of the machine hits them all alike; every line is warmed up first. Latency is
the client's: from `client.post` to the parsed response. Then, apart from the timings, one more
request per line counts the SQL statements and commits it runs. Finally `SupabaseVerifier.verify`
alone is timed on a cached ES256 key, an RS256 key and an HS256 secret.

Prints a table and writes the figures, the settings and the machine's description as JSON.
Reuses the tests' helpers: `tests.fakes` (instant store, model and writer), `tests.imagegen` (the
photo), `tests.supabase_fake` (keys, claims, the loopback JWKS server) and `tests.postgres` (the
throwaway PostgreSQL server); the null repository is in this module.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives.asymmetric import rsa
from PIL import Image
from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.adapters.auth_supabase import SupabaseVerifier
from app.bootstrap import create_app
from app.config import Settings
from app.domain.models import StoredAnalysis
from app.domain.ports import AnalysisRepository, Backends
from bench.stats import event_loop_factory, machine, percentile, versions
from tests.fakes import FakeStore, FakeVision, FakeWriter
from tests.imagegen import product_jpeg
from tests.supabase_fake import JWKSServer, Signer, claims, ec_signer, jwks_serving

DEFAULT_OUT = Path(__file__).parent / "results" / "auth_db.json"
# Large enough that no run of this benchmark ever reaches it.
NEVER_REACHED_QUOTA = 1_000_000_000
HS256_SECRET = b"bench-only-hs256-secret-of-at-least-32-bytes"
# What ran, by distribution name, for the results' "versions".
VERSIONED = ("sqlalchemy", "asyncpg", "aiosqlite", "PyJWT", "cryptography", "fastapi", "starlette", "httpx", "uvloop")

BASELINE = "baseline"
AUTH = "auth"
SQLITE = "auth+sqlite"
POSTGRES = "auth+postgresql"
SQLITE_KEY = "auth+sqlite+idempotency-key"
REPLAY = "replay"
CACHED = "cached"


# -- the service before persistence -----------------------------------------------------------------------


class NullRepository:
    """An `AnalysisRepository` that keeps nothing: the service before persistence."""

    async def add(self, analysis: StoredAnalysis) -> None:
        return None

    async def save(self, analysis: StoredAnalysis) -> None:
        return None

    async def get(self, user_id: str, analysis_id: uuid.UUID) -> StoredAnalysis | None:
        return None

    async def by_idempotency_key(self, user_id: str, key: str) -> StoredAnalysis | None:
        return None

    async def fresh_result(
        self, user_id: str, image_sha256: str, options_hash: str, *, since: datetime
    ) -> StoredAnalysis | None:
        return None

    async def history(
        self, user_id: str, *, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[StoredAnalysis]:
        return []

    async def delete(
        self, user_id: str, analysis_id: uuid.UUID, *, remove_image: Callable[[str], Awaitable[None]]
    ) -> StoredAnalysis | None:
        return None

    async def take_quota(self, user_id: str, day: date, limit: int) -> bool:
        return True

    async def return_quota(self, user_id: str, day: date) -> None:
        return None

    async def check(self) -> None:
        return None


if TYPE_CHECKING:
    _null_repository_is_a_repository: AnalysisRepository = NullRepository()


# -- inputs ----------------------------------------------------------------------------------------------------


def rsa_signer(kid: str) -> Signer:
    return Signer(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def settings_for(workdir: Path, name: str, *, supabase_url: str | None, database_url: str) -> Settings:
    """No .env, ENVIRONMENT=test, its own storage folder, JSON logs at WARNING; the production cache TTL,
    a quota never reached and no rate limit."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg,unused-ignore]
        environment="test",
        storage_dir=workdir / name.replace("+", "-") / "uploads",
        database_url=database_url,
        log_format="json",
        log_level="WARNING",
        auth_mode="supabase" if supabase_url else "disabled",
        supabase_url=supabase_url,
        cache_ttl_seconds=86_400,
        daily_quota=NEVER_REACHED_QUOTA,
        rate_limit_per_minute=0,
    )


def migrate_sqlite(path: Path) -> str:
    """A SQLite file migrated to Alembic's head (before any event loop runs: Alembic's env.py calls asyncio.run)."""
    from alembic import command

    from app.adapters.sql.engine import alembic_config

    url = f"sqlite+aiosqlite:///{path}"
    command.upgrade(alembic_config(url), "head")
    return url


@contextmanager
def postgres_database(enabled: bool) -> Iterator[tuple[str | None, str]]:
    """A migrated database on a throwaway PostgreSQL server: (url, note), or (None, why not)."""
    if not enabled:
        yield None, "skipped: --no-postgres"
        return
    from tests.postgres import PostgresServer, PostgresStartError, find_bindir, migrated_url

    bindir = find_bindir()
    if bindir is None:
        yield None, "skipped: no PostgreSQL server binaries (initdb, pg_ctl, postgres) found"
        return
    try:
        server = PostgresServer.start(bindir)
    except PostgresStartError as exc:
        yield None, f"skipped: the throwaway PostgreSQL server did not start: {str(exc).splitlines()[0]}"
        return
    with server:
        version = bindir.parent.name
        yield migrated_url(server), f"throwaway PostgreSQL {version} on loopback TCP (fsync, synchronous_commit off)"


# -- the lines -------------------------------------------------------------------------------------------------


@dataclass
class Line:
    """One row of the table: requests of one shape against one app."""

    name: str
    client: httpx.AsyncClient
    headers: Callable[[], dict[str, str]]
    question: Callable[[], str]
    expect: str  # "full" | "replayed" | "cached"
    samples: list[float] = field(default_factory=list)
    statements: int | None = None
    commits: int | None = None


_counter = iter(range(1_000_000_000))


def distinct_question() -> str:
    """Every request a different question: a different options hash, so dedupe never hits."""
    return f"Is this item number {next(_counter):09d} in stock?"


async def send(line: Line, image: bytes) -> float:
    """One POST /analyze on `line`; returns its latency in ms after checking it took the path the line is about."""
    headers, data = line.headers(), {"questions": line.question()}
    started = time.perf_counter()
    response = await line.client.post(
        "/analyze", files={"image": ("photo.jpg", image, "image/jpeg")}, data=data, headers=headers
    )
    body = response.json()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{line.name}: {response.status_code} {body}")
    replayed = response.headers.get("Idempotent-Replayed") == "true"
    took = "replayed" if replayed else "cached" if body["cached"] else "full"
    if took != line.expect:
        raise RuntimeError(f"{line.name}: the request was {took}, not {line.expect}")
    return elapsed


async def run_rounds(lines: list[Line], image: bytes, *, requests: int, round_size: int, seed: int) -> None:
    """`requests` timed requests per line, `round_size` at a time, the lines in a shuffled order each round."""
    rng = random.Random(seed)
    done = 0
    while done < requests:
        batch = min(round_size, requests - done)
        order = lines[:]
        rng.shuffle(order)
        for line in order:
            for _ in range(batch):
                line.samples.append(await send(line, image))
        done += batch


async def count_sql(lines: list[Line], image: bytes) -> None:
    """Outside the timings: one more request per line, counting the SQL statements and commits it runs."""
    counts = {"statements": 0, "commits": 0}

    def on_statement(*_args: Any) -> None:
        counts["statements"] += 1

    def on_commit(*_args: Any) -> None:
        counts["commits"] += 1

    event.listen(Engine, "before_cursor_execute", on_statement)
    event.listen(Engine, "commit", on_commit)
    try:
        for line in lines:
            counts.update(statements=0, commits=0)
            await send(line, image)
            line.statements, line.commits = counts["statements"], counts["commits"]
    finally:
        event.remove(Engine, "before_cursor_execute", on_statement)
        event.remove(Engine, "commit", on_commit)


# -- the verifier alone ----------------------------------------------------------------------------------------


async def time_verifier(jwks: JWKSServer, tokens: dict[str, str], *, runs: int, round_size: int) -> dict[str, Any]:
    """`SupabaseVerifier.verify` alone, per algorithm, interleaved like the requests; microseconds."""
    issuer = f"{jwks.base_url}/auth/v1"
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as http:
        verifier = SupabaseVerifier(
            http=http,
            jwks_url=jwks.url,
            issuer=issuer,
            hs256_secret=HS256_SECRET,
            algorithms=("ES256", "RS256", "HS256"),
        )
        await verifier.check()  # the JWKS is fetched here, once: every verify below uses the cached keys
        samples: dict[str, list[float]] = {alg: [] for alg in tokens}
        for token in tokens.values():  # warm-up
            for _ in range(20):
                await verifier.verify(token)
        rng = random.Random(1)
        done = 0
        while done < runs:
            batch = min(round_size * 10, runs - done)
            order = list(tokens.items())
            rng.shuffle(order)
            for alg, token in order:
                for _ in range(batch):
                    started = time.perf_counter()
                    await verifier.verify(token)
                    samples[alg].append((time.perf_counter() - started) * 1e6)
            done += batch
    return {
        alg: {
            "p50_us": round(statistics.median(values), 1),
            "p95_us": round(percentile(values, 0.95), 1),
            "runs": len(values),
        }
        for alg, values in samples.items()
    }


# -- the run ---------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What `measure` needs, prepared outside the event loop."""

    workdir: Path
    image: bytes
    jwks: JWKSServer
    app_signer: Signer
    tokens: dict[str, str]  # algorithm -> token, for the verifier alone
    sqlite_urls: dict[str, str]  # line -> its own migrated database
    postgres_url: str | None
    unused_database: Path  # what DATABASE_URL names on the null-repository lines; must never exist
    requests: int
    warmup: int
    round_size: int
    verifier_runs: int
    configurations: dict[str, dict[str, Any]] = field(default_factory=dict)


async def measure(plan: Plan) -> tuple[list[Line], dict[str, Any]]:
    async with AsyncExitStack() as stack:

        async def client_for(name: str, settings: Settings, repository: AnalysisRepository | None) -> httpx.AsyncClient:
            backends = Backends(store=FakeStore(), vision=FakeVision(), writer=FakeWriter(), repository=repository)
            app = create_app(settings, backends=backends)
            manager = await stack.enter_async_context(LifespanManager(app))
            transport = httpx.ASGITransport(app=manager.app)
            client = await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://bench"))
            plan.configurations[name] = {
                "auth_mode": settings.auth_mode,
                "jwt_algorithms": list(settings.jwt_algorithms()),
                "repository": "null" if repository is not None else settings.database_url.split(":", 1)[0],
                "cache_ttl_seconds": settings.cache_ttl_seconds,
                "daily_quota": settings.daily_quota,
                "rate_limit_per_minute": settings.rate_limit_per_minute,
                "log_level": settings.log_level,
                "environment": settings.environment,
            }
            return client

        def bearer(user_id: str) -> Callable[[], dict[str, str]]:
            token = plan.app_signer.token(claims(issuer=f"{plan.jwks.base_url}/auth/v1", sub=user_id))
            return lambda: {"Authorization": f"Bearer {token}"}

        def with_key(headers: Callable[[], dict[str, str]], key: str | None = None) -> Callable[[], dict[str, str]]:
            return lambda: {**headers(), "Idempotency-Key": key or uuid.uuid4().hex}

        unused = f"sqlite+aiosqlite:///{plan.unused_database}"
        supabase = plan.jwks.base_url
        lines: list[Line] = []
        client = await client_for(
            BASELINE, settings_for(plan.workdir, BASELINE, supabase_url=None, database_url=unused), NullRepository()
        )
        lines.append(Line(BASELINE, client, lambda: {}, distinct_question, "full"))

        client = await client_for(
            AUTH, settings_for(plan.workdir, AUTH, supabase_url=supabase, database_url=unused), NullRepository()
        )
        lines.append(Line(AUTH, client, bearer(str(uuid.uuid4())), distinct_question, "full"))

        url = plan.sqlite_urls[SQLITE]
        client = await client_for(
            SQLITE, settings_for(plan.workdir, SQLITE, supabase_url=supabase, database_url=url), None
        )
        user = bearer(str(uuid.uuid4()))
        lines.append(Line(SQLITE, client, user, distinct_question, "full"))
        cached_question = "Is this the same request again?"
        lines.append(Line(CACHED, client, user, lambda: cached_question, "cached"))

        if plan.postgres_url is not None:
            client = await client_for(
                POSTGRES,
                settings_for(plan.workdir, POSTGRES, supabase_url=supabase, database_url=plan.postgres_url),
                None,
            )
            lines.append(Line(POSTGRES, client, bearer(str(uuid.uuid4())), distinct_question, "full"))

        url = plan.sqlite_urls[SQLITE_KEY]
        client = await client_for(
            SQLITE_KEY, settings_for(plan.workdir, SQLITE_KEY, supabase_url=supabase, database_url=url), None
        )
        user = bearer(str(uuid.uuid4()))
        lines.append(Line(SQLITE_KEY, client, with_key(user), distinct_question, "full"))
        replay_key, replay_question = uuid.uuid4().hex, "Is this a retry?"
        lines.append(Line(REPLAY, client, with_key(user, replay_key), lambda: replay_question, "replayed"))
        plan.configurations[CACHED] = plan.configurations[SQLITE] | {"note": "same photo and options again"}
        plan.configurations[REPLAY] = plan.configurations[SQLITE_KEY] | {"note": "same Idempotency-Key again"}

        # The first request of `cached` and `replay` runs the pipeline; every later one is the hit.
        for line in lines:
            if line.expect != "full":
                await send(replace(line, expect="full"), plan.image)
        await run_rounds(lines, plan.image, requests=plan.warmup, round_size=plan.round_size, seed=0)
        for line in lines:
            line.samples.clear()
        await run_rounds(lines, plan.image, requests=plan.requests, round_size=plan.round_size, seed=42)
        await count_sql(lines, plan.image)
        verifier = await time_verifier(plan.jwks, plan.tokens, runs=plan.verifier_runs, round_size=plan.round_size)
    return lines, verifier


def table(result: dict[str, Any]) -> str:
    rows = [
        f"POST /analyze, {result['image']['width']}x{result['image']['height']} JPEG "
        f"({result['image']['bytes'] / 1000:.0f} kB), instant store/vision/writer, one request at a time, "
        f"{result['requests']} timed requests per line in rounds of {result['round_size']}, {result['event_loop']}",
        f"{'configuration':<29} {'p50 ms':>7} {'p95 ms':>7} {'p50 added':>10} {'SQL stmts/commits':>18}",
    ]
    for name, row in result["results"].items():
        sql = "-" if row["sql_statements"] in (None, 0) else f"{row['sql_statements']}/{row['sql_commits']}"
        rows.append(f"{name:<29} {row['p50_ms']:>7.2f} {row['p95_ms']:>7.2f} {row['p50_added_ms']:>+10.2f} {sql:>18}")
    for name, note in result["skipped"].items():
        rows.append(f"{name:<29} {note}")
    rows.append("")
    rows.append(f"{'SupabaseVerifier.verify':<29} {'p50 us':>7} {'p95 us':>7} {'runs':>10}")
    for alg, row in result["verifier"].items():
        label = f"{alg} ({'JWKS key, cached' if alg != 'HS256' else 'shared secret'})"
        rows.append(f"{label:<29} {row['p50_us']:>7.1f} {row['p95_us']:>7.1f} {row['runs']:>10}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="timed requests per line")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests per line first")
    parser.add_argument("--round-size", type=int, default=20, help="requests of one line in a row")
    parser.add_argument("--verifier-runs", type=int, default=3000, help="timed verify calls per algorithm")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL line")
    parser.add_argument("--workdir", type=Path, default=None, help="keep databases here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if min(args.requests, args.round_size, args.verifier_runs) < 1 or args.warmup < 0:
        parser.error("--requests, --round-size and --verifier-runs must be positive, --warmup not negative")

    started = time.perf_counter()
    app_signer, rsa_key = ec_signer("bench-es256"), rsa_signer("bench-rs256")
    image = product_jpeg((640, 480), quality=88)
    width, height = Image.open(BytesIO(image)).size
    loop_factory, loop_name = event_loop_factory()
    with ExitStack() as stack:
        if args.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-auth-db-")))
        else:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        jwks = stack.enter_context(jwks_serving(app_signer, rsa_key))
        issuer = f"{jwks.base_url}/auth/v1"
        tokens = {
            "ES256": app_signer.token(claims(issuer=issuer)),
            "RS256": rsa_key.token(claims(issuer=issuer)),
            "HS256": jwt.encode(claims(issuer=issuer), HS256_SECRET, "HS256"),
        }
        postgres_url, postgres_note = stack.enter_context(postgres_database(not args.no_postgres))
        plan = Plan(
            workdir=workdir,
            image=image,
            jwks=jwks,
            app_signer=app_signer,
            tokens=tokens,
            sqlite_urls={
                name: migrate_sqlite(workdir / f"{name.replace('+', '-')}.db") for name in (SQLITE, SQLITE_KEY)
            },
            postgres_url=postgres_url,
            unused_database=workdir / "null-repository-never-opens.db",
            requests=args.requests,
            warmup=args.warmup,
            round_size=args.round_size,
            verifier_runs=args.verifier_runs,
        )
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            lines, verifier = runner.run(measure(plan))
        null_database_created = plan.unused_database.exists()
    if null_database_created:
        raise RuntimeError(f"a null-repository line opened {plan.unused_database}")

    baseline = statistics.median(next(line for line in lines if line.name == BASELINE).samples)
    order = [BASELINE, AUTH, SQLITE, POSTGRES, SQLITE_KEY, REPLAY, CACHED]
    by_name = {line.name: line for line in lines}
    results: dict[str, Any] = {}
    for name in order:
        if (line := by_name.get(name)) is None:
            continue
        p50 = statistics.median(line.samples)
        results[name] = {
            "p50_ms": round(p50, 3),
            "p95_ms": round(percentile(line.samples, 0.95), 3),
            "p50_added_ms": round(p50 - baseline, 3),
            "mean_ms": round(statistics.fmean(line.samples), 3),
            "requests": len(line.samples),
            "sql_statements": line.statements,
            "sql_commits": line.commits,
        }
    result: dict[str, Any] = {
        "benchmark": "what auth and the database add to POST /analyze",
        "command": " ".join(["python -m bench.auth_db", *(argv if argv is not None else sys.argv[1:])]),
        "requests": args.requests,
        "warmup": args.warmup,
        "round_size": args.round_size,
        "event_loop": loop_name,
        "image": {"width": width, "height": height, "bytes": len(image), "format": "JPEG"},
        "configurations": plan.configurations,
        "results": results,
        "skipped": {} if postgres_url else {POSTGRES: postgres_note},
        "postgresql": postgres_note,
        "notes": [
            "latency is the client's, one request at a time: httpx multipart encoding, ASGI transport, the app, "
            "and parsing the JSON answer; the same on every line, so `p50_added_ms` is what auth and the "
            "database add",
            "p50_added_ms is the line's p50 minus the baseline's p50",
            "SQL statements and commits are counted on one extra request per line, outside the timings "
            "(BEGIN and the pool's pre-ping are not counted)",
            "PostgreSQL is a local server over loopback TCP without fsync: a floor; a remote database adds its "
            "network round trip per statement and transaction step",
        ],
        "null_repository_database_file_created": null_database_created,
        "verifier": verifier,
        "versions": versions(*VERSIONED),
        "machine": machine(),
        "wall_s": round(time.perf_counter() - started, 1),
    }

    print(table(result))
    print(f"PostgreSQL: {postgres_note}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} in {result['wall_s']} s")
    return result


if __name__ == "__main__":
    main()
