"""Connections held open for a session, cut the moment the session ends.

A WebSocket or a long download outlives the request that opened it: the
access check ran once, at the start. So each one is *watched* here under its
session, and ended when that session ends, for whatever reason, in whichever
process ended it:

- a session deleted (sign-out, revocation, password change, purge): the
  NOTIFY that evicts it from the cache (sql/003) names its hash; cut at once;
- a user changed, disabled or deleted ('u:<id>'), or too many ended to list
  ('all'): the watched sessions concerned are asked of the database, and the
  ones that no longer pass are cut;
- absolute expiry, which no NOTIFY announces: the sweep, twice a second;
- a session first watched: the next sweep asks the database about it (an end
  notified between the request's check and the watch found nothing to cut);
- while the LISTEN connection is down (notifications may be lost), the sweep
  asks the database about every watched session each time.

An open connection counts as activity (`SessionStore.keep_alive`), so idle
expiry does not end a session that is in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from ..policy.identity import Session
from .db import DatabaseUnavailable
from .sessions import SessionStore

log = logging.getLogger(__name__)

# Absolute expiry is found by the sweep: at most this late, inside the 1 s promise.
SWEEP_SECONDS = 0.5

Cut = Callable[[str], None]  # called once, with why: "ended", "expired"


class Watch:
    """One open connection's hold on its session; `close()` when the connection ends."""

    __slots__ = ("_live", "cut", "session")

    def __init__(self, live: LiveConnections, session: Session, cut: Cut) -> None:
        self._live = live
        self.session = session
        self.cut = cut

    def close(self) -> None:
        self._live._forget(self)


class LiveConnections:
    def __init__(self, store: SessionStore, trusted: Callable[[], bool] = lambda: True) -> None:
        self.store = store
        # Is the cache's LISTEN connection vouching for notifications right now?
        self.trusted = trusted
        self._by_hash: dict[bytes, set[Watch]] = {}
        self._by_user: dict[int, set[bytes]] = {}
        self._suspect: set[bytes] = set()  # to ask the database about
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return sum(len(w) for w in self._by_hash.values())

    def watch(self, session: Session, cut: Cut) -> Watch:
        """Watch a connection opened for `session`. The session was checked when the
        request came in; an end notified between then and now found nothing to cut,
        so a new session is asked of the database at the next sweep."""
        watch = Watch(self, session, cut)
        watches = self._by_hash.setdefault(session.token_hash, set())
        if not watches:
            self._suspect.add(session.token_hash)
        watches.add(watch)
        self._by_user.setdefault(session.identity.user_id, set()).add(session.token_hash)
        return watch

    def _forget(self, watch: Watch) -> None:
        token_hash = watch.session.token_hash
        watches = self._by_hash.get(token_hash)
        if watches is None or watch not in watches:
            return
        watches.discard(watch)
        if not watches:
            del self._by_hash[token_hash]
            self._suspect.discard(token_hash)
            user_id = watch.session.identity.user_id
            hashes = self._by_user.get(user_id)
            if hashes is not None:
                hashes.discard(token_hash)
                if not hashes:
                    del self._by_user[user_id]

    def cut(self, token_hashes: list[bytes] | set[bytes], why: str) -> int:
        """End every connection watched under these sessions; returns how many."""
        count = 0
        for token_hash in token_hashes:
            for watch in list(self._by_hash.get(token_hash, ())):
                watch.close()
                count += 1
                try:
                    watch.cut(why)
                except Exception:  # one connection's trouble must not spare the others
                    log.exception("cutting a connection for an ended session failed")
        return count

    # -- what the database says ------------------------------------------------

    def apply(self, payload: str) -> None:
        """One NOTIFY payload (session_cache's format), from the LISTEN connection."""
        if not self._by_hash:
            return
        kind, _, rest = payload.partition(":")
        if kind == "s":
            hashes = set()
            for text in rest.split(","):
                with contextlib.suppress(ValueError):
                    hashes.add(bytes.fromhex(text))
            self.cut(hashes & self._by_hash.keys(), "ended")
            return
        if kind == "u" and rest.isdigit():
            self._suspect |= self._by_user.get(int(rest), set())
        else:  # 'all', an unreadable payload, or a reconnect after notifications were lost
            self._suspect |= self._by_hash.keys()
        self._spawn(self.recheck())

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def recheck(self) -> None:
        """Ask the database about the suspect sessions; cut those that have ended.
        Kept suspect if the database cannot say (the next sweep asks again)."""
        suspects = [h for h in self._suspect if h in self._by_hash]
        self._suspect.clear()
        if not suspects:
            return
        try:
            live = await self.store.still_live(suspects)
        except DatabaseUnavailable as exc:
            log.warning("cannot check sessions of open connections (%s); retrying", exc)
            self._suspect.update(suspects)
            return
        self.cut([h for h in suspects if h not in live], "ended")

    async def sweep(self) -> None:
        """Each SWEEP_SECONDS: expiry, activity, new watches and (with notifications in
        doubt) every watch, asked of the database."""
        if not self._by_hash:
            return
        now = self.store.clock()
        expired = []
        for token_hash, watches in self._by_hash.items():
            session = next(iter(watches)).session
            if now >= session.expires_at:
                expired.append(token_hash)
            else:
                self.store.keep_alive(token_hash, now)
        if expired:
            self.cut(expired, "expired")
        if not self.trusted():
            self._suspect |= self._by_hash.keys()
        await self.recheck()

    async def sweep_forever(self, interval: float = SWEEP_SECONDS) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        try:
            while True:
                # At a fixed rate: a slow sweep does not push the next one back.
                due = max(due + interval, loop.time())
                await asyncio.sleep(due - loop.time())
                await self.sweep()
        finally:
            for task in list(self._tasks):
                task.cancel()
