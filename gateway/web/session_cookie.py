"""Every cookie the gateway sets, with its name and attributes, in one place.

The session cookie holds only a random token (the session lives in
PostgreSQL); the CSRF cookie holds the browser's nonce (policy.csrf). Both
are HttpOnly and SameSite=Lax, Secure on https, named by policy.cookies.
"""

from __future__ import annotations

from aiohttp import web

from .exchange import CONFIG, COOKIE_NAMES, Exchange


def set_session_cookie(
    response: web.StreamResponse, request: web.Request, token: str, *, max_age: int | None
) -> None:
    config = request.app[CONFIG]
    response.set_cookie(
        request.app[COOKIE_NAMES].session,
        token,
        path="/",
        domain=config.session.cookie_domain or None,
        max_age=max_age,
        secure=config.server.https,
        httponly=True,
        samesite="Lax",
    )


def clear_session_cookie(response: web.StreamResponse, request: web.Request) -> None:
    config = request.app[CONFIG]
    response.del_cookie(
        request.app[COOKIE_NAMES].session,
        path="/",
        domain=config.session.cookie_domain or None,
        secure=config.server.https,
        httponly=True,
        samesite="Lax",
    )


def set_csrf_cookies(
    request: web.Request, response: web.StreamResponse, cookies: dict[str, str]
) -> None:
    """The CSRF nonces a page minted while rendering (forms.csrf_token)."""
    https = request.app[CONFIG].server.https
    for name, value in cookies.items():
        response.set_cookie(name, value, path="/", secure=https, httponly=True, samesite="Lax")


def clear_stale_cookie(request: web.Request, response: web.StreamResponse, ex: Exchange) -> None:
    """Before headers go out: a dead session's cookie is removed from the browser,
    and a planted one (ours twice, or a look-alike) takes the site's cookies with it.

    A signal rather than a middleware so it also reaches streamed proxy
    responses, whose headers are sent before a middleware would see them.
    aiohttp has already turned response.cookies into headers by the time the
    signal runs, so the expiring cookie is added as a header.
    """
    cookies = ex.cookies_read
    if cookies is not None and None in cookies[0].values():
        # Ours twice, or a look-alike beside it: planted, most likely on the
        # parent domain by a sibling subdomain, where deleting ours cannot reach.
        # Clear-Site-Data clears every cookie of the site, those included, so the
        # plant costs the person one sign-in, not every sign-in from now on.
        response.headers.setdefault("Clear-Site-Data", '"cookies"')
    if not ex.clear_cookie:
        return
    name = ex.app[COOKIE_NAMES].session
    if name not in response.cookies:
        carrier = web.StreamResponse()
        clear_session_cookie(carrier, request)
        response.headers.add("Set-Cookie", carrier.cookies[name].output(header="").strip())
