"""Clients that misbehave at the HTTP level: odd Expect headers, and (below) hangups,
slow heads and parser-level garbage. None may cost a 5xx, a traceback, or the
service of well-behaved clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import resource
import socket
import struct
import time

import aiohttp
import pytest
from helpers import metric, scrape, sign_in
from upstreams import echo_subprocess, recorder

from gateway.web.connections import PENDING_GRACE_SECONDS
from gateway.web.websocket import WEBSOCKET_SLOTS

RULES = [{"path": "/public/", "policy": "public"}, {"path": "/admin/", "policy": "deny"}]
JSON_HEADER = {"Accept": "application/json"}


async def talk(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Write raw bytes on one connection; read until the server closes it (or timeout)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    chunks: list[bytes] = []
    try:
        writer.write(data)
        await writer.drain()
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(timeout):
                while chunk := await reader.read(65536):
                    chunks.append(chunk)
    finally:
        writer.close()
    return b"".join(chunks)


def statuses(data: bytes) -> list[int]:
    return [int(s) for s in re.findall(rb"HTTP/1\.[01] (\d{3}) ", data)]


def no_traceback(caplog) -> None:
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


# -- Expect ------------------------------------------------------------------------

ROUTES = [
    ("GET", "/_gateway/healthz"),
    ("GET", "/_gateway/login"),
    ("POST", "/_gateway/login"),
    ("POST", "/_gateway/logout"),
    ("GET", "/_gateway/auth"),
    ("GET", "/_gateway/static/gateway.css"),
    ("GET", "/_gateway/nothing"),
    ("PUT", "/_gateway/login"),
    ("GET", "/public/page"),
    ("GET", "/protected"),
    ("POST", "/protected"),
    ("GET", "/admin/x"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("value", [b"\xff\xfe", b"\xc3(", b"gzip", b"100-continue, x"])
async def test_an_unmeetable_expectation_is_a_417_on_every_route(
    gateway, caplog, method, path, value
):
    client = await gateway(rule=RULES)
    head = (
        (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n"
            "Content-Length: 0\r\nExpect: "
        ).encode()
        + value
        + b"\r\n\r\n"
    )
    with caplog.at_level(logging.INFO):
        answer = await talk(client.port, head)
    assert statuses(answer) == [417], answer[:300]
    assert b'"error": "expectation_failed"' in answer
    no_traceback(caplog)


@pytest.mark.parametrize("path", ["/_gateway/login", "/public/upload"])
async def test_100_continue_is_answered_only_when_a_body_is_coming(gateway, path):
    client = await gateway(rule=RULES)
    with_body = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(with_body)
        await writer.drain()
        # The interim answer comes before the body is sent, as the client waits for it.
        assert await asyncio.wait_for(reader.readline(), 5) == b"HTTP/1.1 100 Continue\r\n"
        assert await reader.readline() == b"\r\n"
        writer.write(b"a=b&c")
        await writer.drain()
        final = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert statuses(final) == [403 if path.startswith("/_gateway") else 200]

    no_body = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = await talk(client.port, no_body)
    assert b"100 Continue" not in answer
    assert len(statuses(answer)) == 1


async def test_the_app_never_sees_the_expect_header(gateway, alice):
    client = await gateway()
    await sign_in(client)
    response = await client.post(
        "/echo", data=b"x" * 10, headers={"Expect": "100-continue", "Accept": "application/json"}
    )
    assert response.status == 200
    names = [k.lower() for k, _ in (await response.json())["headers"]]
    assert "expect" not in names


# -- a client that hangs up mid-transfer ---------------------------------------------


async def reset(writer: asyncio.StreamWriter) -> None:
    """Hang up the rude way: RST, not FIN."""
    sock = writer.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    await asyncio.sleep(0)


async def aborts(client, stage: str) -> float:
    return metric(await scrape(client), "gateway_client_aborts_total", stage=stage)


async def until(check, seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not await check():
            await asyncio.sleep(0.05)


def gateway_lines(caplog, level: int = logging.INFO) -> list[str]:
    return [
        f"{r.levelname} {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith(("gateway", "aiohttp"))
        and r.levelno >= level
        and r.name not in ("gateway.access", "aiohttp.access")
    ]


@pytest.fixture
async def public(gateway):
    return await gateway(rule=[{"path": "/", "policy": "public"}])


async def test_a_client_that_hangs_up_mid_upload_is_not_the_apps_fault(gateway, caplog):
    async with recorder("app") as app:
        client = await gateway(
            upstream=[{"name": "app", "url": app.url}], rule=[{"path": "/", "policy": "public"}]
        )
        before = await aborts(client, "upload")
        with caplog.at_level(logging.INFO):
            _, writer = await asyncio.open_connection("127.0.0.1", client.port)
            writer.write(
                b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
                b"Content-Type: application/octet-stream\r\n\r\n" + b"x" * 1000
            )
            await writer.drain()

            async def upstream_has_it() -> bool:
                return bool(app.seen)

            await until(upstream_has_it)  # the upload is under way, upstream too
            await reset(writer)

            async def counted() -> bool:
                return await aborts(client, "upload") == before + 1

            await until(counted)
            await asyncio.sleep(0.2)  # anything it would still log, it has logged
    assert gateway_lines(caplog) == [
        "INFO client 127.0.0.1 left during the upload (POST /upload, upstream app)"
    ]
    assert [r for r in caplog.records if r.exc_info] == []


async def test_a_client_that_stalls_then_hangs_up_mid_download_is_counted_quietly(public, caplog):
    before = await aborts(public, "download")
    with caplog.at_level(logging.INFO):
        reader, writer = await asyncio.open_connection("127.0.0.1", public.port)
        writer.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, 4096
        )
        writer.write(b"GET /_echo/stream?bytes=200000000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(100_000)
        writer.transport.pause_reading()  # stall: the gateway's writes back up
        await asyncio.sleep(1.0)
        await reset(writer)

        async def counted() -> bool:
            return await aborts(public, "download") == before + 1

        await until(counted)
        await asyncio.sleep(0.2)
    assert gateway_lines(caplog) == [
        "INFO client 127.0.0.1 left during the download (GET /_echo/stream, upstream echo)"
    ]
    assert [r for r in caplog.records if r.exc_info] == []


async def test_a_client_that_stalls_mid_body_gets_a_408_not_a_504(gateway, echo_url, caplog):
    client = await gateway(
        rule=[{"path": "/", "policy": "public"}],
        upstream=[{"name": "echo", "url": echo_url, "timeout": "1s"}],
    )
    with caplog.at_level(logging.INFO):
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        try:
            writer.write(
                b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n" + b"x" * 10
            )
            await writer.drain()
            async with asyncio.timeout(10):
                answer = await reader.read()  # the gateway answers, then closes
        finally:
            writer.close()
    assert statuses(answer) == [408], answer[:300]
    assert b'"error": "body_timeout"' in answer
    assert gateway_lines(caplog) == ["INFO client 127.0.0.1 stalled mid-body (/upload)"]


# -- slow heads ------------------------------------------------------------------------


async def open_slow(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection from `host` that starts a request head and never finishes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(host, 0))
    writer.write(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    await writer.drain()
    return reader, writer


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), seconds) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_slow_heads_are_cut_and_one_client_cannot_hold_many(gateway, alice):
    client = await gateway(server={"head_timeout": "4s", "max_pending_per_ip": 20})
    token = (await sign_in(client)).token
    text = await scrape(client)
    refused_before = metric(text, "gateway_connections_dropped_total", reason="too_many_pending")
    timed_out_before = metric(text, "gateway_connections_dropped_total", reason="head_timeout")

    # One client (127.0.0.2: not a trusted proxy, unlike the test's 127.0.0.1)
    # holds 20 slow heads past the grace, then tries 480 more.
    held = [await open_slow("127.0.0.2", client.port) for _ in range(20)]
    await asyncio.sleep(PENDING_GRACE_SECONDS + 0.2)
    more = [await open_slow("127.0.0.2", client.port) for _ in range(480)]
    assert await asyncio.gather(*(closed_within(r, 0.5) for r, _ in more)) == [True] * 480

    # Meanwhile a signed-in person is served as usual.
    for _ in range(10):
        response = await client.get(
            "/x", headers={"Cookie": f"gateway_session={token}", "Accept": "application/json"}
        )
        assert response.status == 200

    # The 20 are cut when their head_timeout runs out.
    assert await asyncio.gather(*(closed_within(r, 5) for r, _ in held)) == [True] * 20
    for _, writer in held + more:
        writer.close()

    text = await scrape(client)
    refused_now = metric(text, "gateway_connections_dropped_total", reason="too_many_pending")
    timed_out_now = metric(text, "gateway_connections_dropped_total", reason="head_timeout")
    assert (refused_now - refused_before, timed_out_now - timed_out_before) == (480, 20)
    # Their slots are free again: the same client may start a fresh (complete) request.
    fresh = await talk(
        client.port, b"GET /_gateway/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert statuses(fresh) == [200]


async def test_a_burst_of_new_connections_from_one_address_is_not_refused(gateway):
    """An office behind one address, or a backlog accepted at once after a busy
    moment: many connections owe a head for an instant. Only overdue ones count."""
    client = await gateway(server={"max_pending_per_ip": 2})

    async def one() -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", client.port, local_addr=("127.0.0.2", 0)
        )
        writer.write(b"GET /_gateway/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        try:
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()

    answers = await asyncio.gather(*(one() for _ in range(30)))
    assert [statuses(a) for a in answers] == [[200]] * 30


async def test_a_head_that_arrives_frees_its_place(gateway):
    client = await gateway(server={"head_timeout": "10s", "max_pending_per_ip": 2})
    first = [await open_slow("127.0.0.2", client.port) for _ in range(2)]
    await asyncio.sleep(PENDING_GRACE_SECONDS + 0.2)
    for _, writer in first:  # both finish their heads: they owe nothing now
        writer.write(b"1\r\nConnection: close\r\n\r\n")
        await writer.drain()
    for reader, _ in first:
        assert statuses(await asyncio.wait_for(reader.read(), 10)) == [401]
    third_reader, third = await open_slow("127.0.0.2", client.port)
    assert not await closed_within(third_reader, 0.5)  # admitted: nothing else is owed
    third.close()
    for _, writer in first:
        writer.close()


async def test_later_heads_on_a_kept_alive_connection_get_the_same_bound(gateway):
    """After one quick request, trickling the next head used to hold the connection
    for aiohttp's 75 s keep-alive. From a peer that is not a trusted proxy, the
    bound is head_timeout for every head."""
    client = await gateway(server={"head_timeout": "2s"})
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", client.port, local_addr=("127.0.0.2", 0)
    )
    try:
        writer.write(b"GET /_gateway/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await reader.readexactly(3)  # "ok\n"
        writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and no more
        await writer.drain()
        assert await closed_within(reader, 5)  # head_timeout and a second
    finally:
        writer.close()


async def test_a_complete_head_stops_the_clock(gateway):
    """A request that takes longer than head_timeout (its body, its answer) is not cut."""
    client = await gateway(server={"head_timeout": "1s"}, rule=[{"path": "/", "policy": "public"}])
    answer = await talk(
        client.port,
        b"GET /_echo/slow?seconds=2 HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n"
        b"Connection: close\r\n\r\n",
        timeout=10,
    )
    assert statuses(answer) == [200]


# -- garbage the HTTP parser refuses -------------------------------------------------

GARBAGE = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
]


async def test_garbage_is_one_sampled_info_line_and_a_count_never_a_traceback(gateway, caplog):
    client = await gateway()
    before = metric(await scrape(client), "gateway_bad_requests_total")
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        answers = [await talk(client.port, GARBAGE[i % len(GARBAGE)]) for i in range(40)]
    seconds = math.ceil(time.monotonic() - started) + 1  # the second boundaries crossed
    assert all(statuses(a) == [400] for a in answers)
    assert metric(await scrape(client), "gateway_bad_requests_total") - before == 40
    assert [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.web.connections"]
    assert 1 <= len(lines) <= min(40, 10 * seconds)  # 10 a second at most
    assert all(line.startswith("bad request from 127.0.0.1: ") for line in lines)


# -- many WebSockets ---------------------------------------------------------------------


async def test_two_thousand_websockets_leave_ordinary_requests_unharmed(gateway, alice):
    """With a pool of 256 per app, 256 open sockets made every other request to
    the app wait and time out. Now each socket has a connection of its own."""
    # About three descriptors per socket in this process: more than a common
    # soft limit of 1,024 allows.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16384 if hard == resource.RLIM_INFINITY else min(hard, 16384)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 8000, "too few file descriptors"
    async with echo_subprocess() as echo_url:
        client = await gateway(upstream=[{"name": "echo", "url": echo_url}])
        token = (await sign_in(client)).token
        cookie = {"Cookie": f"gateway_session={token}"}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar()
        ) as http:
            sockets: list[aiohttp.ClientWebSocketResponse] = []
            gate = asyncio.Semaphore(100)

            async def open_one() -> None:
                async with gate:
                    ws = await http.ws_connect(client.make_url("/live"), headers=cookie)
                    assert await asyncio.wait_for(ws.receive_json(), 30) == {"hello": "alice"}
                    sockets.append(ws)

            try:
                async with asyncio.timeout(240):
                    await asyncio.gather(*(open_one() for _ in range(2000)))
                assert len(sockets) == 2000
                # Ordinary requests to the same app, with all 2,000 open: answered, each
                # well within the 10 s they used to wait before timing out.
                for i in range(20):
                    async with asyncio.timeout(5):
                        response = await http.get(
                            client.make_url(f"/page/{i}"), headers={**cookie, **JSON_HEADER}
                        )
                        assert response.status == 200
                        assert (await response.json())["path"] == f"/page/{i}"
                # And the sockets all still work.
                await sockets[0].send_str("first")
                await sockets[-1].send_str("last")
                assert await asyncio.wait_for(sockets[0].receive_str(), 5) == "first"
                assert await asyncio.wait_for(sockets[-1].receive_str(), 5) == "last"
            finally:
                await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


async def test_beyond_max_websockets_a_clear_503_and_requests_still_pass(
    gateway, echo_url, alice, caplog
):
    client = await gateway(upstream=[{"name": "echo", "url": echo_url, "max_websockets": 3}])
    token = (await sign_in(client)).token
    cookie = {"Cookie": f"gateway_session={token}"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        live = client.make_url("/live")
        sockets = [await http.ws_connect(live, headers=cookie) for _ in range(3)]
        try:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(client.make_url("/live"), headers={**cookie, **JSON_HEADER})
            assert refused.value.status == 503
            response = await http.get(client.make_url("/page"), headers={**cookie, **JSON_HEADER})
            assert response.status == 200  # ordinary requests never count
            await sockets.pop().close()
            slots = client.app[WEBSOCKET_SLOTS].open
            async with asyncio.timeout(5):
                while slots["echo"] != 2:  # the gateway's side of it has finished too
                    await asyncio.sleep(0.01)
            sockets.append(await http.ws_connect(live, headers=cookie))
            assert (await sockets[-1].receive_json()) == {"hello": "alice"}
        finally:
            for ws in sockets:
                await ws.close()
    async with asyncio.timeout(5):
        while client.app[WEBSOCKET_SLOTS].open["echo"]:  # all closed: none held
            await asyncio.sleep(0.01)
    assert [r for r in caplog.records if r.exc_info] == []
