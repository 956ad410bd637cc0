"""Smoke test of `bench.auth_db`: a handful of requests per line, end to end, without PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

from bench import auth_db

LINES = {
    auth_db.BASELINE,
    auth_db.AUTH,
    auth_db.SQLITE,
    auth_db.SQLITE_KEY,
    auth_db.REPLAY,
    auth_db.CACHED,
}
NULL_REPOSITORY_LINES = {auth_db.BASELINE, auth_db.AUTH}


def test_bench_runs_end_to_end_and_writes_every_line(tmp_path: Path) -> None:
    out, workdir = tmp_path / "results" / "auth_db.json", tmp_path / "work"

    returned = auth_db.main(
        [
            *("--requests", "10", "--warmup", "2", "--round-size", "5", "--verifier-runs", "30"),
            *("--no-postgres", "--out", str(out), "--workdir", str(workdir)),
        ]
    )

    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned))
    assert set(written["results"]) == LINES
    assert set(written["configurations"]) == LINES
    assert written["skipped"] == {auth_db.POSTGRES: "skipped: --no-postgres"}
    for name, row in written["results"].items():
        assert row["requests"] == 10, name
        assert 0 < row["p50_ms"] <= row["p95_ms"], name
    assert written["results"][auth_db.BASELINE]["p50_added_ms"] == 0
    for alg in ("ES256", "RS256", "HS256"):
        assert written["verifier"][alg]["p50_us"] > 0
        assert written["verifier"][alg]["runs"] == 30
    assert {"python", "sqlalchemy", "asyncpg", "aiosqlite", "PyJWT"} <= set(written["versions"])
    assert written["machine"]["cpu_count"]

    # The null repository never reaches a database: no file, and not one SQL statement on its lines.
    for name in NULL_REPOSITORY_LINES:
        assert written["configurations"][name]["repository"] == "null"
        assert written["results"][name]["sql_statements"] == 0
    assert written["null_repository_database_file_created"] is False
    assert not (workdir / "null-repository-never-opens.db").exists()
    assert {path.name for path in workdir.glob("*.db")} == {"auth-sqlite.db", "auth-sqlite-idempotency-key.db"}
    # ... while the SQLite lines really ran SQL: dedupe lookup, quota, insert, update.
    assert written["results"][auth_db.SQLITE]["sql_statements"] >= 4
    assert (
        written["results"][auth_db.SQLITE_KEY]["sql_statements"] > written["results"][auth_db.SQLITE]["sql_statements"]
    )
