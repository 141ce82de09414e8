"""The in-process session cache and the LISTEN connection that keeps it honest.

A validated session is kept here by token hash, so a repeat request needs no
database round trip. Coherence comes from PostgreSQL: triggers NOTIFY every
ended session and changed user (sql/003), and `Invalidator` LISTENs and
evicts. The cache is only *enabled* while that LISTEN connection is up: when
it drops, the cache is flushed and bypassed until LISTEN is back, because
notifications sent meanwhile are lost. A generation counter stops a lookup
that raced an eviction from putting the stale row back.

Up is not enough: a connection that hangs without closing delivers no
notifications and no error. So the cache serves only while the listener has
*proven* itself within `session.cache_trust` (a heartbeat every third of it,
the bound counted from when each was asked):
a silent hang turns the cache off within that bound, from any point of the
heartbeat cycle. Notifications sent during a hang that then clears arrive
before the heartbeat's answer, so nothing revoked meanwhile comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from .db import DB_ERRORS, DB_TIMEOUT

log = logging.getLogger(__name__)

CHANNEL = "gateway_sessions"
MAX_ENTRIES = 100_000
# A cached entry is re-read from the database after this long even without
# a notification: a bound on staleness for changes no trigger announces.
MAX_AGE = timedelta(seconds=30)
# How operators (and tests) find the listener in pg_stat_activity.
LISTENER_APPLICATION_NAME = "gateway-session-listener"


@dataclass
class Entry:
    session: object  # sessions.Session (kept untyped: sessions imports this module)
    user_id: int
    fetched_at: datetime  # when the database last confirmed it
    last_seen: datetime  # this process's latest request with it
    written_last_seen: datetime  # last_seen as the database has it


class SessionCache:
    def __init__(
        self,
        max_entries: int = MAX_ENTRIES,
        max_age: timedelta = MAX_AGE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._by_user: dict[int, set[bytes]] = {}
        self.generation = 0
        self.enabled = False  # until the LISTEN connection is up
        # monotonic() until which the listener's last answer vouches for the cache.
        self.monotonic = monotonic
        self.trusted_until = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token_hash: bytes, now: datetime) -> Entry | None:
        if not self.serving():
            return None
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        if now - entry.fetched_at >= self.max_age:
            self._drop(token_hash)
            return None
        self._entries.move_to_end(token_hash)
        return entry

    def serving(self) -> bool:
        """Would the cache serve now (notifications are known to be arriving)?"""
        return self.enabled and self.monotonic() < self.trusted_until

    def peek(self, token_hash: bytes) -> Entry | None:
        """The entry as held, whether or not it may be served (no reordering)."""
        return self._entries.get(token_hash)

    def put(self, token_hash: bytes, entry: Entry, generation: int) -> None:
        """Store, unless an eviction happened since the caller read the database."""
        if generation != self.generation or not self.serving():
            return
        self._entries[token_hash] = entry
        self._entries.move_to_end(token_hash)
        self._by_user.setdefault(entry.user_id, set()).add(token_hash)
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, token_hash: bytes) -> None:
        entry = self._entries.pop(token_hash, None)
        if entry is not None:
            hashes = self._by_user.get(entry.user_id)
            if hashes is not None:
                hashes.discard(token_hash)
                if not hashes:
                    del self._by_user[entry.user_id]

    def evict(self, token_hashes: list[bytes]) -> None:
        self.generation += 1
        for token_hash in token_hashes:
            self._drop(token_hash)

    def evict_user(self, user_id: int) -> None:
        self.generation += 1
        for token_hash in list(self._by_user.get(user_id, ())):
            self._drop(token_hash)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._by_user.clear()

    def disable(self) -> None:
        self.enabled = False
        self.clear()

    def enable(self) -> None:
        self.clear()
        self.enabled = True

    def vouch(self, seconds: float, since: float | None = None) -> None:
        """The listener answered a question asked at `since` (default: now): serve
        from the cache until `seconds` after that."""
        self.trusted_until = (self.monotonic() if since is None else since) + seconds

    def apply(self, payload: str) -> None:
        """One NOTIFY payload from sql/003's triggers."""
        kind, _, rest = payload.partition(":")
        try:
            if kind == "s":
                self.evict([bytes.fromhex(h) for h in rest.split(",") if h])
            elif kind == "u":
                self.evict_user(int(rest))
            else:
                self.clear()
        except ValueError:
            log.warning("unreadable session notification %r; flushing the cache", payload)
            self.clear()


class Invalidator:
    """Holds the LISTEN connection; reconnects with backoff; gates the cache on it."""

    def __init__(
        self,
        url: str,
        cache: SessionCache,
        trust_seconds: float,
        listeners: tuple[Callable[[str], None], ...] = (),
    ) -> None:
        self.url = url
        self.cache = cache
        self.trust_seconds = trust_seconds
        # Told every payload after the cache (store.live cuts connections with them).
        self.listeners = listeners
        self.connected = asyncio.Event()  # for tests and readiness: LISTEN is live

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.cache.apply(payload)
        for listener in self.listeners:
            listener(payload)

    async def run(self) -> None:
        backoff = 0.1
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(
                    self.url,
                    timeout=DB_TIMEOUT,
                    server_settings={"application_name": LISTENER_APPLICATION_NAME},
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                # Enabled only now: anything revoked before this point is
                # not in the (just flushed) cache.
                self.cache.enable()
                self.cache.vouch(self.trust_seconds)
                self.connected.set()
                for listener in self.listeners:
                    listener("all")  # what ended while nobody listened is unknown
                backoff = 0.1
                # A third of the bound: an answer that takes up to twice the
                # interval still arrives before the trust runs out.
                heartbeat = self.trust_seconds / 3
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), heartbeat)
                        break
                    # A silent hang shows no termination: ask, and vouch only on an
                    # answer, counting from when we asked (everything sent before
                    # then has arrived: the answer comes after it on the wire).
                    asked = self.cache.monotonic()
                    await conn.fetchval("SELECT 1", timeout=DB_TIMEOUT)
                    self.cache.vouch(self.trust_seconds, since=asked)
            except DB_ERRORS as exc:
                log.warning("session notifications unavailable (%s); cache bypassed", exc)
            finally:
                self.connected.clear()
                self.cache.disable()
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
