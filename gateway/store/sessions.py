"""Server-side sessions: opaque tokens, their SHA-256 in PostgreSQL, expiry.

The browser only ever holds a random token. Validating it means finding its
hash in the sessions table, so deleting the row (logout, revoke, disable)
ends the session everywhere, whoever holds a copy of the cookie.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from ..config import SessionConfig
from ..counters import SESSION_CACHE
from ..policy.identity import Clock, Identity, Session, utc_now
from .db import DB_TIMEOUT, DatabaseUnavailable, connection, rows_affected
from .session_cache import Entry, SessionCache
from .users import IDENTITY_COLUMNS, identity

# last_seen is written at most this often per session, so a busy session does
# not turn every proxied request into a database write. Idle expiry is
# therefore measured with this granularity.
TOUCH_INTERVAL = timedelta(seconds=60)

# How often the batched last_seen updates are written.
TOUCH_FLUSH_SECONDS = 10.0

_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, URL-safe base64, no padding

INSERT_SESSION = """
INSERT INTO sessions (token_hash, user_id, created_at, last_seen, expires_at, remember, ip,
                      user_agent)
VALUES ($1, $2, $3, $3, $4, $5, $6, $7)
RETURNING id"""
SELECT_SESSION = f"""
SELECT s.id, s.created_at, s.last_seen, s.expires_at, s.remember, u.disabled,
       {IDENTITY_COLUMNS}
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = $1"""
TOUCH_SESSION = "UPDATE sessions SET last_seen = $2 WHERE token_hash = $1"
FLUSH_TOUCHES = """
UPDATE sessions s SET last_seen = t.at
FROM unnest($1::bytea[], $2::timestamptz[]) AS t(token_hash, at)
WHERE s.token_hash = t.token_hash AND s.last_seen < t.at"""
DELETE_SESSION = "DELETE FROM sessions WHERE token_hash = $1 RETURNING user_id"
DELETE_SESSION_BY_ID = "DELETE FROM sessions WHERE id = $1 RETURNING user_id"
DELETE_USER_SESSIONS = "DELETE FROM sessions WHERE user_id = $1"
DELETE_ALL_SESSIONS = "DELETE FROM sessions"

# -- the expiry rule ------------------------------------------------------------
# A session ends at its absolute expiry, or after idle_timeout without a request
# unless "keep me signed in" traded the idle limit for its own longer lifetime.
# `ends_at` says it in Python for one session (and `expired` asks it); LIVE says
# the same in SQL ($1 now, $2 now - idle_timeout) for the queries that count,
# list and purge.
LIVE = "s.expires_at > $1 AND (s.remember OR s.last_seen > $2)"


def ends_at(
    session: Session | SessionInfo, idle_timeout: timedelta, last_seen: datetime | None = None
) -> datetime:
    """When the session ends if nothing more happens. `last_seen`: a later use than
    the row knows of."""
    if session.remember:
        return session.expires_at
    return min(session.expires_at, (last_seen or session.last_seen) + idle_timeout)


def expired(
    session: Session, now: datetime, idle_timeout: timedelta, last_seen: datetime | None = None
) -> bool:
    """Is this session over at `now`?"""
    return now >= ends_at(session, idle_timeout, last_seen)


COUNT_LIVE = f"SELECT count(*) FROM sessions s WHERE {LIVE}"
SELECT_LIVE = f"""
SELECT s.id, s.created_at, s.last_seen, s.expires_at, s.remember, s.ip, s.user_agent,
       u.username
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE ($3::text IS NULL OR u.username = $3) AND {LIVE}
ORDER BY s.created_at"""
# The account pages end sessions by their public id, and only the signed-in
# user's own: another user's id matches no row, exactly like a made-up one.
# A row already over (not yet purged) goes too, but is not counted as ended.
DELETE_OWN_SESSION = f"""
DELETE FROM sessions s WHERE s.id = $3 AND s.user_id = $4
RETURNING s.token_hash, ({LIVE}) AS live"""
DELETE_OTHER_SESSIONS = f"""
WITH gone AS (
    DELETE FROM sessions s WHERE s.user_id = $3 AND s.token_hash <> $4
    RETURNING ({LIVE}) AS live)
SELECT count(*) FILTER (WHERE live) FROM gone"""
COUNT_LIVE_OTHERS = f"""
SELECT count(*) FROM sessions s WHERE s.user_id = $3 AND s.token_hash <> $4 AND {LIVE}"""
# Which of these sessions would a request still be let in with? (store.live asks.)
STILL_LIVE = f"""
SELECT s.token_hash FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = ANY($3::bytea[]) AND NOT u.disabled AND {LIVE}"""
PURGE_DEAD = f"""
DELETE FROM sessions WHERE id IN (
    SELECT s.id FROM sessions s WHERE NOT ({LIVE}) LIMIT $3)"""


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


def is_token(value: str) -> bool:
    return bool(_TOKEN.fullmatch(value))


@dataclass(frozen=True)
class SessionInfo:
    id: uuid.UUID
    username: str
    created_at: datetime
    last_seen: datetime
    expires_at: datetime
    remember: bool
    ip: str
    user_agent: str


class SessionStore:
    """Creates, validates and ends sessions. All times come from `clock`.

    With a `cache`, a session validated once is served from memory until it
    expires, is revoked (evicted by NOTIFY), or MAX_AGE passes; its last_seen
    is kept in memory and written back in batches (`flush_touches`).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        config: SessionConfig,
        clock: Clock = utc_now,
        cache: SessionCache | None = None,
    ):
        self.pool = pool
        self.config = config
        self.clock = clock
        self.cache = cache or SessionCache()  # disabled until an Invalidator enables it
        self._touches: dict[bytes, datetime] = {}

    def _conn(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        return connection(self.pool)

    def lifetime(self, remember: bool) -> timedelta:
        return self.config.remember_me if remember else self.config.absolute_timeout

    async def create(
        self,
        identity: Identity,
        *,
        remember: bool = False,
        ip: str = "",
        user_agent: str = "",
        conn: asyncpg.Connection | None = None,
    ) -> tuple[str, Session]:
        """A brand-new session (never a reused one: no fixation). Returns (token, session).

        With `conn`, inside the caller's transaction (a password change)."""
        token = new_token()
        token_hash = hash_token(token)
        now = self.clock()
        expires = now + self.lifetime(remember)
        async with contextlib.nullcontext(conn) if conn else self._conn() as conn:
            session_id = await conn.fetchval(
                INSERT_SESSION,
                token_hash,
                identity.user_id,
                now,
                expires,
                remember,
                ip,
                user_agent[:512],
            )
        return token, Session(session_id, token_hash, identity, now, now, expires, remember)

    def expired(self, session: Session, now: datetime, last_seen: datetime | None = None) -> bool:
        return expired(session, now, self.config.idle_timeout, last_seen)

    def _live_bounds(self) -> tuple[datetime, datetime]:
        """LIVE's $1 and $2 as of now."""
        now = self.clock()
        return now, now - self.config.idle_timeout

    async def lookup(self, token: str) -> Session | None:
        """The live session for a cookie value, or None. Expired rows are deleted.

        Raises DatabaseUnavailable so callers can fail closed.
        """
        if not is_token(token):
            return None
        token_hash = hash_token(token)
        now = self.clock()
        entry = self.cache.get(token_hash, now)
        if entry is not None and not self.expired(entry.session, now, entry.last_seen):
            SESSION_CACHE.inc("hit")
            entry.last_seen = now
            if now - entry.written_last_seen >= TOUCH_INTERVAL:
                self._touches[token_hash] = now
                entry.written_last_seen = now
            return entry.session
        SESSION_CACHE.inc("miss")
        generation = self.cache.generation
        async with self._conn() as conn:
            row = await conn.fetchrow(SELECT_SESSION, token_hash)
            if row is None:
                return None
            session = Session(
                id=row["id"],
                token_hash=token_hash,
                identity=identity(row),
                created_at=row["created_at"],
                last_seen=row["last_seen"],
                expires_at=row["expires_at"],
                remember=row["remember"],
            )
            # This process may have seen the session more recently than the
            # database has been told (touches are batched).
            last_seen = max(session.last_seen, entry.last_seen if entry else session.last_seen)
            if row["disabled"] or self.expired(session, now, last_seen):
                await conn.execute(DELETE_SESSION, token_hash)
                return None
            written = session.last_seen
            if now - written >= TOUCH_INTERVAL:
                await conn.execute(TOUCH_SESSION, token_hash, now)
                written = now
        self.cache.put(
            token_hash,
            Entry(
                session,
                session.identity.user_id,
                fetched_at=now,
                last_seen=now,
                written_last_seen=written,
            ),
            generation,
        )
        return session

    async def revoke(self, token_hash: bytes) -> bool:
        # Evicted here at once; the trigger's NOTIFY tells every other process.
        self.cache.evict([token_hash])
        async with self._conn() as conn:
            return await conn.fetchval(DELETE_SESSION, token_hash) is not None

    async def revoke_user(self, user_id: int) -> int:
        self.cache.evict_user(user_id)
        async with self._conn() as conn:
            return await revoke_user(conn, user_id)

    async def revoke_own(self, user_id: int, session_id: uuid.UUID) -> bool:
        """End one of `user_id`'s sessions by its public id. False: no such session
        of theirs (another user's id included), and nothing was ended."""
        async with self._conn() as conn:
            row = await conn.fetchrow(DELETE_OWN_SESSION, *self._live_bounds(), session_id, user_id)
        if row is None:
            return False
        self.cache.evict([row["token_hash"]])
        return row["live"]

    async def revoke_others(self, session: Session) -> int:
        """End every session of this session's user but this one."""
        user_id = session.identity.user_id
        async with self._conn() as conn:
            ended = await conn.fetchval(
                DELETE_OTHER_SESSIONS, *self._live_bounds(), user_id, session.token_hash
            )
        self.cache.evict_user(user_id)
        return ended

    async def count_live_others(self, conn: asyncpg.Connection, session: Session) -> int:
        """How many other sessions of this session's user a request would still accept."""
        return await conn.fetchval(
            COUNT_LIVE_OTHERS, *self._live_bounds(), session.identity.user_id, session.token_hash
        )

    async def still_live(self, token_hashes: list[bytes]) -> set[bytes]:
        """Those of `token_hashes` whose sessions have not ended, asked of the database."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                STILL_LIVE, *self._live_bounds(), token_hashes, timeout=DB_TIMEOUT
            )
        return {row["token_hash"] for row in rows}

    def keep_alive(self, token_hash: bytes, now: datetime) -> None:
        """A connection still open for this session is activity: note it like a
        request (batched), so idle expiry does not end a session in use."""
        entry = self.cache.peek(token_hash)
        if entry is not None:
            entry.last_seen = now
            if now - entry.written_last_seen < TOUCH_INTERVAL:
                return
            entry.written_last_seen = now
        self._touches[token_hash] = now

    async def flush_touches_forever(self, interval: float = TOUCH_FLUSH_SECONDS) -> None:
        """Write the batched last_seen updates every `interval` until cancelled."""
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(DatabaseUnavailable):
                await self.flush_touches()

    async def flush_touches(self) -> int:
        """Write the batched last_seen updates: one statement for all of them."""
        if not self._touches:
            return 0
        touches, self._touches = self._touches, {}
        try:
            async with self._conn() as conn:
                await conn.execute(FLUSH_TOUCHES, list(touches), list(touches.values()))
        except DatabaseUnavailable:
            # Keep them for the next round; newer touches win.
            for token_hash, at in touches.items():
                self._touches.setdefault(token_hash, at)
            raise
        return len(touches)


async def list_sessions(
    db: asyncpg.Pool | asyncpg.Connection,
    username: str | None,
    now: datetime,
    idle_timeout: timedelta,
) -> list[SessionInfo]:
    """The sessions a request would still accept, oldest first."""
    rows = await db.fetch(SELECT_LIVE, now, now - idle_timeout, username)
    return [
        SessionInfo(
            id=r["id"],
            username=r["username"],
            created_at=r["created_at"],
            last_seen=r["last_seen"],
            expires_at=r["expires_at"],
            remember=r["remember"],
            ip=r["ip"],
            user_agent=r["user_agent"],
        )
        for r in rows
    ]


async def count_live(
    db: asyncpg.Pool | asyncpg.Connection, now: datetime, idle_timeout: timedelta
) -> int:
    return await db.fetchval(COUNT_LIVE, now, now - idle_timeout, timeout=DB_TIMEOUT)


async def purge_dead(
    conn: asyncpg.Connection, now: datetime, idle_timeout: timedelta, limit: int
) -> int:
    """Delete up to `limit` sessions that are over; returns how many went."""
    return rows_affected(await conn.execute(PURGE_DEAD, now, now - idle_timeout, limit))


async def revoke_by_id(db: asyncpg.Pool | asyncpg.Connection, session_id: uuid.UUID) -> bool:
    return await db.fetchval(DELETE_SESSION_BY_ID, session_id) is not None


async def revoke_user(db: asyncpg.Pool | asyncpg.Connection, user_id: int) -> int:
    return rows_affected(await db.execute(DELETE_USER_SESSIONS, user_id))


async def revoke_all(db: asyncpg.Pool | asyncpg.Connection) -> int:
    return rows_affected(await db.execute(DELETE_ALL_SESSIONS))
