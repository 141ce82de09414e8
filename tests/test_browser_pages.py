"""Every page the gateway shows, looked at in Chromium: screenshots, axe-core, phones.

Each test brings the page about the way a person would meet it, checks what
it says and where it leads on (no page is a dead end), then `look()`s at it:
screenshots at 1280 px and 375 px under .screenshots/, no serious or
critical axe-core violation in light or dark, no sideways scroll at 375 px,
no console error (a CSP refusal would be one).
"""

from __future__ import annotations

import pytest
from chromium import click_and_wait, look, sign_in
from helpers import create_user, metric, scrape
from upstreams import closed_port

from gateway.web.database import POOL

RULES = [
    {"path": "/public/", "policy": "public"},
    {"path": "/admin/", "policy": "deny"},
    {"path": "/finance/", "groups": ["finance"]},
]


async def heading(page) -> str:
    return await page.get_by_role("heading", level=1).inner_text()


async def ways_on(page) -> list[str]:
    """The labels of the page's links and buttons inside the card."""
    return [
        (await el.inner_text()).strip()
        for el in await page.locator("main a.button, main button").all()
    ]


async def test_sign_in_page(site, page):
    s = await site()
    answer = await page.goto(f"{s.url}/_gateway/login")
    assert answer.status == 200
    assert await heading(page) == "Sign in"
    icon = await page.get_attribute("link[rel=icon]", "href")
    assert icon.startswith("data:image/svg+xml,")
    await look(page, "sign-in")


async def test_sign_in_page_with_the_wrong_password(site, page, alice):
    s = await site()
    await page.goto(f"{s.url}/_gateway/login")
    assert (await sign_in(page, "alice", "wrong")).status == 401
    await look(page, "sign-in-wrong-password")


async def test_sign_in_page_when_the_form_expired(site, page, alice):
    s = await site()
    await page.goto(f"{s.url}/_gateway/login")
    await page.context.clear_cookies(name="gateway_session_csrf")  # as after a browser restart
    answer = await sign_in(page)
    assert answer.status == 403
    assert await page.get_by_role("alert").inner_text() == (
        "Your sign-in form expired or came from another site. Please try again."
    )
    # The page is a fresh form with a fresh cookie: trying again works.
    assert await page.get_by_label("Username").input_value() == ""
    await look(page, "sign-in-expired")
    assert (await sign_in(page)).status == 200


async def test_sign_in_page_when_throttled(site, page, alice):
    s = await site(login={"max_failures_per_user": 1})
    await page.goto(f"{s.url}/_gateway/login")
    await sign_in(page, "alice", "wrong")
    assert (await sign_in(page, "alice", "wrong")).status == 429
    await look(page, "sign-in-throttled")


async def test_sign_out_confirmation_and_signed_out_pages(site, page, alice):
    s = await site()
    await page.goto(f"{s.url}/_gateway/login")
    await sign_in(page)
    await page.goto(f"{s.url}/_gateway/logout")
    assert await heading(page) == "Sign out"
    assert await ways_on(page) == [
        "Sign out",
        "Sign out of all devices",
        "See your sessions",
    ]
    account = page.get_by_role("link", name="Your account")
    assert await account.get_attribute("href") == "/_gateway/account"
    await look(page, "sign-out")
    await click_and_wait(page, page.get_by_role("button", name="Sign out", exact=True))
    assert await heading(page) == "You have been signed out"
    assert await ways_on(page) == ["Sign in again"]
    await look(page, "signed-out")


async def test_not_signed_in_page(site, page):
    s = await site()
    await page.goto(f"{s.url}/_gateway/logout")
    assert await heading(page) == "You are not signed in"
    assert await ways_on(page) == ["Sign in"]
    await look(page, "not-signed-in")


async def test_sign_out_not_confirmed_page_leads_back_to_sign_out(site, page, alice):
    s = await site()
    await page.goto(f"{s.url}/_gateway/login")
    await sign_in(page)
    await page.goto(f"{s.url}/_gateway/logout")
    await page.context.clear_cookies(name="gateway_session_csrf")
    answer = await click_and_wait(page, page.get_by_role("button", name="Sign out", exact=True))
    assert answer.status == 403
    assert await heading(page) == "Sign-out not confirmed"
    assert await ways_on(page) == ["Back to sign-out"]
    await look(page, "sign-out-not-confirmed")
    await click_and_wait(page, page.get_by_role("link", name="Back to sign-out"))
    await click_and_wait(page, page.get_by_role("button", name="Sign out", exact=True))
    assert await heading(page) == "You have been signed out"


async def test_denied_page_for_a_visitor_does_not_blame_an_account(site, page):
    s = await site(rule=RULES)
    answer = await page.goto(f"{s.url}/admin/settings")
    assert answer.status == 403
    assert await heading(page) == "Access denied"
    text = await page.locator("main").inner_text()
    assert "account" not in text.lower()
    assert "This address is closed: the gateway does not let anyone open it." in text
    assert await ways_on(page) == ["Go to the start page"]
    await look(page, "403-closed")


async def test_denied_page_for_a_signed_in_person_offers_another_account(site, page, db, alice):
    await create_user(db, "fiona", groups=("finance",), display_name="Fiona Finance")
    s = await site(rule=RULES)
    await page.goto(f"{s.url}/finance/q3?view=all")
    await sign_in(page, "alice")
    assert page.url == f"{s.url}/finance/q3?view=all"
    assert await heading(page) == "Access denied"
    text = await page.locator("main").inner_text()
    assert "Your account is not allowed to open this page." in text
    assert "You are signed in as Alice (alice). Your account" in text
    assert await ways_on(page) == ["Go to the start page", "Sign in as someone else", "Sign out"]
    account = page.get_by_role("link", name="Your account")
    assert await account.get_attribute("href") == "/_gateway/account"
    await look(page, "403-not-allowed")

    # Switch: signed out, straight to the sign-in form, and back here as the other person.
    await click_and_wait(page, page.get_by_role("button", name="Sign in as someone else"))
    assert page.url.startswith(f"{s.url}/_gateway/login?rd=")
    assert await heading(page) == "Sign in"
    await sign_in(page, "fiona")
    assert page.url == f"{s.url}/finance/q3?view=all"
    assert "The gateway says you are fiona." in await page.locator("main").inner_text()
    sessions = await db.fetch("SELECT u.username FROM sessions s JOIN users u ON u.id = s.user_id")
    assert [r["username"] for r in sessions] == ["fiona"]


@pytest.mark.parametrize(
    ("path", "name"), [("/_gateway/nothing-here", "404-gateway"), ("/elsewhere", "404-no-app")]
)
async def test_not_found_pages(site, page, path, name):
    # Only /app/ has an app behind it, so /elsewhere matches no upstream.
    s = await site(upstream=[{"name": "app", "url": "http://127.0.0.1:9", "path": "/app/"}])
    answer = await page.goto(f"{s.url}{path}")
    assert answer.status == 404
    assert await heading(page) == "Not found"
    assert await ways_on(page) == ["Go to the start page"]
    await look(page, name)


async def test_bad_gateway_page_offers_to_try_again(site, page, alice):
    s = await site(upstream=[{"name": "app", "url": f"http://127.0.0.1:{closed_port()}"}])
    await page.goto(f"{s.url}/_gateway/login?rd=/reports")
    answer = await sign_in(page)
    assert answer.status == 502
    assert page.url == f"{s.url}/reports"
    assert await heading(page) == "Bad gateway"
    text = await page.locator("main").inner_text()
    assert "127.0.0.1" not in text
    assert await ways_on(page) == ["Try again", "Go to the start page"]
    assert await page.get_by_role("link", name="Try again").get_attribute("href") == "/reports"
    await look(page, "502")


async def test_gateway_timeout_page(site, echo_url, page, alice):
    s = await site(upstream=[{"name": "slow", "url": echo_url, "timeout": "1s"}])
    await page.goto(f"{s.url}/_gateway/login?rd=/_echo/slow%3Fseconds%3D5")
    answer = await sign_in(page)
    assert answer.status == 504
    assert await heading(page) == "Gateway timeout"
    assert await ways_on(page) == ["Try again", "Go to the start page"]
    assert (
        await page.get_by_role("link", name="Try again").get_attribute("href")
        == "/_echo/slow?seconds=5"
    )
    await look(page, "504")


async def test_unavailable_page_when_the_database_is_gone(site, page, alice):
    s = await site()
    await page.goto(f"{s.url}/_gateway/login?rd=/reports")
    await s.client.app[POOL].close()  # every database step now fails, as in an outage
    answer = await sign_in(page)
    assert answer.status == 503
    assert await heading(page) == "Temporarily unavailable"
    assert await ways_on(page) == ["Try again", "Go to the start page"]
    # Back to the sign-in form, with the address the person was going to.
    assert (
        await page.get_by_role("link", name="Try again").get_attribute("href")
        == "/_gateway/login?rd=/reports"
    )
    await look(page, "503")


@pytest.mark.parametrize("signed_in", [True, False])
async def test_demo_app_page(site, page, alice, signed_in):
    s = await site(rule=RULES)
    if signed_in:
        await page.goto(f"{s.url}/public/welcome")
        await click_and_wait(page, page.get_by_role("link", name="Sign in"))
        await sign_in(page)
        assert page.url == f"{s.url}/public/welcome"
        assert await ways_on(page) == ["Sign out"]
    else:
        await page.goto(f"{s.url}/public/welcome")
        text = await page.locator("main").inner_text()
        assert "You are not signed in." in text
        assert await ways_on(page) == ["Sign in"]
    await look(page, "demo-app-signed-in" if signed_in else "demo-app-visitor")


async def test_bad_request_page(site, page):
    s = await site()
    answer = await page.goto(f"{s.url}/files/a%00b")  # a NUL in the path: no app may get it
    assert answer.status == 400
    assert await heading(page) == "Bad request"
    assert await ways_on(page) == ["Go to the start page"]
    await look(page, "400")


async def test_too_large_page(site, page, alice):
    s = await site()
    await page.goto(f"{s.url}/_gateway/login")
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill("x" * 70_000)  # the form is over 64 KiB
    async with page.expect_navigation() as navigation:
        await page.get_by_label("Password").press("Enter")
    assert (await navigation.value).status == 413
    assert await heading(page) == "Sign-in form too large"
    assert await ways_on(page) == ["Back to sign-in"]
    await look(page, "413")


async def test_gateway_pages_never_ask_the_app_for_a_favicon(site, page, alice):
    """Without the inline icon, Chromium asks /favicon.ico of every page, and the
    gateway proxies it to the app. Counted where it lands: the proxy route."""
    s = await site()

    async def proxied() -> float:
        return metric(await scrape(s.client), "gateway_requests_total", route="proxy")

    before = await proxied()
    await page.goto(f"{s.url}/_gateway/login")
    await sign_in(page, "alice", "wrong")
    await page.goto(f"{s.url}/_gateway/logout")
    await page.goto(f"{s.url}/_gateway/nothing-here")
    await page.wait_for_load_state("networkidle")  # a favicon request follows the load event
    assert await proxied() == before
