"""The one HTTP client to every upstream, and how its failures are answered.

Shared by the proxy (plain requests) and the WebSocket relay.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
from aiohttp import web
from yarl import URL

from ..config import Upstream
from .errors import error_page, try_again
from .exchange import CONFIG

HTTP = web.AppKey("http", aiohttp.ClientSession)
# Each upstream's ClientTimeout, built once: per request it was 1.5% of the
# gateway's py-spy samples (~4 µs).
TIMEOUTS = web.AppKey("upstream_timeouts", dict[timedelta, aiohttp.ClientTimeout])


async def http_client(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: one client for every upstream.

    Keep-alive pools per host, no cookie jar (cookies belong to the browser),
    bodies passed through compressed. No limit on connections: a request never
    waits for one that a WebSocket or a long download holds (the 257th used
    to, with 256 per host). WebSockets have their own cap per upstream
    (WebSocketSlots).
    """
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
    ) as session:
        app[HTTP] = session
        app[TIMEOUTS] = {u.timeout: client_timeout(u.timeout) for u in app[CONFIG].upstreams}
        yield


def target(upstream: Upstream, origin: str, scheme: str | None = None) -> URL:
    base = upstream.url
    if scheme:
        base = scheme + base[base.index(":") :]
    # The client's exact encoding: the app sees what was sent.
    return URL(base + origin, encoded=True)


def bad_gateway(request: web.Request) -> web.Response:
    return error_page(
        request,
        502,
        "Bad gateway",
        "The application behind this gateway is not answering right now.",
        code="bad_gateway",
        actions=try_again(request),
    )


def gateway_timeout(request: web.Request) -> web.Response:
    return error_page(
        request,
        504,
        "Gateway timeout",
        "The application behind this gateway took too long to answer.",
        code="gateway_timeout",
        actions=try_again(request),
    )


def client_timeout(limit: timedelta) -> aiohttp.ClientTimeout:
    # Per read, not per response: a long download is fine while bytes keep coming.
    seconds = limit.total_seconds()
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)
