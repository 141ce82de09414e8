"""Login throttling, enumeration resistance, rehash-on-login and the login storm.

All against a real gateway on a real socket and the real PostgreSQL: the
throttle's counts live in `login_failures`, every attempt lands in `audit_log`.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import threading
import time
from dataclasses import dataclass

import aiohttp
import argon2
import pytest
from helpers import PASSWORD, create_user, csrf_token, sign_in
from multidict import CIMultiDict

from gateway.policy.passwords import Passwords
from gateway.web.login import BAD_CREDENTIALS, THROTTLED

LOGIN = "/_gateway/login"
SESSION_COOKIE = "gateway_session"
API = {"Accept": "application/json"}
WINDOW = 600  # "10m"


def limits(per_user: int = 1000, per_ip: int = 1000, window: str = "10m") -> dict:
    return {"max_failures_per_user": per_user, "max_failures_per_ip": per_ip, "window": window}


@dataclass
class Attempt:
    status: int
    text: str
    headers: CIMultiDict[str]
    session_cookie: str | None
    seconds: float

    @property
    def retry_after(self) -> int:
        value = self.headers["Retry-After"]
        assert re.fullmatch(r"[0-9]+", value), f"Retry-After is not integer seconds: {value!r}"
        return int(value)


class Browser:
    """One browser: a CSRF nonce fetched once, then as many sign-in POSTs as wanted.

    The same nonce means the same CSRF token, so two answers rendered for this
    browser can be compared byte for byte. The session cookie of a successful
    sign-in is dropped again, so the next attempt starts signed out.
    """

    def __init__(self, client) -> None:
        self.client = client
        self.token: str | None = None

    async def login(
        self, username: str, password: str, *, xff: str | None = None, agent: str | None = None
    ) -> Attempt:
        if self.token is None:
            self.token = await csrf_token(self.client)
        headers = {}
        if xff is not None:
            headers["X-Forwarded-For"] = xff
        if agent is not None:
            headers["User-Agent"] = agent
        form = {"csrf_token": self.token, "username": username, "password": password, "rd": ""}
        started = time.perf_counter()
        response = await self.client.post(LOGIN, data=form, headers=headers, allow_redirects=False)
        text = await response.text()
        seconds = time.perf_counter() - started
        cookie = response.cookies.get(SESSION_COOKIE)
        self.client.session.cookie_jar.clear(lambda c: c.key == SESSION_COOKIE)
        return Attempt(
            status=response.status,
            text=text,
            headers=response.headers.copy(),
            session_cookie=cookie.value if cookie is not None and cookie.value else None,
            seconds=seconds,
        )


def assert_throttled(attempt: Attempt) -> int:
    assert attempt.status == 429, (attempt.status, attempt.text[:300])
    assert THROTTLED in attempt.text
    assert BAD_CREDENTIALS not in attempt.text
    assert attempt.session_cookie is None
    seconds = attempt.retry_after
    assert 0 < seconds <= WINDOW, seconds
    return seconds


def assert_bad_credentials(attempt: Attempt) -> None:
    assert attempt.status == 401, (attempt.status, attempt.text[:300])
    assert BAD_CREDENTIALS in attempt.text
    assert "Retry-After" not in attempt.headers
    assert attempt.session_cookie is None


def assert_signed_in(attempt: Attempt) -> None:
    assert attempt.status == 303, (attempt.status, attempt.text[:300])
    assert attempt.session_cookie


async def failure_rows(db) -> list:
    return await db.fetch("SELECT username, ip FROM login_failures ORDER BY id")


async def audit_rows(db) -> list:
    return await db.fetch(
        "SELECT event, username, ip, user_agent, detail FROM audit_log"
        " WHERE event LIKE 'login%' ORDER BY id"
    )


# -- per-username limit ------------------------------------------------------------


async def test_user_limit_then_429_even_for_the_right_password(gateway, alice, db, clock):
    client = await gateway(login=limits(per_user=3, per_ip=100))
    browser = Browser(client)
    for _ in range(3):
        assert_bad_credentials(await browser.login("alice", "wrong password"))

    blocked = await browser.login("alice", PASSWORD)
    first = assert_throttled(blocked)
    assert first == WINDOW  # the clock stood still: the whole window is left
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0

    # Case and surrounding spaces name the same account: no way around the count.
    assert_throttled(await browser.login("  ALICE ", PASSWORD))

    clock.advance(100)
    later = assert_throttled(await browser.login("alice", PASSWORD))
    assert later == WINDOW - 100
    clock.advance(WINDOW - 100 - 1)
    assert assert_throttled(await browser.login("alice", PASSWORD)) == 1

    clock.advance(2)  # the oldest failure has left the window
    assert_signed_in(await browser.login("alice", PASSWORD))


async def test_user_limit_spares_other_usernames_from_the_same_ip(gateway, alice, db):
    await create_user(db, "bob")
    client = await gateway(login=limits(per_user=3, per_ip=100))
    browser = Browser(client)
    for _ in range(3):
        assert_bad_credentials(await browser.login("alice", "wrong password"))
    assert_throttled(await browser.login("alice", PASSWORD))

    assert_bad_credentials(await browser.login("bob", "wrong password"))
    assert_signed_in(await browser.login("bob", PASSWORD))
    assert_bad_credentials(await browser.login("nobody", "whatever"))


async def test_user_limit_applies_to_unknown_usernames_alike(gateway, alice, clock):
    client = await gateway(login=limits(per_user=3, per_ip=100))
    browser = Browser(client)
    known = [await browser.login("alice", "wrong password") for _ in range(4)]
    unknown = [await browser.login("ghost", "wrong password") for _ in range(4)]
    for attempts in (known, unknown):
        assert [a.status for a in attempts] == [401, 401, 401, 429]
        assert_throttled(attempts[3])
    # Same answer, same wait: a 429 says nothing about whether the name exists.
    assert known[3].text.replace('value="alice"', 'value="ghost"') == unknown[3].text
    assert abs(known[3].retry_after - unknown[3].retry_after) <= 1


async def test_throttled_attempts_add_no_failures_so_the_lockout_ends(gateway, alice, db, clock):
    client = await gateway(login=limits(per_user=3, per_ip=100))
    browser = Browser(client)
    for _ in range(3):
        assert_bad_credentials(await browser.login("alice", "wrong password"))
    assert len(await failure_rows(db)) == 3

    # Keep hammering through the whole window: no new rows, no longer wait.
    for _ in range(5):
        clock.advance(100)
        assert_throttled(await browser.login("alice", "wrong password"))
    assert len(await failure_rows(db)) == 3
    clock.advance(WINDOW - 500 + 1)
    assert_signed_in(await browser.login("alice", PASSWORD))


async def test_a_throttled_attempt_is_not_hashed(gateway, alice):
    client = await gateway(login=limits(per_user=1000, per_ip=1000))
    browser = Browser(client)
    await browser.login("alice", "warm up")
    rejected = [await browser.login("alice", "wrong password") for _ in range(5)]
    for attempt in rejected:
        assert_bad_credentials(attempt)

    throttled_client = await gateway(login=limits(per_user=1, per_ip=1000))
    throttled = Browser(throttled_client)
    # alice already has failures in the window: every attempt now is a 429.
    refused = [await throttled.login("alice", "wrong password") for _ in range(5)]
    for attempt in refused:
        assert_throttled(attempt)

    slow = statistics.median(a.seconds for a in rejected)
    fast = statistics.median(a.seconds for a in refused)
    assert slow > 0.02, f"a 401 took {slow * 1000:.1f} ms: is the password hashed at all?"
    assert fast < 0.5 * slow, f"429 median {fast * 1000:.1f} ms vs 401 median {slow * 1000:.1f} ms"


async def test_parallel_guesses_cannot_outrun_the_user_limit(gateway, alice, db):
    """The check and the count must not race: a burst of parallel guesses all
    pass a check made before any of them has been counted. Each attempt
    that gets hashed is a guess, so at most max_failures_per_user may be."""
    client = await gateway(login=limits(per_user=3, per_ip=1000))
    browser = Browser(client)
    browser.token = await csrf_token(client)
    results = await asyncio.gather(
        *(browser.login("alice", f"guess {i}", xff=f"198.51.100.{i + 1}") for i in range(8))
    )
    statuses = sorted(a.status for a in results)
    assert set(statuses) <= {401, 429}, statuses
    hashed = statuses.count(401)
    rows = len(await failure_rows(db))
    assert hashed <= 3 and rows <= 3, (
        f"per-user limit 3, but {hashed} of 8 parallel guesses were hashed "
        f"({rows} login_failures rows): statuses {statuses}"
    )


async def test_parallel_guesses_cannot_outrun_the_ip_limit(gateway, db):
    client = await gateway(login=limits(per_user=1000, per_ip=3))
    browser = Browser(client)
    browser.token = await csrf_token(client)
    results = await asyncio.gather(
        *(browser.login(f"user{i}", "guess", xff="203.0.113.7") for i in range(8))
    )
    statuses = sorted(a.status for a in results)
    assert set(statuses) <= {401, 429}, statuses
    hashed = statuses.count(401)
    assert hashed <= 3, (
        f"per-IP limit 3, but {hashed} of 8 parallel guesses from one IP were hashed: {statuses}"
    )


# -- per-IP limit ------------------------------------------------------------------


async def test_ip_limit_counts_failures_across_usernames(gateway, alice, db, clock):
    client = await gateway(login=limits(per_user=100, per_ip=5))
    browser = Browser(client)
    for name in ("alice", "bob", "carol", "dave", "erin"):
        assert_bad_credentials(await browser.login(name, "wrong password"))
    for name in ("alice", "frank", "bob"):
        assert_throttled(await browser.login(name, PASSWORD))
    assert {r["ip"] for r in await failure_rows(db)} == {"127.0.0.1"}
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0

    clock.advance(WINDOW + 1)
    assert_signed_in(await browser.login("alice", PASSWORD))


async def test_retry_after_is_the_later_of_both_limits(gateway, alice, clock):
    client = await gateway(login=limits(per_user=2, per_ip=3))
    browser = Browser(client)
    assert_bad_credentials(await browser.login("bob", "wrong"))  # t=0
    clock.advance(100)
    assert_bad_credentials(await browser.login("alice", "wrong"))  # t=100
    clock.advance(100)
    assert_bad_credentials(await browser.login("alice", "wrong"))  # t=200
    # The IP is free again at 0+600, alice only at 100+600: she waits for the later.
    assert assert_throttled(await browser.login("alice", PASSWORD)) == 500
    assert assert_throttled(await browser.login("bob", "x")) == 400
    clock.advance(400)  # t=600: the t=0 failure has aged out of the IP's window
    assert_bad_credentials(await browser.login("carol", "wrong"))
    assert assert_throttled(await browser.login("alice", PASSWORD)) == 100
    clock.advance(100)
    assert_signed_in(await browser.login("alice", PASSWORD))


# -- X-Forwarded-For ---------------------------------------------------------------


async def test_xff_from_a_trusted_peer_counts_each_client_separately(gateway, alice, db):
    client = await gateway(login=limits(per_user=100, per_ip=5))
    browser = Browser(client)
    for i in range(5):
        assert_bad_credentials(await browser.login(f"user{i}", "wrong", xff="198.51.100.1"))
    assert_throttled(await browser.login("alice", PASSWORD, xff="198.51.100.1"))
    # A forged left part does not help: the right-most untrusted hop is the client.
    assert_throttled(await browser.login("alice", PASSWORD, xff="192.0.2.9, 198.51.100.1"))
    # Trusted hops to the right are skipped.
    assert_throttled(await browser.login("alice", PASSWORD, xff="198.51.100.1, 127.0.0.1"))
    # Another client behind the same proxy is not punished.
    assert_signed_in(await browser.login("alice", PASSWORD, xff="198.51.100.2"))
    # Nor is the proxy itself.
    assert_signed_in(await browser.login("alice", PASSWORD))

    assert [r["ip"] for r in await failure_rows(db)] == ["198.51.100.1"] * 5
    ips = [r["ip"] for r in await audit_rows(db)]
    assert ips == ["198.51.100.1"] * 8 + ["198.51.100.2", "127.0.0.1"]


async def test_xff_spellings_of_one_ipv6_address_share_a_count(gateway, db):
    client = await gateway(login=limits(per_user=100, per_ip=3))
    browser = Browser(client)
    spellings = ["2001:db8::1", "2001:DB8::1", "2001:0db8:0000::0001"]
    for i, xff in enumerate(spellings):
        assert_bad_credentials(await browser.login(f"user{i}", "wrong", xff=xff))
    assert_throttled(await browser.login("other", "wrong", xff="2001:db8:0:0:0:0:0:1"))
    assert {r["ip"] for r in await failure_rows(db)} == {"2001:db8::1"}


async def test_xff_from_an_untrusted_peer_is_ignored(gateway, alice, db):
    client = await gateway(
        login=limits(per_user=100, per_ip=3), server={"trusted_proxies": ["10.0.0.0/8"]}
    )
    browser = Browser(client)
    for i in range(3):
        attempt = await browser.login(f"user{i}", "wrong", xff=f"198.51.100.{i + 10}")
        assert_bad_credentials(attempt)
    # Rotating the header does not make a new client.
    for xff in ("198.51.100.99", "10.0.0.1", "203.0.113.5, 10.1.2.3"):
        assert_throttled(await browser.login("alice", PASSWORD, xff=xff))
    assert [r["ip"] for r in await failure_rows(db)] == ["127.0.0.1"] * 3
    assert {r["ip"] for r in await audit_rows(db)} == {"127.0.0.1"}


# -- audit -------------------------------------------------------------------------


async def test_every_attempt_is_audited_once(gateway, alice, db):
    client = await gateway(login=limits(per_user=2, per_ip=100))
    browser = Browser(client)
    agent = "Mozilla/5.0 (audit test)"
    assert_signed_in(await browser.login("Alice", PASSWORD, xff="198.51.100.7", agent=agent))
    assert_bad_credentials(await browser.login("alice", "wrong", xff="198.51.100.7", agent=agent))
    assert_bad_credentials(await browser.login("ghost", "wrong", xff="198.51.100.8", agent="b"))
    assert_bad_credentials(await browser.login("ghost", "wrong", xff="198.51.100.8", agent="b"))
    assert_throttled(await browser.login("ghost", "wrong", xff="198.51.100.9", agent="c"))

    rows = await audit_rows(db)
    assert [(r["event"], r["username"], r["ip"], r["user_agent"]) for r in rows] == [
        ("login_ok", "alice", "198.51.100.7", agent),
        ("login_failed", "alice", "198.51.100.7", agent),
        ("login_failed", "ghost", "198.51.100.8", "b"),
        ("login_failed", "ghost", "198.51.100.8", "b"),
        ("login_throttled", "ghost", "198.51.100.9", "c"),
    ]
    # Rendering the form is not an attempt.
    await csrf_token(client)
    assert len(await audit_rows(db)) == 5


# -- success resets the username, not the IP ----------------------------------------


async def test_success_clears_the_usernames_count(gateway, alice, db):
    client = await gateway(login=limits(per_user=3, per_ip=100))
    browser = Browser(client)
    for _ in range(2):
        assert_bad_credentials(await browser.login("alice", "wrong", xff="198.51.100.1"))
    assert_signed_in(await browser.login("alice", PASSWORD, xff="198.51.100.2"))
    for _ in range(2):
        assert_bad_credentials(await browser.login("alice", "wrong", xff="198.51.100.1"))
    # Four failures in the window, but only two since the owner signed in.
    assert_signed_in(await browser.login("alice", PASSWORD, xff="198.51.100.3"))


async def test_success_does_not_reset_the_ips_count_for_other_names(gateway, alice, db):
    """The attack the throttle's docstring names: one address alternating a
    known account with guesses at others must still hit its IP limit."""
    client = await gateway(login=limits(per_user=100, per_ip=4))
    browser = Browser(client)
    for i in range(3):
        assert_bad_credentials(await browser.login(f"victim{i}", "guess"))
        assert_signed_in(await browser.login("alice", PASSWORD))
    assert_bad_credentials(await browser.login("victim3", "guess"))
    assert_throttled(await browser.login("victim4", "guess"))
    assert_throttled(await browser.login("alice", PASSWORD))


async def test_success_keeps_the_ips_own_failures_counted(gateway, alice, db):
    """ "The IP count is kept": failures an address made against the account
    that then signs in still count against that address."""
    client = await gateway(login=limits(per_user=100, per_ip=4))
    browser = Browser(client)
    for _ in range(3):
        assert_bad_credentials(await browser.login("alice", "guess", xff="203.0.113.66"))
    # The owner signs in (from elsewhere): alice's count starts over ...
    assert_signed_in(await browser.login("alice", PASSWORD, xff="198.51.100.1"))
    # ... but 203.0.113.66 has made three failures and may make one more.
    assert_bad_credentials(await browser.login("bob", "guess", xff="203.0.113.66"))
    attempt = await browser.login("carol", "guess", xff="203.0.113.66")
    assert attempt.status == 429, (
        "203.0.113.66 made 4 failures (per-IP limit 4) but was answered "
        f"{attempt.status}: alice's sign-in erased its failures from the IP count"
    )


# -- across replicas ---------------------------------------------------------------


async def test_the_count_holds_across_replicas(gateway, alice, db, clock):
    config = {"login": limits(per_user=3, per_ip=100)}
    a = Browser(await gateway(**config))
    b = Browser(await gateway(**config))
    assert a.client.port != b.client.port
    assert_bad_credentials(await a.login("alice", "wrong"))
    assert_bad_credentials(await b.login("alice", "wrong"))
    assert_bad_credentials(await a.login("alice", "wrong"))
    assert_throttled(await b.login("alice", PASSWORD))
    assert_throttled(await a.login("alice", PASSWORD))
    clock.advance(WINDOW + 1)
    assert_signed_in(await b.login("alice", PASSWORD))
    # The success through B cleared the count that A reads.
    for _ in range(2):
        assert_bad_credentials(await a.login("alice", "wrong"))
    assert_signed_in(await a.login("alice", PASSWORD))


# -- no user enumeration -----------------------------------------------------------


async def test_unknown_wrong_and_disabled_answer_alike(gateway, alice, db):
    # Names of one length, so even Content-Length cannot differ.
    await create_user(db, "carol")
    await db.execute("UPDATE users SET disabled = true WHERE username = 'carol'")
    client = await gateway(login=limits())
    browser = Browser(client)
    kinds = {
        "wrong password": ("alice", "not the password"),
        "unknown user": ("ghost", "not the password"),
        "disabled user": ("carol", "not the password"),
        "disabled, right password": ("carol", PASSWORD),
    }
    for username, password in kinds.values():  # warm up every path once
        await browser.login(username, password)

    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    answers: dict[str, Attempt] = {}
    for _ in range(7):
        for kind, (username, password) in kinds.items():
            attempt = await browser.login(username, password)
            times[kind].append(attempt.seconds)
            answers[kind] = attempt

    def normalised(attempt: Attempt, username: str) -> tuple:
        # Date and the per-request ID differ on any two answers.
        headers = [
            (k, v) for k, v in attempt.headers.items() if k.lower() not in ("date", "x-request-id")
        ]
        return attempt.status, headers, attempt.text.replace(f'value="{username}"', 'value="X"')

    reference = normalised(answers["wrong password"], "alice")
    assert reference[0] == 401 and BAD_CREDENTIALS in reference[2]
    assert "Set-Cookie" not in dict(reference[1])
    for kind, (username, _) in kinds.items():
        assert normalised(answers[kind], username) == reference, kind

    medians = {kind: statistics.median(t) for kind, t in times.items()}
    base = medians["wrong password"]
    assert base > 0.02, f"a wrong password took {base * 1000:.1f} ms: not hashed?"
    report = ", ".join(f"{k}: {v * 1000:.1f} ms" for k, v in medians.items())
    for kind, median in medians.items():
        assert 0.5 * base <= median <= 2 * base, f"{kind} stands out by timing: {report}"


# -- rehash on login ---------------------------------------------------------------


async def test_old_parameters_are_upgraded_on_successful_login(gateway, db):
    await create_user(db, "dora")
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    old_hash = weak.hash(PASSWORD)
    await db.execute("UPDATE users SET password_hash = $1 WHERE username = 'dora'", old_hash)
    current = Passwords(workers=1)
    try:
        wanted = argon2.extract_parameters(current.hasher.hash("reference password"))
    finally:
        current.close()
    assert argon2.extract_parameters(old_hash) != wanted

    client = await gateway(login=limits())
    browser = Browser(client)
    stored = "SELECT password_hash FROM users WHERE username = 'dora'"

    # A wrong password must not touch the stored hash.
    assert_bad_credentials(await browser.login("dora", "wrong password"))
    assert await db.fetchval(stored) == old_hash

    assert_signed_in(await browser.login("dora", PASSWORD))
    new_hash = await db.fetchval(stored)
    assert new_hash != old_hash
    assert argon2.extract_parameters(new_hash) == wanted
    assert argon2.PasswordHasher().verify(new_hash, PASSWORD)

    # Still the same password, and no second upgrade.
    assert_signed_in(await browser.login("dora", PASSWORD))
    assert await db.fetchval(stored) == new_hash
    assert_bad_credentials(await browser.login("dora", "wrong password"))


async def test_a_disabled_user_with_old_parameters_is_not_rehashed(gateway, db):
    await create_user(db, "dora")
    old_hash = argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    await db.execute(
        "UPDATE users SET password_hash = $1, disabled = true WHERE username = 'dora'", old_hash
    )
    client = await gateway(login=limits())
    assert_bad_credentials(await Browser(client).login("dora", PASSWORD))
    assert await db.fetchval("SELECT password_hash FROM users WHERE username = 'dora'") == old_hash


# -- login storm -------------------------------------------------------------------


def argon2_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("argon2"))


async def test_a_login_storm_does_not_starve_the_proxy(gateway, alice, db):
    storm_size = 200
    client = await gateway(login=limits(per_user=10_000, per_ip=10_000))
    signed_in = await sign_in(client)
    assert signed_in.status == 303 and signed_in.token
    probe_headers = {**API, "Cookie": f"{SESSION_COOKIE}={signed_in.token}"}

    jar = aiohttp.DummyCookieJar()
    async with (
        aiohttp.ClientSession(cookie_jar=jar) as prober,
        aiohttp.ClientSession(
            cookie_jar=jar, connector=aiohttp.TCPConnector(limit=0, force_close=True)
        ) as attacker,
    ):
        form_page = await attacker.get(client.make_url(LOGIN))
        nonce = form_page.cookies[SESSION_COOKIE + "_csrf"].value
        token = re.search(r'name="csrf_token" value="([^"]+)"', await form_page.text()).group(1)

        async def probe() -> tuple[int, float, str]:
            started = time.perf_counter()
            async with prober.get(client.make_url("/storm-probe"), headers=probe_headers) as r:
                body = await r.json() if r.status == 200 else {}
                user = dict(body.get("headers", [])).get("X-Remote-User", "")
                return r.status, time.perf_counter() - started, user

        for _ in range(5):  # warm the keep-alive pools
            assert (await probe())[0] == 200

        async def guess(i: int) -> int:
            form = {
                "csrf_token": token,
                "username": f"storm{i % 20}",
                "password": f"guess {i}",
                "rd": "",
            }
            headers = {
                "Cookie": f"{SESSION_COOKIE}_csrf={nonce}",
                "X-Forwarded-For": f"10.{i // 250}.{i % 250}.1",
            }
            async with attacker.post(
                client.make_url(LOGIN), data=form, headers=headers, allow_redirects=False
            ) as r:
                await r.read()
                return r.status

        started = time.perf_counter()
        storm = asyncio.gather(*(guess(i) for i in range(storm_size)))
        probes: list[tuple[int, float, str]] = []
        max_threads = 0
        while not storm.done():
            probes.append(await probe())
            max_threads = max(max_threads, argon2_threads())
            await asyncio.sleep(0.05)
        statuses = await storm
        storm_seconds = time.perf_counter() - started

    latencies = sorted(p[1] for p in probes)
    p50 = statistics.median(latencies)
    summary = (
        f"storm of {storm_size} logins took {storm_seconds:.2f} s; {len(probes)} proxied "
        f"requests during it: p50 {p50 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms; "
        f"argon2 threads <= {max_threads}"
    )
    print(summary)
    assert statuses == [401] * storm_size, sorted(set(statuses))
    assert await db.fetchval("SELECT count(*) FROM login_failures") == storm_size
    assert storm_seconds > 1.0, summary  # the probes really ran during a storm
    assert len(probes) >= 20, summary
    assert all(status == 200 and user == "alice" for status, _, user in probes), summary
    assert latencies[-1] < 2.0, summary
    # The pool that keeps the loop free is bounded, not one thread per login.
    assert 1 <= max_threads <= max(1, (os.cpu_count() or 2) // 2), summary


@pytest.mark.parametrize("field", ["username", "password"])
async def test_missing_fields_are_not_counted_as_failures(gateway, db, field):
    client = await gateway(login=limits(per_user=1, per_ip=1))
    browser = Browser(client)
    values = {"username": "alice", "password": "x"}
    values[field] = ""
    attempt = await browser.login(values["username"], values["password"])
    assert attempt.status == 400
    assert await failure_rows(db) == []
    assert_bad_credentials(await browser.login("alice", "wrong"))
