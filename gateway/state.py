"""Typed keys for application and request state (no string keys)."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import asyncpg
from aiohttp import web

from .config import Config
from .csrf import CsrfSigner
from .passwords import Passwords
from .proxy_routes import UpstreamTable
from .rules import RuleSet
from .session_cache import Invalidator
from .sessions import Clock, Session, SessionStore
from .throttle import Throttle

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

# Resolved once per request by auth.current_session, whoever asks first.
SESSION = web.RequestKey("session", Session | None)
# Set when the browser sent a session cookie that is no longer valid.
CLEAR_COOKIE = web.RequestKey("clear_cookie", bool)
# For the access log and the upstream: which request this is, and where it went.
REQUEST_ID = web.RequestKey("request_id", str)
UPSTREAM_NAME = web.RequestKey("upstream_name", str)
