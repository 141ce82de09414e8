"""The session cache: repeat requests skip the database; revocation still wins at once."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import pytest
from helpers import fresh_get, sign_in
from prometheus_client import REGISTRY

from gateway import counters
from gateway.store.session_cache import LISTENER_APPLICATION_NAME, Entry, SessionCache
from gateway.web.database import INVALIDATOR
from gateway.web.exchange import SESSIONS

API = {"Accept": "application/json"}


def cache_count(result: str) -> float:
    counters.fold()  # what a scrape does first: the request path counts into plain dicts
    return REGISTRY.get_sample_value("gateway_session_cache_total", {"result": result}) or 0.0


async def listening(client) -> None:
    """Wait until the gateway's LISTEN connection is up (it starts in the background)."""
    await asyncio.wait_for(client.app[INVALIDATOR].connected.wait(), 10)


async def eventually(check, timeout: float = 2.0) -> float:
    """Poll `check` until true; return how long it took."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < timeout, "condition never became true"
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def test_repeat_requests_are_served_from_the_cache(gateway, alice):
    client = await gateway()
    await listening(client)
    token = (await sign_in(client)).token
    assert (await fresh_get(client, "/x", token, **API)).status == 200
    hits, misses = cache_count("hit"), cache_count("miss")
    for _ in range(5):
        assert (await fresh_get(client, "/x", token, **API)).status == 200
    assert cache_count("hit") - hits == 5
    assert cache_count("miss") == misses


async def test_revocation_by_another_process_evicts_within_100ms(gateway, alice, db):
    client = await gateway()
    await listening(client)
    token = (await sign_in(client)).token
    assert (await fresh_get(client, "/x", token, **API)).status == 200  # now cached
    await db.execute("DELETE FROM sessions")  # what a replica's logout or the CLI does

    async def refused() -> bool:
        return (await fresh_get(client, "/x", token, **API)).status == 401

    assert await eventually(refused) < 0.1


async def test_disabling_the_user_by_sql_evicts(gateway, alice, db):
    client = await gateway()
    await listening(client)
    token = (await sign_in(client)).token
    assert (await fresh_get(client, "/x", token, **API)).status == 200
    await db.execute("UPDATE users SET disabled = true WHERE username = 'alice'")

    async def refused() -> bool:
        return (await fresh_get(client, "/x", token, **API)).status == 401

    assert await eventually(refused) < 0.1


async def test_cache_is_bypassed_while_the_listener_is_down(gateway, alice, db):
    client = await gateway()
    await listening(client)
    token = (await sign_in(client)).token
    assert (await fresh_get(client, "/x", token, **API)).status == 200
    store = client.app[SESSIONS]
    assert len(store.cache) == 1
    killed = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
        LISTENER_APPLICATION_NAME,
    )
    assert killed >= 1

    async def bypassed() -> bool:
        return not store.cache.enabled

    await eventually(bypassed)
    assert len(store.cache) == 0  # flushed, not just ignored
    # A revocation now cannot be announced to this process, yet takes effect at once.
    await db.execute("DELETE FROM sessions")
    assert (await fresh_get(client, "/x", token, **API)).status == 401
    # The listener comes back by itself, and the cache with it.
    await listening(client)
    assert store.cache.enabled


async def test_expiry_is_exact_for_cached_sessions(gateway, alice, clock):
    client = await gateway(session={"idle_timeout": "10m", "absolute_timeout": "1h"})
    await listening(client)
    token = (await sign_in(client)).token
    for _ in range(3):  # activity every 20 s keeps it alive, served from the cache
        clock.advance(20)
        assert (await fresh_get(client, "/x", token, **API)).status == 200
    clock.advance(10 * 60)  # 10 minutes after the last request: idle limit reached
    assert (await fresh_get(client, "/x", token, **API)).status == 401


async def test_last_seen_is_written_back_in_batches(gateway, alice, clock, db):
    client = await gateway()
    await listening(client)
    token = (await sign_in(client)).token
    store = client.app[SESSIONS]
    assert (await fresh_get(client, "/x", token, **API)).status == 200
    clock.advance(61)  # a cache hit past the touch interval queues a write...
    store.cache.max_age = timedelta(days=1)  # keep the entry cached across the jump
    assert (await fresh_get(client, "/x", token, **API)).status == 200
    before = await db.fetchval("SELECT last_seen FROM sessions")
    assert before < clock.now
    assert await store.flush_touches() == 1  # ...which the flusher writes in one statement
    assert await db.fetchval("SELECT last_seen FROM sessions") == clock.now


def test_a_lookup_that_raced_an_eviction_does_not_put_back_a_stale_entry():
    cache = SessionCache()
    cache.enable()
    cache.vouch(3600)
    now = datetime(2026, 1, 1)
    entry = Entry(object(), 7, now, now, now)
    generation = cache.generation  # a lookup reads the database here...
    cache.evict_user(7)  # ...the revocation's NOTIFY lands meanwhile...
    cache.put(b"h" * 32, entry, generation)  # ...so its result is not cached
    assert cache.get(b"h" * 32, now) is None
    cache.put(b"h" * 32, entry, cache.generation)
    assert cache.get(b"h" * 32, now) is entry


@pytest.mark.parametrize(
    ("payload", "left"),
    [
        ("s:" + (b"a" * 32).hex(), {b"b" * 32}),
        ("u:1", {b"b" * 32}),
        ("all", set()),
        ("s:zz", set()),
    ],
)
def test_notification_payloads(payload, left):
    cache = SessionCache()
    cache.enable()
    cache.vouch(3600)
    now = datetime(2026, 1, 1)
    cache.put(b"a" * 32, Entry(object(), 1, now, now, now), cache.generation)
    cache.put(b"b" * 32, Entry(object(), 2, now, now, now), cache.generation)
    cache.apply(payload)
    assert {h for h in (b"a" * 32, b"b" * 32) if cache.get(h, now) is not None} == left


def test_cache_is_bounded():
    cache = SessionCache(max_entries=3)
    cache.enable()
    cache.vouch(3600)
    now = datetime(2026, 1, 1)
    for i in range(10):
        cache.put(bytes([i]) * 32, Entry(object(), i, now, now, now), cache.generation)
    assert len(cache) == 3
    assert cache.get(bytes([9]) * 32, now) is not None
    assert cache.get(bytes([0]) * 32, now) is None


class Ticks:
    """An injectable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_cache_serves_only_while_the_listener_has_vouched_for_it():
    ticks = Ticks()
    cache = SessionCache(monotonic=ticks)
    cache.enable()
    now = datetime(2026, 1, 1)
    entry = Entry(object(), 1, now, now, now)
    cache.put(b"a" * 32, entry, cache.generation)
    assert cache.get(b"a" * 32, now) is None  # enabled, but nothing has vouched yet
    cache.vouch(2.0)
    cache.put(b"a" * 32, entry, cache.generation)
    assert cache.get(b"a" * 32, now) is entry
    ticks.now += 1.99
    assert cache.get(b"a" * 32, now) is entry
    ticks.now += 0.01  # the listener has been silent for the whole bound
    assert cache.get(b"a" * 32, now) is None
    cache.put(b"b" * 32, entry, cache.generation)  # nor is anything stored meanwhile
    cache.vouch(2.0)
    assert cache.get(b"b" * 32, now) is None
    assert cache.get(b"a" * 32, now) is entry  # kept: any eviction arrives before a vouch
