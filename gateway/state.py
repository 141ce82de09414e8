"""Typed keys for application and request state (no string keys)."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import asyncpg
from aiohttp import web

from .config import Config
from .policy.csrf import CsrfSigner
from .policy.identity import Clock, Session
from .policy.passwords import Passwords
from .policy.rules import RuleSet
from .policy.upstreams import UpstreamTable
from .store.session_cache import Invalidator
from .store.sessions import SessionStore
from .store.throttle import Throttle

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey("clock", Clock)
POOL = web.AppKey("pool", asyncpg.Pool)
DB_URL = web.AppKey("db_url", str)  # resolved: the embedded server's when none was configured
SESSIONS = web.AppKey("sessions", SessionStore)
INVALIDATOR = web.AppKey("invalidator", Invalidator)
PASSWORDS = web.AppKey("passwords", Passwords)
CSRF = web.AppKey("csrf", CsrfSigner)
HTTP = web.AppKey("http", aiohttp.ClientSession)
RULES = web.AppKey("rules", RuleSet)
UPSTREAMS = web.AppKey("upstreams", UpstreamTable)
THROTTLE = web.AppKey("throttle", Throttle)
# ip -> in server.trusted_proxies? memoised (http_util.trusted_peer_check)
TRUSTED_PEER = web.AppKey("trusted_peer", Callable[[str], bool])


class Exchange:
    """What the gateway learns about one request, in one object behind one RequestKey.

    Each fact used to be its own RequestKey; on the hot path every "not set
    yet" lookup raised (and caught) a KeyError. Slots cost nothing to miss.
    """

    __slots__ = (
        "app",
        "clear_cookie",
        "cookies",
        "gateway_page",
        "request_id",
        "session",
        "session_known",
        "upstream_name",
    )

    def __init__(self, app: web.Application) -> None:
        self.app = app  # request.app walks the match info on every read
        # (the gateway's cookies, the Cookie header without them), parsed once
        self.cookies: tuple[dict[str, str | None], str] | None = None
        # Resolved once per request by auth.current_session, whoever asks first.
        self.session: Session | None = None
        self.session_known = False
        # The browser sent a session cookie that is no longer valid: expire it.
        self.clear_cookie = False
        # A gateway page gets the browser-hardening headers. None: not decided by a
        # handler (aiohttp's own answers), so pages.add_security_headers goes by path;
        # proxy.handle sets False, so an app's answers never get them.
        self.gateway_page: bool | None = None
        # For the access log and the upstream: which request this is, and where it went.
        self.request_id = ""
        self.upstream_name = ""


EXCHANGE = web.RequestKey("exchange", Exchange)


def exchange(request: web.Request) -> Exchange:
    """This request's Exchange, made by whoever asks first."""
    if len(request):  # something is stored: most likely the Exchange
        try:
            return request[EXCHANGE]
        except KeyError:
            pass
    # The first ask (usually the handler's) costs no raised KeyError.
    found = request[EXCHANGE] = Exchange(request.app)
    return found
