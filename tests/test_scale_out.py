"""Scale-out: several `gateway serve` processes against one PostgreSQL.

DESIGN "Sessions and credentials" and "Scale": each process has its own
session cache, kept coherent by LISTEN/NOTIFY, so a revocation through one
replica (or the CLI) is refused by every other replica at once; while a
listener is down its cache is flushed and bypassed. `--workers N` runs N
processes on one port (SO_REUSEPORT); SIGTERM finishes in-flight requests,
flushes the batched last_seen writes and exits 0.

Everything here is real: `python -m gateway serve` subprocesses on real
ports, the test's PostgreSQL schema, the echo upstream, aiohttp clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import psutil
import pytest
from helpers import PASSWORD, cli_env, create_user, free_port, start_cli

from gateway.store.session_cache import LISTENER_APPLICATION_NAME
from gateway.web.metrics import FOLD_SECONDS

API = {"Accept": "application/json"}
COOKIE = "gateway_session"  # http public URL, no domain: no __Host- prefix
REFUSAL_BUDGET = 0.1  # seconds: the "within 100 ms"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_HITS = re.compile(r'^gateway_session_cache_total\{result="hit"\} (\S+)$', re.M)
_MISSES = re.compile(r'^gateway_session_cache_total\{result="miss"\} (\S+)$', re.M)


def report(what: str, seconds: float) -> None:
    """Measured latencies, visible with `pytest -s`."""
    print(f"\n[scale-out] {what}: {seconds * 1000:.1f} ms", file=sys.stderr)


# -- gateway processes ---------------------------------------------------------------


@dataclass
class Served:
    name: str
    proc: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def describe(self) -> str:
        return f"gateway {self.name} (exit {self.proc.returncode}), log:\n{self.log_text()}"


async def stop(served: Served, timeout: float = 15.0) -> int | None:
    """SIGTERM, wait; only if that fails, kill this process and its own children."""
    proc = served.proc
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout)
    if proc.returncode is None:
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
        proc.kill()
        await proc.wait()
        return None
    return proc.returncode


@pytest.fixture
async def launch(
    db_url: str, echo_url: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    """`await launch("a", workers=1)`: a `gateway serve` subprocess, ready to serve."""
    started: list[Served] = []

    async def start(name: str, *, workers: int = 1, extra: str = "") -> Served:
        port = free_port()
        config = tmp_path / f"{name}.toml"
        config.write_text(
            "[server]\n"
            f'listen = "127.0.0.1:{port}"\n'
            f'public_url = "http://127.0.0.1:{port}"\n'
            "[[upstream]]\n"
            'name = "echo"\n'
            f'url = "{echo_url}"\n' + extra
        )
        log = tmp_path / f"{name}.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "-c",
                config.name,
                "--workers",
                str(workers),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=tmp_path,
                env=cli_env(db_url),
            )
        served = Served(name, proc, port, log)
        started.append(served)
        return served

    yield start
    for served in started:
        await stop(served)


async def wait_ready(http: aiohttp.ClientSession, *gateways: Served, timeout: float = 30) -> None:
    async def one(served: Served) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if served.proc.returncode is not None:
                pytest.fail(f"serve exited before it was ready: {served.describe()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(served.url + "/_gateway/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
        pytest.fail(f"serve never became ready: {served.describe()}")

    await asyncio.gather(*(one(s) for s in gateways))


async def listeners(db: asyncpg.Connection) -> set[int]:
    """Backend pids of gateway LISTEN connections that have sent their LISTEN."""
    rows = await db.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query <> ''",
        LISTENER_APPLICATION_NAME,
    )
    return {r["pid"] for r in rows}


async def wait_listeners(
    db: asyncpg.Connection, count: int, exclude: set[int] = frozenset(), timeout: float = 10
) -> set[int]:
    """Wait until `count` listeners other than `exclude` (old or killed ones) are up."""
    deadline = time.monotonic() + timeout
    while True:
        live = await listeners(db) - exclude
        if len(live) >= count:
            # The cache is enabled right after LISTEN returns: give that a moment.
            await asyncio.sleep(0.05)
            return live
        assert time.monotonic() < deadline, f"only {len(live)} of {count} listeners came up"
        await asyncio.sleep(0.02)


# -- a browser that holds its cookies per gateway ------------------------------------


class Browser:
    """Cookies kept by hand: a session cookie is host-only, sent to B only explicitly."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.cookies: dict[str, str] = {}

    async def request(self, method: str, path: str, **kwargs) -> tuple[int, str]:
        headers = dict(kwargs.pop("headers", {}))
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        async with self.http.request(
            method, self.base + path, headers=headers, allow_redirects=False, **kwargs
        ) as response:
            text = await response.text()
            for name, morsel in response.cookies.items():
                if morsel.value and morsel["max-age"] != "0":
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
            return response.status, text

    async def csrf(self, path: str) -> str:
        status, text = await self.request("GET", path)
        match = _CSRF.search(text)
        assert match, f"no CSRF token on {path} (status {status}): {text[:300]}"
        return match.group(1)

    async def sign_in(self, username: str = "alice", password: str | None = None) -> str:
        form = {
            "csrf_token": await self.csrf("/_gateway/login"),
            "username": username,
            "password": password or PASSWORD,
            "rd": "/",
        }
        status, text = await self.request("POST", "/_gateway/login", data=form)
        assert status == 303, f"sign-in through {self.base} failed ({status}): {text[:300]}"
        assert self.cookies.get(COOKIE), "no session cookie after sign-in"
        return self.cookies[COOKIE]

    async def logout_token(self) -> str:
        return await self.csrf("/_gateway/logout")

    async def logout(self, csrf_token: str | None = None) -> float:
        """POST the sign-out form; returns time.monotonic() when the answer arrived."""
        token = csrf_token or await self.logout_token()
        status, text = await self.request("POST", "/_gateway/logout", data={"csrf_token": token})
        done = time.monotonic()
        assert status == 200, f"logout through {self.base} failed ({status}): {text[:300]}"
        assert COOKIE not in self.cookies, "logout did not expire the session cookie"
        return done


async def get_as(
    http: aiohttp.ClientSession, served: Served, token: str, path: str = "/x"
) -> tuple[int, dict | None]:
    async with http.get(
        served.url + path,
        headers={"Cookie": f"{COOKIE}={token}", **API},
        allow_redirects=False,
    ) as response:
        body = await response.json(content_type=None) if response.status == 200 else None
        return response.status, body


def remote_user(body: dict) -> str | None:
    for name, value in body["headers"]:
        if name.lower() == "x-remote-user":
            return value
    return None


async def cache_counts(http: aiohttp.ClientSession, served: Served) -> tuple[float, float]:
    """(hits, misses) from the gateway's own /metrics."""
    async with http.get(served.url + "/_gateway/metrics") as response:
        assert response.status == 200
        text = await response.text()
    hits, misses = _HITS.search(text), _MISSES.search(text)
    return (float(hits.group(1)) if hits else 0.0, float(misses.group(1)) if misses else 0.0)


async def cached(http: aiohttp.ClientSession, served: Served, token: str) -> None:
    """Request until the gateway answers from its cache (its hit counter moves)."""
    deadline = time.monotonic() + 5
    while True:
        hits, _ = await cache_counts(http, served)
        status, body = await get_as(http, served, token)
        assert status == 200, f"{served.name} refused a live session ({status})"
        assert remote_user(body) == "alice", body
        if (await cache_counts(http, served))[0] > hits:
            return
        assert time.monotonic() < deadline, f"{served.name} never served the session from cache"
        await asyncio.sleep(0.02)


async def refusal_latency(
    http: aiohttp.ClientSession, served: Served, token: str, since: float, limit: float = 3.0
) -> float:
    """Poll every ~5 ms with the old cookie; seconds from `since` to the first 401."""
    while True:
        status, _ = await get_as(http, served, token)
        if status == 401:
            return time.monotonic() - since
        assert status == 200, f"{served.name} answered {status}"
        if time.monotonic() - since > limit:
            pytest.fail(f"{served.name} still accepts the revoked cookie after {limit}s")
        await asyncio.sleep(0.005)


async def run_cli(tmp_path: Path, db_url: str, *args: str) -> float:
    """Run `python -m gateway ARGS`; returns time.monotonic() when it exited (0)."""
    proc = await start_cli(tmp_path, cli_env(db_url), *args)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    done = time.monotonic()
    assert proc.returncode == 0, f"gateway {' '.join(args)}: {out.decode()}{err.decode()}"
    return done


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


@pytest.fixture
async def alice_user(db: asyncpg.Connection) -> int:
    return await create_user(db, "alice")


@pytest.fixture
async def replicas(launch, http, db, alice_user) -> tuple[Served, Served]:
    """Two `serve --workers 1` replicas on one database, both listening for NOTIFY."""
    before = await listeners(db)
    a, b = await asyncio.gather(launch("a"), launch("b"))
    await wait_ready(http, a, b)
    await wait_listeners(db, 2, exclude=before)
    return a, b


# -- 1. logout through A is refused by B --------------------------------------------


async def test_logout_through_a_is_refused_by_b_within_100ms(replicas, http):
    a, b = replicas
    browser = Browser(http, a.url)
    token = await browser.sign_in()
    await cached(http, b, token)  # B validated it from the database, then from memory
    for _ in range(3):
        status, body = await get_as(http, b, token)
        assert status == 200
        assert remote_user(body) == "alice"

    logged_out = await browser.logout()
    latency = await refusal_latency(http, b, token, logged_out)

    report("B refuses after logout through A", latency)
    assert latency < REFUSAL_BUDGET
    assert (await get_as(http, a, token))[0] == 401


# -- 2. the same with the listener connections killed first --------------------------


async def test_logout_while_listeners_are_down_is_still_refused_by_b(
    replicas, http, db, tmp_path, db_url
):
    a, b = replicas
    browser = Browser(http, a.url)
    token = await browser.sign_in()
    await cached(http, b, token)
    logout_csrf = await browser.logout_token()  # so the logout below is one POST

    killed = await db.fetch(
        "SELECT pid, pg_terminate_backend(pid) AS ok FROM pg_stat_activity"
        " WHERE application_name = $1",
        LISTENER_APPLICATION_NAME,
    )
    killed_pids = {r["pid"] for r in killed if r["ok"]}
    assert len(killed_pids) >= 2
    # At once, long before the listeners' reconnect: B cannot hear this NOTIFY.
    logged_out = await browser.logout(logout_csrf)
    latency = await refusal_latency(http, b, token, logged_out)
    back = await db.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1", LISTENER_APPLICATION_NAME
    )
    report("B refuses after logout through A, listeners killed", latency)
    assert latency < REFUSAL_BUDGET
    # Refused while no listener was back (reconnecting waits 100 ms first): by
    # bypassing the cache, not by the reconnect's flush.
    assert not {r["pid"] for r in back} - killed_pids, "refused only after a listener was back"

    # The listeners come back by themselves, and with them B's cache.
    await wait_listeners(db, 2, exclude=killed_pids)
    second = Browser(http, a.url)
    token2 = await second.sign_in()
    await cached(http, b, token2)  # cached again: the cache was re-enabled
    revoked = await run_cli(tmp_path, db_url, "sessions", "revoke", "--user", "alice")
    latency = await refusal_latency(http, b, token2, revoked)
    report("B refuses after `sessions revoke --user` (after reconnect)", latency)
    assert latency < REFUSAL_BUDGET


# -- 3. user disable via the CLI ------------------------------------------------------


async def test_cli_user_disable_is_refused_by_both_replicas_within_100ms(
    replicas, http, db, tmp_path, db_url
):
    a, b = replicas
    token = await Browser(http, a.url).sign_in()
    await cached(http, a, token)
    await cached(http, b, token)

    disabled = await run_cli(tmp_path, db_url, "user", "disable", "alice")
    latency_a, latency_b = await asyncio.gather(
        refusal_latency(http, a, token, disabled), refusal_latency(http, b, token, disabled)
    )

    report("A refuses after `user disable`", latency_a)
    report("B refuses after `user disable`", latency_b)
    assert latency_a < REFUSAL_BUDGET
    assert latency_b < REFUSAL_BUDGET
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0


# -- 4. --workers 2: two processes, one port ------------------------------------------


def listening_children(parent_pid: int, port: int) -> set[int]:
    """Children of the serve process that hold a listening socket on `port`."""
    found = set()
    for child in psutil.Process(parent_pid).children():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            for conn in child.net_connections("tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                    found.add(child.pid)
    return found


def accepted_connections(pid: int, port: int) -> int:
    """Established client connections that process `pid` accepted on `port`."""
    return sum(
        1
        for conn in psutil.Process(pid).net_connections("tcp")
        if conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == port
    )


async def test_workers_share_one_port_and_a_session_works_on_every_worker(
    launch, http, db, alice_user
):
    """Which worker answered is read from the kernel: psutil lists each worker's sockets.

    Both workers must hold a LISTEN socket on the port (the parent none), and
    after 20 requests on 20 kept-alive connections each worker must hold some
    of those connections: every one of them answered the session with 200.
    """
    before = await listeners(db)
    served = await launch("w", workers=2)
    await wait_ready(http, served)
    await wait_listeners(db, 2, exclude=before)  # one LISTEN connection per worker

    workers = listening_children(served.proc.pid, served.port)
    assert len(workers) == 2, f"expected 2 worker processes on the port, got {workers}"
    parent_listens = any(
        c.status == psutil.CONN_LISTEN and c.laddr.port == served.port
        for c in psutil.Process(served.proc.pid).net_connections("tcp")
    )
    assert not parent_listens

    token = await Browser(http, served.url).sign_in()
    baseline = {pid: accepted_connections(pid, served.port) for pid in workers}
    clients = [aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) for _ in range(20)]
    try:
        for client in clients:  # one request per client: 20 distinct connections
            status, body = await get_as(client, served, token)
            assert status == 200
            assert remote_user(body) == "alice"
        per_worker = {
            pid: accepted_connections(pid, served.port) - baseline[pid] for pid in workers
        }
        assert sum(per_worker.values()) == 20, per_worker
        assert all(n >= 1 for n in per_worker.values()), f"one worker answered all: {per_worker}"
    finally:
        for client in clients:
            await client.close()
    assert await stop(served) == 0, served.describe()


# -- 5. graceful SIGTERM ---------------------------------------------------------------

PUBLIC_ECHO = '[[rule]]\npath = "/_echo/"\npolicy = "public"\n'


async def connection_refused(url: str) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as fresh,
            fresh.get(url, timeout=aiohttp.ClientTimeout(total=1)) as response,
        ):
            await response.read()
    except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError):
        return True
    except (aiohttp.ClientError, TimeoutError):
        return False
    return False


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_finishes_the_in_flight_request_then_exits_0(launch, http, db, workers):
    served = await launch(f"slow{workers}", workers=workers, extra=PUBLIC_ECHO)
    await wait_ready(http, served)

    async def slow() -> tuple[int, dict]:
        async with (
            aiohttp.ClientSession() as client,
            client.get(served.url + "/_echo/slow?seconds=2", headers=API) as response,
        ):
            return response.status, await response.json(content_type=None)

    started = time.monotonic()
    in_flight = asyncio.create_task(slow())
    await asyncio.sleep(0.3)
    assert not in_flight.done()
    served.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    # New connections are refused while the old request is still running.
    refused_after = None
    while not in_flight.done() and time.monotonic() - signalled < 1.5:
        if await connection_refused(served.url + "/_gateway/healthz"):
            refused_after = time.monotonic() - signalled
            break
        await asyncio.sleep(0.05)
    assert refused_after is not None, "the port still accepted connections after SIGTERM"
    assert not in_flight.done(), "the in-flight request ended before the listener closed"

    status, body = await asyncio.wait_for(in_flight, 10)
    assert status == 200
    assert body["path"] == "/_echo/slow?seconds=2"
    assert time.monotonic() - started >= 2.0

    returncode = await asyncio.wait_for(served.proc.wait(), 15)
    assert returncode == 0, served.describe()
    assert "Traceback" not in served.log_text(), served.describe()
    report(f"--workers {workers}: port closed after SIGTERM", refused_after)


# -- 6. batched last_seen is flushed on SIGTERM ---------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_flushes_the_batched_last_seen(launch, http, db, alice_user, workers):
    """A cache hit past TOUCH_INTERVAL queues last_seen in memory; SIGTERM must write it.

    Real time, no fake clock: the row's last_seen is set to 59 s ago, so the
    first (database) read does not touch it directly, and a cache hit 1.2 s
    later is past the 60 s interval and queues a batched touch. The periodic
    flusher runs every 10 s, so before SIGTERM the row must still be old.
    """
    before = await listeners(db)
    served = await launch(f"touch{workers}", workers=workers)
    await wait_ready(http, served)
    await wait_listeners(db, workers, exclude=before)
    token = await Browser(http, served.url).sign_in()
    old = datetime.now(UTC) - timedelta(seconds=59)
    assert await db.execute("UPDATE sessions SET last_seen = $1", old) == "UPDATE 1"

    # One connection for both requests, so with 2 workers the same one answers.
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(), connector=aiohttp.TCPConnector(limit=1)
    ) as one:
        hits, misses = await cache_counts(http, served)
        assert (await get_as(one, served, token))[0] == 200  # miss: read, cached, not touched
        assert await db.fetchval("SELECT last_seen FROM sessions") == old
        await asyncio.sleep(
            max(0.0, (old + timedelta(seconds=60.2) - datetime.now(UTC)).total_seconds())
        )
        hit_from = datetime.now(UTC)
        assert (await get_as(one, served, token))[0] == 200  # hit: touch queued in memory
        hit_until = datetime.now(UTC)
    # A scrape is exact for the worker answering it; the other folds its counts in
    # every FOLD_SECONDS, so with 2 workers the pair may need a moment to add up.
    deadline = time.monotonic() + 5 * FOLD_SECONDS
    while True:
        hits2, misses2 = await cache_counts(http, served)
        if (hits2 - hits, misses2 - misses) == (1, 1) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert (hits2 - hits, misses2 - misses) == (1, 1), "expected one miss, then one cache hit"
    assert await db.fetchval("SELECT last_seen FROM sessions") == old, "touch was not batched"

    assert await stop(served) == 0, served.describe()
    flushed = await db.fetchval("SELECT last_seen FROM sessions")
    assert hit_from <= flushed <= hit_until, (old, hit_from, flushed, hit_until)
