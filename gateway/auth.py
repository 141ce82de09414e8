"""Who is making this request: the session cookie, resolved once per request."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .config import Config, IdentityHeaders
from .policy.access import Verdict, needs_lookup, verdict
from .policy.cookies import split_cookies
from .policy.identity import Identity, Session
from .state import CONFIG, RULES, SESSIONS, Exchange, exchange
from .store.db import DatabaseUnavailable


@dataclass(frozen=True)
class CookieNames:
    session: str
    csrf: str
    all: frozenset[str] = frozenset()  # both names; filled in by cookie_names()


def cookie_names(config: Config) -> CookieNames:
    """On https with a host-only cookie, '__Host-' makes the browser refuse any
    copy set by a sibling subdomain or over plain http (cookie tossing)."""
    base = config.session.cookie_name
    prefix = "__Host-" if config.server.https and not config.session.cookie_domain else ""
    session, csrf = prefix + base, prefix + base + "_csrf"
    return CookieNames(session=session, csrf=csrf, all=frozenset((session, csrf)))


COOKIE_NAMES = web.AppKey("cookie_names", CookieNames)


def identity_header_values(ident: Identity, names: IdentityHeaders) -> list[tuple[str, str]]:
    """The identity as header (name, value) pairs, for upstreams and for /auth."""
    return [
        (names.user, ident.username),
        (names.email, _header_safe(ident.email)),  # checked on the way in; rows may predate that
        (names.name, _header_safe(ident.name)),
        (names.groups, ",".join(ident.groups)),
    ]


def _header_safe(value: str) -> str:
    """Display names are free text; a header value may not carry CR/LF or non-latin-1."""
    if value.isascii() and value.isprintable():
        return value  # the common case, checked in C
    cleaned = value.replace("\r", " ").replace("\n", " ")
    return cleaned.encode("latin-1", "replace").decode("latin-1")


def parsed_cookies(
    request: web.Request, ex: Exchange | None = None
) -> tuple[dict[str, str | None], str]:
    """(the gateway's cookies, the Cookie header without them), parsed once per request.

    A cookie of ours that came twice or beside a look-alike is there as None
    (policy.cookies): ambiguous counts as absent."""
    ex = ex or exchange(request)
    if ex.cookies is None:
        header = "; ".join(request.headers.getall("Cookie", ()))
        ex.cookies = split_cookies(header, ex.app[COOKIE_NAMES].all)
    return ex.cookies


def own_cookies(request: web.Request) -> dict[str, str | None]:
    return parsed_cookies(request)[0]


async def current_session(request: web.Request, ex: Exchange | None = None) -> Session | None:
    """The request's live session, or None. Raises DatabaseUnavailable (fail closed)."""
    ex = ex or exchange(request)
    if ex.session_known:
        return ex.session
    mine = parsed_cookies(request, ex)[0]
    name = ex.app[COOKIE_NAMES].session
    token = mine.get(name)
    session = None
    if token:
        session = await ex.app[SESSIONS].lookup(token)
        ex.clear_cookie = session is None
    elif name in mine:
        # Sent empty, twice, or beside a look-alike: no session, and ours is cleared.
        ex.clear_cookie = True
    ex.session, ex.session_known = session, True
    return session


async def access(
    request: web.Request, ex: Exchange, host: str, path: str, method: str
) -> tuple[Verdict, Session | None]:
    """The access verdict for a request to host/path by method, and the session
    (when one was looked up and is live). Asked by the proxy and by /auth."""
    decision = ex.app[RULES].decide(host, path, method)
    if not needs_lookup(decision):
        return verdict(decision, None), None
    try:
        session = await current_session(request, ex)
    except DatabaseUnavailable:
        return verdict(decision, None, database_up=False), None
    return verdict(decision, session), session


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


def clear_stale_cookie(request: web.Request, response: web.StreamResponse, ex: Exchange) -> None:
    """Before headers go out: a dead session's cookie is removed from the browser,
    and a planted one (ours twice, or a look-alike) takes the site's cookies with it.

    A signal rather than a middleware so it also reaches streamed proxy
    responses, whose headers are sent before a middleware would see them.
    aiohttp has already turned response.cookies into headers by the time the
    signal runs, so the expiring cookie is added as a header.
    """
    cookies = ex.cookies
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
