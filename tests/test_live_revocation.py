"""Live revocation (store.live): a session's end cuts what it holds open.

When a session ends, for whatever reason and in whichever process, the
WebSockets proxied for it are closed with 1008 "session ended" and its
long downloads are cut, on every worker and replica, within 1 s.

Everything is real: PostgreSQL (the NOTIFY comes from sql/003's triggers),
the gateway on real sockets (in this process, or `python -m gateway serve`
subprocesses), an aiohttp upstream started here with a WebSocket echo and a
slow streaming route, aiohttp clients. Expiry is moved with the FakeClock,
never waited for; only the close itself is waited for, against the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import aiohttp
import asyncpg
import psutil
import pytest
import test_scale_out as scale_out
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from helpers import PASSWORD, FakeClock, create_user

from gateway.store.live import SWEEP_SECONDS
from gateway.store.session_cache import LISTENER_APPLICATION_NAME
from gateway.store.sessions import TOUCH_FLUSH_SECONDS, SessionStore, hash_token
from gateway.web.database import INVALIDATOR, LIVE
from gateway.web.exchange import SESSIONS

# The gateway processes, the CLI and the browser of test_scale_out, reused as they are.
launch = scale_out.launch
replicas = scale_out.replicas
http = scale_out.http
alice_user = scale_out.alice_user

COOKIE = scale_out.COOKIE
API = {"Accept": "application/json"}
CUT_BUDGET = 1.0  # seconds: the feature's "within 1 s"
RECONNECT_BUDGET = 2.0  # with the LISTEN connection killed: sweep recheck or reconnect 'all'
CHUNK = 64 * 1024
NEW_PASSWORD = "a much longer passphrase 42"
_tags = itertools.count()


def report(what: str, seconds: float) -> None:
    """Measured latencies, visible with `pytest -s`."""
    print(f"\n[live-revocation] {what}: {seconds * 1000:.1f} ms", file=sys.stderr)


def tag(name: str) -> str:
    return f"{name}-{next(_tags)}"


# -- the upstream: a WebSocket echo, a push-only feed, a slow stream ----------------


@dataclass
class Upstream:
    """The app behind the gateway, recording how each connection (by `?tag=`) ended."""

    url: str = ""
    # tag -> (close code, reason) as the app saw the WebSocket end
    ws_ends: dict[str, asyncio.Future[tuple[int | None, str]]] = field(default_factory=dict)
    # tag -> "complete" or "cut", as the app saw its streamed body end
    stream_ends: dict[str, asyncio.Future[str]] = field(default_factory=dict)
    # tag -> set when the request reached the app
    arrived: dict[str, asyncio.Event] = field(default_factory=dict)

    def ws_end(self, name: str) -> asyncio.Future[tuple[int | None, str]]:
        return self.ws_ends.setdefault(name, asyncio.get_running_loop().create_future())

    def stream_end(self, name: str) -> asyncio.Future[str]:
        return self.stream_ends.setdefault(name, asyncio.get_running_loop().create_future())

    def arrival(self, name: str) -> asyncio.Event:
        return self.arrived.setdefault(name, asyncio.Event())

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/feed", self.feed)
        app.router.add_get("/stream", self.stream)
        app.router.add_get("/small", self.small)
        app.router.add_get("/{tail:.*}", self.whoami)
        return app

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        """Echo. `?delay=S`: the handshake answer comes S seconds late."""
        name = request.query.get("tag", "")
        self.arrival(name).set()
        await asyncio.sleep(float(request.query.get("delay", "0")))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"hello": request.headers.get("X-Remote-User", "")})
        end: tuple[int | None, str] = (None, "")
        while True:
            message = await ws.receive()
            if message.type is WSMsgType.TEXT:
                await ws.send_str(message.data)
                continue
            if message.type is WSMsgType.CLOSE:
                end = (message.data, message.extra or "")
            else:
                end = (ws.close_code, "")
            break
        future = self.ws_end(name)
        if not future.done():
            future.set_result(end)
        return ws

    async def feed(self, request: web.Request) -> web.WebSocketResponse:
        """Push-only, like a ticker: sends every 0.1 s for 5 s and never reads."""
        name = request.query.get("tag", "")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"hello": request.headers.get("X-Remote-User", "")})
        with contextlib.suppress(ConnectionError):
            for i in range(50):
                await asyncio.sleep(0.1)
                await ws.send_str(f"tick {i}")
        future = self.ws_end(name)
        if not future.done():
            future.set_result((ws.close_code, "feed over"))
        await ws.close()
        return ws

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """`chunks` x 64 KiB, one every `every` s, after `first_delay` s with only the
        headers sent; `length=1` declares Content-Length instead of chunked framing."""
        name = request.query.get("tag", "")
        chunks = int(request.query.get("chunks", "300"))
        every = float(request.query.get("every", "0.2"))
        response = web.StreamResponse()
        response.content_type = "application/octet-stream"
        if request.query.get("length") == "1":
            response.content_length = chunks * CHUNK
        await response.prepare(request)
        outcome = "cut"
        try:
            await asyncio.sleep(float(request.query.get("first_delay", "0")))
            for _ in range(chunks):
                await response.write(b"x" * CHUNK)
                await asyncio.sleep(every)
            await response.write_eof()
            outcome = "complete"
        except ConnectionError:
            pass
        finally:
            future = self.stream_end(name)
            if not future.done():
                future.set_result(outcome)
        return response

    async def small(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("delay", "0")))
        return web.Response(body=b"s" * (32 * 1024), content_type="application/octet-stream")

    async def whoami(self, request: web.Request) -> web.Response:
        return web.json_response({"user": request.headers.get("X-Remote-User", "")})


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    app = Upstream()
    server = TestServer(app.app(), host="127.0.0.1")
    await server.start_server()
    app.url = str(server.make_url("")).rstrip("/")
    try:
        yield app
    finally:
        await server.close()


@pytest.fixture
def echo_url(upstream: Upstream) -> str:
    """Every gateway here (the `gateway` fixture's and the `launch`ed ones) proxies to it."""
    return upstream.url


# -- clients ------------------------------------------------------------------------


class Person(scale_out.Browser):
    """test_scale_out's browser, with "keep me signed in" and the session's token."""

    async def sign_in(  # type: ignore[override]
        self, username: str = "alice", password: str | None = None, *, remember: bool = False
    ) -> str:
        form = {
            "csrf_token": await self.csrf("/_gateway/login"),
            "username": username,
            "password": password or PASSWORD,
            "rd": "/",
        }
        if remember:
            form["remember"] = "1"
        status, text = await self.request("POST", "/_gateway/login", data=form)
        assert status == 303, f"sign-in through {self.base} failed ({status}): {text[:300]}"
        return self.token

    @property
    def token(self) -> str:
        token = self.cookies.get(COOKIE)
        assert token, "no session cookie"
        return token

    async def post(self, path: str, form: dict[str, str], *, csrf_from: str) -> int:
        """POST one of the gateway's forms with a fresh CSRF token; returns the status."""
        data = {"csrf_token": await self.csrf(csrf_from), **form}
        status, text = await self.request("POST", path, data=data)
        assert status < 400, f"POST {path}: {status} {text[:300]}"
        return status


async def start(gateway: Callable[..., Awaitable[TestClient]], **sections) -> TestClient:
    """The in-process gateway, once its LISTEN connection is up (the cache serves)."""
    client = await gateway(**sections)
    await asyncio.wait_for(client.server.app[INVALIDATOR].connected.wait(), 10)
    return client


def base_of(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


async def status_as(http: aiohttp.ClientSession, base: str, token: str, path: str = "/x") -> int:
    async with http.get(
        base + path, headers={"Cookie": f"{COOKIE}={token}", **API}, allow_redirects=False
    ) as response:
        await response.read()
        return response.status


async def open_ws(
    http: aiohttp.ClientSession, base: str, token: str, name: str, path: str = "/ws", **query
) -> aiohttp.ClientWebSocketResponse:
    params = "".join(f"&{k}={v}" for k, v in query.items())
    ws = await http.ws_connect(
        f"{base}{path}?tag={name}{params}", headers={"Cookie": f"{COOKIE}={token}"}
    )
    hello = await ws.receive_json(timeout=5)
    assert hello["hello"], hello  # the app saw the identity: signed in
    return ws


async def echoes(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Still open and relayed both ways."""
    text = f"still here {uuid.uuid4()}"
    await ws.send_str(text)
    message = await ws.receive(timeout=3)
    assert message.type is WSMsgType.TEXT, (message, ws.close_code)
    assert message.data == text


async def closed_within(
    ws: aiohttp.ClientWebSocketResponse, since: float, budget: float = CUT_BUDGET
) -> float:
    """Wait (at most until `since + budget`) for the gateway's 1008; returns the latency."""
    try:
        message = await asyncio.wait_for(
            ws.receive(), max(since + budget - time.monotonic(), 0.001)
        )
    except TimeoutError:
        pytest.fail(f"the WebSocket is still open {budget:.1f} s after the session ended")
    latency = time.monotonic() - since
    assert message.type is WSMsgType.CLOSE, message
    assert (message.data, message.extra) == (1008, "session ended"), message
    assert ws.close_code == 1008
    assert latency < budget
    return latency


async def upstream_saw_1008(app: Upstream, name: str) -> None:
    """The app's side of the relayed WebSocket was closed too, with the same code."""
    end = await asyncio.wait_for(app.ws_end(name), CUT_BUDGET)
    assert end == (1008, "session ended"), end


async def session_id(db: asyncpg.Connection, token: str) -> uuid.UUID:
    found = await db.fetchval("SELECT id FROM sessions WHERE token_hash = $1", hash_token(token))
    assert found is not None
    return found


def kept_alive_at(store: SessionStore, token: str):
    """When this process last counted the session as active (the cached entry's last_seen)."""
    entry = store.cache.peek(hash_token(token))
    assert entry is not None, "the session is not in this process's cache"
    return entry.last_seen


async def next_sweep(store: SessionStore, clock: FakeClock, token: str) -> None:
    """Move the clock a second and wait for the sweep to count the open connection
    (its keep_alive stamps the cached entry with the new time): a sweep just ran."""
    clock.advance(1)
    deadline = time.monotonic() + 3 * SWEEP_SECONDS
    while kept_alive_at(store, token) != clock.now:
        assert time.monotonic() < deadline, "no sweep ran"
        await asyncio.sleep(0.002)


async def watched(app: web.Application, count: int) -> None:
    """store.live holds `count` connections (a closing relay lets go a moment after)."""
    deadline = time.monotonic() + 2
    while len(app[LIVE]) != count:
        assert time.monotonic() < deadline, f"{len(app[LIVE])} connections watched, not {count}"
        await asyncio.sleep(0.005)


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def revoke_by_sql(db: asyncpg.Connection, token: str, user_id: int, how: str) -> None:
    if how == "sql_delete":
        sid = await session_id(db, token)
        assert await db.execute("DELETE FROM sessions WHERE id = $1", sid) == "DELETE 1"
    else:
        await db.execute("UPDATE users SET disabled = true WHERE id = $1", user_id)


# -- 1. every way a session ends closes its WebSockets, and only its own -------------


@dataclass
class Scene:
    """One gateway; alice signed in twice (the target, and `other` with "keep me signed
    in"), bob once (kept signed in): WebSockets for all three."""

    db: asyncpg.Connection
    clock: FakeClock
    db_url: str
    tmp_path: Path
    client: TestClient
    target: Person
    other: Person
    bob: Person
    alice_id: int


async def by_logout(s: Scene) -> float:
    csrf = await s.target.logout_token()
    return await s.target.logout(csrf)  # the same cookie, its own CSRF token


async def by_cli_revoke(s: Scene) -> float:
    sid = await session_id(s.db, s.target.token)
    return await scale_out.run_cli(s.tmp_path, s.db_url, "sessions", "revoke", str(sid))


async def by_sql_delete(s: Scene) -> float:
    sid = await session_id(s.db, s.target.token)
    assert await s.db.execute("DELETE FROM sessions WHERE id = $1", sid) == "DELETE 1"
    return time.monotonic()


async def by_sessions_end(s: Scene) -> float:
    sid = await session_id(s.db, s.target.token)
    form = {"end": str(sid)}
    assert await s.other.post("/_gateway/sessions", form, csrf_from="/_gateway/sessions") == 303
    return time.monotonic()


async def by_sessions_end_others(s: Scene) -> float:
    form = {"end": "others"}
    assert await s.other.post("/_gateway/sessions", form, csrf_from="/_gateway/sessions") == 303
    return time.monotonic()


async def by_logout_everywhere(s: Scene) -> float:
    path = "/_gateway/logout?everywhere=1"
    assert await s.other.post(path, {}, csrf_from="/_gateway/logout") == 200
    return time.monotonic()


async def by_password_change(s: Scene) -> float:
    old = s.other.token
    form = {
        "current_password": PASSWORD,
        "new_password": NEW_PASSWORD,
        "confirm_password": NEW_PASSWORD,
    }
    assert await s.other.post("/_gateway/password", form, csrf_from="/_gateway/password") == 200
    assert s.other.token != old  # the browser that asked is a new session
    return time.monotonic()


async def by_user_disabled(s: Scene) -> float:
    # Raw SQL, as an operator might: no session row is deleted, only 'u:<id>' is sent.
    done = await s.db.execute("UPDATE users SET disabled = true WHERE id = $1", s.alice_id)
    assert done == "UPDATE 1"
    return time.monotonic()


async def by_user_deleted(s: Scene) -> float:
    assert await s.db.execute("DELETE FROM users WHERE id = $1", s.alice_id) == "DELETE 1"
    return time.monotonic()


async def by_absolute_expiry(s: Scene) -> float:
    """No NOTIFY: the sweep, every (real) second, finds the session past expires_at.
    The clock jumps half a sweep period after a sweep ran (the worst case, right after
    one, is test_absolute_expiry_worst_case_is_one_sweep_period)."""
    store = s.client.server.app[SESSIONS]
    await next_sweep(store, s.clock, s.target.token)
    await asyncio.sleep(SWEEP_SECONDS / 2)  # the phase of the sweep, not a wait for expiry
    expires_at = await s.db.fetchval(
        "SELECT expires_at FROM sessions WHERE token_hash = $1", hash_token(s.target.token)
    )
    s.clock.advance((expires_at - s.clock.now).total_seconds() + 1)
    return time.monotonic()


# (how the target's session ends, does alice's other session survive it)
ENDINGS = {
    "logout": (by_logout, True),
    "cli_revoke_id": (by_cli_revoke, True),
    "sql_delete_id": (by_sql_delete, True),
    "sessions_end_id": (by_sessions_end, True),
    "sessions_end_others": (by_sessions_end_others, True),
    "logout_everywhere": (by_logout_everywhere, False),
    "password_change": (by_password_change, False),
    "user_disabled": (by_user_disabled, False),
    "user_deleted": (by_user_deleted, False),
    "absolute_expiry": (by_absolute_expiry, True),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_the_sessions_websockets_close_with_1008_within_1s(
    ending, gateway, upstream, db, alice, clock, http, db_url, tmp_path
):
    end, other_survives = ENDINGS[ending]
    await create_user(db, "bob")
    client = await start(gateway)
    app = client.server.app
    base = base_of(client)
    target, other, bob = Person(http, base), Person(http, base), Person(http, base)
    await target.sign_in()
    await other.sign_in(remember=True)
    await bob.sign_in("bob", remember=True)
    scene = Scene(db, clock, db_url, tmp_path, client, target, other, bob, alice)

    names = {"target": [tag("t"), tag("t")], "other": tag("o"), "bob": tag("b")}
    doomed = [await open_ws(http, base, target.token, n) for n in names["target"]]
    other_ws = await open_ws(http, base, other.token, names["other"])
    bob_ws = await open_ws(http, base, bob.token, names["bob"])
    for ws in (*doomed, other_ws, bob_ws):
        await echoes(ws)
    assert len(app[LIVE]) == 4
    target_token = target.token

    done = await end(scene)

    latencies = await asyncio.gather(*(closed_within(ws, done) for ws in doomed))
    report(f"{ending}: its WebSockets closed (1008)", max(latencies))
    for name in names["target"]:
        await upstream_saw_1008(upstream, name)
    survivors = [bob_ws]
    if other_survives:
        survivors.append(other_ws)
    else:  # every session of alice ended: her other WebSocket too
        await closed_within(other_ws, done)
        await upstream_saw_1008(upstream, names["other"])
    for ws in survivors:
        await echoes(ws)
    # Nothing later (a recheck, the next sweep) cuts the bystanders either.
    await asyncio.sleep(SWEEP_SECONDS + 0.2)
    for ws in survivors:
        await echoes(ws)
        assert not ws.closed
    assert len(app[LIVE]) == len(survivors)
    assert await status_as(http, base, target_token) == 401
    for ws in survivors:
        await ws.close()
    await watched(app, 0)


async def test_absolute_expiry_worst_case_is_one_sweep_period(
    gateway, upstream, alice, clock, http, db
):
    """The clock passes expires_at right after a sweep: nothing can notice before the
    next one, SWEEP_SECONDS later at a fixed rate. With a 1 s sweep that slept *after*
    its work, this came to 1.002 s, past the issue's "within 1 s": the sweep is now
    twice a second, and the promise itself is what is asserted."""
    assert SWEEP_SECONDS <= 0.5
    client = await start(gateway)
    base = base_of(client)
    person = Person(http, base)
    token = await person.sign_in()
    ws = await open_ws(http, base, token, tag("expiry"))
    store = client.server.app[SESSIONS]
    expires_at = await db.fetchval("SELECT expires_at FROM sessions")
    await next_sweep(store, clock, token)
    clock.advance((expires_at - clock.now).total_seconds())  # exactly at expires_at: over
    done = time.monotonic()
    latency = await closed_within(ws, done, budget=1.0)
    report("absolute expiry right after a sweep (worst case)", latency)


async def test_a_push_only_apps_websocket_closes_within_1s(gateway, upstream, alice, http, db):
    """An app that only sends (a ticker) never answers the gateway's close frame: the
    client's 1008 must not wait for it (the relay's reader was cancelled mid-receive,
    so aiohttp closes the app's side without waiting)."""
    client = await start(gateway)
    base = base_of(client)
    token = await Person(http, base).sign_in()
    ws = await open_ws(http, base, token, tag("feed"), path="/feed")
    message = await ws.receive(timeout=2)
    assert message.type is WSMsgType.TEXT  # ticking
    await revoke_by_sql(db, token, alice, "sql_delete")
    done = time.monotonic()
    while True:  # ticks relayed before the cut may come first
        try:
            message = await asyncio.wait_for(
                ws.receive(), max(done + CUT_BUDGET - time.monotonic(), 0.001)
            )
        except TimeoutError:
            pytest.fail("the WebSocket is still open 1 s after the session ended")
        if message.type is not WSMsgType.TEXT:
            break
    latency = time.monotonic() - done
    assert (message.type, message.data, message.extra) == (
        WSMsgType.CLOSE,
        1008,
        "session ended",
    ), message
    report("push-only app's WebSocket closed", latency)
    assert latency < CUT_BUDGET


@pytest.mark.parametrize("how", ["over_100_ended", "truncate"])
async def test_too_many_ended_to_list_still_closes_exactly_the_ended(
    how, gateway, upstream, alice, clock, http, db
):
    """'all' (more than 100 sessions ended in one statement, or TRUNCATE): every
    watched session is asked of the database; only those that ended are cut."""
    await create_user(db, "bob")
    client = await start(gateway)
    app = client.server.app
    base = base_of(client)
    token = await Person(http, base).sign_in()
    bob_token = await Person(http, base).sign_in("bob")
    ws = await open_ws(http, base, token, tag("many"))
    bob_ws = await open_ws(http, base, bob_token, tag("bob"))
    await db.execute(
        "INSERT INTO sessions (token_hash, user_id, created_at, last_seen, expires_at)"
        " SELECT sha256(convert_to('extra ' || g, 'UTF8')), $1, $2, $2, $3"
        " FROM generate_series(1, 101) AS g",
        alice,
        clock.now,
        clock.now + timedelta(hours=1),
    )
    if how == "truncate":
        await db.execute("TRUNCATE sessions")
    else:
        assert await db.execute("DELETE FROM sessions WHERE user_id = $1", alice) == "DELETE 102"
    done = time.monotonic()

    latency = await closed_within(ws, done)
    report(f"{how} ('all'): closed", latency)
    if how == "truncate":  # bob's session ended too
        await closed_within(bob_ws, done)
    else:
        await echoes(bob_ws)
        await asyncio.sleep(SWEEP_SECONDS + 0.2)
        await echoes(bob_ws)
        assert len(app[LIVE]) == 1
        await bob_ws.close()


# -- 2. idle expiry: an open connection is activity -------------------------------------


async def test_an_open_websocket_keeps_its_session_from_idle_expiry(
    gateway, upstream, alice, clock, http, db
):
    """The sweep calls SessionStore.keep_alive for every watched session: the cached
    entry's last_seen follows the clock, a touch is queued once per TOUCH_INTERVAL and
    the batched writer puts it in the database. An idle session without a connection,
    on the same clock, expires."""
    client = await start(gateway)
    app = client.server.app
    store = app[SESSIONS]
    base = base_of(client)
    busy, idle = Person(http, base), Person(http, base)
    token = await busy.sign_in()
    idle_token = await idle.sign_in()
    assert await status_as(http, base, idle_token) == 200
    ws = await open_ws(http, base, token, tag("idle"))
    signed_in_at = clock.now
    timeout = store.config.idle_timeout

    for _ in range(6):  # 6 x a quarter of idle_timeout: 1.5 x idle_timeout in all
        clock.advance(timeout.total_seconds() / 4)
        deadline = time.monotonic() + 3 * SWEEP_SECONDS
        while kept_alive_at(store, token) != clock.now:
            assert time.monotonic() < deadline, "the sweep did not count the open WebSocket"
            await asyncio.sleep(0.01)
        assert not ws.closed
    assert clock.now - signed_in_at > timeout

    # Without a connection, the same wait ends the session.
    assert await status_as(http, base, idle_token) == 401
    # The batched writer records the activity within its period.
    hashed = hash_token(token)

    async def written() -> bool:
        at = await db.fetchval("SELECT last_seen FROM sessions WHERE token_hash = $1", hashed)
        return at == clock.now

    await wait_until(written, TOUCH_FLUSH_SECONDS + 5, "keep_alive's touch never written")
    assert not ws.closed
    await echoes(ws)
    assert await status_as(http, base, token) == 200  # the session still works
    await echoes(ws)
    assert len(app[LIVE]) == 1

    # Once the connection is gone, idle expiry applies again.
    await ws.close()
    await watched(app, 0)
    clock.advance(timeout.total_seconds() + 1)
    assert await status_as(http, base, token) == 401


# -- 3. long downloads ------------------------------------------------------------------


async def drain(response: aiohttp.ClientResponse) -> tuple[int, BaseException | None, float]:
    """Read the body to its end: (bytes, the error that ended it or None, when)."""
    got = 0
    try:
        async for chunk in response.content.iter_any():
            got += len(chunk)
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError) as exc:
        return got, exc, time.monotonic()
    return got, None, time.monotonic()


async def cut_within(
    response: aiohttp.ClientResponse, since: float, total: int, budget: float = CUT_BUDGET
) -> float:
    """The download must end in an error, never a clean end of body; returns the latency."""
    try:
        got, error, ended = await asyncio.wait_for(
            drain(response), max(since + budget - time.monotonic(), 0.001)
        )
    except TimeoutError:
        pytest.fail(f"the download still flows {budget:.1f} s after the session ended")
    assert error is not None, f"a clean end of body after {got} of {total} bytes"
    assert got < total
    latency = ended - since
    assert latency < budget
    return latency


@pytest.mark.parametrize("framing", ["chunked", "length"])
async def test_a_slow_download_is_cut_within_1s_of_a_logout_from_another_client(
    framing, gateway, upstream, alice, http
):
    client = await start(gateway)
    app = client.server.app
    base = base_of(client)
    browser = Person(http, base)
    token = await browser.sign_in()
    csrf = await browser.logout_token()
    name = tag("dl")
    total = 300 * CHUNK
    length = "&length=1" if framing == "length" else ""
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as downloader,
        downloader.get(
            f"{base}/stream?tag={name}{length}", headers={"Cookie": f"{COOKIE}={token}"}
        ) as response,
    ):
        assert response.status == 200
        await response.content.readexactly(2 * CHUNK)  # flowing
        assert len(app[LIVE]) == 1

        done = await browser.logout(csrf)  # another client, the same session

        latency = await cut_within(response, done, total)
    report(f"download ({framing}) cut after logout", latency)
    assert await asyncio.wait_for(upstream.stream_end(name), 2) == "cut"  # the app stopped too
    assert len(app[LIVE]) == 0


async def test_a_slow_download_is_cut_at_absolute_expiry(gateway, upstream, alice, clock, http):
    client = await start(gateway)
    base = base_of(client)
    token = await Person(http, base).sign_in()
    name = tag("dl")
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as downloader,
        downloader.get(
            f"{base}/stream?tag={name}", headers={"Cookie": f"{COOKIE}={token}"}
        ) as response,
    ):
        await response.content.readexactly(CHUNK)
        clock.advance(timedelta(hours=12, seconds=1).total_seconds())
        done = time.monotonic()
        # The sweep, not a NOTIFY: within one sweep period (and a little).
        latency = await cut_within(response, done, 300 * CHUNK, budget=SWEEP_SECONDS + 0.25)
    report("download cut at absolute expiry (sweep)", latency)


async def test_short_responses_are_never_watched(gateway, upstream, alice, http):
    """The hot path: a response that fits one 64 KiB chunk never reaches store.live;
    a long one is watched while it flows and forgotten when it ends."""
    client = await start(gateway)
    app = client.server.app
    base = base_of(client)
    token = await Person(http, base).sign_in()
    cookie = {"Cookie": f"{COOKIE}={token}"}
    for _ in range(5):
        async with http.get(f"{base}/small", headers=cookie) as response:
            assert response.status == 200
            assert len(await response.read()) == 32 * 1024
        assert len(app[LIVE]) == 0
    # In flight, before its answer: not watched either.
    async with http.get(f"{base}/small?delay=0.5", headers=cookie) as response:
        assert len(app[LIVE]) == 0
        assert len(await response.read()) == 32 * 1024
    assert len(app[LIVE]) == 0

    # A long body that ends normally: watched while it flows, whole, then forgotten.
    name = tag("whole")
    async with http.get(f"{base}/stream?tag={name}&chunks=12&every=0.05", headers=cookie) as r:
        first = await r.content.readexactly(2 * CHUNK)
        assert len(app[LIVE]) == 1
        rest = await r.read()
    assert len(first) + len(rest) == 12 * CHUNK
    assert await asyncio.wait_for(upstream.stream_end(name), 2) == "complete"
    await watched(app, 0)


# -- 4. replicas: revoked through A, cut on B -------------------------------------------


async def test_a_websocket_through_b_closes_within_1s_of_a_logout_through_a(
    replicas, http, upstream
):
    a, b = replicas
    browser = Person(http, a.url)
    token = await browser.sign_in()
    bystander = Person(http, b.url)
    other_token = await bystander.sign_in()  # alice again, another session, through B
    doomed_name, kept_name = tag("b"), tag("kept")
    doomed = await open_ws(http, b.url, token, doomed_name)
    kept = await open_ws(http, b.url, other_token, kept_name)
    await echoes(doomed)
    csrf = await browser.logout_token()

    done = await browser.logout(csrf)

    latency = await closed_within(doomed, done)
    report("WebSocket through B closed after logout through A", latency)
    await upstream_saw_1008(upstream, doomed_name)
    await echoes(kept)
    await kept.close()


async def test_a_download_through_b_is_cut_within_1s_of_a_logout_through_a(
    replicas, http, upstream
):
    a, b = replicas
    browser = Person(http, a.url)
    token = await browser.sign_in()
    csrf = await browser.logout_token()
    name = tag("dl-b")
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as downloader,
        downloader.get(
            f"{b.url}/stream?tag={name}", headers={"Cookie": f"{COOKIE}={token}"}
        ) as response,
    ):
        assert response.status == 200
        await response.content.readexactly(2 * CHUNK)

        done = await browser.logout(csrf)

        latency = await cut_within(response, done, 300 * CHUNK)
    report("download through B cut after logout through A", latency)
    assert await asyncio.wait_for(upstream.stream_end(name), 2) == "cut"


async def test_every_worker_closes_its_websockets_within_1s(
    launch, http, db, alice_user, upstream, tmp_path, db_url
):
    """`--workers 2`: WebSockets held by both workers; `sessions revoke --user` closes all."""
    before = await scale_out.listeners(db)
    served = await launch("w", workers=2)
    await scale_out.wait_ready(http, served)
    await scale_out.wait_listeners(db, 2, exclude=before)
    workers = scale_out.listening_children(served.proc.pid, served.port)
    assert len(workers) == 2, workers
    token = await Person(http, served.url).sign_in()

    sockets = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as ws_http:
        baseline = {pid: scale_out.accepted_connections(pid, served.port) for pid in workers}
        held: dict[int, int] = {}
        while len(sockets) < 4 or not all(held.get(pid) for pid in workers):
            assert len(sockets) < 40, f"the kernel gave every WebSocket to one worker: {held}"
            sockets.append(await open_ws(ws_http, served.url, token, tag("w")))
            held = {
                pid: scale_out.accepted_connections(pid, served.port) - baseline[pid]
                for pid in workers
            }

        done = await scale_out.run_cli(tmp_path, db_url, "sessions", "revoke", "--user", "alice")

        latencies = await asyncio.gather(*(closed_within(ws, done) for ws in sockets))
    report(f"{len(sockets)} WebSockets on 2 workers {held} closed after CLI revoke", max(latencies))


# -- 5. the LISTEN connection lost ------------------------------------------------------


@pytest.mark.parametrize("how", ["sql_delete", "user_disabled"])
async def test_a_session_revoked_while_the_listener_is_down_still_closes(
    how, gateway, upstream, alice, http, db
):
    await create_user(db, "bob")
    client = await start(gateway)
    app = client.server.app
    invalidator = app[INVALIDATOR]
    base = base_of(client)
    token = await Person(http, base).sign_in()
    bob_token = await Person(http, base).sign_in("bob")
    name = tag("down")
    ws = await open_ws(http, base, token, name)
    bob_ws = await open_ws(http, base, bob_token, tag("bob"))

    killed = await db.fetch(
        "SELECT pid, pg_terminate_backend(pid) AS ok FROM pg_stat_activity"
        " WHERE application_name = $1",
        LISTENER_APPLICATION_NAME,
    )
    killed_pids = {r["pid"] for r in killed if r["ok"]}
    assert len(killed_pids) == 1
    deadline = time.monotonic() + 5
    while invalidator.connected.is_set():  # the gateway noticed: nobody hears a NOTIFY now
        assert time.monotonic() < deadline
        await asyncio.sleep(0.001)

    await revoke_by_sql(db, token, alice, how)
    done = time.monotonic()

    latency = await closed_within(ws, done, budget=RECONNECT_BUDGET)
    listening = "back" if invalidator.connected.is_set() else "still down"
    report(f"{how} with the listener killed: closed (listener {listening})", latency)
    await upstream_saw_1008(upstream, name)
    await echoes(bob_ws)
    await scale_out.wait_listeners(db, 1, exclude=killed_pids)
    await echoes(bob_ws)
    await bob_ws.close()


@pytest.mark.skipif(
    bool(os.environ.get("GATEWAY_TEST_DATABASE_URL")),
    reason="stops the listener's backend process: only on the embedded local server",
)
async def test_with_the_listener_hung_the_sweep_asks_the_database(
    gateway, upstream, alice, http, db
):
    """The listener's backend stopped (SIGSTOP: a hang, no error, no NOTIFY): once its
    trust runs out (cache_trust, 1 s here), the sweep asks the database about every
    watched session each second. The revocation is cut by that, before the hung
    heartbeat times out and the reconnect's 'all' could do it."""
    await create_user(db, "bob")
    client = await start(gateway, session={"cache_trust": "1s"})
    app = client.server.app
    store, invalidator = app[SESSIONS], app[INVALIDATOR]
    base = base_of(client)
    token = await Person(http, base).sign_in()
    bob_token = await Person(http, base).sign_in("bob")
    name = tag("hung")
    ws = await open_ws(http, base, token, name)
    bob_ws = await open_ws(http, base, bob_token, tag("bob"))
    (pid,) = await scale_out.listeners(db)
    backend = psutil.Process(pid)
    assert "postgres" in backend.name(), backend
    backend.send_signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 5
        while store.cache.serving():
            assert time.monotonic() < deadline, "the cache kept trusting a hung listener"
            await asyncio.sleep(0.005)

        await revoke_by_sql(db, token, alice, "sql_delete")  # its NOTIFY is never heard
        done = time.monotonic()

        latency = await closed_within(ws, done, budget=RECONNECT_BUDGET)
        assert invalidator.connected.is_set(), "the reconnect came first: not the sweep's doing"
        assert await scale_out.listeners(db) == {pid}
    finally:
        backend.send_signal(signal.SIGCONT)
    report("hung listener: closed by the sweep's database recheck", latency)
    await upstream_saw_1008(upstream, name)
    await echoes(bob_ws)
    await bob_ws.close()


# -- ends that raced the connection's start (both were bugs: found by these tests) ----------


async def test_a_session_ended_during_the_upstream_handshake_still_closes(
    gateway, upstream, alice, http, db
):
    client = await start(gateway)
    base = base_of(client)
    token = await Person(http, base).sign_in()
    name = tag("handshake")
    opening = asyncio.create_task(open_ws(http, base, token, name, delay=1))
    await asyncio.wait_for(upstream.arrival(name).wait(), 5)  # access checked, relaying
    await revoke_by_sql(db, token, alice, "sql_delete")
    ws = await opening  # the app answered the handshake a second later
    opened = time.monotonic()
    try:
        await closed_within(ws, opened, budget=CUT_BUDGET)
    finally:
        await ws.close()


async def test_a_download_whose_session_ended_before_its_first_byte_is_cut(
    gateway, upstream, alice, http, db
):
    client = await start(gateway)
    base = base_of(client)
    token = await Person(http, base).sign_in()
    name = tag("silent")
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as downloader,
        downloader.get(
            f"{base}/stream?tag={name}&first_delay=1&chunks=20&every=0.1",
            headers={"Cookie": f"{COOKIE}={token}"},
        ) as response,
    ):
        assert response.status == 200  # headers through; the body not begun (an SSE, say)
        await revoke_by_sql(db, token, alice, "sql_delete")
        done = time.monotonic()
        # The body starts a second later: the session had ended before it.
        await cut_within(response, done, 20 * CHUNK, budget=1 + CUT_BUDGET)
