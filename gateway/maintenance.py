"""Periodic purge of dead rows: expired sessions, old login failures, old audit entries.

Runs as a background task in every worker, but an advisory lock lets only
one process per database purge in each round; deletes go in small batches
so no request waits behind a long lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
from aiohttp import web

from .config import Config
from .db import DB_ERRORS, rows_affected
from .policy.identity import Clock
from .state import CLOCK, CONFIG, POOL

log = logging.getLogger(__name__)

PURGE_LOCK_ID = 0x6761746577617902
BATCH = 1000

TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
UNLOCK = "SELECT pg_advisory_unlock($1)"
# Sessions past their absolute expiry, or idle too long unless "remember me".
PURGE_SESSIONS = """
DELETE FROM sessions WHERE id IN (
    SELECT id FROM sessions
    WHERE expires_at <= $1 OR (NOT remember AND last_seen <= $2)
    LIMIT $3)"""
PURGE_LOGIN_FAILURES = """
DELETE FROM login_failures WHERE id IN (
    SELECT id FROM login_failures WHERE at <= $1 LIMIT $2)"""
PURGE_AUDIT = """
DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at <= $1 LIMIT $2)"""


async def _drain(conn: asyncpg.Connection, query: str, *args: object) -> int:
    total = 0
    while True:
        deleted = rows_affected(await conn.execute(query, *args, BATCH))
        total += deleted
        if deleted < BATCH:
            return total
        await asyncio.sleep(0)  # let requests in between batches


async def purge(pool: asyncpg.Pool, config: Config, clock: Clock) -> dict[str, int] | None:
    """One round. Returns rows deleted per table, or None when another process holds the lock."""
    now = clock()
    async with pool.acquire() as conn:
        if not await conn.fetchval(TRY_LOCK, PURGE_LOCK_ID):
            return None
        try:
            return {
                "sessions": await _drain(
                    conn,
                    PURGE_SESSIONS,
                    now,
                    now - timedelta(seconds=config.session.idle_timeout),
                ),
                "login_failures": await _drain(
                    conn, PURGE_LOGIN_FAILURES, now - timedelta(seconds=config.login.window)
                ),
                "audit_log": await _drain(
                    conn, PURGE_AUDIT, now - timedelta(seconds=config.retention.audit_log)
                ),
            }
        finally:
            await conn.execute(UNLOCK, PURGE_LOCK_ID)


async def purger(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: purge every retention.purge_interval, never failing the app."""

    async def loop() -> None:
        config = app[CONFIG]
        while True:
            await asyncio.sleep(config.retention.purge_interval)
            try:
                result = await purge(app[POOL], config, app[CLOCK])
                if result and any(result.values()):
                    log.info("purged %s", ", ".join(f"{k}: {v}" for k, v in result.items()))
            except DB_ERRORS as exc:
                log.warning("purge skipped: database unavailable (%s)", exc)

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
