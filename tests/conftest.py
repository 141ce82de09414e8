"""Shared fixtures: a real PostgreSQL, a real echo upstream, a real gateway on real sockets.

The database is the embedded PostgreSQL unless GATEWAY_TEST_DATABASE_URL names
another server. Each test gets its own fresh schema (via search_path in the
URL), so tests never see each other's rows.

Only fixtures and hooks live here; what test modules import is in helpers.py.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from helpers import FakeClock, GatewayTestServer, create_user, require_binary, with_search_path

from gateway.app import create_app
from gateway.config import Config, build_config
from gateway.demo.echo import create_echo_app
from gateway.store.db import embedded_postgres, migrate

# The browser layer (tests/chromium.py): Chromium fixtures and page checks.
pytest_plugins = ["chromium"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs(name): the test runs the tool `name` (nginx, caddy, traefik, chromium): "
        "skipped when it is missing, failed instead under CI=true",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        require_binary(*mark.args)


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


@pytest.fixture
async def alice(db: asyncpg.Connection) -> int:
    return await create_user(db, "alice", groups=("staff",))
