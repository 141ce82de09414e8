"""The reverse proxy: decide, then stream the request to its upstream and back.

Bodies are streamed chunk by chunk in both directions, so a multi-GB upload
or download never sits in memory. WebSocket upgrades are relayed frame by
frame after the same access check as any other request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from ..config import Upstream
from ..counters import CLIENT_ABORTS, UPSTREAM_SECONDS
from ..policy.access import Verdict
from ..policy.identity import Session
from ..policy.paths import BadPath, normalize_path, request_host
from ..policy.upstreams import UpstreamTable
from . import websocket
from .database import LIVE
from .errors import closed, error_page, not_allowed, try_again, unavailable
from .exchange import COOKIE_NAMES, Exchange, exchange
from .headers import is_websocket, response_headers, upstream_headers
from .upstream_client import HTTP, TIMEOUTS, bad_gateway, gateway_timeout, target

log = logging.getLogger(__name__)

CHUNK = 64 * 1024

UPSTREAMS = web.AppKey("upstreams", UpstreamTable)


def origin_form(request: web.Request) -> str:
    """The request target as path and query, exactly as the client encoded it.

    An absolute-form target (`GET http://host/x`, RFC 9112 3.2.2) is reduced
    to its path and query.
    """
    raw = request.raw_path
    return raw if raw.startswith("/") else request.rel_url.raw_path_qs


async def handle(request: web.Request) -> web.StreamResponse:
    """Everything outside the gateway's own prefix lands here."""
    ex = exchange(request)
    ex.gateway_page = False  # the app's answer: no gateway page headers unless we answer
    host = request_host(request.host)
    if host is None:
        return error_page(
            request, 400, "Bad request", "This host name is not valid.", code="bad_host"
        )
    origin = origin_form(request)
    try:
        path = normalize_path(origin)
    except BadPath:
        return error_page(
            request, 400, "Bad request", "This address cannot be served.", code="bad_path"
        )
    app = ex.app
    upstream = app[UPSTREAMS].match(host, path)
    if upstream is None:
        return error_page(
            request, 404, "Not found", "No application is configured here.", code="not_found"
        )
    ex.upstream_name = upstream.name
    outcome, session = await ex.access(host, path, request.method)
    if outcome is not Verdict.PASS:
        return _refusal(ex, outcome, session)
    if is_websocket(request):
        return await websocket.relay(request, ex, upstream, session, origin)
    return await _forward(request, ex, upstream, session, origin)


def _refusal(ex: Exchange, outcome: Verdict, session: Session | None) -> web.Response:
    request = ex.request
    if outcome is Verdict.CLOSED:
        return closed(request)
    if outcome is Verdict.UNAVAILABLE:
        return unavailable(request)
    if outcome is Verdict.UNAUTHENTICATED:
        return _unauthenticated(ex)
    assert session is not None  # FORBIDDEN: signed in, outside the groups
    return not_allowed(request, session.identity)


def _unauthenticated(ex: Exchange) -> web.Response:
    ex.gateway_page = True
    if ex.wants_html():
        raise web.HTTPFound(ex.login_url(origin_form(ex.request)))
    return web.json_response({"error": "unauthenticated", "login_url": ex.login_url()}, status=401)


class _ClientBody:
    """The client's body, chunk by chunk, for the upstream request.

    A client that stalls mid-body is cut off after `idle_timeout` (`stalled`
    says so): without that, a body whose framing breaks after forwarding began
    (aiohttp never surfaces that error to the stream) would hold the upstream
    request open forever.
    """

    __slots__ = ("idle_timeout", "request", "stalled")

    def __init__(self, request: web.Request, idle_timeout: float) -> None:
        self.request = request
        self.idle_timeout = idle_timeout
        self.stalled = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        content = self.request.content
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout):
                    chunk = await content.readany()
            except TimeoutError:
                self.stalled = True
                raise
            if not chunk:
                return
            yield chunk


def _client_gone(request: web.Request) -> bool:
    """Has the client hung up? (aiohttp drops the transport when the connection is lost.)"""
    transport = request.transport
    return transport is None or transport.is_closing()


def _client_left(request: web.Request, upstream: Upstream, stage: str) -> None:
    """The client's own hang-up: counted and noted, not blamed on the app."""
    CLIENT_ABORTS.inc(stage)
    log.info(
        "client %s left during the %s (%s %s, upstream %s)",
        request.remote or "",
        stage,
        request.method,
        request.path,
        upstream.name,
    )


def _nobody_to_answer() -> web.Response:
    """The answer to a request whose client has gone: never written (aiohttp drops
    it quietly); 499, as nginx logs it, is what the access log and metrics see."""
    response = web.Response(status=499)
    response.force_close()
    return response


async def _unread_body_closes(request: web.Request, response: web.Response) -> web.Response:
    """A body left half-read puts the connection in an unknown state: answer, then close.

    Closed right away rather than after aiohttp's lingering read, which would
    wait on a client whose body framing may already be broken.
    """
    if request.body_exists and not request.content.at_eof():
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        if request.transport is not None:
            request.transport.close()  # flushes what was written, then closes
    return response


def _body_stalled(request: web.Request) -> web.Response:
    return error_page(
        request,
        408,
        "Request timeout",
        "The request's body stopped arriving before it was complete.",
        code="body_timeout",
        actions=try_again(request),
    )


async def _forward(
    request: web.Request, ex: Exchange, upstream: Upstream, session: Session | None, origin: str
) -> web.StreamResponse:
    headers = upstream_headers(ex, session)
    body = _ClientBody(request, upstream.timeout.total_seconds()) if request.body_exists else None
    app = ex.app
    timeout = app[TIMEOUTS][upstream.timeout]
    http = app[HTTP]
    started = time.perf_counter()
    try:
        upstream_response = await http.request(
            request.method,
            target(upstream, origin),
            headers=headers,
            data=body,
            timeout=timeout,
            allow_redirects=False,
        )
    except (TimeoutError, aiohttp.ClientError) as exc:
        # Whose fault? Ask the client's side first: a hang-up or a stalled body
        # ends the upstream request too, but is not the app's doing.
        if _client_gone(request):
            _client_left(request, upstream, "upload")
            return _nobody_to_answer()
        if body is not None and body.stalled:
            log.info("client %s stalled mid-body (%s)", request.remote, request.path)
            return await _unread_body_closes(request, _body_stalled(request))
        if isinstance(exc, TimeoutError):
            log.warning("upstream %s timed out", upstream.name)
            return await _unread_body_closes(request, gateway_timeout(request))
        log.warning("upstream %s unreachable: %s", upstream.name, exc)
        return await _unread_body_closes(request, bad_gateway(request))
    UPSTREAM_SECONDS.observe(upstream.name, time.perf_counter() - started)

    async with upstream_response:
        response = web.StreamResponse(
            status=upstream_response.status,
            reason=upstream_response.reason,
            headers=response_headers(upstream_response, ex.app[COOKIE_NAMES].all),
        )
        if "Upgrade" in request.headers:
            # An upgrade we did not perform (h2c, or websocket on a plain route):
            # aiohttp's parser drops whatever was pipelined behind it, so this
            # connection must not be reused.
            response.force_close()
        stream = upstream_response.content
        watch = cutter = None
        try:
            await response.prepare(request)
            if request.method == "HEAD":
                return response
            if session is not None and not stream.is_eof():
                # A body still to come (a download, a stream, a long poll): from now on
                # the session's end cuts it (store.live). A body that arrived with the
                # headers, as small answers do, is not watched: no cost to the hot path.
                cutter = _Cutter(request, upstream_response)
                watch = app[LIVE].watch(session, cutter)
            async for chunk in stream.iter_chunked(CHUNK):
                await response.write(chunk)
            if cutter is not None and cutter.done:
                return response
            await response.write_eof()
        except (ConnectionError, TimeoutError, aiohttp.ClientError) as exc:
            if cutter is not None and cutter.done:
                return response
            if _client_gone(request):
                # Leaving the `async with` drops the half-read upstream connection.
                _client_left(request, upstream, "download")
                return response
            # Headers are gone already: the only honest signal left is to cut
            # the connection, so the client cannot take a truncated body as whole.
            log.warning("upstream %s failed mid-response: %r", upstream.name, exc)
            if request.transport is not None:
                request.transport.abort()
        finally:
            if watch is not None:
                watch.close()
    return response


class _Cutter:
    """A watched stream's `cut`: the session ended mid-body. Stop reading from the
    app and drop the client's connection without a clean end, so it cannot take
    the truncated body as whole."""

    __slots__ = ("done", "request", "upstream_response")

    def __init__(self, request: web.Request, upstream_response: aiohttp.ClientResponse) -> None:
        self.request = request
        self.upstream_response = upstream_response
        self.done = False

    def __call__(self, why: str) -> None:
        self.done = True
        log.info(
            "session %s: cut the response from %s to %s",
            why,
            self.request.path,
            self.request.remote,
        )
        self.upstream_response.close()
        if self.request.transport is not None:
            self.request.transport.abort()
