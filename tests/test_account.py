"""The signed-in person's own pages, over real HTTP against a real PostgreSQL.

Covers `GET {prefix}/account`, `GET/POST {prefix}/sessions` and
`GET/POST {prefix}/password` (gateway/web/account.py, store/signin.py's
change_password, store/sessions.py's revoke_own and revoke_others,
policy/passwords.py's PasswordRules), and `[branding]` (web/branding.py,
config.py's _branding and logo_type, settings.py's [password] and
[branding] rows):

- not signed in: each page sends the browser to sign in and back (302 for a
  GET, 303 for a POST whose CSRF token is good), and nothing changes;
- every answer of these pages, the refusals too, carries no-store, the CSP
  and X-Frame-Options DENY;
- what /account and /sessions show: identity, this session's start and end,
  every live session of the user (device from the User-Agent, IP, "This
  device" once), and never another user's;
- ending sessions: one of your own (303, its cookie dead at once), all others,
  this one (the signed-out page, the cookie cleared); another user's session,
  a made-up or malformed id: 404 and nothing ended; a duplicate field 400; a
  bad CSRF token 403; each revocation in audit_log;
- changing the password: a new session cookie, every old session dead, the
  new password signs in and the old one does not; each refusal (wrong current
  password, mismatch, the rules, size, CSRF, the form cap) with its exact
  status and message, leaving the hash and the session as they were; wrong
  current passwords count toward sign-in throttling;
- [branding]: name, footer, accent stylesheet and logo on the pages and at
  their own URLs; without it both URLs are 404; every config mistake with its
  exact message, from build_config and from `gateway check-config`.

Several browsers are separate aiohttp ClientSessions (each its own cookie jar
and User-Agent) signing in through POST {prefix}/login. Time moves with the
FakeClock `clock`, never by sleeping.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from helpers import PASSWORD, cli_env, create_user, csrf_token, fresh_get, sign_in, start_cli
from markupsafe import escape

from gateway.config import LOGO_MAX_BYTES, ConfigError, build_config
from gateway.policy.branding import accent_stylesheet
from gateway.policy.passwords import Passwords
from gateway.store.users import add_user
from gateway.web.account import FORM_EXPIRED, MISMATCH, THROTTLED, WRONG_PASSWORD
from gateway.web.errors import SECURITY_HEADERS

API = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}
PREFIX = "/_gateway"
NEW_PASSWORD = "violet tangerine kettle 42"

CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)
FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
ANDROID_CHROME = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36"
)

NO_SUCH_SESSION = (
    "None of your sessions has this ID; it may have ended already. Nothing was signed out."
)
TOO_LARGE = "The form is larger than any form of ours can be."
EMPTY_FIELDS = "Enter your current password and a new one."
SAME_PASSWORD = "The new password is the same as the current one."
TOO_LONG = "The password must be at most 1024 bytes. Nothing was changed."
COMMON = (
    "This password is one of the most common ones, which attackers try first. "
    "Choose another. Nothing was changed."
)
IS_USERNAME = "The password must not be your username. Nothing was changed."
OVER_CAP = 64 * 1024 + 1  # one byte more than app.MAX_FORM_BYTES


def too_short(n: int) -> str:
    return f"The password must be at least {n} characters long. Nothing was changed."


# -- browsers -----------------------------------------------------------------------


@dataclass
class Browser:
    """One browser: its own cookie jar and User-Agent; `token` its session cookie."""

    http: aiohttp.ClientSession
    token: str = ""

    def cookie(self) -> str | None:
        """The session cookie the jar now holds (what the browser would send)."""
        for cookie in self.http.cookie_jar:
            if cookie.key == "gateway_session" and cookie.value:
                return cookie.value
        return None

    async def form_token(self, page: str = "sessions") -> str:
        return await csrf_token(self.http, f"{PREFIX}/{page}")

    async def post(
        self, page: str, data: Any, headers: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        response = await self.http.post(
            f"{PREFIX}/{page}", data=data, headers=headers or {}, allow_redirects=False
        )
        await response.read()
        return response

    async def get(self, path: str, **headers: str) -> aiohttp.ClientResponse:
        response = await self.http.get(path, headers=headers, allow_redirects=False)
        await response.read()
        return response


OpenBrowser = Callable[..., Awaitable[Browser]]


@pytest.fixture
async def browsers():
    """`await browsers(client, user_agent=..., ip=...)`: a browser with an empty jar."""
    opened: list[aiohttp.ClientSession] = []

    async def open_browser(
        client: TestClient, *, user_agent: str = CHROME_LINUX, ip: str | None = None
    ) -> Browser:
        headers = {"User-Agent": user_agent}
        if ip:
            # The test client's 127.0.0.1 is a trusted proxy: this is the client's address.
            headers["X-Forwarded-For"] = ip
        http = aiohttp.ClientSession(
            base_url=f"http://127.0.0.1:{client.port}",
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            headers=headers,
        )
        opened.append(http)
        return Browser(http)

    yield open_browser
    for http in opened:
        await http.close()


async def signed_in(
    browsers: OpenBrowser,
    client: TestClient,
    username: str = "alice",
    password: str = PASSWORD,
    *,
    remember: bool = False,
    user_agent: str = CHROME_LINUX,
    ip: str | None = None,
) -> Browser:
    """A new browser signed in through the real form."""
    browser = await browsers(client, user_agent=user_agent, ip=ip)
    result = await sign_in(browser.http, username, password, remember=remember)
    assert result.status == 303, result.text
    assert result.token
    browser.token = result.token
    return browser


async def works(client: TestClient, token: str) -> int:
    """The status of {prefix}/userinfo with exactly this cookie: 200 alive, 401 dead."""
    return (await fresh_get(client, f"{PREFIX}/userinfo", token)).status


async def session_id(db: asyncpg.Connection, token: str) -> uuid.UUID:
    found = await db.fetchval(
        "SELECT id FROM sessions WHERE token_hash = $1", hashlib.sha256(token.encode()).digest()
    )
    assert found is not None, "no session row for this token"
    return found


async def session_rows(db: asyncpg.Connection) -> list[tuple]:
    rows = await db.fetch(
        "SELECT id, user_id, token_hash, expires_at, remember FROM sessions ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def password_hash(db: asyncpg.Connection, username: str = "alice") -> str:
    return await db.fetchval("SELECT password_hash FROM users WHERE username = $1", username)


async def audit_rows(db: asyncpg.Connection, *events: str) -> list[tuple[str, str, str]]:
    rows = await db.fetch(
        "SELECT event, username, detail FROM audit_log WHERE event = ANY($1) ORDER BY id",
        list(events),
    )
    return [tuple(r) for r in rows]


def alert(message: str) -> str:
    """An error as the account pages print it (HTML-escaped, in the alert box)."""
    return f'<p class="alert-text">{escape(message)}</p>'


def assert_hardened(response: aiohttp.ClientResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.status)


@pytest.fixture
async def bob(db: asyncpg.Connection) -> int:
    return await create_user(db, "bob")


# -- 1. not signed in -----------------------------------------------------------------

PAGES = ["account", "sessions", "password"]


@pytest.mark.parametrize("accept", [HTML, API, {}], ids=["html", "json", "none"])
@pytest.mark.parametrize("page", PAGES)
async def test_a_page_sends_a_visitor_to_sign_in_and_back(gateway, page, accept):
    client = await gateway()
    response = await client.get(f"{PREFIX}/{page}", headers=accept, allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == f"{PREFIX}/login?rd={PREFIX}/{page}"
    assert "gateway_session" not in response.cookies


@pytest.mark.parametrize("cookie", ["revoked", "made-up", "garbage"])
@pytest.mark.parametrize("page", PAGES)
async def test_a_dead_cookie_is_sent_to_sign_in_and_cleared(
    gateway, alice, browsers, db, page, cookie
):
    client = await gateway()
    if cookie == "revoked":
        browser = await signed_in(browsers, client)
        await db.execute("DELETE FROM sessions")
        token = browser.token
    else:
        token = "A" * 43 if cookie == "made-up" else "not a token"
    response = await fresh_get(client, f"{PREFIX}/{page}", token, **HTML)
    assert response.status == 302
    assert response.headers["Location"] == f"{PREFIX}/login?rd={PREFIX}/{page}"
    assert response.cookies["gateway_session"].value == ""
    assert response.cookies["gateway_session"]["max-age"] == "0"


@pytest.mark.parametrize("page", PAGES)
async def test_head_of_a_page_answers_like_its_get(gateway, page):
    client = await gateway()
    get = await client.get(f"{PREFIX}/{page}", allow_redirects=False)
    head = await client.head(f"{PREFIX}/{page}", allow_redirects=False)
    assert (head.status, head.headers["Location"]) == (get.status, get.headers["Location"])


def _forms(target: str) -> dict[str, dict[str, str]]:
    return {
        "sessions": {"end": target},
        "password": {
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD,
        },
    }


@pytest.mark.parametrize(
    ("page", "target"),
    [("sessions", "alice"), ("sessions", "others"), ("sessions", "garbage"), ("password", "")],
)
@pytest.mark.parametrize("cookie", ["none", "revoked"])
async def test_a_post_without_a_session_is_sent_to_sign_in_and_changes_nothing(
    gateway, alice, browsers, db, page, target, cookie
):
    client = await gateway()
    alices = await signed_in(browsers, client, ip="198.51.100.7")
    target = str(await session_id(db, alices.token)) if target == "alice" else target
    if cookie == "none":
        visitor = await browsers(client)
    else:
        visitor = await signed_in(browsers, client)
        await db.execute(
            "DELETE FROM sessions WHERE token_hash = $1",
            hashlib.sha256(visitor.token.encode()).digest(),
        )
    # A good token from the sign-in page: the CSRF check passes, the session is missing.
    form = {"csrf_token": await visitor.form_token("login"), **_forms(target)[page]}
    before = (await session_rows(db), await password_hash(db))

    response = await visitor.post(page, form)

    assert response.status == 303
    assert response.headers["Location"] == f"{PREFIX}/login?rd={PREFIX}/{page}"
    assert_hardened(response)
    assert (await session_rows(db), await password_hash(db)) == before
    assert await works(client, alices.token) == 200
    assert await audit_rows(db, "session_revoked", "password_changed") == []


# -- 2. hardening headers on every answer ---------------------------------------------


async def _answer(kind: str, client: TestClient, browser: Browser) -> aiohttp.ClientResponse:
    """One answer of the account pages, by kind (alice signed in as `browser`)."""
    good = await browser.form_token("password")
    change = {"csrf_token": good, "current_password": PASSWORD}
    answers: dict[str, Callable[[], Awaitable[aiohttp.ClientResponse]]] = {
        "account": lambda: browser.get(f"{PREFIX}/account"),
        "sessions": lambda: browser.get(f"{PREFIX}/sessions"),
        "password": lambda: browser.get(f"{PREFIX}/password"),
        "sessions?ended=2": lambda: browser.get(f"{PREFIX}/sessions?ended=2"),
        "visitor-302": lambda: fresh_get(client, f"{PREFIX}/account", "x"),
        "end-404-json": lambda: browser.post("sessions", {"csrf_token": good, "end": "x"}),
        "end-404-html": lambda: browser.post("sessions", {"csrf_token": good, "end": "x"}, HTML),
        "end-403": lambda: browser.post("sessions", {"csrf_token": "forged", "end": "others"}),
        "end-400": lambda: browser.post(
            "sessions", [("csrf_token", good), ("end", "others"), ("end", "others")], HTML
        ),
        "end-413": lambda: browser.post(
            "sessions", {"csrf_token": good, "end": "x" * OVER_CAP}, HTML
        ),
        "end-303": lambda: browser.post("sessions", {"csrf_token": good, "end": "others"}),
        "password-400": lambda: browser.post(
            "password", {**change, "new_password": NEW_PASSWORD, "confirm_password": "other"}
        ),
        "password-401": lambda: browser.post(
            "password",
            {
                **change,
                "current_password": "wrong",
                "new_password": NEW_PASSWORD,
                "confirm_password": NEW_PASSWORD,
            },
        ),
        "password-403": lambda: browser.post("password", {"current_password": PASSWORD}),
        "password-413": lambda: browser.post(
            "password", {**change, "new_password": "x" * OVER_CAP}
        ),
        "password-200": lambda: browser.post(
            "password", {**change, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}
        ),
    }
    return await answers[kind]()


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("account", 200),
        ("sessions", 200),
        ("password", 200),
        ("sessions?ended=2", 200),
        ("visitor-302", 302),
        ("end-404-json", 404),
        ("end-404-html", 404),
        ("end-403", 403),
        ("end-400", 400),
        ("end-413", 413),
        ("end-303", 303),
        ("password-400", 400),
        ("password-401", 401),
        ("password-403", 403),
        ("password-413", 413),
        ("password-200", 200),
    ],
)
async def test_every_answer_is_hardened_and_never_cached(gateway, alice, browsers, kind, status):
    client = await gateway()
    browser = await signed_in(browsers, client)
    response = await _answer(kind, client, browser)
    assert response.status == status
    assert_hardened(response)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert response.headers["Content-Security-Policy"] == csp


@pytest.mark.parametrize("page", PAGES)
async def test_the_pages_have_no_inline_script_or_style(gateway, alice, browsers, page):
    client = await gateway()
    browser = await signed_in(browsers, client)
    response = await browser.get(f"{PREFIX}/{page}")
    assert response.status == 200
    html = await response.text()
    assert "<script" not in html and "style=" not in html
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"


# -- 3. what /account and /sessions show -----------------------------------------------


@pytest.mark.parametrize(
    ("remember", "ends", "keep"),
    [
        (
            False,
            '<time datetime="2026-01-01T10:30:00+00:00">1 Jan 2026, 10:30 UTC</time> '
            "(in 1 hour), or after 60 minutes without activity",
            "no",
        ),
        (
            True,
            '<time datetime="2026-01-31T09:00:00+00:00">31 Jan 2026, 09:00 UTC</time> (in 29 days)',
            "yes",
        ),
    ],
    ids=["browser-session", "keep-me-signed-in"],
)
async def test_account_shows_who_and_this_session(
    gateway, db, browsers, clock, remember, ends, keep
):
    await create_user(
        db,
        "carol",
        groups=("staff", "admins"),
        email="carol@example.org",
        display_name="Carol <Q> Example",
    )
    client = await gateway()
    browser = await signed_in(browsers, client, "carol", remember=remember)
    clock.advance(30 * 60)

    response = await browser.get(f"{PREFIX}/account")

    assert response.status == 200
    html = await response.text()
    assert "<title>Your account · Gateway</title>" in html
    assert "You are signed in as <strong>Carol &lt;Q&gt; Example</strong>." in html
    for pair in (
        "<dt>Username</dt><dd>carol</dd>",
        "<dt>Name</dt><dd>Carol &lt;Q&gt; Example</dd>",
        "<dt>Email</dt><dd>carol@example.org</dd>",
        "<dt>Groups</dt><dd>staff, admins</dd>",
        '<dt>Signed in</dt><dd><time datetime="2026-01-01T09:00:00+00:00">'
        "1 Jan 2026, 09:00 UTC</time> (30 minutes ago)</dd>",
        f"<dt>Ends</dt><dd>{ends}</dd>",
        f"<dt>Keep me signed in</dt><dd>{keep}</dd>",
    ):
        assert pair in html, pair
    assert '<a class="tab" href="/_gateway/account" aria-current="page">Account</a>' in html


async def test_account_shows_dashes_for_what_the_user_lacks(gateway, db, browsers):
    passwords = Passwords(workers=1)
    try:
        await add_user(db, "dave", passwords.hash(PASSWORD))
    finally:
        passwords.close()
    client = await gateway()
    browser = await signed_in(browsers, client, "dave")
    html = await (await browser.get(f"{PREFIX}/account")).text()
    assert "You are signed in as <strong>dave</strong>." in html
    for pair in (
        "<dt>Name</dt><dd>—</dd>",
        "<dt>Email</dt><dd>—</dd>",
        "<dt>Groups</dt><dd>none</dd>",
    ):
        assert pair in html, pair


@dataclass(frozen=True)
class Row:
    device: str
    current: bool
    ip: str
    last_active: str
    ends: str
    end_id: str | None  # the id its "Sign out" button posts; None: no button


def session_list(html: str) -> list[Row]:
    """The sessions page's rows, in page order."""
    rows = []
    for chunk in html.split('<li class="session')[1:]:
        item = chunk.split("</li>")[0]
        device = re.search(r'<h2 class="session-device"[^>]*>([^<]*)</h2>', item)
        ip = re.search(r"<dt>IP address</dt><dd>([^<]*)</dd>", item)
        last = re.search(r"<dt>Last active.*?</dt><dd>(.*?)</dd>", item)
        ends = re.search(r"<dt>Ends</dt><dd>(.*?)</dd>", item)
        end = re.search(r'name="end" value="([^"]*)"', item)
        current = item.startswith(' session-current"')
        badges = item.count('<span class="badge">This device</span>')
        assert badges == (1 if current else 0), item
        assert device and ip and last and ends, item
        rows.append(
            Row(
                device=device.group(1),
                current=current,
                ip=ip.group(1),
                last_active=re.sub(r"<[^>]+>", "", last.group(1)),
                ends=re.sub(r"<[^>]+>", "", ends.group(1)),
                end_id=end.group(1) if end else None,
            )
        )
    return rows


async def test_sessions_lists_every_live_session_of_the_user_and_marks_this_one(
    gateway, alice, bob, browsers, db, clock
):
    client = await gateway()
    phone = await signed_in(browsers, client, user_agent=IPHONE_SAFARI, ip="198.51.100.7")
    clock.advance(10 * 60)
    laptop = await signed_in(
        browsers, client, user_agent=FIREFOX_WINDOWS, ip="203.0.113.9", remember=True
    )
    clock.advance(5 * 60)
    bobs = await signed_in(browsers, client, "bob", user_agent=ANDROID_CHROME, ip="192.0.2.66")
    clock.advance(5 * 60)
    here = await signed_in(browsers, client, user_agent=CHROME_LINUX, ip="192.0.2.10")
    clock.advance(5 * 60)  # 09:25

    response = await here.get(f"{PREFIX}/sessions")

    assert response.status == 200
    html = await response.text()
    phone_id = str(await session_id(db, phone.token))
    laptop_id = str(await session_id(db, laptop.token))
    assert session_list(html) == [
        Row("Chrome 131 on Linux", True, "192.0.2.10", "now", "1 Jan 2026, 10:25 UTC", None),
        Row(
            "Firefox 133 on Windows 10",
            False,
            "203.0.113.9",
            "15 minutes ago",
            "31 Jan 2026, 09:10 UTC",
            laptop_id,
        ),
        Row(
            "Mobile Safari 17 on iOS 17.1 (iPhone)",
            False,
            "198.51.100.7",
            "25 minutes ago",
            "1 Jan 2026, 10:00 UTC",
            phone_id,
        ),
    ]
    assert html.count("This device") == 1
    assert str(await session_id(db, bobs.token)) not in html
    assert "192.0.2.66" not in html and "Android" not in html
    assert '<input type="hidden" name="end" value="others">' in html
    assert "Sign out all other sessions" in html


async def test_a_lone_session_offers_no_sign_out_of_others(gateway, alice, bob, browsers):
    client = await gateway()
    await signed_in(browsers, client, "bob")
    here = await signed_in(browsers, client)
    html = await (await here.get(f"{PREFIX}/sessions")).text()
    (row,) = session_list(html)
    assert row.current and row.end_id is None
    assert "Sign out all other sessions" not in html
    assert 'value="others"' not in html


async def test_an_idle_expired_session_is_not_listed(gateway, alice, browsers, clock):
    client = await gateway()
    await signed_in(browsers, client, user_agent=IPHONE_SAFARI)  # 09:00, idle to 10:00
    clock.advance(50 * 60)
    here = await signed_in(browsers, client, user_agent=FIREFOX_WINDOWS)
    clock.advance(15 * 60)  # 10:05
    rows = session_list(await (await here.get(f"{PREFIX}/sessions")).text())
    assert [(r.device, r.current) for r in rows] == [("Firefox 133 on Windows 10", True)]


@pytest.mark.parametrize(
    ("user_agent", "device"),
    [
        (IPHONE_SAFARI, "Mobile Safari 17 on iOS 17.1 (iPhone)"),
        (FIREFOX_WINDOWS, "Firefox 133 on Windows 10"),
        (CHROME_LINUX, "Chrome 131 on Linux"),
        (ANDROID_CHROME, "Chrome Mobile 131 on Android 14 (Pixel 8)"),
        ("curl/8.5.0", "curl 8"),
        ("", "Unknown browser"),
        ("<script>alert(1)</script>", "Unknown browser"),
    ],
)
async def test_the_device_is_read_from_the_user_agent(gateway, alice, browsers, user_agent, device):
    client = await gateway()
    await signed_in(browsers, client, user_agent=user_agent)
    here = await signed_in(browsers, client)
    html = await (await here.get(f"{PREFIX}/sessions")).text()
    assert [r.device for r in session_list(html)] == ["Chrome 131 on Linux", device]
    assert "<script>" not in html


@pytest.mark.parametrize(
    ("ended", "message"),
    [
        ("1", "1 session was signed out."),
        ("0", "There were no other sessions to sign out."),
        ("3", "3 sessions were signed out."),
        ("99999", "99999 sessions were signed out."),
        ("100000", None),
        ("-1", None),
        ("abc", None),
        ("", None),
        ("1.5", None),
    ],
)
async def test_sessions_says_how_many_were_ended(gateway, alice, browsers, ended, message):
    client = await gateway()
    here = await signed_in(browsers, client)
    response = await here.get(f"{PREFIX}/sessions?ended={ended}")
    assert response.status == 200
    html = await response.text()
    if message is None:
        assert 'role="status"' not in html
    else:
        assert f'<p class="alert-text">{message}</p>' in html


@pytest.mark.parametrize("ended", ["%C2%B2", "%E2%91%A0"])  # '²', '①'
async def test_sessions_ignores_an_ended_count_that_is_not_a_number(
    gateway, alice, browsers, ended
):
    client = await gateway()
    here = await signed_in(browsers, client)
    response = await here.get(f"{PREFIX}/sessions?ended={ended}")
    assert response.status == 200
    assert 'role="status"' not in await response.text()


# -- 4. ending sessions ----------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "alice",
        "alice-upper",
        "alice-braced",
        "alice-urn",
        "made-up",
        "nil",
        "not-a-uuid",
        "",
        "OTHERS",
        "others ",
        "x" * 10240,
        "\u0661" * 32,  # Arabic-Indic digits: int() reads them, uuid.UUID takes them
    ],
    ids=lambda t: t if len(t) < 20 else f"{len(t)}-chars",
)
@pytest.mark.parametrize("accept", ["json", "html"])
async def test_bob_cannot_end_alices_session_nor_a_made_up_one(
    gateway, alice, bob, browsers, db, target, accept
):
    client = await gateway()
    alices = await signed_in(browsers, client, ip="198.51.100.7")
    bobs = await signed_in(browsers, client, "bob")
    alice_id = await session_id(db, alices.token)
    value = {
        "alice": str(alice_id),
        "alice-upper": str(alice_id).upper(),
        "alice-braced": "{" + str(alice_id) + "}",
        "alice-urn": alice_id.urn,
        "made-up": str(uuid.uuid4()),
        "nil": str(uuid.UUID(int=0)),
    }.get(target, target)
    before = await session_rows(db)

    response = await bobs.post(
        "sessions",
        {"csrf_token": await bobs.form_token(), "end": value},
        HTML if accept == "html" else API,
    )

    assert response.status == 404
    if accept == "json":
        assert await response.json() == {"error": "no_such_session", "message": NO_SUCH_SESSION}
    else:
        html = await response.text()
        assert '<h1 class="title">No such session</h1>' in html
        assert f'<p class="subtitle">{NO_SUCH_SESSION}</p>' in html
        assert 'href="/_gateway/sessions">Back to your sessions</a>' in html
    assert await session_rows(db) == before
    assert await works(client, alices.token) == 200
    assert await works(client, bobs.token) == 200
    assert await audit_rows(db, "session_revoked") == []


async def test_a_missing_end_field_is_a_404_too(gateway, alice, browsers, db):
    client = await gateway()
    other = await signed_in(browsers, client)
    here = await signed_in(browsers, client)
    before = await session_rows(db)
    response = await here.post("sessions", {"csrf_token": await here.form_token()}, API)
    assert response.status == 404
    assert await response.json() == {"error": "no_such_session", "message": NO_SUCH_SESSION}
    assert await session_rows(db) == before
    assert await works(client, other.token) == 200


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ([("end", "others"), ("end", "others")], "end"),
        ([("end", "OTHER-ID"), ("end", "others")], "end"),
        ([("end", "OTHER-ID"), ("csrf_token", "TOKEN")], "csrf_token"),
    ],
)
@pytest.mark.parametrize("accept", ["json", "html"])
async def test_a_field_sent_twice_is_refused(gateway, alice, browsers, db, fields, name, accept):
    client = await gateway()
    other = await signed_in(browsers, client)
    here = await signed_in(browsers, client)
    token = await here.form_token()
    other_id = str(await session_id(db, other.token))
    form = [("csrf_token", token)] + [
        (k, {"OTHER-ID": other_id, "TOKEN": token}.get(v, v)) for k, v in fields
    ]
    before = await session_rows(db)

    response = await here.post("sessions", form, HTML if accept == "html" else API)

    message = f"The form has more than one '{name}' field."
    assert response.status == 400
    if accept == "json":
        assert await response.json() == {"error": "bad_form", "message": message}
    else:
        html = await response.text()
        assert '<h1 class="title">Nothing was signed out</h1>' in html
        assert f'<p class="subtitle">{escape(message)}</p>' in html
    assert await session_rows(db) == before
    assert await works(client, other.token) == 200
    assert await audit_rows(db, "session_revoked") == []


async def test_a_form_over_the_cap_is_413_and_ends_nothing(gateway, alice, browsers, db):
    client = await gateway()
    other = await signed_in(browsers, client)
    here = await signed_in(browsers, client)
    before = await session_rows(db)
    response = await here.post(
        "sessions", {"csrf_token": await here.form_token(), "end": "x" * OVER_CAP}, API
    )
    assert response.status == 413
    assert await response.json() == {"error": "bad_form", "message": TOO_LARGE}
    assert await session_rows(db) == before
    assert await works(client, other.token) == 200


@pytest.mark.parametrize("form_id", ["lower", "upper", "urn"])
async def test_ending_another_of_your_sessions(gateway, alice, browsers, db, clock, form_id):
    client = await gateway()
    phone = await signed_in(browsers, client, user_agent=IPHONE_SAFARI)
    laptop = await signed_in(browsers, client, user_agent=FIREFOX_WINDOWS)
    here = await signed_in(browsers, client, ip="192.0.2.10")
    phone_id = await session_id(db, phone.token)
    value = {"lower": str(phone_id), "upper": str(phone_id).upper(), "urn": phone_id.urn}[form_id]

    response = await here.post("sessions", {"csrf_token": await here.form_token(), "end": value})

    assert response.status == 303
    assert response.headers["Location"] == f"{PREFIX}/sessions?ended=1"
    assert await works(client, phone.token) == 401
    assert await works(client, laptop.token) == 200
    assert await works(client, here.token) == 200
    assert here.cookie() == here.token  # this browser's cookie is untouched
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE id = $1", phone_id) == 0
    assert await audit_rows(db, "session_revoked") == [
        ("session_revoked", "alice", f"session ended: {phone_id}")
    ]
    page = await here.get(response.headers["Location"])
    html = await page.text()
    assert '<p class="alert-text">1 session was signed out.</p>' in html
    assert [r.device for r in session_list(html)] == [
        "Chrome 131 on Linux",
        "Firefox 133 on Windows 10",
    ]


async def test_ending_the_same_session_twice_is_a_404_the_second_time(gateway, alice, browsers, db):
    client = await gateway()
    other = await signed_in(browsers, client)
    here = await signed_in(browsers, client)
    form = {"csrf_token": await here.form_token(), "end": str(await session_id(db, other.token))}
    assert (await here.post("sessions", form)).status == 303
    again = await here.post("sessions", form, API)
    assert again.status == 404
    assert await again.json() == {"error": "no_such_session", "message": NO_SUCH_SESSION}
    assert len(await audit_rows(db, "session_revoked")) == 1


@pytest.mark.parametrize("others", [0, 1, 3])
async def test_ending_all_other_sessions_keeps_this_one(gateway, alice, bob, browsers, db, others):
    client = await gateway()
    mine = [await signed_in(browsers, client) for _ in range(others)]
    bobs = await signed_in(browsers, client, "bob")
    here = await signed_in(browsers, client, remember=True)

    response = await here.post("sessions", {"csrf_token": await here.form_token(), "end": "others"})

    assert response.status == 303
    assert response.headers["Location"] == f"{PREFIX}/sessions?ended={others}"
    for browser in mine:
        assert await works(client, browser.token) == 401
    assert await works(client, here.token) == 200
    assert await works(client, bobs.token) == 200
    remaining = await db.fetch(
        "SELECT u.username FROM sessions s JOIN users u ON u.id = s.user_id ORDER BY 1"
    )
    assert [r["username"] for r in remaining] == ["alice", "bob"]
    assert await audit_rows(db, "session_revoked") == [
        ("session_revoked", "alice", f"other sessions ended: {others}")
    ]
    html = await (await here.get(response.headers["Location"])).text()
    expected = {
        0: "There were no other sessions to sign out.",
        1: "1 session was signed out.",
        3: "3 sessions were signed out.",
    }[others]
    assert f'<p class="alert-text">{expected}</p>' in html
    assert [r.current for r in session_list(html)] == [True]


async def test_ending_this_session_by_its_id_signs_this_browser_out(gateway, alice, browsers, db):
    client = await gateway()
    other = await signed_in(browsers, client)
    here = await signed_in(browsers, client)
    here_id = await session_id(db, here.token)

    response = await here.post(
        "sessions", {"csrf_token": await here.form_token(), "end": str(here_id)}
    )

    assert response.status == 200
    html = await response.text()
    assert "<title>Signed out · Gateway</title>" in html
    assert '<h1 class="title">You have been signed out</h1>' in html
    assert "Your session has been ended on this device." in html
    cleared = response.cookies["gateway_session"]
    assert cleared.value == "" and cleared["max-age"] == "0"
    assert response.headers["Clear-Site-Data"] == '"cache", "cookies"'
    assert_hardened(response)
    assert here.cookie() is None
    assert await works(client, here.token) == 401
    assert await works(client, other.token) == 200
    assert await audit_rows(db, "session_revoked") == [
        ("session_revoked", "alice", f"session ended: {here_id}")
    ]
    again = await here.get(f"{PREFIX}/sessions")
    assert again.status == 302
    assert again.headers["Location"] == f"{PREFIX}/login?rd={PREFIX}/sessions"


@pytest.mark.parametrize(
    "csrf", ["missing", "empty", "forged", "another-browsers", "cross-site", "foreign-origin"]
)
@pytest.mark.parametrize("target", ["other", "others"])
@pytest.mark.parametrize("accept", ["json", "html"])
async def test_a_bad_csrf_token_ends_nothing(
    gateway, alice, bob, browsers, db, csrf, target, accept
):
    client = await gateway()
    other = await signed_in(browsers, client)
    here = await signed_in(browsers, client)
    bobs = await signed_in(browsers, client, "bob")
    form = {"end": "others" if target == "others" else str(await session_id(db, other.token))}
    headers = dict(HTML if accept == "html" else API)
    good = await here.form_token()
    if csrf == "empty":
        form["csrf_token"] = ""
    elif csrf == "forged":
        form["csrf_token"] = good[:-4] + "AAAA"
    elif csrf == "another-browsers":
        form["csrf_token"] = await bobs.form_token()
    elif csrf == "cross-site":
        form["csrf_token"] = good
        headers["Sec-Fetch-Site"] = "cross-site"
    elif csrf == "foreign-origin":
        form["csrf_token"] = good
        headers["Origin"] = "https://evil.example"
    before = await session_rows(db)

    response = await here.post("sessions", form, headers)

    assert response.status == 403
    if accept == "json":
        assert await response.json() == {"error": "csrf", "message": FORM_EXPIRED}
    else:
        html = await response.text()
        assert '<h1 class="title">Nothing was signed out</h1>' in html
        assert f'<p class="subtitle">{FORM_EXPIRED}</p>' in html
    assert await session_rows(db) == before
    assert await works(client, other.token) == 200
    assert await works(client, here.token) == 200
    assert await audit_rows(db, "session_revoked") == []


@pytest.mark.parametrize("action", ["end-others", "end-its-id", "password-change"])
async def test_a_session_that_already_ended_is_not_counted_as_signed_out(
    gateway, alice, browsers, db, clock, action
):
    """The page lists only live sessions; what it says it ended must be among them."""
    client = await gateway()
    old = await signed_in(browsers, client, user_agent=IPHONE_SAFARI)  # idle until 10:00
    clock.advance(50 * 60)
    here = await signed_in(browsers, client)
    clock.advance(15 * 60)  # 10:05: the phone's session is over; its row is still there
    assert await works(client, here.token) == 200
    rows = session_list(await (await here.get(f"{PREFIX}/sessions")).text())
    assert [r.current for r in rows] == [True]  # the page lists no other session
    assert await db.fetchval("SELECT count(*) FROM sessions") == 2
    token = await here.form_token()

    if action == "end-others":
        response = await here.post("sessions", {"csrf_token": token, "end": "others"})
        assert response.headers["Location"] == f"{PREFIX}/sessions?ended=0"
    elif action == "end-its-id":
        form = {"csrf_token": token, "end": str(await session_id(db, old.token))}
        response = await here.post("sessions", form, API)
        assert response.status == 404
    else:
        response = await change_password(here)
        assert response.status == 200
        assert "You had no other sessions to sign out." in await response.text()


# -- 5. changing the password ------------------------------------------------------------


def change_form(
    token: str,
    current: str = PASSWORD,
    new: str = NEW_PASSWORD,
    confirm: str | None = None,
) -> dict[str, str]:
    return {
        "csrf_token": token,
        "current_password": current,
        "new_password": new,
        "confirm_password": new if confirm is None else confirm,
    }


async def change_password(browser: Browser, **kwargs: str) -> aiohttp.ClientResponse:
    return await browser.post(
        "password", change_form(await browser.form_token("password"), **kwargs)
    )


@pytest.mark.parametrize(
    ("others", "said"),
    [
        (0, "You had no other sessions to sign out."),
        (1, "1 other session was signed out."),
        (3, "3 other sessions were signed out."),
    ],
)
async def test_a_password_change_replaces_this_session_and_ends_the_others(
    gateway, alice, bob, browsers, db, clock, others, said
):
    client = await gateway()
    elsewhere = [await signed_in(browsers, client) for _ in range(others)]
    bobs = await signed_in(browsers, client, "bob")
    here = await signed_in(browsers, client, ip="192.0.2.10", user_agent=FIREFOX_WINDOWS)
    old_hash = await password_hash(db)
    clock.advance(60)

    response = await change_password(here)

    assert response.status == 200
    html = await response.text()
    assert "<title>Password changed · Gateway</title>" in html
    assert '<h1 class="title">Your password has been changed</h1>' in html
    assert said in html
    new_token = response.cookies["gateway_session"].value
    assert len(new_token) == 43 and new_token != here.token
    assert here.cookie() == new_token
    cookie = response.cookies["gateway_session"]
    assert cookie["httponly"] is True and cookie["samesite"] == "Lax" and cookie["path"] == "/"
    assert not cookie["max-age"]
    assert "Clear-Site-Data" not in response.headers
    # The old cookie, and every other session of alice's, no longer works; bob's does.
    assert await works(client, here.token) == 401
    for browser in elsewhere:
        assert await works(client, browser.token) == 401
    assert await works(client, new_token) == 200
    assert await works(client, bobs.token) == 200
    assert (await here.get(f"{PREFIX}/account")).status == 200
    # Exactly one session of alice's: the new one, made now, for this browser.
    rows = await db.fetch(
        "SELECT s.token_hash, s.created_at, s.remember, s.ip, s.user_agent FROM sessions s "
        "JOIN users u ON u.id = s.user_id WHERE u.username = 'alice'"
    )
    assert [tuple(r) for r in rows] == [
        (
            hashlib.sha256(new_token.encode()).digest(),
            clock.now,
            False,
            "192.0.2.10",
            FIREFOX_WINDOWS,
        )
    ]
    assert await password_hash(db) != old_hash
    assert await audit_rows(db, "password_changed") == [
        ("password_changed", "alice", f"sessions ended: {others + 1}")
    ]
    # The new password signs in; the old one does not.
    assert (await sign_in((await browsers(client)).http, "alice", NEW_PASSWORD)).status == 303
    assert (await sign_in((await browsers(client)).http, "alice", PASSWORD)).status == 401


async def test_a_kept_session_stays_kept_after_a_password_change(gateway, alice, browsers, db):
    client = await gateway()
    here = await signed_in(browsers, client, remember=True)
    response = await change_password(here)
    assert response.status == 200
    cookie = response.cookies["gateway_session"]
    assert cookie["max-age"] == str(30 * 86400)
    row = await db.fetchrow(
        "SELECT remember, expires_at - created_at AS lifetime FROM sessions WHERE token_hash = $1",
        hashlib.sha256(cookie.value.encode()).digest(),
    )
    assert row["remember"] is True
    assert row["lifetime"].total_seconds() == 30 * 86400


async def test_the_password_form_names_the_rules(gateway, alice, browsers):
    client = await gateway()
    here = await signed_in(browsers, client)
    response = await here.get(f"{PREFIX}/password")
    assert response.status == 200
    html = await response.text()
    assert '<h1 class="title">Change your password</h1>' in html
    assert html.count('minlength="10"') == 2
    assert "At least 10 characters. Not your username" in html
    assert 'name="username" value="alice" autocomplete="username" hidden' in html


@pytest.mark.parametrize(
    ("form", "status", "message"),
    [
        pytest.param({"current": "not my password"}, 401, WRONG_PASSWORD, id="wrong-current"),
        pytest.param({"confirm": NEW_PASSWORD + "!"}, 400, MISMATCH, id="mismatch"),
        pytest.param({"confirm": ""}, 400, MISMATCH, id="no-confirm"),
        pytest.param({"new": "Xq7#mPz2!", "confirm": None}, 400, too_short(10), id="9-chars"),
        pytest.param({"new": "é" * 9}, 400, too_short(10), id="9-non-ascii"),
        pytest.param({"new": "1234567890"}, 400, COMMON, id="common-digits"),
        pytest.param({"new": "Password123"}, 400, COMMON, id="common-any-case"),
        pytest.param({"new": " qwertyuiop "}, 400, COMMON, id="common-padded"),
        pytest.param({"new": "a" * 1025}, 400, TOO_LONG, id="1025-bytes"),
        pytest.param({"new": "é" * 513}, 400, TOO_LONG, id="513-e-acute"),
        pytest.param({"new": PASSWORD}, 400, SAME_PASSWORD, id="same-as-current"),
        pytest.param({"current": ""}, 400, EMPTY_FIELDS, id="no-current"),
        pytest.param({"new": "", "confirm": ""}, 400, EMPTY_FIELDS, id="no-new"),
        pytest.param({"current": "", "new": "", "confirm": ""}, 400, EMPTY_FIELDS, id="all-empty"),
    ],
)
async def test_a_refused_password_change_changes_nothing(
    gateway, alice, browsers, db, form, status, message
):
    client = await gateway()
    other = await signed_in(browsers, client)
    here = await signed_in(browsers, client)
    before = (await session_rows(db), await password_hash(db))

    response = await change_password(here, **form)

    assert response.status == status
    html = await response.text()
    assert alert(message) in html
    assert '<h1 class="title">Change your password</h1>' in html
    assert "gateway_session" not in response.cookies
    assert (await session_rows(db), await password_hash(db)) == before
    assert await works(client, here.token) == 200
    assert await works(client, other.token) == 200
    assert here.cookie() == here.token
    assert await audit_rows(db, "password_changed") == []
    # The old password still signs in.
    assert (await sign_in((await browsers(client)).http, "alice", PASSWORD)).status == 303


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        pytest.param("no-csrf", 403, FORM_EXPIRED, id="no-csrf"),
        pytest.param("forged-csrf", 403, FORM_EXPIRED, id="forged-csrf"),
        pytest.param("cross-site", 403, FORM_EXPIRED, id="cross-site"),
        pytest.param("no-fields", 400, EMPTY_FIELDS, id="no-fields"),
        pytest.param("twice", 400, "The form has more than one 'new_password' field.", id="twice"),
        pytest.param("over-cap", 413, TOO_LARGE, id="over-64k"),
    ],
)
async def test_a_malformed_password_form_changes_nothing(
    gateway, alice, browsers, db, fields, status, message
):
    client = await gateway()
    here = await signed_in(browsers, client)
    token = await here.form_token("password")
    headers: dict[str, str] = {}
    form: Any = change_form(token)
    if fields == "no-csrf":
        del form["csrf_token"]
    elif fields == "forged-csrf":
        form["csrf_token"] = "forged"
    elif fields == "cross-site":
        headers["Sec-Fetch-Site"] = "cross-site"
    elif fields == "no-fields":
        form = {"csrf_token": token}
    elif fields == "twice":
        form = [*form.items(), ("new_password", "another new password")]
    elif fields == "over-cap":
        form = change_form(token, new="x" * OVER_CAP)
    before = (await session_rows(db), await password_hash(db))

    response = await here.post("password", form, headers)

    assert response.status == status
    assert alert(message) in await response.text()
    assert_hardened(response)
    assert (await session_rows(db), await password_hash(db)) == before
    assert await works(client, here.token) == 200
    assert await audit_rows(db, "password_changed", "password_change_failed") == []


async def test_the_new_password_may_not_be_the_username(gateway, db, browsers):
    await create_user(db, "maximilian")
    client = await gateway()
    here = await signed_in(browsers, client, "maximilian")
    before = await password_hash(db, "maximilian")
    for attempt in ("maximilian", "MAXIMILIAN", " Maximilian "):
        response = await change_password(here, new=attempt)
        assert response.status == 400, attempt
        assert alert(IS_USERNAME) in await response.text()
    assert await password_hash(db, "maximilian") == before
    assert await works(client, here.token) == 200


@pytest.mark.parametrize(
    ("new", "status", "message"),
    [
        ("fifteen chars!!", 400, too_short(16)),
        ("é" * 15, 400, too_short(16)),
        ("sixteen chars!!!", 200, None),
    ],
)
async def test_password_min_length_is_configurable(
    gateway, alice, browsers, db, new, status, message
):
    client = await gateway(password={"min_length": 16})
    here = await signed_in(browsers, client)
    form_page = await (await here.get(f"{PREFIX}/password")).text()
    assert form_page.count('minlength="16"') == 2
    assert "At least 16 characters." in form_page
    before = await password_hash(db)

    response = await change_password(here, new=new)

    assert response.status == status
    if message is None:
        assert await password_hash(db) != before
        assert (await sign_in((await browsers(client)).http, "alice", new)).status == 303
    else:
        assert alert(message) in await response.text()
        assert await password_hash(db) == before


@pytest.mark.parametrize("new", ["b" * 1024, "é" * 512, "ab" * 5])
async def test_a_new_password_at_the_limits_is_taken(gateway, alice, browsers, db, new):
    client = await gateway()
    here = await signed_in(browsers, client)
    response = await change_password(here, new=new)
    assert response.status == 200
    assert (await sign_in((await browsers(client)).http, "alice", new)).status == 303


async def test_wrong_current_passwords_count_toward_throttling(gateway, alice, browsers, db):
    client = await gateway(login={"max_failures_per_user": 2})
    other = await signed_in(browsers, client)
    here = await signed_in(browsers, client)
    before = (await session_rows(db), await password_hash(db))

    for _ in range(2):
        response = await change_password(here, current="not my password")
        assert response.status == 401
        assert alert(WRONG_PASSWORD) in await response.text()
    response = await change_password(here)  # the right password, now too late

    assert response.status == 429
    assert response.headers["Retry-After"] == "900"
    assert alert(THROTTLED) in await response.text()
    assert_hardened(response)
    assert (await session_rows(db), await password_hash(db)) == before
    assert await works(client, here.token) == 200
    assert await works(client, other.token) == 200
    # The same count holds for signing in.
    login = await sign_in((await browsers(client)).http, "alice", PASSWORD)
    assert login.status == 429
    assert login.response.headers["Retry-After"] == "900"
    assert await audit_rows(
        db, "password_change_failed", "password_change_throttled", "login_throttled"
    ) == [
        ("password_change_failed", "alice", "password"),
        ("password_change_failed", "alice", "password"),
        ("password_change_throttled", "alice", ""),
        ("login_throttled", "alice", ""),
    ]


async def test_a_right_current_password_forgives_earlier_wrong_ones(gateway, alice, browsers, db):
    client = await gateway(login={"max_failures_per_user": 2})
    here = await signed_in(browsers, client)
    assert (await change_password(here, current="not my password")).status == 401
    assert (await change_password(here)).status == 200
    assert (
        await change_password(here, current="not my password", new="third password!")
    ).status == 401
    assert (await change_password(here, current=NEW_PASSWORD, new="third password!")).status == 200


async def test_a_refused_password_change_does_not_cost_a_throttle_slot(gateway, alice, browsers):
    """Rules are checked before the current password: a too-short new one is no guess."""
    client = await gateway(login={"max_failures_per_user": 1})
    here = await signed_in(browsers, client)
    for _ in range(3):
        assert (await change_password(here, current="not mine", new="short")).status == 400
    assert (await change_password(here)).status == 200


# -- 6. [branding] ---------------------------------------------------------------------

SVG = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><rect width="10" '
    b'height="10" fill="#0b7285"/></svg>\n'
)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


@pytest.fixture
def logos(tmp_path: Path) -> dict[str, Path]:
    files = {"svg": SVG, "png": PNG, "txt": b"just some text, not an image\n"}
    paths = {}
    for kind, data in files.items():
        paths[kind] = tmp_path / f"logo.{kind}"
        paths[kind].write_bytes(data)
    return paths


@pytest.mark.parametrize(("kind", "content_type"), [("svg", "image/svg+xml"), ("png", "image/png")])
async def test_branding_shows_on_the_pages_and_serves_its_files(
    gateway, alice, browsers, logos, kind, content_type
):
    client = await gateway(
        branding={
            "name": "ACME Portal",
            "footer": "Help desk: +1 555 0100",
            "accent_color": "#0B7285",
            "logo": str(logos[kind]),
        }
    )
    login = await client.get(f"{PREFIX}/login")
    html = await login.text()
    assert "<title>Sign in · ACME Portal</title>" in html
    assert '<span class="brand-name">ACME Portal</span>' in html
    assert "<p>Help desk: +1 555 0100</p>" in html
    assert "Protected by" not in html and "Gateway" not in html
    assert '<link rel="stylesheet" href="/_gateway/branding.css">' in html
    assert '<img class="brand-logo" src="/_gateway/branding/logo" alt="" height="32">' in html
    assert 'class="brand-mark"' not in html

    css = await client.get(f"{PREFIX}/branding.css")
    assert css.status == 200
    assert css.headers["Content-Type"] == "text/css; charset=utf-8"
    body = await css.text()
    assert body == accent_stylesheet("#0b7285")
    assert "  --brand: #" in body
    assert_hardened(css)

    logo = await client.get(f"{PREFIX}/branding/logo")
    assert logo.status == 200
    assert logo.headers["Content-Type"] == content_type
    assert await logo.read() == logos[kind].read_bytes()
    assert logo.headers["Content-Security-Policy"] == (
        "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    )
    assert logo.headers["X-Content-Type-Options"] == "nosniff"

    here = await signed_in(browsers, client)
    sessions = await (await here.get(f"{PREFIX}/sessions")).text()
    assert "<title>Your sessions · ACME Portal</title>" in sessions
    assert "on every app behind ACME Portal," in sessions
    assert "<p>Help desk: +1 555 0100</p>" in sessions


async def test_without_branding_the_pages_say_gateway_and_its_urls_are_404(gateway):
    client = await gateway()
    html = await (await client.get(f"{PREFIX}/login")).text()
    assert "<title>Sign in · Gateway</title>" in html
    assert '<span class="brand-name">Gateway</span>' in html
    assert "<p>Protected by Gateway</p>" in html
    assert "branding" not in html
    assert 'class="brand-mark"' in html
    for path in ("branding.css", "branding/logo"):
        response = await client.get(f"{PREFIX}/{path}")
        assert response.status == 404, path
        assert_hardened(response)


@pytest.mark.parametrize(
    ("branding", "css", "logo"),
    [
        ({"accent_color": "#abc"}, 200, 404),
        ({"logo": "svg"}, 404, 200),
        ({"name": "Intranet"}, 404, 404),
        ({"accent_color": ""}, 404, 404),
    ],
)
async def test_each_branding_file_is_served_only_when_configured(
    gateway, logos, branding, css, logo
):
    if "logo" in branding:
        branding = {**branding, "logo": str(logos[branding["logo"]])}
    client = await gateway(branding=branding)
    assert (await client.get(f"{PREFIX}/branding.css")).status == css
    assert (await client.get(f"{PREFIX}/branding/logo")).status == logo
    html = await (await client.get(f"{PREFIX}/login")).text()
    assert ('href="/_gateway/branding.css"' in html) == (css == 200)
    assert ('src="/_gateway/branding/logo"' in html) == (logo == 200)


async def test_a_short_accent_is_expanded(gateway):
    client = await gateway(branding={"accent_color": "#abc"})
    assert await (await client.get(f"{PREFIX}/branding.css")).text() == accent_stylesheet("#aabbcc")


async def test_the_branding_name_is_text_not_markup(gateway):
    client = await gateway(branding={"name": "<b>ACME</b> & Co"})
    html = await (await client.get(f"{PREFIX}/login")).text()
    assert "<title>Sign in · &lt;b&gt;ACME&lt;/b&gt; &amp; Co</title>" in html
    assert "<p>Protected by &lt;b&gt;ACME&lt;/b&gt; &amp; Co</p>" in html
    assert "<b>ACME</b>" not in html


def build(tmp_path: Path, **sections: Any):
    return build_config(sections, source="test.toml", env={}, base_dir=tmp_path)


def config_errors(tmp_path: Path, **sections: Any) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        build(tmp_path, **sections)
    return raised.value.errors


@pytest.mark.parametrize(
    ("logo", "message"),
    [
        ("missing", "cannot read {path}: No such file or directory"),
        ("text", "{path} is neither an SVG nor a PNG file"),
        ("html", "{path} is neither an SVG nor a PNG file"),
        ("empty", "{path} is neither an SVG nor a PNG file"),
        ("directory", "cannot read {path}: Is a directory"),
        ("huge", "{path} is 262145 bytes; a logo may be at most 262144"),
    ],
)
async def test_a_bad_logo_is_a_config_error(tmp_path, logo, message):
    path = tmp_path / f"{logo}.svg"
    if logo == "text":
        path.write_text("just some text\n")
    elif logo == "html":
        path.write_text("<html><body><svg></svg></body></html>")
    elif logo == "empty":
        path.write_bytes(b"")
    elif logo == "directory":
        path.mkdir()
    elif logo == "huge":
        path.write_bytes(SVG + b" " * (LOGO_MAX_BYTES + 1 - len(SVG)))
    errors = config_errors(tmp_path, branding={"logo": path.name})
    assert errors == [f"test.toml: branding.logo: {message.format(path=path)}"]


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("a.svg", SVG, "image/svg+xml"),
        ("a.svg", b"\xef\xbb\xbf  <svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
        ("a.png", PNG, "image/png"),
        ("misnamed.txt", PNG, "image/png"),  # by what it holds, not by its name
        ("max.svg", SVG + b" " * (LOGO_MAX_BYTES - len(SVG)), "image/svg+xml"),
    ],
)
async def test_a_good_logo_is_read_by_its_contents(tmp_path, name, data, kind):
    (tmp_path / name).write_bytes(data)
    branding = build(tmp_path, branding={"logo": name}).branding
    assert branding.logo == tmp_path / name
    assert branding.logo_type == kind


@pytest.mark.parametrize(
    "head",
    [
        b"<!-- Uploaded to: SVG Repo, www.svgrepo.com -->\n",
        b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
        b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n',
    ],
    ids=["comment-first", "doctype-first"],
)
async def test_an_svg_that_starts_with_a_comment_or_doctype_is_an_svg(tmp_path, head):
    (tmp_path / "logo.svg").write_bytes(head + SVG.split(b"\n", 1)[1])
    assert build(tmp_path, branding={"logo": "logo.svg"}).branding.logo_type == "image/svg+xml"


@pytest.mark.parametrize("min_length", [1025, 100_000])
async def test_a_min_length_no_password_can_meet_is_a_config_error(tmp_path, min_length):
    """No password may be over 1024 bytes, so a longer minimum would refuse every one."""
    assert config_errors(tmp_path, password={"min_length": min_length}) == [
        f"test.toml: password.min_length: expected a whole number from 8 to 1024, got {min_length}"
    ]


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("branding", "accent_color", "red", "a hex colour such as '#0b7285'"),
        ("branding", "accent_color", "#12345", "a hex colour such as '#0b7285'"),
        ("branding", "accent_color", "#gggggg", "a hex colour such as '#0b7285'"),
        ("branding", "accent_color", "0b7285", "a hex colour such as '#0b7285'"),
        ("branding", "accent_color", 0x0B7285, "a hex colour such as '#0b7285'"),
        ("branding", "name", "", "1-40 characters of plain text"),
        ("branding", "name", "   ", "1-40 characters of plain text"),
        ("branding", "name", "N" * 41, "1-40 characters of plain text"),
        ("branding", "name", "ACME\tPortal", "1-40 characters of plain text"),
        ("branding", "footer", "line one\nline two", "at most 200 characters of plain text"),
        ("branding", "footer", "F" * 201, "at most 200 characters of plain text"),
        ("branding", "footer", "bell\x07", "at most 200 characters of plain text"),
        ("branding", "logo", 5, "a path"),
        ("password", "min_length", 7, "a whole number from 8 to 1024"),
        ("password", "min_length", "ten", "a whole number from 8 to 1024"),
        ("password", "min_length", True, "a whole number from 8 to 1024"),
        ("password", "min_length", 10.5, "a whole number from 8 to 1024"),
    ],
)
async def test_a_bad_branding_or_password_value_is_a_config_error(
    tmp_path, section, key, value, expected
):
    errors = config_errors(tmp_path, **{section: {key: value}})
    assert errors == [f"test.toml: {section}.{key}: expected {expected}, got {value!r}"]


@pytest.mark.parametrize(
    ("section", "key", "value", "read"),
    [
        ("branding", "accent_color", "", ""),
        ("branding", "accent_color", "#ABC", "#aabbcc"),
        ("branding", "accent_color", " #0B7285 ", "#0b7285"),
        ("branding", "name", "N" * 40, "N" * 40),
        ("branding", "name", "  ACME Portal  ", "ACME Portal"),
        ("branding", "footer", "", ""),
        ("branding", "footer", "F" * 200, "F" * 200),
        ("password", "min_length", 8, 8),
        ("password", "min_length", 64, 64),
    ],
)
async def test_a_good_branding_or_password_value_is_read(tmp_path, section, key, value, read):
    config = build(tmp_path, **{section: {key: value}})
    assert getattr(getattr(config, section), key) == read


async def test_unknown_branding_and_password_keys_are_errors(tmp_path):
    errors = config_errors(tmp_path, branding={"colour": "#fff"}, password={"max_length": 9})
    assert errors == [
        "test.toml: password.max_length: unknown key",
        "test.toml: branding.colour: unknown key",
    ]


async def test_every_branding_mistake_is_reported_at_once(tmp_path):
    errors = config_errors(
        tmp_path,
        password={"min_length": 7},
        branding={"name": "", "accent_color": "red", "footer": "a\nb", "logo": "nope.png"},
    )
    assert errors == [
        "test.toml: password.min_length: expected a whole number from 8 to 1024, got 7",
        "test.toml: branding.name: expected 1-40 characters of plain text, got ''",
        "test.toml: branding.accent_color: expected a hex colour such as '#0b7285', got 'red'",
        "test.toml: branding.footer: expected at most 200 characters of plain text, got 'a\\nb'",
        f"test.toml: branding.logo: cannot read {tmp_path / 'nope.png'}: No such file or directory",
    ]


async def _check_config(db_url: str, cwd: Path, *args: str) -> tuple[int, str, str]:
    proc = await start_cli(cwd, cli_env(db_url), "check-config", *args)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("logo", "message"),
    [
        ("missing.svg", "cannot read {path}: No such file or directory"),
        ("notes.txt", "{path} is neither an SVG nor a PNG file"),
    ],
)
async def test_check_config_names_a_bad_logo(db_url, tmp_path, logo, message):
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "bad.toml").write_text(f'[branding]\nlogo = "{logo}"\n')

    status, out, err = await _check_config(db_url, tmp_path, "-c", "bad.toml")

    path = tmp_path.resolve() / logo
    assert status == 2, (out, err)
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        f"gateway: bad.toml: branding.logo: {message.format(path=path)}"
    ]
    assert out == ""


async def test_check_config_accepts_a_good_branding(db_url, tmp_path):
    (tmp_path / "logo.png").write_bytes(PNG)
    (tmp_path / "good.toml").write_text(
        '[password]\nmin_length = 12\n[branding]\nname = "ACME Portal"\nlogo = "logo.png"\n'
        'accent_color = "#0b7285"\nfooter = "Help desk: +1 555 0100"\n'
    )
    status, out, err = await _check_config(db_url, tmp_path, "-c", "good.toml")
    assert status == 0, (out, err)
    assert out == "good.toml: ok\n"
