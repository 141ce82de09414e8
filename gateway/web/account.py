"""The signed-in person's own pages: who they are, their sessions, their password.

`{prefix}/account`, `{prefix}/sessions` (each session revocable; another
user's session is a 404, the same as one that never existed),
`{prefix}/password`, and `{prefix}/userinfo` (JSON). Not signed in, a page
sends the person to sign in and back; a form posted by a session that has
since ended does the same. The steps of a password change are
store.signin.change_password.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

from aiohttp import web

from ..policy.devices import describe
from ..policy.identity import Session
from ..policy.passwords import PasswordRejected, PasswordRules
from ..store import audit, signin
from ..store.db import connection
from ..store.sessions import ends_at, list_sessions
from .database import POOL
from .errors import Action, error_page, fails_closed, render, see_other
from .exchange import CONFIG, SESSIONS, exchange
from .forms import BadForm, csrf_refused, csrf_token, read_form
from .login import PASSWORDS, THROTTLE, signed_out
from .session_cookie import set_csrf_cookies, set_session_cookie

PASSWORD_RULES = web.AppKey("password_rules", PasswordRules)

FORM_EXPIRED = "The form expired or came from another site. Nothing was changed. Please try again."
MISMATCH = "The new passwords do not match. Nothing was changed."
WRONG_PASSWORD = "Your current password is not correct. Nothing was changed."
THROTTLED = "Too many wrong passwords. Please wait a few minutes and try again."


# -- shown on the pages -------------------------------------------------------------


def format_time(at: datetime) -> str:
    """'4 Dec 2026, 18:56 UTC': the pages cannot know the reader's time zone (no script)."""
    return f"{at.day} {at:%b %Y, %H:%M} UTC"


def format_ago(at: datetime, now: datetime) -> str:
    """'just now', '5 minutes ago', 'in 3 hours': beside a time, for reading at a glance."""
    seconds = (at - now).total_seconds()
    later, span = seconds > 0, abs(seconds)
    if span < 60:
        return "just now" if not later else "in under a minute"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if span >= size:
            n = int(span // size)
            text = f"{n} {unit}{'' if n == 1 else 's'}"
            return f"in {text}" if later else f"{text} ago"
    raise AssertionError("unreachable")


# -- who is asking ------------------------------------------------------------------


async def _session_or_sign_in(request: web.Request, page: str) -> Session:
    """The live session, or (raised) the way to sign in and come back to `page`."""
    ex = exchange(request)
    session = await ex.session()
    if session is None:
        # A GET (or HEAD) goes back to where it was; a POST's form is gone: back to its page.
        if request.method in ("GET", "HEAD"):
            raise web.HTTPFound(ex.login_url(page))
        raise web.HTTPSeeOther(ex.login_url(page))
    return session


def _page(request: web.Request, template: str, context: dict, *, status: int = 200) -> web.Response:
    """An account page: the shared context (who, the nav, a form token) and no-store."""
    cookies: dict[str, str] = {}
    context.setdefault("csrf_token", csrf_token(request, cookies))
    response = render(request, template, context, status=status)
    set_csrf_cookies(request, response, cookies)
    return response


def _prefix(request: web.Request) -> str:
    return request.app[CONFIG].server.prefix


# -- GET {prefix}/account -------------------------------------------------------------


@fails_closed
async def account_get(request: web.Request) -> web.Response:
    page = f"{_prefix(request)}/account"
    session = await _session_or_sign_in(request, page)
    config = request.app[CONFIG]
    now = request.app[SESSIONS].clock()
    idle = config.session.idle_timeout
    context = {
        "nav": "account",
        "identity": session.identity,
        "session": session,
        "now": now,
        "ends": ends_at(session, idle, now),
        "idle_minutes": int(idle.total_seconds() // 60),
    }
    return _page(request, "account.html", context)


# -- {prefix}/sessions ----------------------------------------------------------------


@fails_closed
async def sessions_get(request: web.Request) -> web.Response:
    prefix = _prefix(request)
    session = await _session_or_sign_in(request, f"{prefix}/sessions")
    app = request.app
    store = app[SESSIONS]
    now = store.clock()
    idle = app[CONFIG].session.idle_timeout
    async with connection(app[POOL]) as conn:
        infos = await list_sessions(conn, session.identity.username, now, idle)
    # ua-parser costs about a millisecond a string: off the event loop.
    devices = await asyncio.to_thread(lambda: [describe(i.user_agent) for i in infos])
    rows = []
    for info, device in zip(infos, devices, strict=True):
        current = info.id == session.id
        last_seen = now if current else info.last_seen
        rows.append(
            {
                "info": info,
                "device": device,
                "current": current,
                "last_seen": last_seen,
                "ends": ends_at(info, idle, last_seen),
            }
        )
    rows.sort(key=lambda r: (not r["current"], -r["last_seen"].timestamp()))
    ended = request.query.get("ended", "")
    context = {
        "nav": "sessions",
        "identity": session.identity,
        "rows": rows,
        "now": now,
        "others": len(rows) - 1,
        "ended": int(ended) if ended.isascii() and ended.isdigit() and len(ended) < 6 else None,
    }
    return _page(request, "sessions.html", context)


@fails_closed
async def sessions_post(request: web.Request) -> web.StreamResponse:
    """`end=<session id>` ends one of your sessions; `end=others` all but this one."""
    ex = exchange(request)
    prefix = _prefix(request)
    back = f"{prefix}/sessions"
    actions = (Action("Back to your sessions", back, primary=True),)
    try:
        form = await read_form(request)
    except BadForm as exc:
        return error_page(
            request, exc.status, "Nothing was signed out", str(exc), code="bad_form",
            actions=actions,
        )  # fmt: skip
    if csrf_refused(request, form):
        return error_page(
            request, 403, "Nothing was signed out", FORM_EXPIRED, code="csrf", actions=actions
        )
    session = await _session_or_sign_in(request, back)
    store = request.app[SESSIONS]
    target = form.get("end", "")
    if target == "others":
        ended = await store.revoke_others(session)
        detail = f"other sessions ended: {ended}"
    else:
        try:
            session_id = uuid.UUID(target)
        except ValueError:
            session_id = None
        if session_id is None or not await store.revoke_own(session.identity.user_id, session_id):
            # Made up, already ended, or someone else's: all the same answer.
            return error_page(
                request,
                404,
                "No such session",
                "None of your sessions has this ID; it may have ended already. "
                "Nothing was signed out.",
                code="no_such_session",
                actions=actions,
            )
        ended, detail = 1, f"session ended: {session_id}"
    async with connection(request.app[POOL]) as conn:
        await audit.record(
            conn,
            "session_revoked",
            session.identity.username,
            ip=ex.client_ip(),
            user_agent=request.headers.get("User-Agent", ""),
            detail=detail,
        )
    if target != "others" and session_id == session.id:
        # The session asking ended itself: as good as signing out here.
        return signed_out(request, ended="here")
    return see_other(f"{back}?ended={ended}")


# -- {prefix}/password ----------------------------------------------------------------


def _password_form(
    request: web.Request, session: Session, *, status: int = 200, error: str | None = None
) -> web.Response:
    context = {
        "nav": "password",
        "identity": session.identity,
        "error": error,
        "min_length": request.app[PASSWORD_RULES].min_length,
    }
    return _page(request, "password.html", context, status=status)


@fails_closed
async def password_get(request: web.Request) -> web.Response:
    session = await _session_or_sign_in(request, f"{_prefix(request)}/password")
    return _password_form(request, session)


@fails_closed
async def password_post(request: web.Request) -> web.StreamResponse:
    ex = exchange(request)
    page = f"{_prefix(request)}/password"
    try:
        form = await read_form(request)
    except BadForm as exc:
        session = await _session_or_sign_in(request, page)
        return _password_form(request, session, status=exc.status, error=str(exc))
    if csrf_refused(request, form):
        session = await _session_or_sign_in(request, page)
        return _password_form(request, session, status=403, error=FORM_EXPIRED)
    session = await _session_or_sign_in(request, page)
    current = form.get("current_password", "")
    new = form.get("new_password", "")
    if not current or not new:
        return _password_form(
            request, session, status=400, error="Enter your current password and a new one."
        )
    if new != form.get("confirm_password", ""):
        return _password_form(request, session, status=400, error=MISMATCH)
    try:
        request.app[PASSWORD_RULES].check(new, session.identity.username)
    except PasswordRejected as exc:
        return _password_form(request, session, status=400, error=f"{exc} Nothing was changed.")
    if new == current:
        return _password_form(
            request, session, status=400, error="The new password is the same as the current one."
        )
    app = request.app
    change = signin.PasswordChange(
        session=session,
        current=current,
        new_password=new,
        ip=ex.client_ip(),
        user_agent=request.headers.get("User-Agent", ""),
    )
    done = await signin.change_password(
        app[POOL], app[THROTTLE], app[PASSWORDS], app[SESSIONS], change
    )
    if done.outcome is signin.Outcome.THROTTLED:
        response = _password_form(request, session, status=429, error=THROTTLED)
        response.headers["Retry-After"] = str(done.retry_after)
        return response
    if done.outcome is signin.Outcome.FAILED:
        return _password_form(request, session, status=401, error=WRONG_PASSWORD)
    context = {"nav": "password", "identity": session.identity, "others": done.ended}
    response = _page(request, "password_changed.html", context)
    max_age = int(app[CONFIG].session.remember_me.total_seconds()) if session.remember else None
    set_session_cookie(response, request, done.token, max_age=max_age)
    ex.clear_cookie = False
    return response


# -- GET {prefix}/userinfo (JSON) -----------------------------------------------------


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
