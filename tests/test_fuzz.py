"""A bounded, seeded fuzz of what a client controls, against a running gateway.

Request line, headers, cookies and form fields are mutated from real
requests (the gateway's own sign-in, a proxied page, /auth) and written raw
on a socket. For every one: an answer below 500 (or a closed connection for
what is not HTTP at all), within a bound (no hang), and nothing at WARNING or
above and no traceback in the log. The seed is fixed, so a failure repeats;
FUZZ_SEED and FUZZ_CASES choose others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
from urllib.parse import quote

from helpers import sign_in

SEED = int(os.environ.get("FUZZ_SEED", "20261203"))
CASES = int(os.environ.get("FUZZ_CASES", "400"))
BOUND = 10.0  # seconds for one exchange, however odd

METHODS = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "get", "G\x00T", "", "GET\t"]
TARGETS = [
    "/", "/public/x", "/app?q=1", "/_gateway/login", "/_gateway/logout", "/_gateway/auth",
    "/_gateway/userinfo", "/_gateway/static/gateway.css", "/admin/x", "*", "http://x/y",
    "/_gateway/../admin", "/%2e%2e/admin", "/a%00b", "/%ff%fe", "//x", "/\\x",
]  # fmt: skip
VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 extra", "http/1.1", "HTTP/1.", ""]
NAMES = [
    "Host", "Cookie", "Content-Type", "Content-Length", "Transfer-Encoding", "Expect",
    "Origin", "Sec-Fetch-Site", "X-Original-URL", "X-Forwarded-For", "X-Forwarded-Uri",
    "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Method", "X-Remote-User",
    "X_Remote_User", "Connection", "Upgrade", "Accept", "Referer", "X-Request-ID",
    "Sec-WebSocket-Key", "Authorization", "Range", "If-None-Match",
]  # fmt: skip
JUNK = [
    "", " ", "\t", "\u2000", "\u00e9", "\ufeff", "%00", "%ff", "\\", "//", "..", ";", "=",
    '"', "'", "<script>", "\x01", "A" * 300, "1e9", "-1", "chunked", "100-continue", "null",
    "cross-site", "same-origin", "websocket", "upgrade", "close", "http://evil.example/",
]  # fmt: skip
USUAL = ["text/html", "application/json", "same-origin", "127.0.0.1", "keep-alive", "1", "0"]
OUR_COOKIES = [
    "gateway_session",
    "gateway_session_csrf",
    "\u2000gateway_session",
    "GATEWAY_SESSION",
]
FIELDS = ["csrf_token", "username", "password", "rd", "remember", "x"]


def junk(rng: random.Random) -> str:
    return "".join(rng.choice(JUNK) for _ in range(rng.randint(0, 3)))


def pick(rng: random.Random, usual: list[str], odd: list[str], p: float) -> str:
    """Mostly a usual value; with probability p an odd one."""
    return rng.choice(odd) if rng.random() < p else rng.choice(usual)


def case(rng: random.Random, port: int, token: str) -> bytes:
    """One mutated request, as bytes: a real request with a few parts bent."""
    method = pick(rng, ["GET", "POST", "HEAD"], METHODS, 0.15)
    target = rng.choice(TARGETS) + (junk(rng) if rng.random() < 0.2 else "")
    version = pick(rng, ["HTTP/1.1"], VERSIONS, 0.1)
    host = pick(rng, [f"127.0.0.1:{port}", "127.0.0.1"], [junk(rng) or "x y"], 0.1)
    headers = [f"Host: {host}"]
    for _ in range(rng.randint(0, 6)):
        name = rng.choice(NAMES) if rng.random() < 0.9 else junk(rng) or "X"
        value = rng.choice(JUNK) if rng.random() < 0.5 else junk(rng)
        headers.append(f"{name}: {value if rng.random() < 0.3 else rng.choice(USUAL)}")
    if rng.random() < 0.6:
        cookies = [
            f"{pick(rng, ['gateway_session'], OUR_COOKIES, 0.3)}="
            f"{pick(rng, [token], [junk(rng), token[:10]], 0.3)}"
            for _ in range(rng.randint(1, 2))
        ]
        headers.append("Cookie: " + "; ".join(cookies))
    body = b""
    if method == "POST" or rng.random() < 0.1:
        fields = [
            f"{quote(pick(rng, FIELDS, [junk(rng)], 0.2))}={quote(junk(rng))}"
            for _ in range(rng.randint(0, 6))
        ]
        body = "&".join(fields).encode("utf-8", "surrogatepass")
        if rng.random() < 0.1:
            body += bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        headers.append("Content-Type: application/x-www-form-urlencoded")
        if rng.random() < 0.9:
            headers.append(f"Content-Length: {len(body)}")
    headers.append("Connection: close")
    head = "\r\n".join([f"{method} {target} {version}", *headers]) + "\r\n\r\n"
    return head.encode("utf-8", "surrogatepass") + body


async def exchange(port: int, data: bytes) -> bytes | None:
    """Everything the gateway answers, until it closes; None when, within BOUND, it
    neither answered nor closed (a hang). An answer followed by an open connection
    is keep-alive, which a fuzzed request may well ask for."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    chunks: list[bytes] = []
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(BOUND):
                while chunk := await reader.read(65536):
                    chunks.append(chunk)
                return b"".join(chunks)  # closed by the gateway
    finally:
        writer.close()
    answer = b"".join(chunks)
    return answer if b"\r\n\r\n" in answer or reader.at_eof() else None


async def test_fuzzed_requests_get_no_5xx_no_traceback_and_no_hang(gateway, alice, caplog):
    client = await gateway(
        rule=[{"path": "/public/", "policy": "public"}, {"path": "/admin/", "policy": "deny"}]
    )
    token = (await sign_in(client)).token
    rng = random.Random(SEED)
    failures = []
    with caplog.at_level(logging.INFO):
        for i in range(CASES):
            data = case(rng, client.port, token)
            answer = await exchange(client.port, data)
            if answer is None:
                failures.append((i, "hang", data[:300]))
                continue
            found = re.findall(rb"^HTTP/1\.[01] (\d{3})", answer, re.M)
            if any(int(s) >= 500 for s in found):
                failures.append((i, found, data[:200]))
    assert failures == []
    noisy = [
        (r.name, r.levelname, r.getMessage()[:200])
        for r in caplog.records
        if r.exc_info or r.levelno >= logging.WARNING
    ]
    # The only warnings a fuzzer may cause are the gateway's own one-line notes
    # of refused forms (CSRF), never a traceback.
    assert [
        n for n in noisy if not (n[0] == "gateway.web.forms" and n[2].startswith("refused "))
    ] == []
