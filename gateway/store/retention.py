"""Periodic purge of dead rows: sessions that are over, old login failures, old audit
entries, TOTP factors whose enrolment was never confirmed.

Runs in every worker, but an advisory lock lets only one process per
database purge in each round; each table's own module deletes in small
batches, so no request waits behind a long lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from ..config import Config
from ..policy.identity import Clock
from . import audit, factors, sessions, throttle
from .db import DB_ERRORS

log = logging.getLogger(__name__)

PURGE_LOCK_ID = 0x6761746577617902
BATCH = 1000

TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
UNLOCK = "SELECT pg_advisory_unlock($1)"


async def _drain(batch: Callable[[], Awaitable[int]]) -> int:
    total = 0
    while True:
        deleted = await batch()
        total += deleted
        if deleted < BATCH:
            return total
        await asyncio.sleep(0)  # let requests in between batches


async def purge(pool: asyncpg.Pool, config: Config, clock: Clock) -> dict[str, int] | None:
    """One round. Returns rows deleted per table, or None when another process holds the lock."""
    now = clock()
    idle = config.session.idle_timeout
    failures_before = now - config.login.window
    audit_before = now - config.retention.audit_log
    async with pool.acquire() as conn:
        if not await conn.fetchval(TRY_LOCK, PURGE_LOCK_ID):
            return None
        try:
            return {
                "sessions": await _drain(lambda: sessions.purge_dead(conn, now, idle, BATCH)),
                "login_failures": await _drain(
                    lambda: throttle.purge_old(conn, failures_before, BATCH)
                ),
                "audit_log": await _drain(lambda: audit.purge_old(conn, audit_before, BATCH)),
                "totp_pending": await factors.purge_pending_totp(conn, now),
            }
        finally:
            await conn.execute(UNLOCK, PURGE_LOCK_ID)


async def purge_forever(pool: asyncpg.Pool, config: Config, clock: Clock) -> None:
    """Purge every retention.purge_interval until cancelled; a round that fails is skipped."""
    while True:
        await asyncio.sleep(config.retention.purge_interval.total_seconds())
        try:
            result = await purge(pool, config, clock)
            if result and any(result.values()):
                log.info("purged %s", ", ".join(f"{k}: {v}" for k, v in result.items()))
        except DB_ERRORS as exc:
            log.warning("purge skipped: database unavailable (%s)", exc)
