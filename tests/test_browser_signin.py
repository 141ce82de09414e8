"""Signing in and out in a real Chromium, as the person at the keyboard does it.

Each test asserts what the person sees (text, address, focus) and what the
app behind the gateway received (the demo app lists its request headers).
"""

from __future__ import annotations

import time

import pytest
from chromium import (
    app_saw,
    click_and_wait,
    replay,
    session_cookie,
    sign_in,
)
from helpers import PASSWORD, create_user
from playwright.async_api import expect


@pytest.mark.parametrize(
    ("public_host", "typed_host"),
    [("localhost", "localhost"), ("127.0.0.1", "127.0.0.1"), ("localhost", "127.0.0.1")],
)
async def test_deep_link_signs_in_and_returns_to_that_exact_address(
    site, page, alice, public_host, typed_host
):
    s = await site(public_host)
    base = f"http://{typed_host}:{s.port}"
    deep = f"{base}/reports/q3?tab=1&sort=desc&q=a%20b"

    await page.goto(deep)
    assert page.url.startswith(f"{base}/_gateway/login?rd=")
    assert await page.get_by_role("heading", level=1).inner_text() == "Sign in"
    # autofocus is applied at a rendering step after load: wait for it, do not sample.
    await expect(page.locator("#username")).to_be_focused()

    answer = await sign_in(page)
    assert answer.status == 200
    assert page.url == deep
    assert "The gateway says you are alice." in await page.locator("main").inner_text()
    seen = await app_saw(page)
    assert seen["x-remote-user"] == ["alice"]
    assert seen["x-remote-email"] == ["alice@example.com"]
    assert seen["x-remote-groups"] == ["staff"]
    assert "gateway_session" not in " ".join(seen.get("cookie", []))


@pytest.mark.parametrize("username", ["alice", "nobody"])
async def test_wrong_password_shows_one_generic_message_and_keeps_the_username(
    site, page, alice, username
):
    s = await site()
    await page.goto(f"{s.url}/_gateway/login")
    answer = await sign_in(page, username, "not the password")

    assert answer.status == 401
    alert = page.get_by_role("alert")
    assert await alert.inner_text() == "Incorrect username or password."
    assert await page.get_by_label("Username").input_value() == username
    assert await page.get_by_label("Password").input_value() == ""
    # The name is kept, so the person's next keystroke belongs in the password.
    await expect(page.locator("#password")).to_be_focused()
    assert await page.context.cookies() == [
        c for c in await page.context.cookies() if c["name"] != "gateway_session"
    ]


@pytest.mark.parametrize("remember", [True, False])
async def test_keep_me_signed_in_decides_whether_the_cookie_outlives_the_browser(
    site, page, alice, remember
):
    s = await site()
    await page.goto(f"{s.url}/_gateway/login")
    label = await page.locator("label[for=remember]").inner_text()
    assert label == "Keep me signed in for 30 days"
    await sign_in(page, remember=remember)
    cookie = await session_cookie(page.context)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    if remember:
        # session.remember_me defaults to 30 days; the browser counts from now.
        assert abs(cookie["expires"] - (time.time() + 30 * 86400)) < 120
    else:
        assert cookie["expires"] == -1  # a browser-session cookie


async def test_sign_out_is_real_back_and_reload_ask_again_and_a_copied_cookie_is_dead(
    site, page, alice
):
    s = await site()
    await page.goto(f"{s.url}/notes")
    await sign_in(page)
    assert page.url == f"{s.url}/notes"
    copied = (await session_cookie(page.context))["value"]
    assert (await replay(f"{s.url}/_gateway/userinfo", f"gateway_session={copied}")).status == 200

    # The demo app's own "Sign out" link, then the gateway's confirmation.
    await click_and_wait(page, page.get_by_role("link", name="Sign out"))
    assert page.url == f"{s.url}/_gateway/logout"
    assert "You are signed in as Alice." in await page.locator("main").inner_text()
    answer = await click_and_wait(page, page.get_by_role("button", name="Sign out", exact=True))
    assert answer.status == 200
    assert (await answer.all_headers())["clear-site-data"] == '"cache", "cookies"'
    assert await page.get_by_role("heading", level=1).inner_text() == "You have been signed out"
    assert "Your session has been ended on this device." in await page.locator("main").inner_text()
    assert [c for c in await page.context.cookies() if c["name"] == "gateway_session"] == []

    # Back, to the app page the person was on: it is asked for again, not shown from a cache.
    await page.go_back()
    await page.go_back()
    assert page.url.startswith(f"{s.url}/_gateway/login?rd=")
    assert await page.get_by_role("heading", level=1).inner_text() == "Sign in"
    await page.reload()
    assert page.url.startswith(f"{s.url}/_gateway/login?rd=")

    # The cookie copied before sign-out, from a plain HTTP client: refused everywhere.
    dead = f"gateway_session={copied}"
    assert (await replay(f"{s.url}/_gateway/userinfo", dead)).status == 401
    navigation = await replay(f"{s.url}/notes", dead, Accept="text/html")
    assert navigation.status == 302
    assert navigation.headers["Location"] == "/_gateway/login?rd=/notes"
    api = await replay(f"{s.url}/notes", dead, Accept="application/json")
    assert api.status == 401


async def test_sign_out_of_all_devices_ends_the_other_browsers_session(site, new_context, alice):
    s = await site()
    laptop = await (await new_context()).new_page()
    phone = await (await new_context()).new_page()
    for page in (laptop, phone):
        await page.goto(f"{s.url}/inbox")
        await sign_in(page)
        assert page.url == f"{s.url}/inbox"

    await laptop.goto(f"{s.url}/_gateway/logout")
    await click_and_wait(laptop, laptop.get_by_role("button", name="Sign out of all devices"))
    text = await laptop.locator("main").inner_text()
    assert "Every session of your account has been ended on all devices." in text

    await phone.reload()
    assert phone.url.startswith(f"{s.url}/_gateway/login?rd=")
    assert await phone.get_by_role("heading", level=1).inner_text() == "Sign in"


async def test_signing_out_when_not_signed_in_says_so(site, page):
    s = await site()
    answer = await page.goto(f"{s.url}/_gateway/logout")
    assert answer.status == 200
    assert await page.get_by_role("heading", level=1).inner_text() == "You are not signed in"
    text = await page.locator("main").inner_text()
    assert "signed out" not in text.lower().replace("not signed in", "")
    await click_and_wait(page, page.get_by_role("link", name="Sign in"))
    assert page.url == f"{s.url}/_gateway/login"


async def test_throttled_sign_in_shows_the_429_page(site, page, alice):
    s = await site(login={"max_failures_per_user": 2})
    await page.goto(f"{s.url}/_gateway/login")
    for _ in range(2):
        assert (await sign_in(page, "alice", "wrong guess")).status == 401
    answer = await sign_in(page, "alice", PASSWORD)  # even the right one must wait now
    assert answer.status == 429
    assert int(answer.headers["retry-after"]) > 0
    alert = page.get_by_role("alert")
    assert await alert.inner_text() == (
        "Too many failed sign-in attempts. Please wait a few minutes and try again."
    )
    assert [c for c in await page.context.cookies() if c["name"] == "gateway_session"] == []


OPEN_SOCKET = """async (url) => new Promise((resolve) => {
  const got = [];
  const ws = new WebSocket(url);
  ws.onopen = () => ws.send("ping from the page");
  ws.onmessage = (e) => { got.push(e.data); if (got.length === 2) ws.close(1000); };
  ws.onclose = (e) => resolve({got, code: e.code});
})"""


async def test_a_page_script_websocket_is_refused_before_sign_in_and_echoes_after(
    site, page, alice
):
    s = await site(rule=[{"path": "/public/", "policy": "public"}])
    socket_url = f"ws://localhost:{s.port}/live"
    await page.goto(f"{s.url}/public/")  # an app page, open to all: the script's origin
    before = await page.evaluate(OPEN_SOCKET, socket_url)
    assert before == {"got": [], "code": 1006}  # the handshake got 401: no socket

    await click_and_wait(page, page.get_by_role("link", name="Sign in"))
    await sign_in(page)
    assert page.url == f"{s.url}/public/"
    after = await page.evaluate(OPEN_SOCKET, socket_url)
    assert after == {"got": ['{"hello": "alice"}', "ping from the page"], "code": 1000}


async def test_signing_in_as_someone_else_replaces_the_session(site, page, alice, db):
    await create_user(db, "bob")
    s = await site()
    await page.goto(f"{s.url}/_gateway/login")
    await sign_in(page, "alice")
    first = (await session_cookie(page.context))["value"]
    await page.goto(f"{s.url}/_gateway/logout")
    await click_and_wait(page, page.get_by_role("button", name="Sign out", exact=True))
    await click_and_wait(page, page.get_by_role("link", name="Sign in again"))
    await sign_in(page, "bob")
    assert "The gateway says you are bob." in await page.locator("main").inner_text()
    assert (await session_cookie(page.context))["value"] != first


async def test_a_planted_lookalike_costs_one_sign_in_not_every_one(site, page, alice):
    """A look-alike of our cookie (as a sibling subdomain can plant on the parent
    domain) makes the browser anonymous; Clear-Site-Data then clears it, so the
    person signs in once more and is done, instead of being refused for good."""
    s = await site()
    await page.goto(f"{s.url}/_gateway/login")
    await sign_in(page)
    await page.context.add_cookies([{"name": "GATEWAY_SESSION", "value": "planted", "url": s.url}])
    answer = await page.goto(f"{s.url}/notes")
    assert page.url.startswith(f"{s.url}/_gateway/login?rd=")  # anonymous: no planted session
    first = answer.request.redirected_from  # the request for /notes, cookies and all
    assert "GATEWAY_SESSION=planted" in (await first.all_headers())["cookie"]
    assert "cookie" not in await answer.request.all_headers()  # the site's cookies are gone
    names = {c["name"] for c in await page.context.cookies()}
    assert "GATEWAY_SESSION" not in names  # cleared with the site's cookies
    await sign_in(page)
    assert page.url == f"{s.url}/notes"
    assert "The gateway says you are alice." in await page.locator("main").inner_text()
