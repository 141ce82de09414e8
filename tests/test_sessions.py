"""Sign-in, sign-out and the session lifecycle, end to end through a real gateway."""

from __future__ import annotations

import hashlib

import aiohttp
import pytest
from helpers import PASSWORD, create_user, csrf_token, fresh_get, sign_in
from yarl import URL

from gateway.store.sessions import TOUCH_INTERVAL
from gateway.web.login import BAD_CREDENTIALS

API = {"Accept": "application/json"}


async def session_rows(db) -> list:
    return await db.fetch("SELECT * FROM sessions ORDER BY created_at")


# -- sign in ---------------------------------------------------------------------


async def test_login_page_renders_a_real_form(gateway):
    client = await gateway()
    response = await client.get("/_gateway/login?rd=/wiki")
    assert response.status == 200
    html = await response.text()
    for needle in (
        'name="username"',
        'name="password"',
        'name="remember"',
        'name="csrf_token"',
        'value="/wiki"',
        'for="username"',
        'for="password"',
    ):
        assert needle in html
    assert "<script" not in html and "style=" not in html
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    css = await client.get("/_gateway/static/gateway.css")
    assert css.status == 200 and "text/css" in css.headers["Content-Type"]


async def test_login_success_creates_a_hashed_session_row(gateway, alice, db):
    client = await gateway()
    result = await sign_in(client, rd="/reports?q=1")
    assert result.status == 303
    assert result.location == "/reports?q=1"
    assert result.token and len(result.token) == 43
    rows = await session_rows(db)
    assert len(rows) == 1
    assert rows[0]["token_hash"] == hashlib.sha256(result.token.encode()).digest()
    assert result.token.encode() not in bytes(rows[0]["token_hash"])
    assert rows[0]["user_id"] == alice
    cookie = result.response.cookies["gateway_session"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"
    assert not cookie["secure"]
    assert not cookie["max-age"]  # a browser-session cookie unless "keep me signed in"
    events = await db.fetch("SELECT event, username FROM audit_log WHERE event LIKE 'login%'")
    assert [tuple(e) for e in events] == [("login_ok", "alice")]


async def test_signed_in_request_reaches_the_app_with_identity(gateway, alice):
    client = await gateway()
    token = (await sign_in(client)).token
    response = await fresh_get(client, "/anything", token, **API)
    assert response.status == 200
    seen = dict((await response.json())["headers"])
    assert seen["X-Remote-User"] == "alice"
    assert seen["X-Remote-Groups"] == "staff"


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong password!"), ("nobody", PASSWORD), ("ALICE", "wrong password!")],
)
async def test_login_failure_is_generic_401_and_creates_nothing(
    gateway, alice, db, username, password
):
    client = await gateway()
    result = await sign_in(client, username, password)
    assert result.status == 401
    assert BAD_CREDENTIALS in result.text
    assert result.token is None
    assert await session_rows(db) == []
    failed = await db.fetchval("SELECT count(*) FROM audit_log WHERE event = 'login_failed'")
    assert failed == 1


async def test_username_is_case_insensitive(gateway, alice):
    client = await gateway()
    assert (await sign_in(client, "  Alice ")).status == 303


async def test_disabled_user_gets_the_same_answer_as_a_wrong_password(gateway, db):
    await create_user(db, "bob")
    await db.execute("UPDATE users SET disabled = true WHERE username = 'bob'")
    client = await gateway()
    disabled = await sign_in(client, "bob")
    wrong = await sign_in(client, "bob", "not the password")
    assert disabled.status == wrong.status == 401
    # Same browser, same CSRF nonce: the two answers are byte for byte the same.
    assert disabled.text == wrong.text


def _csrf(text: str) -> str:
    start = text.index('name="csrf_token" value="') + len('name="csrf_token" value="')
    return text[start : text.index('"', start)]


@pytest.mark.parametrize(
    "form",
    [
        {"username": "alice"},
        {"password": PASSWORD},
        {"username": "", "password": ""},
    ],
)
async def test_missing_fields_are_400_with_the_form(gateway, alice, db, form):
    client = await gateway()
    form = {"csrf_token": await csrf_token(client), **form}
    response = await client.post("/_gateway/login", data=form, allow_redirects=False)
    assert response.status == 400
    assert 'name="password"' in await response.text()
    assert await session_rows(db) == []


@pytest.mark.parametrize("token", [None, "", "forged", "A" * 43])
async def test_login_without_a_valid_csrf_token_is_403(gateway, alice, db, token):
    client = await gateway()
    await csrf_token(client)  # the browser has a nonce cookie, but the token is wrong
    form = {"username": "alice", "password": PASSWORD}
    if token is not None:
        form["csrf_token"] = token
    response = await client.post("/_gateway/login", data=form, allow_redirects=False)
    assert response.status == 403
    assert "gateway_session" not in response.cookies
    assert await session_rows(db) == []


async def test_csrf_token_from_another_browser_is_refused(gateway, alice, db):
    attacker = await gateway()
    victim = await gateway()
    token = await csrf_token(attacker)
    await csrf_token(victim)
    response = await victim.post(
        "/_gateway/login",
        data={"csrf_token": token, "username": "alice", "password": PASSWORD},
        allow_redirects=False,
    )
    assert response.status == 403
    assert await session_rows(db) == []


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}],
)
async def test_cross_site_login_post_is_refused(gateway, alice, db, headers):
    client = await gateway()
    form = {"csrf_token": await csrf_token(client), "username": "alice", "password": PASSWORD}
    response = await client.post(
        "/_gateway/login", data=form, headers=headers, allow_redirects=False
    )
    assert response.status == 403
    assert await session_rows(db) == []


async def test_same_origin_login_post_is_accepted(gateway, alice):
    client = await gateway()
    form = {"csrf_token": await csrf_token(client), "username": "alice", "password": PASSWORD}
    origin = f"http://{client.host}:{client.port}"
    response = await client.post(
        "/_gateway/login",
        data=form,
        headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"},
        allow_redirects=False,
    )
    assert response.status == 303


@pytest.mark.parametrize("rd", ["//evil.com", "https://evil.com/", "/\\evil.com", "javascript:x"])
async def test_hostile_rd_lands_on_our_root(gateway, alice, rd):
    client = await gateway()
    assert (await sign_in(client, rd=rd)).location == "/"


async def test_allowed_redirect_host_is_honoured(gateway, alice):
    client = await gateway(session={"allowed_redirect_hosts": [".example.com"]})
    result = await sign_in(client, rd="https://wiki.example.com/page")
    assert result.location == "https://wiki.example.com/page"


async def test_login_page_when_signed_in_redirects_to_rd(gateway, alice):
    client = await gateway()
    await sign_in(client)
    response = await client.get("/_gateway/login?rd=/home", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/home"


# -- fixation ------------------------------------------------------------------------


async def test_a_preset_cookie_is_never_adopted(gateway, alice, db):
    client = await gateway()
    planted = "P" * 43
    client.session.cookie_jar.update_cookies({"gateway_session": planted})
    result = await sign_in(client)
    assert result.status == 303
    assert result.token != planted
    assert (await fresh_get(client, "/x", planted, **API)).status == 401
    assert (await fresh_get(client, "/x", result.token, **API)).status == 200


async def test_signing_in_again_replaces_the_old_session(gateway, alice, db):
    client = await gateway()
    form = {"csrf_token": await csrf_token(client), "username": "alice", "password": PASSWORD}
    tokens = []
    for _ in range(2):  # e.g. a second tab's stale sign-in form, submitted while signed in
        response = await client.post("/_gateway/login", data=form, allow_redirects=False)
        assert response.status == 303
        tokens.append(response.cookies["gateway_session"].value)
    first, second = tokens
    assert first != second
    assert (await fresh_get(client, "/x", first, **API)).status == 401
    assert (await fresh_get(client, "/x", second, **API)).status == 200
    assert len(await session_rows(db)) == 1


# -- sign out --------------------------------------------------------------------------


async def test_logout_page_offers_a_button_and_signed_out_page_when_anonymous(gateway, alice):
    client = await gateway()
    anonymous = await client.get("/_gateway/logout")
    assert anonymous.status == 200
    text = await anonymous.text()
    assert "You are not signed in" in text
    assert "You have been signed out" not in text and "ended on the server" not in text
    assert "Clear-Site-Data" not in anonymous.headers  # nothing was ended
    await sign_in(client)
    page = await client.get("/_gateway/logout")
    html = await page.text()
    assert 'action="/_gateway/logout"' in html and 'method="post"' in html
    assert "Alice" in html


async def test_logout_then_replay_of_the_old_cookie_gets_the_login(gateway, alice, db):
    client = await gateway()
    token = (await sign_in(client)).token
    assert (await fresh_get(client, "/app", token, **API)).status == 200

    response = await client.post(
        "/_gateway/logout",
        data={"csrf_token": await csrf_token(client, "/_gateway/logout")},
        allow_redirects=False,
    )
    assert response.status == 200
    assert response.headers["Clear-Site-Data"] == '"cache", "cookies"'
    expired = response.cookies["gateway_session"]
    assert expired.value == "" and expired["max-age"] == "0"
    html = await response.text()
    assert 'href="/_gateway/login"' in html
    assert await session_rows(db) == []
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE event = 'logout'") == 1

    # The copied cookie is dead: a browser is sent to the login, an API gets 401.
    replay = await fresh_get(client, "/app", token, Accept="text/html")
    assert replay.status == 302
    location = URL(replay.headers["Location"])
    assert location.path == "/_gateway/login" and location.query["rd"] == "/app"
    assert (await fresh_get(client, "/app", token, **API)).status == 401


async def test_switching_account_ends_the_session_and_goes_to_the_sign_in_form(gateway, alice, db):
    """A 403 page's "Sign in as someone else": POST logout with rd."""
    client = await gateway()
    token = (await sign_in(client)).token
    form = {"csrf_token": await csrf_token(client, "/_gateway/logout"), "rd": "/finance/q?x=1"}
    response = await client.post("/_gateway/logout", data=form, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/_gateway/login?rd=/finance/q%3Fx%3D1"
    assert response.headers["Clear-Site-Data"] == '"cache", "cookies"'
    assert response.cookies["gateway_session"].value == ""
    assert await session_rows(db) == []
    assert (await fresh_get(client, "/x", token, **API)).status == 401


@pytest.mark.parametrize("rd", ["//evil.example/x", "https://evil.example/", "/\\evil"])
async def test_switching_account_never_leads_off_site(gateway, alice, rd):
    client = await gateway()
    await sign_in(client)
    form = {"csrf_token": await csrf_token(client, "/_gateway/logout"), "rd": rd}
    response = await client.post("/_gateway/logout", data=form, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/_gateway/login?rd=/"


async def test_logout_without_csrf_token_is_refused_and_keeps_the_session(gateway, alice, db):
    client = await gateway()
    token = (await sign_in(client)).token
    response = await client.post("/_gateway/logout", data={}, allow_redirects=False)
    assert response.status == 403
    assert len(await session_rows(db)) == 1
    assert (await fresh_get(client, "/x", token, **API)).status == 200


async def test_logout_everywhere_ends_every_session_of_the_user(gateway, alice, db):
    await create_user(db, "bob")
    laptop, phone, other = await gateway(), await gateway(), await gateway()
    laptop_token = (await sign_in(laptop)).token
    phone_token = (await sign_in(phone)).token
    bob_token = (await sign_in(other, "bob")).token
    token = await csrf_token(laptop, "/_gateway/logout")
    response = await laptop.post("/_gateway/logout?everywhere=1", data={"csrf_token": token})
    assert response.status == 200
    assert "all devices" in await response.text()
    assert (await fresh_get(phone, "/x", phone_token, **API)).status == 401
    assert (await fresh_get(laptop, "/x", laptop_token, **API)).status == 401
    assert (await fresh_get(other, "/x", bob_token, **API)).status == 200


# -- expiry ------------------------------------------------------------------------------


async def test_idle_timeout(gateway, alice, clock):
    client = await gateway(session={"idle_timeout": "10m", "absolute_timeout": "1h"})
    token = (await sign_in(client)).token
    clock.advance(9 * 60)
    assert (await fresh_get(client, "/x", token, **API)).status == 200  # activity resets idle
    clock.advance(9 * 60)
    assert (await fresh_get(client, "/x", token, **API)).status == 200
    clock.advance(10 * 60)
    response = await fresh_get(client, "/x", token, **API)
    assert response.status == 401
    # The dead cookie is cleared from the browser.
    assert response.headers.get("Set-Cookie", "").startswith('gateway_session="";')
    assert "Max-Age=0" in response.headers["Set-Cookie"]


async def test_absolute_timeout_holds_however_busy(gateway, alice, clock, db):
    client = await gateway(session={"idle_timeout": "10m", "absolute_timeout": "30m"})
    token = (await sign_in(client)).token
    for _ in range(5):
        clock.advance(5 * 60)
        assert (await fresh_get(client, "/x", token, **API)).status == 200
    clock.advance(5 * 60)  # 30 minutes after sign-in
    assert (await fresh_get(client, "/x", token, **API)).status == 401
    assert await session_rows(db) == []


async def test_last_seen_is_written_at_most_once_per_interval(gateway, alice, clock, db):
    client = await gateway()
    token = (await sign_in(client)).token
    first = (await session_rows(db))[0]["last_seen"]
    clock.advance(TOUCH_INTERVAL.total_seconds() / 2)
    await fresh_get(client, "/x", token, **API)
    assert (await session_rows(db))[0]["last_seen"] == first
    clock.advance(TOUCH_INTERVAL.total_seconds())
    await fresh_get(client, "/x", token, **API)
    assert (await session_rows(db))[0]["last_seen"] == clock.now


async def test_remember_me_outlives_idle_and_absolute_limits(gateway, alice, clock):
    client = await gateway(
        session={"idle_timeout": "1h", "absolute_timeout": "12h", "remember_me": "30d"}
    )
    result = await sign_in(client, remember=True)
    cookie = result.response.cookies["gateway_session"]
    assert cookie["max-age"] == str(30 * 86400)
    clock.advance(3 * 86400)  # days without a request, far past idle and absolute
    assert (await fresh_get(client, "/x", result.token, **API)).status == 200
    clock.advance(27 * 86400)
    assert (await fresh_get(client, "/x", result.token, **API)).status == 401


async def test_disabled_user_loses_live_session(gateway, alice, db):
    client = await gateway()
    token = (await sign_in(client)).token
    await db.execute("UPDATE users SET disabled = true WHERE username = 'alice'")
    assert (await fresh_get(client, "/x", token, **API)).status == 401


# -- cookie flavours -----------------------------------------------------------------------


async def test_https_public_url_makes_secure_host_prefixed_cookies(gateway, alice):
    client = await gateway(server={"public_url": "https://gateway.example.com"})
    form = {"csrf_token": await csrf_token(client), "username": "alice", "password": PASSWORD}
    # The test client speaks plain http, so it will not store Secure cookies: read headers.
    form_response = await client.get("/_gateway/login")
    nonce_cookie = form_response.cookies["__Host-gateway_session_csrf"]
    assert nonce_cookie["secure"] is True
    headers = {"Cookie": f"__Host-gateway_session_csrf={nonce_cookie.value}"}
    form["csrf_token"] = _csrf(await form_response.text())
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        response = await http.post(
            client.make_url("/_gateway/login"), data=form, headers=headers, allow_redirects=False
        )
    assert response.status == 303
    cookie = response.cookies["__Host-gateway_session"]
    assert cookie["secure"] is True and cookie["path"] == "/" and not cookie["domain"]


async def test_cookie_domain_drops_the_host_prefix(gateway, alice):
    client = await gateway(
        server={"public_url": "https://auth.example.com"}, session={"cookie_domain": "example.com"}
    )
    response = await client.get("/_gateway/login")
    assert "gateway_session_csrf" in response.cookies


async def test_userinfo(gateway, alice):
    client = await gateway()
    assert (await client.get("/_gateway/userinfo")).status == 401
    await sign_in(client)
    response = await client.get("/_gateway/userinfo")
    info = await response.json()
    assert info["user"] == "alice"
    assert info["email"] == "alice@example.com"
    assert info["groups"] == ["staff"]
    assert info["session"]["created"] and info["session"]["expires"]


async def test_health_endpoints(gateway):
    client = await gateway()
    assert (await client.get("/_gateway/healthz")).status == 200
    assert (await client.get("/_gateway/readyz")).status == 200
    assert (await client.get("/_gateway/nope")).status == 404
