"""A small upstream app that shows what it received: used by `gateway demo` and the tests.

GET any path: an HTML page (or JSON with `Accept: application/json`) listing
the request's method, path and headers, identity headers first.
`/_echo/stream?bytes=N` streams N bytes; `/_echo/slow?seconds=S` answers late;
a POST body is streamed and summarised (length, SHA-256), never buffered;
a WebSocket upgrade on any path echoes each message back.
"""

from __future__ import annotations

import asyncio
import hashlib
import html

from aiohttp import WSMsgType, web

from .config import IdentityHeaders

_ZEROS = bytes(1024 * 1024)


async def _summarise_body(request: web.Request) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(256 * 1024):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


async def _websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("chat", "echo"), max_msg_size=0)
    await ws.prepare(request)
    await ws.send_json({"hello": request.headers.get(IdentityHeaders().user, "")})
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


async def _stream(request: web.Request) -> web.StreamResponse:
    remaining = int(request.query.get("bytes", "0"))
    response = web.StreamResponse()
    response.content_length = remaining
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    while remaining > 0:
        chunk = _ZEROS[: min(remaining, len(_ZEROS))]
        await response.write(chunk)
        remaining -= len(chunk)
    await response.write_eof()
    return response


async def echo(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await _websocket(request)
    if request.path == "/_echo/stream":
        return await _stream(request)
    if request.path == "/_echo/slow":
        await asyncio.sleep(float(request.query.get("seconds", "1")))
    size, digest = await _summarise_body(request)
    facts = {
        "method": request.method,
        "path": request.raw_path,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body_bytes": size,
        "body_sha256": digest,
    }
    if "text/html" not in request.headers.get("Accept", ""):
        return web.json_response(facts)
    return web.Response(text=_page(request, facts), content_type="text/html")


def _page(request: web.Request, facts: dict) -> str:
    identity = IdentityHeaders()
    user = request.headers.get(identity.user)
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in request.headers.items()
    )
    who = (
        f"<p>The gateway says you are <strong>{html.escape(user)}</strong>.</p>"
        if user
        else "<p>No identity headers arrived: this path is public.</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Demo app</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>Demo app behind the gateway</h1>{who}
<p>This app has no login of its own. It received <code>{html.escape(facts["method"])}
{html.escape(facts["path"])}</code> with these headers:</p>
<table>{rows}</table>
<p><a href="/_gateway/logout">Sign out</a></p></main></body></html>"""


def create_echo_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app
