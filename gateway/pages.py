"""The gateway's own pages: sign in, sign out, user info, health, errors."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote

import aiohttp_jinja2
from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError

from .auth import (
    COOKIE_NAMES,
    clear_session_cookie,
    current_session,
    own_cookies,
    set_session_cookie,
)
from .counters import CSRF_REFUSED
from .http_util import client_ip
from .policy.csrf import FIELD as CSRF_FIELD
from .policy.csrf import CsrfSigner, origin_of
from .policy.csrf import check as csrf_check
from .policy.identity import Identity
from .policy.redirects import safe_redirect
from .state import CONFIG, CSRF, PASSWORDS, POOL, SESSIONS, THROTTLE, Exchange, exchange
from .store import audit, signin, users
from .store.db import DB_ERRORS, DatabaseUnavailable, connection

log = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
BAD_CREDENTIALS = "Incorrect username or password."
THROTTLED = "Too many failed sign-in attempts. Please wait a few minutes and try again."
FORM_EXPIRED = "Your sign-in form expired or came from another site. Please try again."
MAX_USERNAME_CHARS = 256

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


def login_url(request: web.Request, rd: str | None = None) -> str:
    base = request.app[CONFIG].server.prefix + "/login"
    # Quoted (not form-encoded: no '+') so rd_from_query's unquote restores it exactly.
    return f"{base}?rd={quote(rd, safe='/:')}" if rd else base


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def render(
    request: web.Request, template: str, context: dict, *, status: int = 200
) -> web.Response:
    exchange(request).gateway_page = True
    return aiohttp_jinja2.render_template(template, request, context, status=status)


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
            csrf_token=request.app[CSRF].token(_csrf_nonce(request, cookies)),
            rd=request.rel_url.raw_path_qs,
        )
    response = render(request, "error.html", context, status=status)
    _set_csrf_cookies(request, response, cookies)
    return response


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


def try_again(request: web.Request, again: str | None = None) -> tuple[Action, Action]:
    """For a passing failure: ask for `again` (default: this address; a GET, as a
    person would), or leave for the start page.

    The address goes through the rd check like any other link we print: `//host/x`
    is a path the proxy serves, and a link that leaves the site as a browser reads it.
    """
    target = _redirect_target(request, request.rel_url.raw_path_qs if again is None else again)
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


# -- CSRF -------------------------------------------------------------------


def _csrf_nonce(request: web.Request, response_cookies: dict[str, str]) -> str:
    """This browser's nonce, made (and remembered for the response) if missing."""
    name = request.app[COOKIE_NAMES].csrf
    nonce = own_cookies(request).get(name)
    if not CsrfSigner.is_nonce(nonce):
        nonce = CsrfSigner.new_nonce()
        response_cookies[name] = nonce
    return nonce


def _set_csrf_cookies(
    request: web.Request, response: web.StreamResponse, cookies: dict[str, str]
) -> None:
    https = request.app[CONFIG].server.https
    for name, value in cookies.items():
        response.set_cookie(name, value, path="/", secure=https, httponly=True, samesite="Lax")


def _csrf_refused(request: web.Request, form: dict) -> bool:
    """True (logged and counted, never with the token) when this POST may not proceed."""
    config = request.app[CONFIG]
    own = {origin_of(config.server.public_url)}
    if request.host:
        own.add(f"{'https' if config.server.https else request.scheme}://{request.host}".lower())
    refusal = csrf_check(
        request.app[CSRF],
        origin=request.headers.get("Origin"),
        fetch_site=request.headers.get("Sec-Fetch-Site"),
        own_origins=own,
        nonce=own_cookies(request).get(request.app[COOKIE_NAMES].csrf),
        token=form.get(CSRF_FIELD),
    )
    if refusal is None:
        return False
    CSRF_REFUSED.inc(refusal.kind)
    log.warning(
        "refused %s %s from %s: %s",
        request.method,
        request.path,
        client_ip(request, config),
        refusal.detail,
    )
    return True


class BadForm(Exception):
    """A posted form that cannot be taken at its word: the message says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def _read_form(request: web.Request) -> dict[str, str]:
    """The urlencoded form as str values. Raises BadForm.

    A field sent twice is refused, not resolved: with `username=mallory&
    username=alice`, whichever copy "wins" is a form nobody filled in.
    """
    try:
        data = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise BadForm("The form is larger than any form of ours can be.", 413) from None
    except (ValueError, LookupError, HttpProcessingError):
        # Bad encoding, a charset Python does not know, broken multipart framing.
        raise BadForm("The form could not be read.") from None
    fields: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in data.items():
        if name in seen:
            raise BadForm(f"The form has more than one {name[:40]!r} field.")
        seen.add(name)
        if isinstance(value, str):
            fields[name] = value
    return fields


# -- sign in ------------------------------------------------------------------


def _login_form(
    request: web.Request,
    *,
    rd: str,
    status: int = 200,
    error: str | None = None,
    username: str = "",
) -> web.Response:
    cookies: dict[str, str] = {}
    nonce = _csrf_nonce(request, cookies)
    context = {
        "rd": rd,
        "csrf_token": request.app[CSRF].token(nonce),
        "error": error,
        "username": username,
        "remember_days": max(1, request.app[CONFIG].session.remember_me // 86400),
    }
    response = render(request, "login.html", context, status=status)
    _set_csrf_cookies(request, response, cookies)
    return response


def _redirect_target(request: web.Request, rd: str | None) -> str:
    config = request.app[CONFIG]
    return safe_redirect(rd, config.server.public_host, config.session.allowed_redirect_hosts)


def rd_from_query(query_string: str) -> str:
    """The post-login target named in the login URL's query.

    nginx cannot URL-encode `$request_uri`, so its `?rd=$scheme://$host$request_uri`
    arrives with the original query's '&' unescaped. `rd` is therefore read
    as everything after a leading "rd=", and only then decoded.
    """
    if query_string.startswith("rd="):
        return unquote(query_string[3:])
    return parse_qs(query_string).get("rd", [""])[0]


async def login_get(request: web.Request) -> web.Response:
    rd = rd_from_query(request.rel_url.raw_query_string)
    try:
        if await current_session(request) is not None:
            return see_other(_redirect_target(request, rd))
    except DatabaseUnavailable:
        pass  # the form still renders; the POST will answer 503
    return _login_form(request, rd=rd)


async def login_post(request: web.Request) -> web.Response:
    try:
        form = await _read_form(request)
    except BadForm as exc:
        if exc.status == 413:
            return error_page(
                request,
                413,
                "Sign-in form too large",
                str(exc),
                code="too_large",
                html=True,
                actions=(Action("Back to sign-in", login_url(request), primary=True),),
            )
        return _login_form(request, rd="", status=exc.status, error=str(exc))
    rd = form.get("rd", "")
    if _csrf_refused(request, form):
        return _login_form(request, rd=rd, status=403, error=FORM_EXPIRED)
    username = users.normalize_username(form.get("username", ""))[:MAX_USERNAME_CHARS]
    password = form.get("password", "")
    if _CONTROL.search(username):
        # No account can have such a name (and PostgreSQL refuses NUL): wrong, not an outage.
        return _login_form(request, rd=rd, status=401, error=BAD_CREDENTIALS)
    if not username or not password:
        return _login_form(
            request,
            rd=rd,
            status=400,
            error="Enter your username and password.",
            username=username,
        )
    config = request.app[CONFIG]
    app = request.app
    remember = form.get("remember") == "1"
    attempt = signin.Attempt(
        username=username,
        password=password,
        remember=remember,
        ip=client_ip(request, config),
        user_agent=request.headers.get("User-Agent", ""),
        previous_token=own_cookies(request).get(app[COOKIE_NAMES].session),
    )
    try:
        done = await signin.sign_in(
            app[POOL], app[THROTTLE], app[PASSWORDS], app[SESSIONS], attempt
        )
    except DatabaseUnavailable:
        log.warning("sign-in answered 503: database unavailable", exc_info=True)
        return unavailable(request, again=login_url(request, rd))  # the form again, rd kept
    if done.outcome is signin.Outcome.THROTTLED:
        response = _login_form(request, rd=rd, status=429, error=THROTTLED, username=username)
        response.headers["Retry-After"] = str(done.retry_after)
        return response
    if done.outcome is signin.Outcome.FAILED:
        return _login_form(request, rd=rd, status=401, error=BAD_CREDENTIALS, username=username)
    token = done.token
    response = see_other(_redirect_target(request, rd))
    set_session_cookie(
        response, request, token, max_age=config.session.remember_me if remember else None
    )
    exchange(request).clear_cookie = False
    return response


# -- sign out -----------------------------------------------------------------


async def logout_get(request: web.Request) -> web.Response:
    try:
        session = await current_session(request)
    except DatabaseUnavailable:
        return unavailable(request)
    if session is None:
        return _signed_out(request, ended=None)
    cookies: dict[str, str] = {}
    nonce = _csrf_nonce(request, cookies)
    ident = session.identity
    context = {"user": ident.name or ident.username, "csrf_token": request.app[CSRF].token(nonce)}
    response = render(request, "logout.html", context)
    _set_csrf_cookies(request, response, cookies)
    return response


async def logout_post(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    back = (Action("Back to sign-out", f"{config.server.prefix}/logout", primary=True),)
    try:
        form = await _read_form(request)
    except BadForm as exc:
        return error_page(
            request, exc.status, "Sign-out not confirmed", str(exc), code="bad_form", actions=back
        )
    if _csrf_refused(request, form):
        return error_page(
            request,
            403,
            "Sign-out not confirmed",
            "The sign-out form expired or came from another site. Please try again.",
            code="csrf",
            html=True,
            actions=back,
        )
    everywhere = request.query.get("everywhere") == "1"
    try:
        session = await current_session(request)
        if session is not None:
            store = request.app[SESSIONS]
            if everywhere:
                ended = await store.revoke_user(session.identity.user_id)
            else:
                ended = int(await store.revoke(session.token_hash))
            async with connection(request.app[POOL]) as conn:
                await audit.record(
                    conn,
                    "logout_everywhere" if everywhere else "logout",
                    session.identity.username,
                    ip=client_ip(request, config),
                    user_agent=request.headers.get("User-Agent", ""),
                    detail=f"sessions ended: {ended}",
                )
    except DatabaseUnavailable:
        return unavailable(request)
    if "rd" in form:
        # "Sign in as someone else" (a 403 page's switch): on to the sign-in
        # form, which brings the next person back to where this one was refused.
        target = login_url(request, _redirect_target(request, form["rd"]))
        return _forget_session(request, see_other(target))
    if session is None:
        return _signed_out(request, ended=None)
    return _signed_out(request, ended="everywhere" if everywhere else "here")


# Clears the browser's cache for this origin as well as its cookies: Back after
# signing out must ask the app again (and so the gateway), not show a stored page.
CLEAR_SITE_DATA = '"cache", "cookies"'


def _signed_out(request: web.Request, *, ended: str | None) -> web.Response:
    """The friendly page, carrying the cookie deletion with it.

    `ended`: "here", "everywhere", or None when there was no session to end.
    """
    response = render(request, "signed_out.html", {"login_url": login_url(request), "ended": ended})
    return _forget_session(request, response)


def _forget_session(request: web.Request, response: web.Response) -> web.Response:
    """After a sign-out (or a dead cookie shown to the sign-out page): the browser
    forgets the cookie and what it cached."""
    if request.method == "POST" or own_cookies(request).get(request.app[COOKIE_NAMES].session):
        clear_session_cookie(response, request)
        response.headers["Clear-Site-Data"] = CLEAR_SITE_DATA
    exchange(request).clear_cookie = False
    return response


# -- JSON and health ------------------------------------------------------------


async def userinfo(request: web.Request) -> web.Response:
    exchange(request).gateway_page = True
    try:
        session = await current_session(request)
    except DatabaseUnavailable:
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


async def healthz(request: web.Request) -> web.Response:
    exchange(request).gateway_page = True
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    exchange(request).gateway_page = True
    try:
        async with request.app[POOL].acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1", timeout=2)
    except DB_ERRORS:
        return web.Response(status=503, text="database unavailable\n")
    return web.Response(text="ok\n")


async def not_found(request: web.Request) -> web.Response:
    return error_page(
        request, 404, "Not found", "There is no page at this address.", code="not_found"
    )


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
