"""`gateway demo`: the whole product on one machine with one command."""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
from pathlib import Path

import asyncpg
from aiohttp import web

from . import users
from .app import create_app
from .config import (
    Config,
    DatabaseConfig,
    Rule,
    ServerConfig,
    Upstream,
    parse_listen,
)
from .db import database_url, migrate
from .echo import create_echo_app
from .logs import AccessLogger, access_logger
from .passwords import Passwords

DEMO_USER = "demo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
            await users.set_password(conn, DEMO_USER, password_hash)
            await users.set_disabled(conn, DEMO_USER, False)
    finally:
        await conn.close()


async def _run(config: Config, echo_port: int, password: str) -> None:
    await _ensure_demo_user(config.database.url, password)
    echo_runner = web.AppRunner(create_echo_app())
    await echo_runner.setup()
    await web.TCPSite(echo_runner, "127.0.0.1", echo_port).start()
    runner = web.AppRunner(
        create_app(config), access_log=access_logger(config.log), access_log_class=AccessLogger
    )
    await runner.setup()
    await web.TCPSite(runner, config.server.host, config.server.port).start()
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # A clean stop, so the embedded PostgreSQL is shut down with us.
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await echo_runner.cleanup()


def run_demo(listen: str = "127.0.0.1:8080", data_dir: str = ".gateway") -> int:
    host, port = parse_listen(listen)
    echo_port = _free_port()
    public_host = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    base = Config(
        server=ServerConfig(host=host, port=port, public_url=f"http://{public_host}:{port}"),
        database=DatabaseConfig(data_dir=Path(data_dir).resolve()),
        upstreams=(Upstream(name="demo-app", url=f"http://127.0.0.1:{echo_port}"),),
        rules=(Rule(path="/public/", policy="public"),),
        source="<demo>",
    )
    password = secrets.token_urlsafe(12)
    with database_url("", base.database.data_dir) as url:
        try:
            asyncio.run(_run(base.with_database_url(url), echo_port, password))
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            print(f"gateway: demo: cannot listen on {listen}: {exc.strerror or exc}")
            return 1
    return 0
