"""The request scope: what the gateway learns about one request, with methods.

One `Exchange` per request, made by whoever asks first (`exchange(request)`),
behind one RequestKey. It is where the session is checked (`session`), where
the access decision is asked for (`access`), and where the request's facts
that several modules need are read once: its cookies, its id, its peer.

The AppKeys here are the ones the request scope itself reads; each other
key is declared beside the module that owns it.
"""

from __future__ import annotations

import itertools
import re
import secrets
import weakref
from collections.abc import Callable
from urllib.parse import quote

from aiohttp import web

from ..config import Config
from ..policy.access import Verdict, needs_lookup, verdict
from ..policy.cookies import CookieNames, split_cookies
from ..policy.identity import Clock, Session
from ..policy.peers import client_ip
from ..policy.redirects import safe_redirect
from ..policy.rules import RuleSet
from ..store.db import DatabaseUnavailable
from ..store.sessions import SessionStore

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey("clock", Clock)
# ip -> in server.trusted_proxies? memoised (policy.peers.trusted_peer_check)
TRUSTED_PEER = web.AppKey("trusted_peer", Callable[[str], bool])
COOKIE_NAMES = web.AppKey("cookie_names", CookieNames)
RULES = web.AppKey("rules", RuleSet)
SESSIONS = web.AppKey("sessions", SessionStore)

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Unique without a syscall per request: a random prefix per process, then a counter.
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count(1)


class Exchange:
    """One request's facts, each worked out once. Slots: a miss costs nothing
    (it was one RequestKey per fact, and every "not yet" raised a KeyError)."""

    __slots__ = (
        "_cookies",
        "_request",
        "_request_id",
        "_session",
        "_session_known",
        "again",
        "app",
        "clear_cookie",
        "gateway_page",
        "upstream_name",
    )

    def __init__(self, request: web.Request) -> None:
        # A weak reference: the request holds its Exchange, and a cycle between
        # them left every request's objects to the cyclic garbage collector
        # (bench/cpu.py --auth: 87-90 -> 82 µs per request without the cycle).
        self._request = weakref.ref(request)
        self.app = request.app  # request.app walks the match info on every read
        self._cookies: tuple[dict[str, str | None], str] | None = None
        self._session: Session | None = None
        self._session_known = False
        self._request_id = ""
        # The browser sent a session cookie that is no longer valid: expire it.
        self.clear_cookie = False
        # A gateway page gets the browser-hardening headers. None: not decided by a
        # handler (aiohttp's own answers), so errors.add_security_headers goes by
        # path; the proxy sets False, so an app's answers never get them.
        self.gateway_page: bool | None = None
        # For the access log: where the request went.
        self.upstream_name = ""
        # Where "Try again" leads if the database fails this request (default: here).
        self.again: str | None = None

    @property
    def request(self) -> web.Request:
        request = self._request()
        assert request is not None, "an Exchange outlived its request"
        return request

    # -- who is asking ---------------------------------------------------------

    def cookies(self) -> tuple[dict[str, str | None], str]:
        """(the gateway's cookies, the Cookie header without them), parsed once.

        A cookie of ours that came twice or beside a look-alike is there as None
        (policy.cookies): ambiguous counts as absent."""
        if self._cookies is None:
            header = "; ".join(self.request.headers.getall("Cookie", ()))
            self._cookies = split_cookies(header, self.app[COOKIE_NAMES].all)
        return self._cookies

    @property
    def cookies_read(self) -> tuple[dict[str, str | None], str] | None:
        """The cookies if something parsed them already; None if nobody looked."""
        return self._cookies

    def own_cookie(self, name: str) -> str | None:
        return self.cookies()[0].get(name)

    async def session(self) -> Session | None:
        """The live session, or None: the one place a session is checked.

        Raises DatabaseUnavailable (fail closed)."""
        if self._session_known:
            return self._session
        mine = self.cookies()[0]
        name = self.app[COOKIE_NAMES].session
        token = mine.get(name)
        session = None
        if token:
            session = await self.app[SESSIONS].lookup(token)
            self.clear_cookie = session is None
        elif name in mine:
            # Sent empty, twice, or beside a look-alike: no session, and ours is cleared.
            self.clear_cookie = True
        self._session, self._session_known = session, True
        return session

    async def session_if_known(self) -> tuple[Session | None, bool]:
        """(the session, True), or (None, False) when the database cannot say."""
        try:
            return await self.session(), True
        except DatabaseUnavailable:
            return None, False

    @property
    def known_session(self) -> Session | None:
        """The session if it was looked up already (the access log asks), else None."""
        return self._session

    async def access(self, host: str, path: str, method: str) -> tuple[Verdict, Session | None]:
        """The access verdict (policy.access) for host/path by method, and the live
        session when one was looked up. The proxy and /auth both ask here."""
        decision = self.app[RULES].decide(host, path, method)
        if not needs_lookup(decision):
            return verdict(decision, None), None
        session, database_up = await self.session_if_known()
        return verdict(decision, session, database_up=database_up), session

    # -- where it comes from ---------------------------------------------------

    def peer_trusted(self) -> bool:
        """Is the socket's peer one of server.trusted_proxies? (Asked on every request.)"""
        return self.app[TRUSTED_PEER](self.request.remote or "")

    def client_ip(self) -> str:
        """The browser's address (X-Forwarded-For believed from trusted proxies only)."""
        request = self.request
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", ()))
        trusted = self.app[CONFIG].server.trusted_proxies
        return client_ip(request.remote or "", forwarded, trusted)

    def request_id(self) -> str:
        """A trusted proxy's X-Request-ID if well-formed, else a new one."""
        if not self._request_id:
            incoming = self.request.headers.get("X-Request-ID", "")
            if not (incoming and _REQUEST_ID.fullmatch(incoming) and self.peer_trusted()):
                incoming = f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"  # 32 hex digits, like a UUID
            self._request_id = incoming
        return self._request_id

    def wants_html(self) -> bool:
        """A browser navigation: GET/HEAD asking for HTML, not an XHR or API call."""
        request = self.request
        if request.method not in ("GET", "HEAD"):
            return False
        headers = request.headers
        if headers.get("X-Requested-With", "").lower() == "xmlhttprequest":
            return False
        mode = headers.get("Sec-Fetch-Mode")
        if mode is not None and mode != "navigate":
            return False
        return "text/html" in headers.get("Accept", "")

    # -- where to send the person ----------------------------------------------

    def login_url(self, rd: str | None = None) -> str:
        base = self.app[CONFIG].server.prefix + "/login"
        # Quoted (not form-encoded: no '+') so rd_from_query's unquote restores it exactly.
        return f"{base}?rd={quote(rd, safe='/:')}" if rd else base

    def redirect_target(self, rd: str | None) -> str:
        """`rd` if a redirect may go there (policy.redirects), else '/'."""
        config = self.app[CONFIG]
        return safe_redirect(rd, config.server.public_host, config.session.allowed_redirect_hosts)


EXCHANGE = web.RequestKey("exchange", Exchange)


def exchange(request: web.Request) -> Exchange:
    """This request's Exchange, made by whoever asks first."""
    if len(request):  # something is stored: most likely the Exchange
        try:
            return request[EXCHANGE]
        except KeyError:
            pass
    # The first ask (usually the handler's) costs no raised KeyError.
    found = request[EXCHANGE] = Exchange(request)
    return found
