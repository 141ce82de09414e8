"""The one error renderer (HTML for browsers, JSON for the rest), the one hook
that turns a database outage into a 503, and the hardening headers every
gateway page carries."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp_jinja2
from aiohttp import HttpVersion11, web, web_response

from ..policy.identity import Identity
from ..store.db import DatabaseUnavailable
from .exchange import CONFIG, Exchange, exchange
from .forms import csrf_token
from .session_cookie import set_csrf_cookies

log = logging.getLogger(__name__)

# aiohttp puts "Python/3.x aiohttp/3.y.z" in every answer's Server header,
# its own 400s for malformed requests (sent before any handler or signal
# runs) included, and has no setting for it: the default it reads at send
# time is this module attribute. Versions help an attacker, not a user.
web_response.SERVER_SOFTWARE = "Gateway"

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


def render(
    request: web.Request, template: str, context: dict, *, status: int = 200
) -> web.Response:
    """A gateway page from templates/ (and so with the hardening headers)."""
    exchange(request).gateway_page = True
    return aiohttp_jinja2.render_template(template, request, context, status=status)


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


@dataclass(frozen=True)
class Action:
    """A way on from an error page: a link, styled as a button."""

    label: str
    href: str
    primary: bool = False


START_PAGE = Action("Go to the start page", "/", primary=True)


def error_page(
    request: web.Request,
    status: int,
    heading: str,
    message: str,
    *,
    code: str,
    html: bool | None = None,
    actions: Sequence[Action] = (START_PAGE,),
    signed_in: Identity | None = None,
) -> web.Response:
    """An HTML page for browsers, a small JSON body for everything else.

    No page is a dead end: `actions` are the ways on. With `signed_in`, the
    page says who the person is signed in as and offers to switch account
    (sign out, then sign in again and come back here).
    """
    exchange(request).gateway_page = True
    if html is None:
        html = "text/html" in request.headers.get("Accept", "")
    if not html:
        return web.json_response({"error": code, "message": message}, status=status)
    context = {
        "status": status,
        "heading": heading,
        "message": message,
        "actions": actions,
        "signed_in_as": None,
    }
    cookies: dict[str, str] = {}
    if signed_in is not None:
        context.update(
            signed_in_as=signed_in.name or signed_in.username,
            username=signed_in.username,
            csrf_token=csrf_token(request, cookies),
            rd=request.rel_url.raw_path_qs,
        )
    response = render(request, "error.html", context, status=status)
    set_csrf_cookies(request, response, cookies)
    return response


def try_again(request: web.Request, again: str | None = None) -> tuple[Action, Action]:
    """For a passing failure: ask for `again` (default: this address; a GET, as a
    person would), or leave for the start page.

    The address goes through the rd check like any other link we print: `//host/x`
    is a path the proxy serves, and a link that leaves the site as a browser reads it.
    """
    ex = exchange(request)
    target = ex.redirect_target(request.rel_url.raw_path_qs if again is None else again)
    return (Action("Try again", target, primary=True), Action(START_PAGE.label, START_PAGE.href))


def unavailable(request: web.Request, again: str | None = None) -> web.Response:
    return error_page(
        request,
        503,
        "Temporarily unavailable",
        "Sign-in is temporarily unavailable. Please try again in a moment.",
        code="unavailable",
        actions=try_again(request, again),
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def fails_closed(handler: Handler) -> Handler:
    """The one outage hook for the gateway's pages: a database failure anywhere
    in `handler` is a 503 whose "Try again" leads to `Exchange.again` (default:
    the same address). The proxy and /auth decide outages in the access verdict."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except DatabaseUnavailable:
            log.warning(
                "%s %s answered 503: database unavailable",
                request.method,
                request.path,
                exc_info=True,
            )
            return unavailable(request, again=exchange(request).again)

    return guarded


def closed(request: web.Request) -> web.Response:
    """403 from a deny rule: closed to everyone, signed in or not."""
    return error_page(
        request,
        403,
        "Access denied",
        "This address is closed: the gateway does not let anyone open it.",
        code="forbidden",
    )


def not_allowed(request: web.Request, identity: Identity) -> web.Response:
    """403 for a signed-in person outside the rule's groups: who they are, and a way to switch."""
    return error_page(
        request,
        403,
        "Access denied",
        "Your account is not allowed to open this page.",
        code="forbidden",
        signed_in=identity,
    )


async def not_found(request: web.Request) -> web.Response:
    return error_page(
        request, 404, "Not found", "There is no page at this address.", code="not_found"
    )


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """The Expect header, for every route, before the handler runs.

    `100-continue` gets the interim 100 only when a body is coming (the client
    waits for it before sending one); any other expectation is a 417. Never
    raises: aiohttp's default put the header's value into its 417 text, and a
    value that is not UTF-8 turned that into a 500 on every route.
    """
    if request.version < HttpVersion11:
        return None  # RFC 9110 10.1.1: HTTP/1.0 expectations are ignored
    if request.headers.get("Expect", "").lower() == "100-continue":
        if request.body_exists:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the interim answer is not the response
        return None
    response = error_page(
        request,
        417,
        "Expectation failed",
        "This server cannot meet the request's Expect header.",
        code="expectation_failed",
    )
    response.force_close()  # a body may follow that nobody will read
    return response


def add_security_headers(request: web.Request, response: web.StreamResponse, ex: Exchange) -> None:
    """Before headers go out: every gateway page gets the hardening headers.

    Flagged pages, and anything under the prefix (aiohttp's own 404/413 too)
    unless flagged False: /auth answers are read by nginx, never shown, and
    the proxy flags the app's answers False (they are the app's to harden).
    """
    flag = ex.gateway_page
    if flag or (flag is None and request.path.startswith(ex.app[CONFIG].server.prefix)):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
