"""The reverse proxy: decide, then stream the request to its upstream and back.

Bodies are streamed chunk by chunk in both directions, so a multi-GB upload
or download never sits in memory. WebSocket upgrades are relayed frame by
frame after the same access check as any other request.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from yarl import URL

from ..config import Upstream
from ..counters import CLIENT_ABORTS, UPSTREAM_SECONDS
from ..policy.access import Verdict
from ..policy.identity import Session
from ..policy.paths import BadPath, normalize_path, request_host
from ..policy.upstreams import UpstreamTable
from .errors import closed, error_page, not_allowed, try_again, unavailable
from .exchange import COOKIE_NAMES, Exchange, exchange
from .headers import is_websocket, response_headers, upstream_headers

log = logging.getLogger(__name__)

CHUNK = 64 * 1024

UPSTREAMS = web.AppKey("upstreams", UpstreamTable)
HTTP = web.AppKey("http", aiohttp.ClientSession)


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
        yield


class WebSocketSlots:
    """How many WebSockets are open to each upstream, against its `max_websockets`.

    A WebSocket holds its upstream connection for as long as it lives; the
    cap keeps thousands of them from exhausting the app (or this process)
    with a clear 503 instead of a pile-up. Ordinary requests never count.
    """

    def __init__(self) -> None:
        self.open: dict[str, int] = {}

    def take(self, upstream: Upstream) -> bool:
        held = self.open.get(upstream.name, 0)
        if held >= upstream.max_websockets:
            return False
        self.open[upstream.name] = held + 1
        return True

    def release(self, upstream: Upstream) -> None:
        self.open[upstream.name] -= 1


WEBSOCKET_SLOTS = web.AppKey("websocket_slots", WebSocketSlots)


def origin_form(request: web.Request) -> str:
    """The request target as path and query, exactly as the client encoded it.

    An absolute-form target (`GET http://host/x`, RFC 9112 3.2.2) is reduced
    to its path and query.
    """
    raw = request.raw_path
    return raw if raw.startswith("/") else request.rel_url.raw_path_qs


def _target(upstream: Upstream, origin: str, scheme: str | None = None) -> URL:
    base = upstream.url
    if scheme:
        base = scheme + base[base.index(":") :]
    # The client's exact encoding: the app sees what was sent.
    return URL(base + origin, encoded=True)


def _bad_gateway(request: web.Request) -> web.Response:
    return error_page(
        request,
        502,
        "Bad gateway",
        "The application behind this gateway is not answering right now.",
        code="bad_gateway",
        actions=try_again(request),
    )


def _gateway_timeout(request: web.Request) -> web.Response:
    return error_page(
        request,
        504,
        "Gateway timeout",
        "The application behind this gateway took too long to answer.",
        code="gateway_timeout",
        actions=try_again(request),
    )


@functools.lru_cache(maxsize=64)
def _timeout(seconds: int) -> aiohttp.ClientTimeout:
    # Per read, not per response: a long download is fine while bytes keep coming.
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)


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
        return await _relay_websocket(request, ex, upstream, session, origin)
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
    body = _ClientBody(request, upstream.timeout) if request.body_exists else None
    timeout = _timeout(upstream.timeout)
    http = ex.app[HTTP]
    started = time.perf_counter()
    try:
        upstream_response = await http.request(
            request.method,
            _target(upstream, origin),
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
            return await _unread_body_closes(request, _gateway_timeout(request))
        log.warning("upstream %s unreachable: %s", upstream.name, exc)
        return await _unread_body_closes(request, _bad_gateway(request))
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
        try:
            await response.prepare(request)
            if request.method == "HEAD":
                return response
            async for chunk in upstream_response.content.iter_chunked(CHUNK):
                await response.write(chunk)
            await response.write_eof()
        except (ConnectionError, TimeoutError, aiohttp.ClientError) as exc:
            if _client_gone(request):
                # Leaving the `async with` drops the half-read upstream connection.
                _client_left(request, upstream, "download")
                return response
            # Headers are gone already: the only honest signal left is to cut
            # the connection, so the client cannot take a truncated body as whole.
            log.warning("upstream %s failed mid-response: %r", upstream.name, exc)
            if request.transport is not None:
                request.transport.abort()
    return response


async def _relay_websocket(
    request: web.Request, ex: Exchange, upstream: Upstream, session: Session | None, origin: str
) -> web.StreamResponse:
    headers = upstream_headers(ex, session, websocket=True)
    protocols = [
        p.strip()
        for value in request.headers.getall("Sec-WebSocket-Protocol", ())
        for p in value.split(",")
        if p.strip()
    ]
    if not web.WebSocketResponse().can_prepare(request).ok:
        # A broken client handshake: refuse before opening anything upstream.
        return error_page(
            request,
            400,
            "Bad request",
            "This WebSocket handshake is invalid.",
            code="bad_websocket",
        )
    slots = ex.app[WEBSOCKET_SLOTS]
    if not slots.take(upstream):
        log.warning(
            "upstream %s: %d WebSockets open, refusing one more",
            upstream.name,
            upstream.max_websockets,
        )
        return error_page(
            request,
            503,
            "Too many connections",
            "The application has as many live connections open as it may. Please try again.",
            code="too_many_websockets",
            actions=try_again(request),
        )
    try:
        return await _relay_websocket_in_slot(request, ex, upstream, headers, protocols, origin)
    finally:
        slots.release(upstream)


async def _relay_websocket_in_slot(
    request: web.Request,
    ex: Exchange,
    upstream: Upstream,
    headers: list[tuple[str, str]],
    protocols: list[str],
    origin: str,
) -> web.StreamResponse:
    scheme = "wss" if upstream.url.startswith("https") else "ws"
    try:
        to_app = await ex.app[HTTP].ws_connect(
            _target(upstream, origin, scheme),
            headers=headers,
            protocols=protocols,
            timeout=aiohttp.ClientWSTimeout(ws_close=10),
            max_msg_size=0,
            autoping=True,
        )
    except TimeoutError:
        return _gateway_timeout(request)
    except aiohttp.WSServerHandshakeError as exc:
        # The app answered, just not with 101 (a plain HTTP route): its status
        # is the honest answer, as nginx would pass it on.
        response = web.Response(status=exc.status if 200 <= exc.status < 600 else 502)
        response.force_close()
        return response
    except aiohttp.ClientError as exc:
        log.warning("upstream %s websocket failed: %s", upstream.name, exc)
        return _bad_gateway(request)

    to_client = web.WebSocketResponse(
        protocols=[to_app.protocol] if to_app.protocol else (), max_msg_size=0, autoping=True
    )

    async def pump(source, sink) -> None:
        async for message in source:
            if message.type == aiohttp.WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            else:
                break
        await sink.close(code=source.close_code or aiohttp.WSCloseCode.OK)

    try:
        await to_client.prepare(request)
        tasks = [
            asyncio.create_task(pump(to_client, to_app)),
            asyncio.create_task(pump(to_app, to_client)),
        ]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        await to_app.close()
        if to_client.prepared:  # not when the client left before the handshake answer
            await to_client.close()
    return to_client
