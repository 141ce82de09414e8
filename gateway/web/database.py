"""What the app holds open on PostgreSQL, as cleanup contexts, and its AppKeys.

`database`: the pool (and the embedded server when no URL is configured),
the session store and the CSRF signer (whose key may live in the database).
`session_listener`: the LISTEN connection that keeps the session cache
coherent and cuts ended sessions' open connections (store.live), and the
last_seen writer. `purger`: the retention loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from ..policy.csrf import CsrfSigner
from ..store import retention
from ..store.db import DatabaseUnavailable, create_pool, embedded_postgres, prepare_database
from ..store.live import LiveConnections
from ..store.session_cache import Invalidator
from ..store.sessions import SessionStore
from .exchange import CLOCK, CONFIG, SESSIONS
from .forms import CSRF

log = logging.getLogger(__name__)

POOL = web.AppKey("pool", asyncpg.Pool)
DB_URL = web.AppKey("db_url", str)  # resolved: the embedded server's when none was configured
INVALIDATOR = web.AppKey("invalidator", Invalidator)
LIVE = web.AppKey("live", LiveConnections)

POOL_CLOSE_SECONDS = 5.0


async def database(app: web.Application) -> AsyncIterator[None]:
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
            yield
        finally:
            await close_pool(pool)


async def close_pool(pool: asyncpg.Pool) -> None:
    """A graceful close, within a bound: a hung database must not hold the exit."""
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_SECONDS)
    except TimeoutError:
        # Ours, or asyncpg's own while it waits for the server's goodbye.
        log.warning(
            "closing the database pool: the database did not answer; its connections were cut"
        )
        pool.terminate()


async def session_listener(app: web.Application) -> AsyncIterator[None]:
    """The LISTEN connection that keeps the cache coherent and cuts the open
    connections of ended sessions, and the last_seen writer."""
    store = app[SESSIONS]
    trust = app[CONFIG].session.cache_trust.total_seconds()
    live = app[LIVE] = LiveConnections(store, trusted=store.cache.serving)
    invalidator = Invalidator(app[DB_URL], store.cache, trust, listeners=(live.apply,))
    app[INVALIDATOR] = invalidator
    tasks = [
        asyncio.create_task(invalidator.run()),
        asyncio.create_task(store.flush_touches_forever()),
        asyncio.create_task(live.sweep_forever()),
    ]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    try:
        await store.flush_touches()  # on shutdown: no activity is forgotten
    except DatabaseUnavailable as exc:
        log.warning("stopping: last activity times not written, database unavailable (%s)", exc)


async def purger(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: store.retention's loop, for as long as the app runs."""
    task = asyncio.create_task(retention.purge_forever(app[POOL], app[CONFIG], app[CLOCK]))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
