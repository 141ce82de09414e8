"""WebSocket upgrades, relayed frame by frame after the same access check as any
other request, and capped per upstream so they can never starve an app."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web

from ..config import Upstream
from ..policy.identity import Session
from .database import LIVE
from .errors import error_page, try_again
from .exchange import Exchange
from .headers import upstream_headers
from .upstream_client import HTTP, bad_gateway, gateway_timeout, target

log = logging.getLogger(__name__)

SESSION_ENDED = b"session ended"  # the close reason with code 1008


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


async def relay(
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
    # The session ending (anywhere: store.live) ends the connection it opens. Watched
    # from before the app's handshake: an end during it must not go unnoticed.
    ended = asyncio.Event()
    watch = ex.app[LIVE].watch(session, lambda _why: ended.set()) if session else None
    try:
        return await _relay_in_slot(request, ex, upstream, ended, headers, protocols, origin)
    finally:
        if watch is not None:
            watch.close()
        slots.release(upstream)


async def _relay_in_slot(
    request: web.Request,
    ex: Exchange,
    upstream: Upstream,
    ended: asyncio.Event,
    headers: list[tuple[str, str]],
    protocols: list[str],
    origin: str,
) -> web.StreamResponse:
    scheme = "wss" if upstream.url.startswith("https") else "ws"
    try:
        to_app = await ex.app[HTTP].ws_connect(
            target(upstream, origin, scheme),
            headers=headers,
            protocols=protocols,
            timeout=aiohttp.ClientWSTimeout(ws_close=10),
            max_msg_size=0,
            autoping=True,
        )
    except TimeoutError:
        return gateway_timeout(request)
    except aiohttp.WSServerHandshakeError as exc:
        # The app answered, just not with 101 (a plain HTTP route): its status
        # is the honest answer, as nginx would pass it on.
        response = web.Response(status=exc.status if 200 <= exc.status < 600 else 502)
        response.force_close()
        return response
    except aiohttp.ClientError as exc:
        log.warning("upstream %s websocket failed: %s", upstream.name, exc)
        return bad_gateway(request)

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
            asyncio.create_task(ended.wait()),
        ]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        code, message = aiohttp.WSCloseCode.OK, b""
        if ended.is_set():
            log.info("session ended: closing its WebSocket to %s", upstream.name)
            code, message = aiohttp.WSCloseCode.POLICY_VIOLATION, SESSION_ENDED
        await to_app.close(code=code, message=message)
        if to_client.prepared:  # not when the client left before the handshake answer
            await to_client.close(code=code, message=message)
    return to_client
