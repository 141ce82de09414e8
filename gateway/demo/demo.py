"""`gateway demo`: the whole product on one machine with one command."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import secrets
import socket
import sys
from pathlib import Path
from typing import IO

import asyncpg
from aiohttp import web

from ..app import create_app
from ..config import (
    Config,
    DatabaseConfig,
    Rule,
    ServerConfig,
    Upstream,
)
from ..policy.passwords import Passwords
from ..settings import parse_listen
from ..store import users
from ..store.db import database_url, migrate
from ..web import connections
from ..web.connections import GatewayRunner
from ..web.logs import AccessLogger, access_logger
from .echo import create_echo_app

DEMO_USER = "demo"


def _hold_data_dir(data: Path) -> IO[str] | None:
    """An exclusive lock on the data directory, or None when another demo holds it.

    Two demos on one directory share its database and so its demo user: the
    second one's new password would silently replace the first one's.
    """
    data.mkdir(parents=True, exist_ok=True)
    lock = (data / "demo.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return None
    return lock


async def _ensure_demo_user(url: str, password: str) -> None:
    passwords = Passwords(workers=1)
    password_hash = passwords.hash(password)
    passwords.close()
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        if await users.get_user(conn, DEMO_USER) is None:
            await users.add_user(
                conn,
                DEMO_USER,
                password_hash,
                email="demo@example.com",
                name="Demo User",
                groups=("users",),
            )
        else:
            # A new password each run: the last run's sessions end with the old one.
            await users.set_password(conn, DEMO_USER, password_hash, end_sessions=True)
            await users.set_disabled(conn, DEMO_USER, False)
    finally:
        await conn.close()


async def _run(config: Config, gateway_sock: socket.socket, echo_sock: socket.socket) -> None:
    password = secrets.token_urlsafe(12)
    await _ensure_demo_user(config.database.url, password)
    echo_runner = web.AppRunner(create_echo_app(config.server.prefix))
    await echo_runner.setup()
    await web.SockSite(echo_runner, echo_sock).start()
    runner = GatewayRunner(
        create_app(config), access_log=access_logger(config.log), access_log_class=AccessLogger
    )
    await runner.setup()
    await web.SockSite(runner, gateway_sock).start()
    url = config.server.public_url
    print(
        f"""
  Gateway demo is running.

    open      {url}/
    username  {DEMO_USER}
    password  {password}      (shown once; a new one each run)

  The demo app behind it has no login of its own; {url}/public/ is open to all.
  Sign out at {url}{config.server.prefix}/logout. Press Ctrl+C to stop.
""",
        flush=True,
    )
    stop = connections.stop_signals()  # so the embedded PostgreSQL stops with us
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await echo_runner.cleanup()


def run_demo(listen: str = "127.0.0.1:8080", data_dir: str = ".gateway") -> int:
    host, port = parse_listen(listen)
    try:
        # First of all: a demo that cannot listen must not start a database, nor
        # give the demo user a new password that a running demo has not printed.
        gateway_sock = connections.listen(host, port)
    except OSError as exc:
        print(f"gateway: demo: cannot listen on {listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    data = Path(data_dir).resolve()
    lock = _hold_data_dir(data)
    if lock is None:
        gateway_sock.close()
        print(
            f"gateway: demo: another gateway demo is running with data directory {data}",
            file=sys.stderr,
        )
        return 1
    echo_sock = connections.listen("127.0.0.1", 0)
    echo_port = echo_sock.getsockname()[1]
    public_host = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    base = Config(
        server=ServerConfig(host=host, port=port, public_url=f"http://{public_host}:{port}"),
        database=DatabaseConfig(data_dir=data),
        upstreams=(Upstream(name="demo-app", url=f"http://127.0.0.1:{echo_port}"),),
        rules=(Rule(path="/public/", policy="public"),),
        source="<demo>",
    )
    with (
        lock,
        gateway_sock,
        echo_sock,
        database_url("", base.database.data_dir) as url,
        contextlib.suppress(KeyboardInterrupt),
    ):
        asyncio.run(_run(base.with_database_url(url), gateway_sock, echo_sock))
    return 0
