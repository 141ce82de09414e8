"""create_app(config): wires state, resources, routes and signals. No logic here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
import aiohttp_jinja2
import asyncpg
import jinja2
from aiohttp import web, web_response

from . import forward_auth, logs, metrics, pages, proxy
from .auth import COOKIE_NAMES, clear_stale_cookie, cookie_names
from .config import Config
from .http_util import trusted_peer_check
from .policy.csrf import CsrfSigner
from .policy.identity import Clock, utc_now
from .policy.passwords import Passwords
from .policy.rules import RuleSet
from .policy.upstreams import UpstreamTable
from .resources import favicon_uri, resource_dir
from .state import (
    CLOCK,
    CONFIG,
    CSRF,
    DB_URL,
    HTTP,
    INVALIDATOR,
    PASSWORDS,
    POOL,
    RULES,
    SESSIONS,
    THROTTLE,
    TRUSTED_PEER,
    UPSTREAMS,
    exchange,
)
from .store import retention
from .store.db import DatabaseUnavailable, create_pool, embedded_postgres, prepare_database
from .store.session_cache import Invalidator
from .store.sessions import SessionStore
from .store.throttle import Throttle

log = logging.getLogger(__name__)

POOL_CLOSE_SECONDS = 5.0

# aiohttp puts "Python/3.x aiohttp/3.y.z" in every answer's Server header,
# its own 400s for malformed requests (sent before any handler or signal
# runs) included, and has no setting for it: the default it reads at send
# time is this module attribute. Versions help an attacker, not a user.
web_response.SERVER_SOFTWARE = "Gateway"

# Only the gateway's own forms are read into memory; proxied bodies stream.
MAX_FORM_BYTES = 64 * 1024


async def _database(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    with contextlib.ExitStack() as stack:
        url = config.database.url
        if not url:
            url = await asyncio.to_thread(
                stack.enter_context, embedded_postgres(config.database.data_dir)
            )
        key = await prepare_database(url, config.secret_key)
        pool = await create_pool(url)
        try:
            app[POOL] = pool
            app[DB_URL] = url
            app[SESSIONS] = SessionStore(pool, config.session, app[CLOCK])
            app[CSRF] = CsrfSigner(key)
            app[THROTTLE] = Throttle(config.login, app[CLOCK])
            yield
        finally:
            await _close_pool(pool)


async def _close_pool(pool: asyncpg.Pool) -> None:
    """A graceful close, within a bound: a hung database must not hold the exit."""
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_SECONDS)
    except TimeoutError:
        # Ours, or asyncpg's own while it waits for the server's goodbye.
        log.warning(
            "closing the database pool: the database did not answer; its connections were cut"
        )
        pool.terminate()


async def _session_cache(app: web.Application) -> AsyncIterator[None]:
    """The LISTEN connection that keeps the cache coherent, and the last_seen writer."""
    store = app[SESSIONS]
    invalidator = Invalidator(app[DB_URL], store.cache, app[CONFIG].session.cache_trust)
    app[INVALIDATOR] = invalidator

    tasks = [
        asyncio.create_task(invalidator.run()),
        asyncio.create_task(store.flush_touches_forever()),
    ]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    try:
        await store.flush_touches()  # on shutdown: no activity is forgotten
    except DatabaseUnavailable as exc:
        log.warning("stopping: last activity times not written, database unavailable (%s)", exc)


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    # One client for every upstream: keep-alive pools per host, no cookie
    # jar (cookies belong to the browser), bodies passed through compressed.
    # No limit on connections: a request never waits for one that a
    # WebSocket or a long download holds (the 257th used to, with 256 per
    # host). WebSockets have their own cap per upstream (proxy.WebSocketSlots).
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
    ) as session:
        app[HTTP] = session
        yield


async def _passwords(app: web.Application) -> AsyncIterator[None]:
    app[PASSWORDS] = Passwords()
    yield
    app[PASSWORDS].close()


async def _purger(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(retention.purge_forever(app[POOL], app[CONFIG], app[CLOCK]))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# Run on every response just before its headers are sent (streamed proxy
# responses included, which a middleware would see only afterwards). One
# signal handler calling plain functions: a coroutine per step costs more
# than the steps.
_BEFORE_HEADERS = (
    pages.add_security_headers,
    clear_stale_cookie,
    metrics.count_response,
    logs.tag_response,
)


async def _before_headers(request: web.Request, response: web.StreamResponse) -> None:
    ex = exchange(request)
    for step in _BEFORE_HEADERS:
        step(request, response, ex)


def create_app(config: Config, *, clock: Clock = utc_now) -> web.Application:
    app = web.Application(client_max_size=MAX_FORM_BYTES)
    app[CONFIG] = config
    app[CLOCK] = clock
    app[COOKIE_NAMES] = cookie_names(config)
    app[TRUSTED_PEER] = trusted_peer_check(config.server.trusted_proxies)
    app[RULES] = RuleSet(config.rules)
    app[UPSTREAMS] = UpstreamTable(config.upstreams)
    app[proxy.HEADER_RULES] = proxy.HeaderRules(config)
    app[proxy.WEBSOCKET_SLOTS] = proxy.WebSocketSlots()
    app.cleanup_ctx.extend(
        [
            _database,
            _session_cache,
            _http_client,
            _passwords,
            metrics.sampler,
            _purger,
        ]
    )

    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(resource_dir("templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    prefix = config.server.prefix
    env.globals.update(
        prefix=prefix,
        css_url=f"{prefix}/static/gateway.css",
        favicon=favicon_uri(),
        product_name="Gateway",
    )

    r = app.router
    # Every route answers Expect itself (pages.expect_continue): aiohttp's
    # default turned a non-UTF-8 value into a 500. Route names double as the
    # metrics' route classes.
    expect = {"expect_handler": pages.expect_continue}
    r.add_get(f"{prefix}/login", pages.login_get, name="login", **expect)
    r.add_post(f"{prefix}/login", pages.login_post, name="login_post", **expect)
    r.add_get(f"{prefix}/logout", pages.logout_get, name="logout", **expect)
    r.add_post(f"{prefix}/logout", pages.logout_post, name="logout_post", **expect)
    r.add_get(f"{prefix}/auth", forward_auth.handle_auth, name="auth", **expect)
    r.add_get(f"{prefix}/userinfo", pages.userinfo, name="userinfo", **expect)
    r.add_get(f"{prefix}/healthz", pages.healthz, name="healthz", **expect)
    r.add_get(f"{prefix}/readyz", pages.readyz, name="readyz", **expect)
    r.add_get(f"{prefix}/metrics", metrics.metrics, name="metrics", **expect)
    r.add_static(f"{prefix}/static", resource_dir("templates") / "static", name="static", **expect)
    r.add_route("*", prefix, pages.not_found, name="gateway_not_found", **expect)
    # [\s\S], not ".": a path with an encoded newline must reach a handler that refuses it.
    r.add_route("*", prefix + r"/{tail:[\s\S]*}", pages.not_found, name="gateway_other", **expect)
    # Everything else: the catch-all means no request meets aiohttp's own 404/405 route.
    r.add_route("*", r"/{tail:[\s\S]*}", proxy.handle, name="proxy", **expect)

    app.on_response_prepare.append(_before_headers)
    return app
