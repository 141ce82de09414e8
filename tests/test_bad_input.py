"""Hostile and malformed input, end to end on real sockets (issue items 4, 5, 7, 8).

Every bad input must get a clear 4xx (never a 5xx), leak no traceback or
internal path, and change nothing: no session row, no user row touched, no
request reaching an upstream that should not. Requests aiohttp's client
refuses to send are written byte for byte with raw_request or a raw socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from urllib.parse import quote

import aiohttp
import argon2
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from helpers import NONSENSE_HOSTS, PASSWORD, create_user, fresh_get, sign_in
from upstreams import RawResponse, closed_port, raw_request, recorder

from gateway.web.login import BAD_CREDENTIALS

ROOT = str(Path(__file__).resolve().parent.parent)
LEAKS = ("Traceback", 'File "', "site-packages", ROOT, '.py", line', "asyncpg", "Exception")
FORM = "application/x-www-form-urlencoded"
JSON = ("Accept", "application/json")
HTML = ("Accept", "text/html,application/xhtml+xml")
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


# -- helpers ---------------------------------------------------------------------


def assert_clean_4xx(status: int, body: bytes | str, *allowed: int, what: object = "") -> None:
    """A 4xx (one of `allowed` if given) whose body leaks nothing internal."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    assert 400 <= status < 500, (what, status, text[:300])
    if allowed:
        assert status in allowed, (what, status, text[:300])
    for marker in LEAKS:
        assert marker not in text, (what, marker, text[:300])


async def send(
    client: TestClient,
    method: str,
    target: str,
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    body: bytes = b"",
) -> RawResponse:
    return await raw_request(
        client.server.host, client.server.port, method, target, list(headers), body
    )


async def exchange(client: TestClient, data: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Write raw bytes on one connection; read until the server closes it.

    Returns (everything read, whether the server closed within `timeout`).
    """
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    chunks: list[bytes] = []

    async def read_all() -> None:
        while chunk := await reader.read(65536):
            chunks.append(chunk)

    closed = True
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        try:
            await asyncio.wait_for(read_all(), timeout)
        except TimeoutError:
            closed = False
        except ConnectionError:
            pass
    finally:
        writer.close()
    return b"".join(chunks), closed


def statuses(data: bytes) -> list[int]:
    return [int(s) for s in re.findall(rb"HTTP/1\.[01] (\d{3}) ", data)]


def head(client: TestClient, method: str, target: str, *lines: str) -> bytes:
    """A request head as raw bytes (no Connection: close unless given)."""
    host = f"Host: {client.server.host}:{client.server.port}"
    return ("\r\n".join([f"{method} {target} HTTP/1.1", host, *lines]) + "\r\n\r\n").encode(
        "latin-1"
    )


async def fresh_form(client: TestClient, path: str = "/_gateway/login") -> tuple[str, str]:
    """A new browser's (CSRF nonce cookie value, form token), read from raw headers."""
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(client.make_url(path)) as response,
    ):
        text = await response.text()
        cookie = next(c for name, c in response.cookies.items() if name.endswith("_csrf"))
    match = _TOKEN.search(text)
    assert match, text[:300]
    return cookie.value, match.group(1)


async def post_login(
    client: TestClient,
    body: bytes,
    *,
    nonce: str | None,
    content_type: str | None = FORM,
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    cookie_name: str = "gateway_session_csrf",
) -> RawResponse:
    extra = [HTML]
    if content_type is not None:
        extra.append(("Content-Type", content_type))
    if nonce is not None:
        extra.append(("Cookie", f"{cookie_name}={nonce}"))
    return await send(client, "POST", "/_gateway/login", [*extra, *headers], body)


def urlencoded(**fields: str) -> bytes:
    return "&".join(f"{k}={quote(v, safe='')}" for k, v in fields.items()).encode()


async def db_state(db) -> tuple:
    """Everything a bad request must leave alone: sessions and users."""
    sessions = await db.fetch("SELECT * FROM sessions ORDER BY id")
    users = await db.fetch("SELECT * FROM users ORDER BY id")
    return [tuple(r) for r in sessions], [tuple(r) for r in users]


async def session_count(db) -> int:
    return await db.fetchval("SELECT count(*) FROM sessions")


def exact(facts: dict, name: str) -> list[str]:
    return [v for k, v in facts["headers"] if k.lower() == name.lower()]


def set_cookies(response: RawResponse | aiohttp.ClientResponse) -> list[str]:
    return response.headers.getall("Set-Cookie", [])


# -- 5. login form bodies ----------------------------------------------------------------


async def test_missing_and_empty_login_fields_are_400_and_change_nothing(gateway, alice, db):
    client = await gateway()
    before = await db_state(db)
    nonce, token = await fresh_form(client)
    cases = [
        {"csrf_token": token},
        {"csrf_token": token, "username": "alice"},
        {"csrf_token": token, "password": PASSWORD},
        {"csrf_token": token, "username": "", "password": PASSWORD},
        {"csrf_token": token, "username": "alice", "password": ""},
        {"csrf_token": token, "username": "   ", "password": PASSWORD},
        {"csrf_token": token, "username": "", "password": ""},
    ]
    for form in cases:
        response = await post_login(client, urlencoded(**form), nonce=nonce)
        assert_clean_4xx(response.status, response.body, 400, what=form)
        assert "Enter your username and password." in response.text, form
        assert 'name="csrf_token"' in response.text  # the form again, ready to retry
        assert not any(c.startswith("gateway_session=") for c in set_cookies(response))
    # Missing the CSRF token is refused before anything else.
    response = await post_login(
        client, urlencoded(username="alice", password=PASSWORD), nonce=nonce
    )
    assert_clean_4xx(response.status, response.body, 403)
    assert await db_state(db) == before
    # Malformed forms are not sign-in attempts: nothing counts toward throttling.
    assert await db.fetchval("SELECT count(*) FROM login_failures") == 0


async def test_non_utf8_login_bodies_are_refused_cleanly(gateway, alice, db):
    client = await gateway()
    before = await db_state(db)
    nonce, token = await fresh_form(client)
    t = token.encode()
    raw_bodies = [
        b"csrf_token=" + t + b"&username=\xff\xfe&password=x",
        b"csrf_token=" + t + b"&username=alice&password=\xc3\x28",
        b"\xff\xfe\x00\x00",
        b"csrf_token=" + t + b"&username=alice&password=" + PASSWORD.encode() + b"\x80",
    ]
    for body in raw_bodies:
        response = await post_login(client, body, nonce=nonce)
        assert_clean_4xx(response.status, response.body, 400, what=body)
        assert "The form could not be read." in response.text
    # Percent-encoded invalid UTF-8 decodes to replacement characters: a
    # username that cannot exist, so the generic refusal (or a 400).
    for body in (
        b"csrf_token=" + t + b"&username=%ff%fe&password=x",
        b"csrf_token=" + t + b"&username=alice&password=%ff%fe%fd",
        b"csrf_token=" + t + b"&username=%ed%a0%80&password=x",
    ):
        response = await post_login(client, body, nonce=nonce)
        assert_clean_4xx(response.status, response.body, 400, 401, what=body)
        if response.status == 401:
            assert BAD_CREDENTIALS in response.text
    assert await db_state(db) == before


def multipart(token: str, *parts: tuple[str, bytes, str]) -> bytes:
    """A multipart/form-data body (boundary "b"): csrf_token, then (name, value, extra headers)."""
    out = b'--b\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n' + token.encode()
    for name, value, extra in parts:
        disposition = f'Content-Disposition: form-data; name="{name}"\r\n{extra}'
        out += b"\r\n--b\r\n" + disposition.encode() + b"\r\n" + value
    return out + b"\r\n--b--\r\n"


async def test_unknown_or_unusable_charsets_are_400_not_500(gateway, alice, db):
    """A charset Python cannot decode with raises LookupError, not ValueError."""
    client = await gateway()
    before = await db_state(db)
    nonce, token = await fresh_form(client)
    fields = urlencoded(csrf_token=token, username="alice", password=PASSWORD)
    cases = [
        (f"{FORM}; charset={charset}", fields)
        for charset in ("nonsense", "rot13", "zlib_codec", "base64", "x" * 200, "utf-16")
    ]
    cases += [
        (f"{FORM}; charset=utf-7", b"csrf_token=" + token.encode() + b"&username=+2D3-&password=x"),
        (
            "multipart/form-data; boundary=b",
            multipart(
                token,
                ("username", b"alice", "Content-Type: text/plain; charset=nonsense\r\n"),
                ("password", PASSWORD.encode(), ""),
            ),
        ),
        (
            "multipart/form-data; boundary=b",
            multipart(
                token,
                ("_charset_", b"nonsense", ""),
                ("username", b"alice", ""),
                ("password", PASSWORD.encode(), ""),
            ),
        ),
        (
            "multipart/form-data; boundary=b",
            multipart(token, ("username", b"\xff\xfe", ""), ("password", b"x", "")),
        ),
    ]
    failures = []
    for content_type, body in cases:
        response = await post_login(client, body, nonce=nonce, content_type=content_type)
        try:
            assert_clean_4xx(response.status, response.body, 400, 403, 415, what=content_type)
        except AssertionError as exc:
            failures.append((content_type[:60], body[-40:], response.status, str(exc)[:80]))
    assert failures == []
    assert await db_state(db) == before


async def test_wrong_content_types_never_sign_in(gateway, alice, db):
    """JSON, text, no type at all: not the login form, so no session (CSRF refuses)."""
    client = await gateway()
    before = await db_state(db)
    nonce, token = await fresh_form(client)
    fields = {"csrf_token": token, "username": "alice", "password": PASSWORD}
    cases = [
        ("application/json", json.dumps(fields).encode()),
        ("text/plain", urlencoded(**fields)),
        (None, urlencoded(**fields)),
        ("application/x-www-form-urlencodedX", urlencoded(**fields)),
        ("text/html", urlencoded(**fields)),
        ("application/xml", b"<login><username>alice</username></login>"),
    ]
    for content_type, body in cases:
        response = await post_login(client, body, nonce=nonce, content_type=content_type)
        assert_clean_4xx(response.status, response.body, 400, 403, 415, what=content_type)
        assert not any(c.startswith("gateway_session=") for c in set_cookies(response))
    assert await db_state(db) == before


async def test_multipart_login_bodies_never_error(gateway, alice, db):
    client = await gateway()
    before = await db_state(db)
    nonce, token = await fresh_form(client)
    kind = "multipart/form-data; boundary=b"
    bad = [
        # No CSRF token in the multipart form: refused.
        (kind, multipart("", ("username", b"alice", ""), ("password", PASSWORD.encode(), ""))),
        # The password sent as a file part is not a password: a missing field.
        (
            kind,
            multipart(
                token,
                ("username", b"alice", ""),
                ('password"; filename="pw.txt', PASSWORD.encode(), ""),
            ),
        ),
        # A boundary that is never closed, and no boundary parameter at all.
        (kind, b'--b\r\nContent-Disposition: form-data; name="username"\r\n\r\nalice'),
        ("multipart/form-data", b"whatever"),
        ("multipart/form-data; boundary=", b"--\r\n\r\n"),
        (kind, b"no boundary in here at all"),
    ]
    for content_type, body in bad:
        response = await post_login(client, body, nonce=nonce, content_type=content_type)
        assert_clean_4xx(response.status, response.body, 400, 403, 415, what=body[:60])
        assert not any(c.startswith("gateway_session=") for c in set_cookies(response))
    assert await db_state(db) == before
    # A well-formed multipart sign-in (an HTML form may use that enctype) is
    # honoured like the urlencoded one.
    response = await post_login(
        client,
        multipart(token, ("username", b"alice", ""), ("password", PASSWORD.encode(), "")),
        nonce=nonce,
        content_type=kind,
    )
    assert response.status == 303, response.status
    assert await session_count(db) == 1


async def _send_big(client: TestClient, head_bytes: bytes, body_chunks) -> tuple[int, bytes]:
    """Send a head then a large body while reading; the server may answer early."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)

    async def write() -> None:
        writer.write(head_bytes)
        for chunk in body_chunks:
            writer.write(chunk)
            await writer.drain()

    sender = asyncio.create_task(write())
    try:
        response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        status = int(response.split(b" ", 2)[1])
        rest = b""
        with contextlib.suppress(TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            rest = await asyncio.wait_for(reader.read(4096), 5)
        return status, response + rest
    finally:
        sender.cancel()
        with contextlib.suppress(BaseException):
            await sender
        writer.close()


async def test_ten_megabyte_login_body_is_413(gateway, alice, db):
    client = await gateway()
    before = await db_state(db)
    nonce, token = await fresh_form(client)
    size = 10 * 1024 * 1024
    prefix = urlencoded(csrf_token=token, username="alice") + b"&password="
    block = b"a" * (1024 * 1024)
    lines = (f"Content-Type: {FORM}", f"Cookie: gateway_session_csrf={nonce}")
    # With a Content-Length ...
    status, data = await _send_big(
        client,
        head(client, "POST", "/_gateway/login", *lines, f"Content-Length: {size + len(prefix)}"),
        [prefix, *([block] * 10)],
    )
    assert_clean_4xx(status, data, 413)
    # ... and chunked, where the size is not known up front.
    chunk = b"%x\r\n" % len(block) + block + b"\r\n"
    status, data = await _send_big(
        client,
        head(client, "POST", "/_gateway/login", *lines, "Transfer-Encoding: chunked"),
        [b"%x\r\n" % len(prefix) + prefix + b"\r\n", *([chunk] * 10), b"0\r\n\r\n"],
    )
    assert_clean_4xx(status, data, 413)
    assert await db_state(db) == before
    assert await db.fetchval("SELECT count(*) FROM login_failures") == 0
    # The gateway is still fine.
    assert (await client.get("/_gateway/login")).status == 200


async def test_one_megabyte_password_is_refused_before_hashing(gateway, alice, db):
    client = await gateway()
    before = await db_state(db)
    nonce, token = await fresh_form(client)
    body = urlencoded(csrf_token=token, username="alice", password="p" * (1024 * 1024))
    status, data = await _send_big(
        client,
        head(
            client,
            "POST",
            "/_gateway/login",
            f"Content-Type: {FORM}",
            f"Cookie: gateway_session_csrf={nonce}",
            f"Content-Length: {len(body)}",
        ),
        [body],
    )
    assert_clean_4xx(status, data, 400, 413)
    assert await db_state(db) == before


async def _set_password_hash(db, password: str) -> None:
    # Stored directly: Passwords.hash would refuse a password this long to begin with.
    await db.execute(
        "UPDATE users SET password_hash = $1 WHERE username = 'alice'",
        argon2.PasswordHasher().hash(password),
    )


@pytest.mark.parametrize(
    "password",
    ["a" * 1025, "é" * 513],  # 1025 and 1026 UTF-8 bytes; the limit counts bytes
    ids=["1025-ascii", "1026-bytes-513-chars"],
)
async def test_password_over_1024_bytes_is_rejected_even_when_it_matches(
    gateway, alice, db, password
):
    """Rejected before hashing: even the right (over-long) password cannot sign in."""
    await _set_password_hash(db, password)
    client = await gateway()
    before = await db_state(db)
    result = await sign_in(client, password=password)
    assert_clean_4xx(result.status, result.text, 401)
    assert BAD_CREDENTIALS in result.text
    assert result.token is None
    assert await db_state(db) == before


async def test_password_of_exactly_1024_bytes_still_works(gateway, alice, db):
    password = "é" * 512  # 1024 bytes
    await _set_password_hash(db, password)
    client = await gateway()
    result = await sign_in(client, password=password)
    assert result.status == 303 and result.token


async def test_huge_username_is_a_generic_401(gateway, alice, db):
    client = await gateway()
    before = await db_state(db)
    for username in ("a" * 10_000, "alice" + "x" * 10_000, "ALICE" * 2000):
        result = await sign_in(client, username=username)
        assert_clean_4xx(result.status, result.text, 401, what=username[:20])
        assert BAD_CREDENTIALS in result.text
        assert username[:300].lower() not in result.text  # echoed back truncated at most
    assert await db_state(db) == before
    longest = await db.fetchval("SELECT max(length(username)) FROM login_failures")
    assert longest <= 256


async def test_nul_bytes_in_login_fields_are_a_4xx(gateway, alice, db):
    """PostgreSQL text cannot hold NUL: such a username must be refused, not a 503."""
    client = await gateway()
    before = await db_state(db)
    nonce, token = await fresh_form(client)
    cases = [
        {"username": "al\x00ice", "password": PASSWORD},
        {"username": "\x00", "password": PASSWORD},
        {"username": "alice\x00", "password": "x"},
        {"username": "alice", "password": PASSWORD + "\x00"},
        {"username": "alice", "password": "\x00" * 10},
        {"username": "alice", "password": "x", "rd": "/\x00"},
    ]
    failures = []
    for fields in cases:
        response = await post_login(client, urlencoded(csrf_token=token, **fields), nonce=nonce)
        try:
            assert_clean_4xx(response.status, response.body, 400, 401, what=fields)
        except AssertionError:
            failures.append((fields, response.status))
    assert failures == []
    assert await db_state(db) == before
    # And the gateway still signs alice in afterwards (nothing wedged).
    assert (await sign_in(client)).status == 303


@pytest.mark.parametrize(
    ("fields", "twice"),
    [
        ("username=alice&username=mallory&password={pw}", "username"),
        ("username=mallory&username=alice&password={pw}", "username"),
        ("username=alice&password=wrong&password={pw}", "password"),
        ("username=alice&password={pw}&password=wrong", "password"),
        ("csrf_token=forged&username=alice&password={pw}", "csrf_token"),
        ("username=alice&password={pw}&rd=/a&rd=//evil.example", "rd"),
        ("username=alice&password={pw}&remember=1&remember=1", "remember"),
    ],
)
async def test_a_field_sent_twice_is_a_400_and_signs_nobody_in(gateway, alice, db, fields, twice):
    """Whichever copy 'won', it would be a sign-in nobody actually submitted."""
    await create_user(db, "mallory", "mallory's own password")
    client = await gateway()
    before = await db_state(db)
    nonce, token = await fresh_form(client)
    body = f"csrf_token={quote(token)}&" + fields.format(pw=quote(PASSWORD))
    response = await post_login(client, body.encode(), nonce=nonce)
    assert_clean_4xx(response.status, response.body, 400, what=body)
    assert f"The form has more than one &#39;{twice}&#39; field." in response.text
    assert "gateway_session=" not in str(set_cookies(response))
    assert await db_state(db) == before


@pytest.mark.parametrize("fields", ["csrf_token={t}&csrf_token={t}", "csrf_token={t}&x=1&x=2"])
async def test_a_sign_out_form_with_a_field_twice_is_a_400_and_ends_nothing(
    gateway, alice, db, fields
):
    client = await gateway()
    token = (await sign_in(client)).token
    form_page = await fresh_get(client, "/_gateway/logout", token)
    csrf = _TOKEN.search(await form_page.text()).group(1)
    nonce = form_page.cookies["gateway_session_csrf"].value
    response = await send(
        client,
        "POST",
        "/_gateway/logout",
        [
            HTML,
            ("Content-Type", FORM),
            ("Cookie", f"gateway_session={token}; gateway_session_csrf={nonce}"),
        ],
        fields.format(t=quote(csrf)).encode(),
    )
    assert_clean_4xx(response.status, response.body, 400)
    assert "more than one" in response.text
    assert await session_count(db) == 1


# -- 5. oversized headers --------------------------------------------------------------


async def test_oversized_and_too_many_headers_are_4xx_everywhere(gateway, alice, db):
    async with recorder("app") as app:
        client = await gateway(upstream=[{"name": "app", "url": app.url}])
        before = await db_state(db)
        cases = {
            "64k-header": [("X-Big", "a" * 65536)],
            "100k-cookie": [("Cookie", "gateway_session=" + "a" * 100_000)],
            "100k-cookie-many-pairs": [("Cookie", "; ".join(f"c{i}=v" for i in range(20_000)))],
            "64k-header-name": [("X-" + "n" * 65536, "v")],
            "500-headers": [(f"X-H{i}", "v") for i in range(500)],
        }
        for target in ("/_gateway/login", "/_gateway/auth", "/app/x", "/"):
            for name, headers in cases.items():
                response = await send(client, "GET", target, [HTML, *headers])
                assert_clean_4xx(response.status, response.body, 400, 413, 431, what=name)
        assert app.seen == []
        assert await db_state(db) == before
        assert (await client.get("/_gateway/login")).status == 200


# -- 5. malformed session cookies ------------------------------------------------------


async def test_malformed_session_cookies_are_anonymous(gateway, alice, db):
    async with recorder("app") as app:
        client = await gateway(upstream=[{"name": "app", "url": app.url}])
        real = (await sign_in(client)).token
        assert real
        before = await db_state(db)
        garbage = [
            "gateway_session=",
            "gateway_session",
            "gateway_session=!!!not-base64!!!",
            "gateway_session=" + "A" * 42,
            "gateway_session=" + "A" * 44,
            "gateway_session=" + real[:-1],
            "gateway_session=" + real + "A",
            "gateway_session=" + "A" * 8000,  # under the 8 KiB field limit
            'gateway_session="garbage"',
            'gateway_session="' + "A" * 43 + '"',
            "gateway_session=" + real.upper() if real.upper() != real else "gateway_session=x",
            ";;;==;",
            "=;=;=",
            "gateway_session==" + real,
            "gateway_session=%00" + real[3:],
            "gateway_session=" + real.replace(real[0], "+" if real[0] != "+" else "/", 1),
            " gateway_session_x=" + real,
            "GATEWAY_SESSION=" + real,
            "gateway_session_csrf=" + real,
        ]
        for cookie in garbage:
            for target, expect in (("/x", 401), ("/_gateway/userinfo", 401)):
                response = await send(client, "GET", target, [JSON, ("Cookie", cookie)])
                assert_clean_4xx(response.status, response.body, expect, what=(cookie, target))
                assert real not in response.text
        assert app.seen == []
        assert await db_state(db) == before
        # A non-empty bad cookie is cleared from the browser.
        response = await send(client, "GET", "/x", [JSON, ("Cookie", "gateway_session=junk")])
        cleared = [c for c in set_cookies(response) if c.startswith("gateway_session=")]
        assert cleared and ("Max-Age=0" in cleared[0] or "expires=" in cleared[0].lower())


async def test_valid_cookie_with_junk_around_it_still_works(gateway, alice):
    async with recorder("app") as app:
        client = await gateway(upstream=[{"name": "app", "url": app.url}])
        token = (await sign_in(client)).token
        for cookie in (
            f";;;==; gateway_session={token}; ;=;",
            f"a=1;gateway_session={token};b=2",
            f"junk; gateway_session={token}",
            f"gateway_session={token};;;",
            f"  gateway_session={token}  ",
        ):
            response = await send(client, "GET", "/x", [JSON, ("Cookie", cookie)])
            assert response.status == 200, (cookie, response.status, response.text)
        assert len(app.seen) == 5
        for seen in app.seen:
            assert dict((k.lower(), v) for k, v in seen.headers)["x-remote-user"] == "alice"
            assert token not in str(seen.headers)  # the token never reaches the app


async def test_duplicate_session_cookies_are_deterministic(gateway, alice, db):
    async with recorder("app") as app:
        client = await gateway(upstream=[{"name": "app", "url": app.url}])
        token = (await sign_in(client)).token
        orders = {
            "valid-first": f"gateway_session={token}; gateway_session=garbage",
            "garbage-first": f"gateway_session=garbage; gateway_session={token}",
            "two-garbage": "gateway_session=garbage; gateway_session=" + "B" * 43,
            "valid-twice": f"gateway_session={token}; gateway_session={token}",
        }
        results: dict[str, list[int]] = {}
        for name, cookie in orders.items():
            for _ in range(3):
                response = await send(client, "GET", "/x", [JSON, ("Cookie", cookie)])
                assert response.status < 500, (name, response.status, response.text)
                for marker in LEAKS:
                    assert marker not in response.text
                results.setdefault(name, []).append(response.status)
        # Our cookie twice is no cookie at all, whatever the values (tests/test_cookies.py).
        assert results == {name: [401, 401, 401] for name in orders}
        for seen in app.seen:
            assert token not in str(seen.headers)
        assert await session_count(db) == 1  # the real session survived all of it
        # Two Cookie header lines: never a 5xx, never the token to the app.
        response = await send(
            client, "GET", "/x", [JSON, ("Cookie", "a=1"), ("Cookie", f"gateway_session={token}")]
        )
        assert response.status == 200, response.status  # one copy of ours, over two lines
        for seen in app.seen:
            assert token not in str(seen.headers)


# -- 5. forward-auth with a bad X-Original-URL ----------------------------------------------


BAD_ORIGINAL_URLS = [
    "",
    "garbage",
    "/relative/path",
    "example.com/path",
    "javascript:alert(1)",
    "data:text/html,hi",
    "ftp://example.com/",
    "http://",
    "http:///no-host",
    "http://exa mple.com/",
    "http://user@example.com/",
    "http://user:pw@example.com/",
    "http://example.com\\@evil.example/",
    "http://[::1/",
    "http://example.com/%00",
    "http://example.com/%ff",
    "http://example.com/a%0d%0aX-Injected:%20yes",
    "http://example.com/%2e%2e%00",
    "relative",
    "//example.com/protocol-relative",
]


async def test_invalid_x_original_url_is_400_never_200(gateway, alice, db):
    client = await gateway(rule=[{"path": "/public/", "policy": "public"}])
    token = (await sign_in(client)).token
    before = await db_state(db)
    for url in BAD_ORIGINAL_URLS:
        for cookie in ([], [("Cookie", f"gateway_session={token}")]):
            response = await send(
                client, "GET", "/_gateway/auth", [("X-Original-URL", url), *cookie]
            )
            assert_clean_4xx(response.status, response.body, 400, what=url)
            assert "X-Remote-User" not in response.headers
    # Also for a public path: a bad URL is not "public".
    response = await send(
        client, "GET", "/_gateway/auth", [("X-Original-URL", "javascript:/public/x")]
    )
    assert_clean_4xx(response.status, response.body, 400)
    assert await db_state(db) == before


async def test_original_url_raw_control_characters_and_oversize(gateway, alice):
    client = await gateway()
    token = (await sign_in(client)).token
    cookie = f"Cookie: gateway_session={token}"
    # A bare CR / NUL inside the header value: the HTTP parser refuses the request.
    for value in ("http://example.com/\rX-Injected: 1", "http://example.com/\x00", "\x7fhttp://"):
        data, _ = await exchange(
            client,
            head(
                client,
                "GET",
                "/_gateway/auth",
                f"X-Original-URL: {value}",
                cookie,
                "Connection: close",
            ),
        )
        codes = statuses(data)
        assert codes and all(400 <= c < 500 for c in codes), (value, data[:200])
        assert b"X-Remote-User" not in data
    # 10 KB: over the parser's header limit, refused outright.
    huge = "http://example.com/" + "a" * 10_000
    response = await send(client, "GET", "/_gateway/auth", [("X-Original-URL", huge)])
    assert_clean_4xx(response.status, response.body, 400, 431)
    # Just under the limit, well formed: an ordinary answer (401 anonymous), never 5xx.
    long_ok = "http://example.com/" + "a" * 8000
    response = await send(client, "GET", "/_gateway/auth", [("X-Original-URL", long_ok)])
    assert response.status == 401


async def test_bad_original_method_and_forwarded_headers_are_400(gateway, alice):
    client = await gateway()
    token = (await sign_in(client)).token
    cookie = ("Cookie", f"gateway_session={token}")
    cases = [
        [("X-Original-URL", "http://example.com/"), ("X-Original-Method", "G E T")],
        [("X-Original-URL", "http://example.com/"), ("X-Original-Method", "BREW")],
        [("X-Forwarded-Host", "example.com")],
        [("X-Forwarded-Uri", "/x")],
        [
            ("X-Forwarded-Uri", "/x"),
            ("X-Forwarded-Host", "example.com"),
            ("X-Forwarded-Proto", "javascript"),
        ],
        [("X-Forwarded-Uri", "relative"), ("X-Forwarded-Host", "example.com")],
        [("X-Forwarded-Uri", "/%00"), ("X-Forwarded-Host", "example.com")],
        [("X-Forwarded-Uri", "/x"), ("X-Forwarded-Host", "a b")],
        [("X-Forwarded-Uri", "/x"), ("X-Forwarded-Host", "evil@example.com")],
        [("X-Forwarded-Uri", "/x"), ("X-Forwarded-Host", "/")],
        [],
    ]
    for headers in cases:
        response = await send(client, "GET", "/_gateway/auth", [*headers, cookie])
        assert_clean_4xx(response.status, response.body, 400, what=headers)
        assert "X-Remote-User" not in response.headers


# -- 5. nonsense Host headers --------------------------------------------------------------


async def test_nonsense_host_headers_never_5xx(gateway, alice, db):
    async with recorder("app") as app:
        client = await gateway(upstream=[{"name": "app", "url": app.url}])
        token = (await sign_in(client)).token
        cookie = ("Cookie", f"gateway_session={token}")
        before = await db_state(db)
        for host in NONSENSE_HOSTS:
            for method, target, headers in (
                ("GET", "/_gateway/login", [HTML]),
                ("GET", "/_gateway/logout", [HTML, cookie]),
                ("GET", "/app/x", [JSON]),
                ("GET", "/app/x", [JSON, cookie]),
                ("GET", "/_gateway/auth", [("X-Original-URL", "http://example.com/"), cookie]),
            ):
                response = await send(client, method, target, [("Host", host), *headers])
                assert response.status < 500, (host, target, response.status, response.text)
                for marker in LEAKS:
                    assert marker not in response.text, (host, target, marker)
        # A nonsense Host is refused (400), never forwarded to the app verbatim...
        assert [s.raw_path for s in app.seen] == [], app.seen
        # ...and anonymous requests never reached the upstream, whatever the Host said.
        assert all(
            dict((k.lower(), v) for k, v in s.headers).get("x-remote-user") == "alice"
            for s in app.seen
        )
        assert await db_state(db) == before


async def test_duplicate_host_header_is_400(gateway, alice):
    async with recorder("app") as app:
        client = await gateway(upstream=[{"name": "app", "url": app.url}])
        token = (await sign_in(client)).token
        for target in ("/_gateway/login", "/app/x"):
            data, _ = await exchange(
                client,
                (
                    f"GET {target} HTTP/1.1\r\nHost: example.com\r\nHost: evil.example\r\n"
                    f"Cookie: gateway_session={token}\r\nConnection: close\r\n\r\n"
                ).encode(),
            )
            assert statuses(data) == [400], data[:300]
        assert app.seen == []


async def test_hostile_host_never_widens_the_redirect_allow_list(gateway, alice):
    client = await gateway()
    nonce, token = await fresh_form(client)
    response = await post_login(
        client,
        urlencoded(
            csrf_token=token, username="alice", password=PASSWORD, rd="https://evil.example/x"
        ),
        nonce=nonce,
        headers=[("Host", "evil.example")],
    )
    assert response.status == 303
    assert response.headers["Location"] == "/"


# -- 5. bad paths to proxied routes ---------------------------------------------------------


async def test_bad_paths_are_400_and_never_reach_the_upstream(gateway, db):
    async with recorder("app") as app:
        client = await gateway(
            upstream=[{"name": "app", "url": app.url}], rule=[{"path": "/", "policy": "public"}]
        )
        for target in (
            "/%00",
            "/a%00b",
            "/%ff",
            "/%c3%28",
            "/a%0d%0aSet-Cookie:%20x=1",
            "/%0a",
            "/%7f",
            "/..%2f%00",
            "/x/%ed%a0%80",
        ):
            response = await send(client, "GET", target, [JSON])
            # %0a/%0d fall outside the "/{tail:.*}" route (no DOTALL): aiohttp's 404.
            assert_clean_4xx(response.status, response.body, 400, 404, what=target)
        # Raw control bytes in the request line never even parse.
        for target in ("/a\x00b", "/a\x7fb", "/a\x01b"):
            data, _ = await exchange(
                client, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            codes = statuses(data)
            assert codes and all(400 <= c < 500 for c in codes), (target, data[:200])
        assert app.seen == []
        # A positive control: a good path does reach this upstream.
        response = await send(client, "GET", "/ok", [JSON])
        assert response.status == 200 and [s.raw_path for s in app.seen] == ["/ok"]


async def test_encoded_traversal_cannot_slip_past_a_deny_rule(gateway, alice):
    async with recorder("app") as app:
        client = await gateway(
            upstream=[{"name": "app", "url": app.url}],
            rule=[{"path": "/etc/", "policy": "deny"}, {"path": "/", "policy": "public"}],
        )
        for target in (
            "/..%2f..%2fetc/passwd",
            "/public/..%2f..%2fetc/passwd",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/x/..\\..\\etc\\passwd",
            "/x/%2e%2e%5cetc%5cpasswd",
        ):
            response = await send(client, "GET", target, [JSON])
            assert_clean_4xx(response.status, response.body, 403, 400, what=target)
        assert app.seen == []
        # Not denied: the encoded path goes upstream exactly as sent, not decoded.
        response = await send(client, "GET", "/..%2f..%2fother/passwd", [JSON])
        assert response.status == 200
        assert [s.raw_path for s in app.seen] == ["/..%2f..%2fother/passwd"]


async def test_odd_request_targets_are_4xx(gateway, alice):
    async with recorder("app") as app:
        client = await gateway(upstream=[{"name": "app", "url": app.url}])
        token = (await sign_in(client)).token
        cookie = f"Cookie: gateway_session={token}"
        for method, target in (
            ("OPTIONS", "*"),
            ("GET", "*"),
            ("CONNECT", "example.com:443"),
            ("GET", "relative/path"),
            ("GET", "?q=1"),
        ):
            data, _ = await exchange(
                client, head(client, method, target, cookie, "Connection: close")
            )
            codes = statuses(data)
            assert codes and all(400 <= c < 500 for c in codes), (method, target, data[:300])
            assert b"Traceback" not in data
        assert app.seen == []


# -- 7. request smuggling ----------------------------------------------------------------


@pytest.fixture
async def public_recorder(gateway, db):
    async with recorder("app") as app:
        client = await gateway(
            upstream=[{"name": "app", "url": app.url}], rule=[{"path": "/", "policy": "public"}]
        )
        yield client, app


async def test_pipelined_requests_reach_the_upstream_as_a_control(public_recorder):
    """Positive control for the smuggling tests: the recorder does see pipelined requests."""
    client, app = public_recorder
    data, closed = await exchange(
        client,
        head(client, "POST", "/first", "Content-Length: 5")
        + b"hello"
        + head(client, "GET", "/second", "Connection: close"),
    )
    assert closed
    assert statuses(data) == [200, 200]
    assert [s.raw_path for s in app.seen] == ["/first", "/second"]


SMUGGLE_HEADS = {
    "cl-and-te": ["Content-Length: 6", "Transfer-Encoding: chunked"],
    "te-and-cl": ["Transfer-Encoding: chunked", "Content-Length: 6"],
    "two-content-lengths": ["Content-Length: 6", "Content-Length: 60"],
    "cl-list": ["Content-Length: 6, 60"],
    "cl-plus": ["Content-Length: +6"],
    "cl-negative": ["Content-Length: -1"],
    "cl-hex": ["Content-Length: 0x6"],
    "te-chunked-identity": ["Transfer-Encoding: chunked, identity"],
    "te-xchunked": ["Transfer-Encoding: xchunked"],
    "te-chunked-twice-lines": ["Transfer-Encoding: chunked", "Transfer-Encoding: identity"],
    "te-identity": ["Transfer-Encoding: identity"],
    "te-space-before-colon": ["Transfer-Encoding : chunked"],
    "te-obs-fold": ["X-Pad: 1", " Transfer-Encoding: chunked"],
    "te-vertical-tab": ["Transfer-Encoding:\x0bchunked"],
}


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_conflicting_framing_is_400_and_smuggles_nothing(public_recorder):
    client, app = public_recorder
    failures = []
    for name, lines in SMUGGLE_HEADS.items():
        app.seen.clear()
        data, closed = await exchange(
            client, head(client, "POST", "/front", *lines) + b"0\r\n\r\n" + SMUGGLED
        )
        if not closed or statuses(data) != [400] or app.seen or b"Traceback" in data:
            failures.append((name, closed, statuses(data), [s.raw_path for s in app.seen]))
    assert failures == []


INVALID_CHUNKS = {
    "non-hex": b"zz\r\nhello\r\n0\r\n\r\n",
    "negative": b"-5\r\nhello\r\n0\r\n\r\n",
    "overlong-data": b"5\r\nhelloXX\r\n0\r\n\r\n",
    "huge-size": b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "space-in-size": b"5 5\r\nhello\r\n0\r\n\r\n",
    "0x-prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
    "control-in-extension": b"5;ext=\x01\r\nhello\r\n0\r\n\r\n",
    "bare-lf": b"5\nhello\n0\n\n",
}


async def test_invalid_chunk_sizes_are_400_and_smuggle_nothing(public_recorder):
    client, app = public_recorder
    failures = []
    for name, chunks in INVALID_CHUNKS.items():
        app.seen.clear()
        data, closed = await exchange(
            client,
            head(client, "POST", "/front", "Transfer-Encoding: chunked") + chunks + SMUGGLED,
        )
        # One 400 and a closed connection: nothing after the broken body is read as a request.
        if not closed or statuses(data) != [400] or b"Traceback" in data:
            failures.append((name, closed, statuses(data)))
        if "/smuggled" in [s.raw_path for s in app.seen]:
            failures.append((name, "smuggled", [s.raw_path for s in app.seen]))
    assert failures == []


async def test_broken_chunk_after_forwarding_began_smuggles_nothing(gateway, db):
    """The head is forwarded at once (bodies stream); a bad chunk size arriving
    later must neither smuggle the bytes behind it nor hold the connection forever."""
    async with recorder("app") as app:
        client = await gateway(
            upstream=[{"name": "app", "url": app.url, "timeout": "2s"}],
            rule=[{"path": "/", "policy": "public"}],
        )
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        try:
            writer.write(head(client, "POST", "/front", "Transfer-Encoding: chunked"))
            await writer.drain()
            for _ in range(50):  # until the upstream has the head
                if app.seen:
                    break
                await asyncio.sleep(0.05)
            writer.write(b"5\r\nhello\r\nzz\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            data = b""
            with contextlib.suppress(TimeoutError, ConnectionError):
                while chunk := await asyncio.wait_for(reader.read(65536), 5):
                    data += chunk
            closed = reader.at_eof()
        finally:
            writer.close()
        # Whether the head got upstream before the body stalled is timing; what
        # must hold is that nothing behind the broken chunk was smuggled.
        assert [s.raw_path for s in app.seen] in ([], ["/front"])
        assert all(c != 200 for c in statuses(data)), data[:300]
        assert closed, f"a request with a broken chunked body was left hanging: {data[:200]!r}"


async def test_request_with_body_is_forwarded_with_one_framing(public_recorder):
    """The upstream sees one consistent framing, never the client's CL next to its own TE."""
    client, app = public_recorder
    response = await send(
        client, "POST", "/upload", [("Content-Type", "text/plain")], b"hello world"
    )
    assert response.status == 200
    seen = {k.lower(): v for k, v in app.seen[-1].headers}
    assert not ("content-length" in seen and "transfer-encoding" in seen), seen


# -- 7. Connection-header tricks ----------------------------------------------------------


async def test_connection_cannot_drop_the_identity_headers(gateway, alice):
    async with recorder("app") as app:
        client = await gateway(upstream=[{"name": "app", "url": app.url}])
        token = (await sign_in(client)).token
        for connection in (
            "X-Remote-User, X-Remote-Groups, Cookie",
            "close, X-Remote-User, X-Remote-Email, X-Remote-Name, X-Remote-Groups",
            "x-remote-user,x-remote-groups,X-Forwarded-For,X-Request-ID,X-Forwarded-Host",
            "X_Remote_User, keep-alive",
        ):
            response = await send(
                client,
                "GET",
                "/x",
                [
                    JSON,
                    ("Connection", connection),
                    ("Cookie", f"gateway_session={token}"),
                    ("X-Remote-User", "mallory"),
                    ("X-Remote-Groups", "admins"),
                ],
            )
            assert response.status == 200, (connection, response.text)
            seen = app.seen[-1].headers
            users = [v for k, v in seen if k.lower().replace("_", "-") == "x-remote-user"]
            groups = [v for k, v in seen if k.lower().replace("_", "-") == "x-remote-groups"]
            assert users == ["alice"], (connection, seen)
            assert groups == ["staff"], (connection, seen)
            names = {k.lower() for k, _ in seen}
            assert "x-forwarded-for" in names and "x-request-id" in names
            assert token not in str(seen)


async def test_connection_content_length_keeps_the_body_whole(gateway, alice):
    client = await gateway()
    token = (await sign_in(client)).token
    body = b"x" * 100_000
    response = await send(
        client,
        "POST",
        "/upload",
        [JSON, ("Connection", "Content-Length"), ("Cookie", f"gateway_session={token}")],
        body,
    )
    assert response.status == 200, response.text
    assert response.json()["body_bytes"] == len(body)


# -- 7. Upgrade abuse ----------------------------------------------------------------------


def ws_head(client: TestClient, target: str, *extra: str, key: bool = True) -> bytes:
    lines = ["Upgrade: websocket", "Connection: Upgrade"]
    if key:
        lines += ["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    return head(client, "GET", target, *lines, *extra)


async def test_websocket_upgrade_to_a_plain_http_upstream_is_not_a_5xx(gateway, alice):
    """The app answers the upgrade with plain HTTP (it is no WebSocket endpoint):
    that is the app's answer to relay (as nginx does) or a 4xx, not a 502."""
    async with recorder("app") as app:
        client = await gateway(upstream=[{"name": "app", "url": app.url}])
        token = (await sign_in(client)).token
        response = await asyncio.wait_for(
            send(
                client,
                "GET",
                "/plain",
                [
                    JSON,
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("Sec-WebSocket-Version", "13"),
                    ("Cookie", f"gateway_session={token}"),
                ],
            ),
            10,
        )
        assert response.status != 101
        assert response.status < 500, (response.status, response.text)
        for marker in LEAKS:
            assert marker not in response.text


async def test_websocket_upgrade_with_a_broken_handshake_is_4xx(gateway, alice):
    client = await gateway()
    token = (await sign_in(client)).token
    cookie = f"Cookie: gateway_session={token}"
    for extra in (
        [],  # no Sec-WebSocket-Key at all
        ["Sec-WebSocket-Key: short", "Sec-WebSocket-Version: 13"],
        ["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 99"],
    ):
        data, closed = await exchange(
            client,
            ws_head(client, "/ws", cookie, "Connection: close", *extra, key=False),
            timeout=10,
        )
        assert closed
        codes = statuses(data)
        assert codes and all(400 <= c < 500 for c in codes), (extra, data[:300])
        assert b"Traceback" not in data


async def test_broken_websocket_handshake_leaves_no_upstream_socket_open(gateway, alice):
    """A handshake the gateway cannot accept from the client must not leave an
    upstream WebSocket dangling (better: not open one at all)."""
    sockets: list[web.WebSocketResponse] = []
    closed_by_gateway = 0

    async def ws_app(request: web.Request) -> web.WebSocketResponse:
        nonlocal closed_by_gateway
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sockets.append(ws)
        async for _ in ws:
            pass
        closed_by_gateway += 1
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", ws_app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        client = await gateway(
            upstream=[{"name": "ws", "url": str(server.make_url("")).rstrip("/")}]
        )
        token = (await sign_in(client)).token
        for _ in range(3):
            data, closed = await exchange(
                client,
                ws_head(
                    client,
                    "/ws",
                    f"Cookie: gateway_session={token}",
                    "Connection: close",
                    key=False,
                ),
                timeout=5,
            )
            assert closed
            assert statuses(data) == [400], data[:300]
        for _ in range(40):
            if len(sockets) == closed_by_gateway:
                break
            await asyncio.sleep(0.05)
        left_open = len(sockets) - closed_by_gateway
        assert left_open == 0, f"{left_open} of {len(sockets)} upstream WebSockets left open"
    finally:
        for ws in sockets:  # close leftovers so the upstream can shut down promptly
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1)
        await server.close()


H2C = (
    "Upgrade: h2c",
    "Connection: Upgrade, HTTP2-Settings",
    "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
)


async def test_h2c_upgrade_is_not_forwarded_as_an_upgrade(gateway, alice):
    client = await gateway()
    token = (await sign_in(client)).token
    response = await asyncio.wait_for(
        send(
            client,
            "GET",
            "/h2c",
            [
                JSON,
                ("Upgrade", "h2c"),
                ("Connection", "Upgrade, HTTP2-Settings, close"),
                ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
                ("Cookie", f"gateway_session={token}"),
            ],
        ),
        10,
    )
    assert response.status == 200, response.text
    facts = response.json()
    assert exact(facts, "Upgrade") == [] and exact(facts, "HTTP2-Settings") == []
    assert "h2c" not in str(facts["headers"]) and "upgrade" not in str(facts["headers"]).lower()


async def test_request_pipelined_behind_an_h2c_upgrade_does_not_hang(gateway, alice):
    """The gateway declines h2c; a request pipelined behind it must then be
    answered, or the connection closed - never left hanging."""
    client = await gateway()
    token = (await sign_in(client)).token
    cookie = f"Cookie: gateway_session={token}"
    data, closed = await exchange(
        client,
        head(client, "GET", "/h2c", "Accept: application/json", *H2C, cookie)
        + head(client, "GET", "/after", "Accept: application/json", cookie, "Connection: close"),
        timeout=3,
    )
    assert statuses(data)[:1] == [200], data[:300]
    assert 101 not in statuses(data)
    assert closed, f"connection left hanging after {statuses(data)}"


async def test_upgrade_on_post_is_plain_http(gateway, alice):
    client = await gateway()
    token = (await sign_in(client)).token
    response = await send(
        client,
        "POST",
        "/post",
        [
            JSON,
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
            ("Cookie", f"gateway_session={token}"),
        ],
        b"body",
    )
    assert response.status == 200
    facts = response.json()
    assert facts["method"] == "POST" and facts["body_bytes"] == 4
    assert exact(facts, "Upgrade") == []


async def test_anonymous_websocket_attempt_is_401_never_upgraded(gateway, db):
    async with recorder("app") as app:
        client = await gateway(upstream=[{"name": "app", "url": app.url}])
        for extra in (
            [],
            ["Accept: text/html", "Sec-Fetch-Mode: websocket"],
            ["Cookie: gateway_session=" + "A" * 43],
        ):
            data, closed = await exchange(
                client, ws_head(client, "/ws", *extra, "Connection: close"), timeout=10
            )
            assert closed
            assert statuses(data) == [401], (extra, data[:300])
        assert app.seen == []


async def test_upgrade_on_a_gateway_page_is_ignored(gateway):
    client = await gateway()
    data, closed = await exchange(
        client, ws_head(client, "/_gateway/login", "Connection: close"), timeout=10
    )
    assert closed
    assert statuses(data) == [200]


# -- 8. security headers on every gateway page -------------------------------------------


def assert_hardened(response: aiohttp.ClientResponse | RawResponse, body: str, what) -> None:
    h = response.headers
    assert "no-store" in h.get("Cache-Control", ""), what
    assert h.get("X-Frame-Options") == "DENY", what
    assert h.get("X-Content-Type-Options") == "nosniff", what
    assert h.get("Referrer-Policy") == "same-origin", what
    csp = h.get("Content-Security-Policy", "")
    directives = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = [w.lower() for w in words[1:]]
    script = directives.get("script-src", directives.get("default-src"))
    assert script is not None, (what, csp)
    for bad in ("'unsafe-inline'", "'unsafe-eval'", "*", "data:", "http:", "https:"):
        assert bad not in script, (what, csp)
    assert directives.get("frame-ancestors") == ["'none'"], (what, csp)
    assert "'unsafe-inline'" not in csp, (what, csp)
    lower = body.lower()
    assert "<script" not in lower, what
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", lower), what
    assert "javascript:" not in lower, what
    for marker in LEAKS:
        assert marker not in body, (what, marker)


async def test_the_apps_answers_get_no_gateway_page_headers(gateway, db):
    """Hardening headers are for the gateway's own pages; the app's answers pass as sent.

    Also on a path that merely starts with the prefix's letters (`/_gatewayx/`):
    it is the app's, not the gateway's.
    """
    client = await gateway(rule=[{"path": "/", "policy": "public"}])
    for path in ("/_gatewayx/page", "/plain"):
        response = await client.get(path, headers={"Accept": "application/json"})
        assert response.status == 200, path
        assert (await response.json())["path"] == path
        for name in ("X-Frame-Options", "Content-Security-Policy", "Referrer-Policy"):
            assert name not in response.headers, (path, name)
        assert response.headers.get("X-Request-ID"), path  # every answer still names its id
    page = await client.get("/_gateway/nope", headers={"Accept": "application/json"})
    assert page.status == 404
    assert page.headers.get("X-Frame-Options") == "DENY"


async def test_security_headers_on_every_gateway_page(gateway, alice, db):
    down = f"http://127.0.0.1:{closed_port()}"
    client = await gateway(
        upstream=[
            {"name": "app", "url": "http://127.0.0.1:1", "path": "/app"},
            {"name": "down", "url": down, "path": "/down"},
        ],
        rule=[{"path": "/app/denied/", "policy": "deny"}],
        login={"max_failures_per_user": 2},
    )
    token = (await sign_in(client)).token
    assert token
    cookie = ("Cookie", f"gateway_session={token}")
    pages: list[tuple[str, int, RawResponse]] = []

    async def check(what: str, status: int, method: str, target: str, headers=(), body=b""):
        response = await send(client, method, target, list(headers), body)
        assert response.status == status, (what, response.status, response.text[:300])
        assert_hardened(response, response.text, what)
        pages.append((what, status, response))
        return response

    await check("login GET", 200, "GET", "/_gateway/login", [HTML])
    nonce, form_token = await fresh_form(client)
    nonce_cookie = ("Cookie", f"gateway_session_csrf={nonce}")
    form = [HTML, ("Content-Type", FORM), nonce_cookie]
    await check(
        "login 401",
        401,
        "POST",
        "/_gateway/login",
        form,
        urlencoded(csrf_token=form_token, username="alice", password="wrong"),
    )
    await check(
        "login 403",
        403,
        "POST",
        "/_gateway/login",
        form,
        urlencoded(csrf_token="forged", username="alice", password="wrong"),
    )
    await check(
        "login 400 missing",
        400,
        "POST",
        "/_gateway/login",
        form,
        urlencoded(csrf_token=form_token, username="alice"),
    )
    await check("login 400 malformed", 400, "POST", "/_gateway/login", form, b"username=\xff")
    await check(
        "login 401 again",
        401,
        "POST",
        "/_gateway/login",
        form,
        urlencoded(csrf_token=form_token, username="alice", password="wrong"),
    )
    throttled = await check(
        "login 429",
        429,
        "POST",
        "/_gateway/login",
        form,
        urlencoded(csrf_token=form_token, username="alice", password="wrong"),
    )
    assert throttled.headers.get("Retry-After")
    await check("logout GET signed in", 200, "GET", "/_gateway/logout", [HTML, cookie])
    await check("logout GET anonymous", 200, "GET", "/_gateway/logout", [HTML])
    await check("logout POST no token", 403, "POST", "/_gateway/logout", [HTML, cookie])
    await check("404 under prefix", 404, "GET", "/_gateway/nope", [HTML])
    await check("404 under prefix json", 404, "GET", "/_gateway/nope", [JSON])
    await check("prefix itself", 404, "GET", "/_gateway", [HTML])
    await check("userinfo 401", 401, "GET", "/_gateway/userinfo", [JSON])
    await check("proxy 403", 403, "GET", "/app/denied/x", [HTML, cookie])
    await check("proxy 403 json", 403, "GET", "/app/denied/x", [JSON, cookie])
    await check("proxy 404", 404, "GET", "/elsewhere", [HTML, cookie])
    await check("proxy 400 bad path", 400, "GET", "/app/%00", [HTML, cookie])
    bad = await check("proxy 502", 502, "GET", "/down/x", [HTML, cookie])
    assert down.split("//")[1] not in bad.text and "127.0.0.1" not in bad.text
    await check("proxy 502 json", 502, "GET", "/down/x", [JSON, cookie])
    # Logout with a valid token: the signed-out page, last (it ends the session).
    logout_nonce, logout_token = await fresh_form(client)
    response = await check(
        "logout POST",
        200,
        "POST",
        "/_gateway/logout",
        [
            HTML,
            ("Content-Type", FORM),
            ("Cookie", f"gateway_session={token}; gateway_session_csrf={logout_nonce}"),
        ],
        urlencoded(csrf_token=logout_token),
    )
    assert "Clear-Site-Data" in response.headers
    assert await session_count(db) == 0
    await check("signed-out page again", 200, "GET", "/_gateway/logout", [HTML, cookie])
    assert len(pages) >= 20


# -- 4. CSRF on logout --------------------------------------------------------------------


async def _logout_form(client: TestClient, token: str) -> tuple[str, str]:
    """The signed-in browser's logout page: its (nonce, form token)."""
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(
            client.make_url("/_gateway/logout"), headers={"Cookie": f"gateway_session={token}"}
        ) as response,
    ):
        text = await response.text()
        nonce = response.cookies["gateway_session_csrf"].value
    match = _TOKEN.search(text)
    assert match, text[:300]
    return nonce, match.group(1)


async def _post_logout(client: TestClient, cookie: str, body: bytes, headers=()) -> RawResponse:
    return await send(
        client,
        "POST",
        "/_gateway/logout",
        [HTML, ("Content-Type", FORM), ("Cookie", cookie), *headers],
        body,
    )


async def _still_signed_in(client: TestClient, token: str) -> bool:
    response = await send(
        client, "GET", "/_gateway/userinfo", [JSON, ("Cookie", f"gateway_session={token}")]
    )
    return response.status == 200


async def test_logout_csrf_refusals_keep_the_session(gateway, alice, db):
    client = await gateway()
    token = (await sign_in(client)).token
    nonce, form_token = await _logout_form(client, token)
    other_nonce, other_token = await fresh_form(client)  # another browser's pair
    mine = f"gateway_session={token}; gateway_session_csrf={nonce}"
    cases = {
        "no token": (mine, b"", ()),
        "empty token": (mine, b"csrf_token=", ()),
        "forged token": (mine, b"csrf_token=" + b"A" * 43, ()),
        "other browser's token": (mine, urlencoded(csrf_token=other_token), ()),
        "no nonce cookie": (f"gateway_session={token}", urlencoded(csrf_token=form_token), ()),
        "other nonce cookie": (
            f"gateway_session={token}; gateway_session_csrf={other_nonce}",
            urlencoded(csrf_token=form_token),
            (),
        ),
        "cross-site origin": (
            mine,
            urlencoded(csrf_token=form_token),
            (("Origin", "https://evil.example"),),
        ),
        "null origin": (mine, urlencoded(csrf_token=form_token), (("Origin", "null"),)),
        "sec-fetch-site": (
            mine,
            urlencoded(csrf_token=form_token),
            (("Sec-Fetch-Site", "cross-site"),),
        ),
        "non-utf8 body": (mine, b"csrf_token=\xff", ()),
        "json body": (mine, b'{"csrf_token": "%s"}' % form_token.encode(), ()),
    }
    for what, (cookie, body, headers) in cases.items():
        response = await _post_logout(client, cookie, body, headers)
        # An unreadable form is a 400 (as on the sign-in form); the rest are CSRF's 403.
        expected = 400 if what == "non-utf8 body" else 403
        assert_clean_4xx(response.status, response.body, expected, what=what)
        assert "Clear-Site-Data" not in response.headers, what
        assert not any(c.startswith("gateway_session=") for c in set_cookies(response)), what
        assert await _still_signed_in(client, token), what
    assert await session_count(db) == 1
    # The right token from the same origin does sign out: the refusals above were CSRF.
    origin = f"http://{client.server.host}:{client.server.port}"
    response = await _post_logout(
        client,
        mine,
        urlencoded(csrf_token=form_token),
        (("Origin", origin), ("Sec-Fetch-Site", "same-origin")),
    )
    assert response.status == 200
    assert not await _still_signed_in(client, token)
    assert await session_count(db) == 0


async def test_logout_everywhere_also_needs_the_token(gateway, alice, db):
    first = await gateway()
    second = await gateway()
    token_a = (await sign_in(first)).token
    token_b = (await sign_in(second)).token
    response = await send(
        first,
        "POST",
        "/_gateway/logout?everywhere=1",
        [HTML, ("Content-Type", FORM), ("Cookie", f"gateway_session={token_a}")],
        b"",
    )
    assert_clean_4xx(response.status, response.body, 403)
    assert await _still_signed_in(first, token_a) and await _still_signed_in(first, token_b)
    assert await session_count(db) == 2


# -- 4. login CSRF -------------------------------------------------------------------------


async def test_login_csrf_attackers_pair_is_useless_in_the_victims_browser(gateway, alice, db):
    """The attacker holds a valid nonce+token pair and an account; the victim's
    browser (its own nonce, or none) cannot be made to use it."""
    await create_user(db, "mallory", "mallory's own password")
    client = await gateway()
    attacker_nonce, attacker_token = await fresh_form(client)
    victim_nonce, _ = await fresh_form(client)
    body = urlencoded(
        csrf_token=attacker_token, username="mallory", password="mallory's own password"
    )
    for nonce in (victim_nonce, None, "", "short", "A" * 65, attacker_nonce + "x"):
        response = await post_login(client, body, nonce=nonce)
        assert_clean_4xx(response.status, response.body, 403, what=nonce)
        assert not any(c.startswith("gateway_session=") for c in set_cookies(response))
    # A cross-site auto-submitting form, even with a matching pair, is refused too.
    for headers in (
        [("Origin", "https://evil.example")],
        [("Sec-Fetch-Site", "cross-site")],
        [("Origin", "null")],
    ):
        response = await post_login(client, body, nonce=attacker_nonce, headers=headers)
        assert_clean_4xx(response.status, response.body, 403, what=headers)
    assert await session_count(db) == 0
    # Control: the attacker's own browser (matching pair, same site) can sign in.
    response = await post_login(client, body, nonce=attacker_nonce)
    assert response.status == 303
    assert await session_count(db) == 1


async def test_login_token_is_not_a_bare_nonce_echo(gateway, alice, db):
    """A token that simply repeats the nonce (double-submit without a signature) fails."""
    client = await gateway()
    nonce, _ = await fresh_form(client)
    for forged in (nonce, nonce[::-1], nonce.upper()):
        response = await post_login(
            client,
            urlencoded(csrf_token=forged, username="alice", password=PASSWORD),
            nonce=nonce,
        )
        assert_clean_4xx(response.status, response.body, 403)
    # Also a nonce the attacker chose himself (cookie tossing over plain http).
    response = await post_login(
        client,
        urlencoded(csrf_token="A" * 43, username="alice", password=PASSWORD),
        nonce="A" * 32,
    )
    assert_clean_4xx(response.status, response.body, 403)
    assert await session_count(db) == 0


# -- 8. cookie names and flags ------------------------------------------------------------


def cookie_attrs(header: str) -> tuple[str, str, dict[str, str]]:
    first, *attrs = [p.strip() for p in header.split(";")]
    name, _, value = first.partition("=")
    parsed = {}
    for attr in attrs:
        key, _, val = attr.partition("=")
        parsed[key.lower()] = val
    return name, value, parsed


async def test_https_without_domain_uses_host_prefix_and_secure(gateway, alice, db):
    client = await gateway(server={"public_url": "https://gateway.example.com"})
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(client.make_url("/_gateway/login")) as page,
    ):
        text = await page.text()
        csrf_headers = page.headers.getall("Set-Cookie")
    name, nonce, attrs = cookie_attrs(csrf_headers[0])
    assert name == "__Host-gateway_session_csrf"
    assert "secure" in attrs and attrs.get("path") == "/" and "domain" not in attrs
    form_token = _TOKEN.search(text).group(1)
    body = urlencoded(csrf_token=form_token, username="alice", password=PASSWORD)
    # The unprefixed nonce cookie name is not ours on https: refused.
    response = await post_login(client, body, nonce=nonce)
    assert_clean_4xx(response.status, response.body, 403)
    response = await post_login(client, body, nonce=nonce, cookie_name=name)
    assert response.status == 303, response.text
    sessions = [c for c in set_cookies(response) if c.startswith("__Host-gateway_session=")]
    assert len(sessions) == 1
    name, token, attrs = cookie_attrs(sessions[0])
    assert "secure" in attrs and "httponly" in attrs
    assert attrs.get("path") == "/" and "domain" not in attrs
    assert attrs.get("samesite", "").lower() == "lax"
    assert not any(c.startswith("gateway_session=") for c in set_cookies(response))
    # Only the prefixed name authenticates: a tossed plain "gateway_session" does not.
    ok = await send(client, "GET", "/_gateway/userinfo", [JSON, ("Cookie", f"{name}={token}")])
    assert ok.status == 200
    tossed = await send(
        client, "GET", "/_gateway/userinfo", [JSON, ("Cookie", f"gateway_session={token}")]
    )
    assert tossed.status == 401
    assert await session_count(db) == 1


async def test_cookie_domain_drops_prefix_but_keeps_secure(gateway, alice):
    client = await gateway(
        server={"public_url": "https://auth.example.com"}, session={"cookie_domain": "example.com"}
    )
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(client.make_url("/_gateway/login")) as page,
    ):
        text = await page.text()
        (csrf_header,) = page.headers.getall("Set-Cookie")
    name, nonce, attrs = cookie_attrs(csrf_header)
    assert name == "gateway_session_csrf" and "secure" in attrs
    form_token = _TOKEN.search(text).group(1)
    response = await post_login(
        client,
        urlencoded(csrf_token=form_token, username="alice", password=PASSWORD),
        nonce=nonce,
    )
    assert response.status == 303, response.text
    (session_header,) = [c for c in set_cookies(response) if "gateway_session=" in c]
    name, _, attrs = cookie_attrs(session_header)
    assert name == "gateway_session"
    assert "secure" in attrs and "httponly" in attrs
    assert attrs.get("domain", "").lstrip(".") == "example.com"


async def test_plain_http_cookies_have_no_prefix_and_no_secure(gateway, alice):
    client = await gateway()
    result = await sign_in(client)
    assert result.status == 303
    (header,) = [c for c in set_cookies(result.response) if c.startswith("gateway_session=")]
    name, _, attrs = cookie_attrs(header)
    assert name == "gateway_session" and "secure" not in attrs and "httponly" in attrs
