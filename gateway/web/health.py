"""Liveness and readiness, for orchestrators and load balancers."""

from __future__ import annotations

from aiohttp import web

from ..store.db import DB_ERRORS
from .database import POOL
from .exchange import exchange


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers. Says nothing about the database."""
    exchange(request).gateway_page = True
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready: the database answers a query within 2 s."""
    exchange(request).gateway_page = True
    try:
        async with request.app[POOL].acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1", timeout=2)
    except DB_ERRORS:
        return web.Response(status=503, text="database unavailable\n")
    return web.Response(text="ok\n")
