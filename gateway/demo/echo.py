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
from urllib.parse import quote

from aiohttp import WSMsgType, web

from ..config import IdentityHeaders
from ..resources import favicon_uri

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


def _pairs(headers: list[tuple[str, str]]) -> str:
    return "".join(
        f'<div class="pair"><dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd></div>'
        for k, v in headers
    )


def _page(request: web.Request, facts: dict) -> str:
    """What a person sees first after signing in: who the gateway says they are.

    Styled by the gateway's own stylesheet (this app only ever runs behind it),
    and laid out as name/value pairs that wrap, so it fits a phone.
    """
    prefix = request.app[PREFIX]
    identity_names = {n.lower() for n in IdentityHeaders().names()}
    user = request.headers.get(IdentityHeaders().user)
    identity = [(k, v) for k, v in request.headers.items() if k.lower() in identity_names]
    others = [(k, v) for k, v in request.headers.items() if k.lower() not in identity_names]
    if user:
        who = f"The gateway says you are <strong>{html.escape(user)}</strong>."
        action = (
            f'<a class="button button-secondary button-block" '
            f'href="{html.escape(prefix)}/logout">Sign out</a>'
        )
        told = (
            '<h2 class="section-title">What the gateway told the app</h2>'
            f'<dl class="pairs pairs-identity">{_pairs(identity)}</dl>'
        )
    else:
        who = "You are not signed in. This path is public, so no identity headers arrived."
        login = f"{prefix}/login?rd={quote(request.raw_path, safe='/')}"
        action = (
            f'<a class="button button-primary button-block" href="{html.escape(login)}">Sign in</a>'
        )
        told = ""
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="color-scheme" content="light dark">
  <title>Demo app</title>
  <link rel="icon" type="image/svg+xml" href="{favicon_uri()}">
  <link rel="stylesheet" href="{html.escape(prefix)}/static/gateway.css">
</head>
<body>
  <div class="page">
    <main class="card card-wide">
      <p class="status-code">Demo app</p>
      <h1 class="title">An app with no login of its own</h1>
      <p class="subtitle">{who}</p>
      {told}
      <h2 class="section-title">The request it received</h2>
      <p class="note-plain"><code>{html.escape(f"{facts['method']} {facts['path']}")}</code></p>
      <dl class="pairs">{_pairs(others)}</dl>
      <div class="actions">{action}</div>
    </main>
  </div>
</body>
</html>"""


# Where the gateway in front keeps its pages: the stylesheet and the sign-in/out links.
PREFIX = web.AppKey("prefix", str)


def create_echo_app(prefix: str = "/_gateway") -> web.Application:
    app = web.Application()
    app[PREFIX] = prefix
    app.router.add_route("*", "/{tail:.*}", echo)
    return app
