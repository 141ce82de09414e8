"""Prometheus metrics: what the request path counts, exposed at
`{prefix}/metrics` to trusted proxies only.

Counts are kept in plain dicts on the request path and folded into the
series every FOLD_SECONDS, before each scrape, and on shutdown (counters.py).

With `--workers N` the parent points PROMETHEUS_MULTIPROC_DIR at a shared
directory before starting the workers, and a scrape (answered by whichever
worker the kernel picks) aggregates every worker's numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from .. import counters
from ..counters import DB_POOL, REQUESTS
from ..store import sessions
from ..store.db import DB_ERRORS
from .database import POOL
from .exchange import CLOCK, CONFIG, Exchange, exchange

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
FOLD_SECONDS = 1.0
POOL_SAMPLE_SECONDS = 5.0


def _registry() -> CollectorRegistry:
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def _route_class(request: web.BaseRequest) -> str:
    # match_info is a (possibly empty, so falsy) mapping: ask for its route directly.
    route = getattr(request.match_info, "route", None)
    return (route.name if route is not None else None) or "other"


def count_response(request: web.Request, response: web.StreamResponse, ex: Exchange) -> None:
    """Before headers go out: one count per answer, labelled by the route's name."""
    REQUESTS.inc(_route_class(request), str(response.status))


async def metrics(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    if not exchange(request).peer_trusted():
        return web.Response(status=403, text="metrics are for trusted proxies only\n")
    counters.fold()  # this worker's counts are exact; other workers' at most FOLD_SECONDS behind
    body = generate_latest(_registry())
    # Active sessions are a fact of the database, not of one worker: asked at scrape time.
    with contextlib.suppress(*DB_ERRORS):
        async with request.app[POOL].acquire(timeout=2) as conn:
            now = request.app[CLOCK]()
            count = await sessions.count_live(conn, now, config.session.idle_timeout)
        body += (
            "# HELP gateway_active_sessions Sessions a request would accept now.\n"
            "# TYPE gateway_active_sessions gauge\n"
            f"gateway_active_sessions {count}\n"
        ).encode()
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


async def sampler(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: fold the request path's counts in, and sample this worker's pool."""

    async def sample() -> None:
        next_pool_sample = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                counters.fold()
                if loop.time() >= next_pool_sample:
                    pool = app[POOL]
                    size, idle = pool.get_size(), pool.get_idle_size()
                    DB_POOL.labels("in_use").set(size - idle)
                    DB_POOL.labels("idle").set(idle)
                    next_pool_sample = loop.time() + POOL_SAMPLE_SECONDS
            except Exception:
                # One bad round (say, the multiprocess files' disk is full) must
                # not end folding for good; what was not folded is kept.
                log.exception("metrics: folding counts or sampling the pool failed")
            await asyncio.sleep(FOLD_SECONDS)

    task = asyncio.create_task(sample())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        counters.fold()  # nothing counted is lost when a worker stops
