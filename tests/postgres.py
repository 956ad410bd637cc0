"""A throwaway PostgreSQL server for tests: initdb into a temporary folder, start it on a free loopback port.

    postgres_server        session fixture: the `PostgresServer` every PostgreSQL test shares
    migrated_url(server)   a fresh database on it, migrated to Alembic's head; returns its URL
    server.create_database() / server.drop_database(url)   a fresh empty database, and away with it

The server starts once per test session (well under a second: initdb without fsync, then
`pg_ctl start -w`), listens on 127.0.0.1 only, trusts every local connection, and runs with
fsync, synchronous commit and full-page writes off: it is fast, and it loses everything on a
crash, which a test server may. Its folder (data, log, unix socket) is deleted at the end.

A small watchdog shell process holds the other end of a pipe from this process: when this
process ends, however it ends (the fixture's teardown, Ctrl-C, a crash, SIGKILL), the pipe
closes and the watchdog stops the server and deletes its folder. So no test run leaves a
PostgreSQL server or a data folder behind.

`TEST_DATABASE_URL=postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB` uses that server instead
(USER a superuser: the tests create databases and roles); the databases created on it are
dropped at the end. Without binaries and without TEST_DATABASE_URL the tests that need
PostgreSQL fail, saying what to install, unless SKIP_POSTGRES=1; that is ignored where CI=true
(GitHub Actions sets it), so CI never skips them silently.

Running as root (containers), initdb and the server run as the `postgres` OS user (or
`nobody`), since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from alembic import command
from sqlalchemy.engine import URL, make_url

from app.adapters.sql.engine import alembic_config
from tests.loopback import free_port

T = TypeVar("T")

SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
MISSING_MESSAGE = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found: looked in `pg_config --bindir`, "
    "on PATH and in /usr/lib/postgresql/*/bin. Install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`; "
    "macOS: `brew install postgresql@15`), or point TEST_DATABASE_URL at an existing server "
    "(postgresql+asyncpg://SUPERUSER:PASSWORD@HOST:PORT/postgres), or set SKIP_POSTGRES=1 to skip the "
    "PostgreSQL tests (never in CI)."
)
# UTF8, and the C locale: the same sorting on every machine, whatever its locales.
INITDB_OPTIONS = ("--encoding=UTF8", "--locale=C")
# Fast and unsafe: a test server may lose everything on a crash.
SERVER_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
# Stops the server and deletes its folder once its stdin closes: when the test process ends, however it ends.
WATCHDOG = 'cat >/dev/null; "$0" stop -D "$1" -m immediate -w >/dev/null 2>&1; rm -rf "$2"'


class PostgresStartError(RuntimeError):
    """The server did not start; the message carries the tail of its log."""


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: `pg_config --bindir`, then PATH, then the newest Debian one."""
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in SERVER_BINARIES):
            return bindir
    return None


def _server_account() -> pwd.struct_passwd | None:
    """As root, the OS account the server runs as (PostgreSQL refuses root); otherwise None: this one."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresStartError("Running as root, and there is neither a `postgres` nor a `nobody` account to run as.")


def _outside_event_loop(fn: Callable[..., T], *args: Any) -> T:
    """Call fn in a worker thread: asyncio.run (asyncpg here, Alembic's env.py) fails inside a running loop.

    The caller waits, and its event loop with it, if it has one: tens of milliseconds, in tests.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="postgres-admin") as pool:
        return pool.submit(fn, *args).result()


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresServer:
    """A PostgreSQL server for tests: one started here (`start`), or an existing one (`external`).

    `url` is a superuser's URL on the maintenance database; `create_database()` returns the URL
    of a fresh empty database, `postgresql+asyncpg://postgres@127.0.0.1:PORT/NAME`.
    """

    def __init__(
        self, url: str | URL, *, log_path: Path | None = None, watchdog: subprocess.Popen[bytes] | None = None
    ):
        self.url: URL = make_url(url).set(drivername="postgresql+asyncpg")
        self.log_path = log_path
        self._watchdog = watchdog
        self._created: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------------------------------

    @classmethod
    def start(cls, bindir: Path, *, timeout_s: int = 30) -> PostgresServer:
        """initdb into a fresh temporary folder and start the server there; it is gone again after `stop()`."""
        account = _server_account()
        as_account: dict[str, Any] = {}
        if account is not None:
            as_account = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        # Not pytest's tmp_path: its base folder is private to this user, and the server may run as another.
        # Short, too: the unix socket's path must fit in 107 bytes.
        folder = Path(tempfile.mkdtemp(prefix="pytest-postgres-"))
        if account is not None:
            os.chown(folder, account.pw_uid, account.pw_gid)
        data, log = folder / "data", folder / "postgres.log"
        run: dict[str, Any] = {"cwd": folder, "capture_output": True, "text": True, "timeout": timeout_s, **as_account}
        watchdog = subprocess.Popen(
            ["/bin/sh", "-c", WATCHDOG, str(bindir / "pg_ctl"), str(data), str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=folder,
            start_new_session=True,  # Ctrl-C in the terminal must not end it before it has cleaned up
            **as_account,
        )
        try:
            initdb = subprocess.run(
                [bindir / "initdb", "-D", data, "--auth=trust", "-U", "postgres", "--no-sync", *INITDB_OPTIONS],
                check=False,
                **run,
            )
            if initdb.returncode != 0:
                raise PostgresStartError(f"initdb failed ({initdb.returncode}):\n{initdb.stdout}{initdb.stderr}")
            pg_ctl_start = [bindir / "pg_ctl", "start", "-w", "-t", str(timeout_s), "-D", data, "-l", log]
            for _attempt in range(3):
                port = free_port()
                settings = {
                    "listen_addresses": "127.0.0.1",
                    "port": port,
                    "unix_socket_directories": folder,
                    **SERVER_SETTINGS,
                }
                options = shlex.join(arg for name, value in settings.items() for arg in ("-c", f"{name}={value}"))
                started = subprocess.run(
                    [*pg_ctl_start, "-o", options],
                    check=False,
                    start_new_session=True,  # nor stop the server before the teardown does
                    **run,
                )
                if started.returncode == 0:
                    break
                tail = _tail(log)
                if "could not bind" not in tail:  # another process took the free port in between: try another
                    raise PostgresStartError(
                        f"pg_ctl start failed ({started.returncode}): {started.stdout}{started.stderr}\n"
                        f"--- {log} (last lines) ---\n{tail}"
                    )
            else:
                raise PostgresStartError(f"no free port after 3 tries:\n--- {log} (last lines) ---\n{_tail(log)}")
        except subprocess.TimeoutExpired as exc:
            message = f"{exc}\n--- {log} (last lines) ---\n{_tail(log)}"  # before the folder is gone
            _finish_watchdog(watchdog, folder)
            raise PostgresStartError(message) from exc
        except BaseException:
            _finish_watchdog(watchdog, folder)
            raise
        url = URL.create("postgresql+asyncpg", username="postgres", host="127.0.0.1", port=port, database="postgres")
        return cls(url, log_path=log, watchdog=watchdog)

    @classmethod
    def external(cls, url: str) -> PostgresServer:
        """An existing server (TEST_DATABASE_URL), as a superuser; databases created on it are dropped on `stop()`."""
        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql":
            raise PostgresStartError(
                f"TEST_DATABASE_URL must be a postgresql+asyncpg:// URL, not {parsed.drivername}://"
            )
        server = cls(parsed.set(database=parsed.database or "postgres"))
        try:
            _outside_event_loop(asyncio.run, server._admin("select 1"))
        except (OSError, asyncpg.PostgresError) as exc:
            shown = server.url.render_as_string(hide_password=True)
            raise PostgresStartError(f"TEST_DATABASE_URL ({shown}) is not reachable: {exc!r}") from exc
        return server

    def stop(self) -> None:
        """Stop the server started here and delete its folder; on an external server, drop what was created."""
        if self._watchdog is not None:
            folder = self.log_path.parent if self.log_path else None
            _finish_watchdog(self._watchdog, folder)
            self._watchdog = None
        else:
            for name in reversed(self._created):
                self.drop_database(name)
        self._created.clear()

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- databases ---------------------------------------------------------------------------------------------

    def create_database(self, prefix: str = "test") -> str:
        """Create a fresh, empty database; return its URL (password included, as SQLAlchemy and Alembic need it)."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        _outside_event_loop(asyncio.run, self._admin(f"create database {_quote_ident(name)}"))
        self._created.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url_or_name: str | URL) -> None:
        """Drop a database (by URL or name), disconnecting whoever is still connected to it."""
        name = (
            url_or_name if isinstance(url_or_name, str) and "://" not in url_or_name else make_url(url_or_name).database
        )
        if not name or name == self.url.database:
            raise ValueError(f"refusing to drop the database {name!r}")
        _outside_event_loop(asyncio.run, self._admin(f"drop database if exists {_quote_ident(name)} with (force)"))
        if name in self._created:
            self._created.remove(name)

    async def _admin(self, statement: str) -> None:
        dsn = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def _finish_watchdog(watchdog: subprocess.Popen[bytes], folder: Path | None) -> None:
    """Close the watchdog's pipe: it stops the server and deletes the folder. Wait for it, and make sure."""
    assert watchdog.stdin is not None
    watchdog.stdin.close()
    try:
        watchdog.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(watchdog.pid, signal.SIGKILL)
        watchdog.wait()
    if folder is not None and folder.exists():  # the watchdog could not: this process created it, it can
        shutil.rmtree(folder, ignore_errors=True)


def migrated_url(server: PostgresServer) -> str:
    """A fresh database on `server`, migrated to Alembic's head; returns its URL. Callable from sync or async code."""
    url = server.create_database()
    # Alembic's env.py calls asyncio.run: never inside a running event loop.
    _outside_event_loop(command.upgrade, alembic_config(url), "head")
    return url


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes"}


# One server per process, however many modules import the fixture (each import is a fixture of its own).
_shared: PostgresServer | None = None
_users = 0


def _open_shared() -> PostgresServer:
    global _shared, _users
    if _shared is None:
        external = os.environ.get("TEST_DATABASE_URL")
        if external:
            _shared = PostgresServer.external(external)
        else:
            bindir = find_bindir()
            if bindir is None:
                if _truthy(os.environ.get("SKIP_POSTGRES")) and not _truthy(os.environ.get("CI")):
                    pytest.skip(f"SKIP_POSTGRES is set. {MISSING_MESSAGE}")
                pytest.fail(MISSING_MESSAGE, pytrace=False)
            _shared = PostgresServer.start(bindir)
    _users += 1
    return _shared


def _close_shared() -> None:
    global _shared, _users
    _users -= 1
    if _users == 0 and _shared is not None:
        server, _shared = _shared, None
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The PostgreSQL server for this test session: TEST_DATABASE_URL's, or a throwaway one started here."""
    try:
        server = _open_shared()
    except PostgresStartError as exc:
        failure = f"PostgreSQL for tests: {exc}"
    else:
        failure = None
    if failure is not None:  # outside the except clause: the message alone, not the exception chain again
        pytest.fail(failure, pytrace=False)
    try:
        yield server
    finally:
        _close_shared()
