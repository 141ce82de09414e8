"""Sign in and sign out: the forms, and what their POSTs do.

The steps of a sign-in (throttle, verify, audit, session) are store.signin;
this module reads the form and says how it went.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, unquote

from aiohttp import web

from ..policy.passwords import Passwords
from ..store import audit, signin, users
from ..store.db import connection
from ..store.throttle import Throttle
from .database import POOL
from .errors import Action, error_page, fails_closed, render, see_other
from .exchange import CONFIG, COOKIE_NAMES, SESSIONS, exchange
from .forms import BadForm, csrf_refused, csrf_token, read_form
from .session_cookie import clear_session_cookie, set_csrf_cookies, set_session_cookie

PASSWORDS = web.AppKey("passwords", Passwords)
THROTTLE = web.AppKey("throttle", Throttle)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
BAD_CREDENTIALS = "Incorrect username or password."
THROTTLED = "Too many failed sign-in attempts. Please wait a few minutes and try again."
FORM_EXPIRED = "Your sign-in form expired or came from another site. Please try again."
MAX_USERNAME_CHARS = 256
# Clears the browser's cache for this origin as well as its cookies: Back after
# signing out must ask the app again (and so the gateway), not show a stored page.
CLEAR_SITE_DATA = '"cache", "cookies"'


async def passwords(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the bounded pool of hashing threads."""
    app[PASSWORDS] = Passwords()
    yield
    app[PASSWORDS].close()


def rd_from_query(query_string: str) -> str:
    """The post-login target named in the login URL's query.

    nginx cannot URL-encode `$request_uri`, so its `?rd=$scheme://$host$request_uri`
    arrives with the original query's '&' unescaped. `rd` is therefore read
    as everything after a leading "rd=", and only then decoded.
    """
    if query_string.startswith("rd="):
        return unquote(query_string[3:])
    return parse_qs(query_string).get("rd", [""])[0]


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
    context = {
        "rd": rd,
        "csrf_token": csrf_token(request, cookies),
        "error": error,
        "username": username,
        "remember_days": max(1, request.app[CONFIG].session.remember_me.days),
    }
    response = render(request, "login.html", context, status=status)
    set_csrf_cookies(request, response, cookies)
    return response


async def login_get(request: web.Request) -> web.Response:
    ex = exchange(request)
    rd = rd_from_query(request.rel_url.raw_query_string)
    # With the database down the form still renders; its POST will answer 503.
    session, _ = await ex.session_if_known()
    if session is not None:
        return see_other(ex.redirect_target(rd))
    return _login_form(request, rd=rd)


@fails_closed
async def login_post(request: web.Request) -> web.Response:
    ex = exchange(request)
    try:
        form = await read_form(request)
    except BadForm as exc:
        if exc.status == 413:
            return error_page(
                request,
                413,
                "Sign-in form too large",
                str(exc),
                code="too_large",
                html=True,
                actions=(Action("Back to sign-in", ex.login_url(), primary=True),),
            )
        return _login_form(request, rd="", status=exc.status, error=str(exc))
    rd = form.get("rd", "")
    if csrf_refused(request, form):
        return _login_form(request, rd=rd, status=403, error=FORM_EXPIRED)
    username = users.normalize_username(form.get("username", ""))[:MAX_USERNAME_CHARS]
    password = form.get("password", "")
    if _CONTROL.search(username):
        # No account can have such a name (and PostgreSQL refuses NUL): wrong, not an outage.
        return _login_form(request, rd=rd, status=401, error=BAD_CREDENTIALS)
    if not username or not password:
        return _login_form(
            request, rd=rd, status=400, error="Enter your username and password.", username=username
        )
    app = request.app
    remember = form.get("remember") == "1"
    attempt = signin.Attempt(
        username=username,
        password=password,
        remember=remember,
        ip=ex.client_ip(),
        user_agent=request.headers.get("User-Agent", ""),
        previous_token=ex.own_cookie(app[COOKIE_NAMES].session),
    )
    ex.again = ex.login_url(rd)  # after an outage: the form again, rd kept
    done = await signin.sign_in(app[POOL], app[THROTTLE], app[PASSWORDS], app[SESSIONS], attempt)
    if done.outcome is signin.Outcome.THROTTLED:
        response = _login_form(request, rd=rd, status=429, error=THROTTLED, username=username)
        response.headers["Retry-After"] = str(done.retry_after)
        return response
    if done.outcome is signin.Outcome.FAILED:
        return _login_form(request, rd=rd, status=401, error=BAD_CREDENTIALS, username=username)
    response = see_other(ex.redirect_target(rd))
    max_age = int(app[CONFIG].session.remember_me.total_seconds()) if remember else None
    set_session_cookie(response, request, done.token, max_age=max_age)
    ex.clear_cookie = False
    return response


# -- sign out -----------------------------------------------------------------


@fails_closed
async def logout_get(request: web.Request) -> web.Response:
    session = await exchange(request).session()
    if session is None:
        return signed_out(request, ended=None)
    cookies: dict[str, str] = {}
    ident = session.identity
    context = {"user": ident.name or ident.username, "csrf_token": csrf_token(request, cookies)}
    response = render(request, "logout.html", context)
    set_csrf_cookies(request, response, cookies)
    return response


@fails_closed
async def logout_post(request: web.Request) -> web.Response:
    ex = exchange(request)
    back = (Action("Back to sign-out", f"{ex.app[CONFIG].server.prefix}/logout", primary=True),)
    try:
        form = await read_form(request)
    except BadForm as exc:
        return error_page(
            request, exc.status, "Sign-out not confirmed", str(exc), code="bad_form", actions=back
        )
    if csrf_refused(request, form):
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
    session = await ex.session()
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
                ip=ex.client_ip(),
                user_agent=request.headers.get("User-Agent", ""),
                detail=f"sessions ended: {ended}",
            )
    if "rd" in form:
        # "Sign in as someone else" (a 403 page's switch): on to the sign-in
        # form, which brings the next person back to where this one was refused.
        target = ex.login_url(ex.redirect_target(form["rd"]))
        return _forget_session(request, see_other(target))
    if session is None:
        return signed_out(request, ended=None)
    return signed_out(request, ended="everywhere" if everywhere else "here")


def signed_out(request: web.Request, *, ended: str | None) -> web.Response:
    """The friendly page, carrying the cookie deletion with it.

    `ended`: "here", "everywhere", or None when there was no session to end.
    """
    login_url = exchange(request).login_url()
    response = render(request, "signed_out.html", {"login_url": login_url, "ended": ended})
    return _forget_session(request, response)


def _forget_session(request: web.Request, response: web.Response) -> web.Response:
    """After a sign-out (or a dead cookie shown to the sign-out page): the browser
    forgets the cookie and what it cached."""
    ex = exchange(request)
    if request.method == "POST" or ex.own_cookie(request.app[COOKIE_NAMES].session):
        clear_session_cookie(response, request)
        response.headers["Clear-Site-Data"] = CLEAR_SITE_DATA
    ex.clear_cookie = False
    return response
