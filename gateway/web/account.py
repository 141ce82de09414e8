"""The signed-in person's own view of themselves: `{prefix}/userinfo` (JSON)."""

from __future__ import annotations

from aiohttp import web

from .exchange import exchange


async def userinfo(request: web.Request) -> web.Response:
    ex = exchange(request)
    ex.gateway_page = True
    session, known = await ex.session_if_known()
    if not known:
        return web.json_response({"error": "unavailable"}, status=503)
    if session is None:
        return web.json_response({"error": "unauthenticated"}, status=401)
    ident = session.identity
    return web.json_response(
        {
            "user": ident.username,
            "email": ident.email,
            "name": ident.name,
            "groups": list(ident.groups),
            "session": {
                "created": session.created_at.isoformat(),
                "expires": session.expires_at.isoformat(),
            },
        }
    )
