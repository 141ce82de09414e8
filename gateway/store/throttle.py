"""Login throttling: failed sign-ins counted in PostgreSQL per username and per IP.

Over either limit within `login.window`, further attempts are refused with
429 before any password is hashed, so a guessing attack costs us nothing
and learns nothing. Counting happens in the database, so the limits hold
across every worker and replica.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ..config import LoginConfig
from ..policy.identity import Clock
from .db import rows_affected

MAX_KEY_CHARS = 256

# Attempts on one username, and on one IP, reserve and count one at a time. An id
# is taken when an INSERT starts but seen by others only once it commits, so
# without this a later attempt could count before an earlier one's row showed
# and slip past the limit (under load, 4 of 8 parallel guesses got hashed with a
# limit of 3). The username's lock is always taken before the IP's: no cycles.
# Two-key advisory locks: a key space apart from the one-key migration and purge locks.
LOCK_SPACE = 0x67617465  # "gate"
LOCK_USER_KEY = f"SELECT pg_advisory_xact_lock({LOCK_SPACE}, hashtext('u:' || $1))"
LOCK_IP_KEY = f"SELECT pg_advisory_xact_lock({LOCK_SPACE}, hashtext('i:' || $1))"
RESERVE = "INSERT INTO login_failures (at, username, ip) VALUES ($1, $2, $3) RETURNING id"
# Among the attempts before ours (lower id) inside the window: the limit-th
# most recent. It existing means we are over the limit; once it ages out, the
# key is under the limit again.
NTH_USER_FAILURE = """
SELECT at FROM login_failures
WHERE username = $1 AND at > $2 AND id < $4 AND NOT cleared
ORDER BY id DESC OFFSET $3 LIMIT 1"""
NTH_IP_FAILURE = """
SELECT at FROM login_failures
WHERE ip = $1 AND at > $2 AND id < $4
ORDER BY id DESC OFFSET $3 LIMIT 1"""
RELEASE = "DELETE FROM login_failures WHERE id = $1"
CLEAR_USER_FAILURES = "UPDATE login_failures SET cleared = true WHERE username = $1 AND NOT cleared"
PURGE_OLD = """
DELETE FROM login_failures WHERE id IN (
    SELECT id FROM login_failures WHERE at <= $1 LIMIT $2)"""


@dataclass(frozen=True)
class Attempt:
    id: int
    retry_after: int | None  # set when refused: seconds until the key may try again


class Throttle:
    """The counting rules; the caller brings the connection (one per sign-in step).

    `begin` records the attempt as a failure *before* the password is
    checked, then counts only the attempts that came before it. Parallel
    guesses therefore queue up by id: the first `limit` get checked, the
    rest are refused, however many arrive at once.
    """

    def __init__(self, config: LoginConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock

    async def begin(self, conn: asyncpg.Connection, username: str, ip: str) -> Attempt:
        now = self.clock()
        window = self.config.window
        since = now - window
        key = username[:MAX_KEY_CHARS]
        async with conn.transaction():
            await conn.execute(LOCK_USER_KEY, key)
            await conn.execute(LOCK_IP_KEY, ip)
            attempt_id = await conn.fetchval(RESERVE, now, key, ip)
            user_at = await conn.fetchval(
                NTH_USER_FAILURE, key, since, self.config.max_failures_per_user - 1, attempt_id
            )
            ip_at = await conn.fetchval(
                NTH_IP_FAILURE, ip, since, self.config.max_failures_per_ip - 1, attempt_id
            )
        blocked_until = max(
            (at + window for at in (user_at, ip_at) if at is not None), default=None
        )
        if blocked_until is None:
            return Attempt(attempt_id, None)
        # A refused attempt is not a failure: it must not stretch the lockout.
        await conn.execute(RELEASE, attempt_id)
        return Attempt(attempt_id, max(1, math.ceil((blocked_until - now).total_seconds())))

    async def succeeded(self, conn: asyncpg.Connection, attempt: Attempt, username: str) -> None:
        """Not a failure after all; and the username's earlier failures are forgiven.

        Forgiven for the username's count only: the IP's count keeps them,
        so one address cannot alternate a known account with guesses at
        others to stay under its limit.
        """
        await conn.execute(RELEASE, attempt.id)
        await conn.execute(CLEAR_USER_FAILURES, username[:MAX_KEY_CHARS])


async def purge_old(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    """Delete up to `limit` failures older than any window still counts."""
    return rows_affected(await conn.execute(PURGE_OLD, before, limit))
