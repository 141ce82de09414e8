"""Login throttling: failed sign-ins counted in PostgreSQL per username and per IP.

Over either limit within `login.window`, further attempts are refused with
429 before any password is hashed, so a guessing attack costs us nothing
and learns nothing. Counting happens in the database, so the limits hold
across every worker and replica.
"""

from __future__ import annotations

import math
from datetime import timedelta

import asyncpg

from .config import LoginConfig
from .sessions import Clock

MAX_KEY_CHARS = 256

INSERT_FAILURE = "INSERT INTO login_failures (at, username, ip) VALUES ($1, $2, $3)"
# The limit-th most recent failure inside the window: once it ages out, the
# key is below the limit again. No row means not throttled.
NTH_USER_FAILURE = """
SELECT at FROM login_failures WHERE username = $1 AND at > $2
ORDER BY at DESC OFFSET $3 LIMIT 1"""
NTH_IP_FAILURE = """
SELECT at FROM login_failures WHERE ip = $1 AND at > $2
ORDER BY at DESC OFFSET $3 LIMIT 1"""
CLEAR_USER_FAILURES = "DELETE FROM login_failures WHERE username = $1"


class Throttle:
    def __init__(self, pool: asyncpg.Pool, config: LoginConfig, clock: Clock) -> None:
        self.pool = pool
        self.config = config
        self.clock = clock

    async def retry_after(self, username: str, ip: str) -> int | None:
        """Seconds until this username and IP may try again, or None if they may now."""
        now = self.clock()
        window = timedelta(seconds=self.config.window)
        since = now - window
        async with self.pool.acquire() as conn:
            user_at = await conn.fetchval(
                NTH_USER_FAILURE,
                username[:MAX_KEY_CHARS],
                since,
                self.config.max_failures_per_user - 1,
            )
            ip_at = await conn.fetchval(
                NTH_IP_FAILURE, ip, since, self.config.max_failures_per_ip - 1
            )
        blocked_until = max(
            (at + window for at in (user_at, ip_at) if at is not None), default=None
        )
        if blocked_until is None:
            return None
        return max(1, math.ceil((blocked_until - now).total_seconds()))

    async def failed(self, username: str, ip: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(INSERT_FAILURE, self.clock(), username[:MAX_KEY_CHARS], ip)

    async def succeeded(self, username: str) -> None:
        """The account's own owner got in: their username's count starts over.

        The IP count is kept, so one address cannot alternate a known
        account with guesses at others to stay under its limit.
        """
        async with self.pool.acquire() as conn:
            await conn.execute(CLEAR_USER_FAILURES, username[:MAX_KEY_CHARS])
