"""Shared fixtures: a real PostgreSQL, a real echo upstream, a real gateway on real sockets.

The database is the embedded PostgreSQL unless GATEWAY_TEST_DATABASE_URL names
another server. Each test gets its own fresh schema (via search_path in the
URL), so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.config import Config, build_config
from gateway.demo.echo import create_echo_app
from gateway.policy.passwords import Passwords
from gateway.store import users
from gateway.store.db import embedded_postgres, migrate
from gateway.web.connections import GatewayRunner

PASSWORD = "correct horse battery staple"

# Host headers no app may be asked with (paths.valid_host refuses each; the
# gateway must answer them with a 4xx, never forward them or fail).
NONSENSE_HOSTS = [
    "",
    "../../etc",
    "a b",
    "h" * 1024,
    "[::1",
    "[::1]:x",
    ":",
    "::::",
    "\u00e9.example",
    "example.com:99999",
    "example.com:-1",
    "[]",
    "@",
    "a/b",
    "a\\b",
    "x.com:",
    "a@b.com",
]
REPO = Path(__file__).resolve().parent.parent

# The browser layer (tests/chromium.py): Chromium fixtures and page checks.
pytest_plugins = ["chromium"]


def in_ci() -> bool:
    """Under CI (CI=true, as .ci/run's callers set it) nothing may be skipped for want
    of a tool: a missing nginx, Caddy, Traefik or Chromium fails the run."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start_cli(
    cwd: Path, env: dict[str, str], *args: str, stdin: bool = False
) -> asyncio.subprocess.Process:
    """`python -m gateway ARGS` as an operator runs it: no terminal, output captured."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=env,
    )


def cli_env(db_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a `python -m gateway` subprocess on this test's database.

    No GATEWAY_* from the developer's shell leaks in; PYTHONPATH finds this checkout.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GATEWAY_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env["GATEWAY_DATABASE_URL"] = db_url
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    env.update(extra or {})
    return env


@pytest.fixture(scope="session")
def database_server() -> Iterator[str]:
    url = os.environ.get("GATEWAY_TEST_DATABASE_URL")
    if url:
        yield url
        return
    # Not under pytest's basetemp: a second pytest run prunes old basetemps,
    # which would pull the data directory from under a run still going.
    data_dir = Path(tempfile.mkdtemp(prefix="gateway-test-pg-"))
    try:
        with embedded_postgres(data_dir) as embedded_url:
            yield embedded_url
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def with_search_path(url: str, schema: str) -> str:
    # asyncpg passes unknown DSN query parameters on as server settings.
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


@pytest.fixture
async def db_url(database_server: str) -> AsyncIterator[str]:
    schema = "t_" + secrets.token_hex(6)
    conn = await asyncpg.connect(database_server)
    await conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_search_path(database_server, schema)
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to this test's migrated schema, for arranging and checking rows."""
    conn = await asyncpg.connect(db_url)
    await migrate(conn)
    try:
        yield conn
    finally:
        await conn.close()


class FakeClock:
    """Injectable clock: tests move time instead of sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def echo_server() -> AsyncIterator[TestServer]:
    server = TestServer(create_echo_app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
def echo_url(echo_server: TestServer) -> str:
    return str(echo_server.make_url("")).rstrip("/")


@pytest.fixture
def make_config(db_url: str, echo_url: str) -> Callable[..., Config]:
    """Config built the way an operator's TOML is, pointed at this test's database and echo."""

    def make(**sections: Any) -> Config:
        data: dict[str, Any] = {
            "database": {"url": db_url},
            "upstream": [{"name": "echo", "url": echo_url}],
        }
        data.update(sections)
        return build_config(data, source="test.toml", env={})

    return make


class GatewayTestServer(TestServer):
    """aiohttp's TestServer running the gateway the way `gateway serve` does:
    GatewayRunner (connection rules, keep-alive, no handler cancellation)."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return GatewayRunner(self.app, **kwargs)


@pytest.fixture
async def gateway(
    make_config: Callable[..., Config], clock: FakeClock
) -> AsyncIterator[Callable[..., Awaitable[TestClient]]]:
    """Start a gateway on a real socket: `client = await gateway(session={...})`."""
    clients: list[TestClient] = []

    async def start(
        config: Config | None = None, *, port: int | None = None, **sections: Any
    ) -> TestClient:
        app = create_app(config or make_config(**sections), clock=clock)
        client = TestClient(GatewayTestServer(app, host="127.0.0.1", port=port))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


async def create_user(
    db: asyncpg.Connection,
    name: str = "alice",
    password: str = PASSWORD,
    *,
    groups: tuple[str, ...] = (),
    email: str = "",
    display_name: str = "",
) -> int:
    passwords = Passwords(workers=1)
    try:
        password_hash = passwords.hash(password)
    finally:
        passwords.close()
    return await users.add_user(
        db,
        name,
        password_hash,
        email=email or f"{name}@example.com",
        name=display_name or name.title(),
        groups=groups,
    )


@pytest.fixture
async def alice(db: asyncpg.Connection) -> int:
    return await create_user(db, "alice", groups=("staff",))


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def csrf_token(client: TestClient, path: str = "/_gateway/login") -> str:
    response = await client.get(path)
    match = _CSRF.search(await response.text())
    assert match, f"no CSRF token on {path} (status {response.status})"
    return match.group(1)


@dataclass
class LoginResult:
    status: int
    location: str | None
    token: str | None  # the session cookie set, if any
    text: str
    response: aiohttp.ClientResponse


async def sign_in(
    client: TestClient,
    username: str = "alice",
    password: str = PASSWORD,
    *,
    rd: str = "",
    remember: bool = False,
    cookie_name: str = "gateway_session",
) -> LoginResult:
    """The browser's sign-in: fetch the form (CSRF cookie + token), then POST it."""
    form = {
        "csrf_token": await csrf_token(client),
        "username": username,
        "password": password,
        "rd": rd,
    }
    if remember:
        form["remember"] = "1"
    response = await client.post("/_gateway/login", data=form, allow_redirects=False)
    cookie = response.cookies.get(cookie_name)
    return LoginResult(
        status=response.status,
        location=response.headers.get("Location"),
        token=cookie.value if cookie is not None and cookie.value else None,
        text=await response.text(),
        response=response,
    )


def cookie_header(token: str, name: str = "gateway_session") -> dict[str, str]:
    return {"Cookie": f"{name}={token}"}


async def fresh_get(
    client: TestClient, path: str, token: str, **headers: str
) -> aiohttp.ClientResponse:
    """A request carrying exactly this session cookie, bypassing the client's cookie jar."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        response = await session.get(
            client.make_url(path),
            headers={**cookie_header(token), **headers},
            allow_redirects=False,
        )
        await response.read()
        return response


# -- metrics, as a scraper reads them ------------------------------------------------


def metric(text: str, sample: str, **labels: str) -> float:
    """Sum of the samples called `sample` whose labels include `labels` (0 when absent)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def scrape(client: TestClient) -> str:
    response = await client.get("/_gateway/metrics")
    text = await response.text()
    assert response.status == 200, text
    return text


__all__ = ["PASSWORD", "FakeClock", "create_user", "csrf_token", "fresh_get", "sign_in", "web"]
