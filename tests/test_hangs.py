"""A database that hangs without closing anything: the case a dead socket never shows.

The gateway reaches PostgreSQL through a relay the test controls (a hung
host or network: bytes stop, no connection closes), while the test itself
keeps a direct connection that works. Checked: the session cache turns off
within `session.cache_trust` of the hang, so a session revoked meanwhile is
not served beyond that bound; and `gateway serve` still stops cleanly on
SIGTERM, exit 0, each shutdown step bounded and named.
"""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import pytest
from helpers import cli_env, free_port, sign_in, start_cli
from upstreams import Relay

from gateway.web.database import INVALIDATOR
from gateway.web.exchange import SESSIONS

API = {"Accept": "application/json"}
TRUST = 2.0  # session.cache_trust below
SLACK = 0.3  # scheduling on a busy machine


async def status_of(client, token: str) -> int:
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(
            client.make_url("/x"),
            headers={**API, "Cookie": f"gateway_session={token}"},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as response,
    ):
        return response.status


async def test_a_silent_hang_turns_the_cache_off_within_cache_trust(gateway, db, db_url, alice):
    async with Relay(db_url) as relay:
        client = await gateway(database={"url": relay.url}, session={"cache_trust": "2s"})
        await asyncio.wait_for(client.app[INVALIDATOR].connected.wait(), 10)
        token = (await sign_in(client)).token
        assert await status_of(client, token) == 200  # cached from here on
        cache = client.app[SESSIONS].cache

        # The worst point of the heartbeat cycle: just after the listener answered.
        vouched = cache.trusted_until
        async with asyncio.timeout(5):
            while cache.trusted_until == vouched:
                await asyncio.sleep(0.005)
        relay.freeze()
        frozen_at = time.monotonic()
        # Revoked for real (the test's own connection works); the NOTIFY is stuck.
        assert await db.fetchval("DELETE FROM sessions RETURNING 1") == 1

        seen: list[tuple[float, int, float]] = []  # (asked at, status, took), from the hang
        while len([1 for at, *_ in seen if at > TRUST + SLACK]) < 2:
            asked = time.monotonic()
            status = await status_of(client, token)
            seen.append((asked - frozen_at, status, time.monotonic() - asked))
        served = [at for at, status, _ in seen if status == 200]
        assert served, "the cache served nothing at all after the hang began"
        assert max(served) <= TRUST + SLACK, seen
        # After the bound: no cache, the database hangs, so fail closed (503), never 200.
        late = [(status, took) for at, status, took in seen if at > TRUST + SLACK]
        assert [status for status, _ in late] == [503, 503], seen

        relay.thaw()
        async with asyncio.timeout(15):
            while await status_of(client, token) != 401:  # revoked, now that it can tell
                await asyncio.sleep(0.1)


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_while_the_database_hangs_stops_cleanly(db_url, tmp_path, workers):
    port = free_port()
    (tmp_path / "serve.toml").write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[[upstream]]\nname = "app"\nurl = "http://127.0.0.1:{free_port()}"\n'
    )
    async with Relay(db_url) as relay:
        proc = await start_cli(
            tmp_path,
            cli_env(relay.url),
            "serve",
            "-c",
            "serve.toml",
            "--workers",
            str(workers),
        )
        try:
            async with aiohttp.ClientSession() as http:
                async with asyncio.timeout(60):
                    while True:
                        try:
                            async with http.get(f"http://127.0.0.1:{port}/_gateway/readyz") as r:
                                if r.status == 200:
                                    break
                        except aiohttp.ClientError:
                            pass
                        assert proc.returncode is None, (await proc.stderr.read()).decode()
                        await asyncio.sleep(0.1)
            relay.freeze()
            await asyncio.sleep(0.5)
            stopping = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            _out, err = await asyncio.wait_for(proc.communicate(), 60)
            took = time.monotonic() - stopping
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    log = err.decode()
    assert proc.returncode == 0, log
    assert "cannot listen" not in log, log
    assert "Traceback" not in log, log
    assert (
        "closing the database pool: the database did not answer; its connections were cut" in log
    ), log
    assert took < 30, (took, log)
