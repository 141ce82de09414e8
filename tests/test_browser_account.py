"""The account pages in a real Chromium: who you are, your sessions, your password.

Each test does what the person does (sign in on several browsers, click, type,
press Tab and Enter), asserts what they see (headings, messages, devices,
focus) and where they end up, and `look()`s at each page: screenshots at
1280 px and 375 px under .screenshots/, axe-core clean in light and dark, no
sideways scroll at 375 px, no console error.

The gateway's clock is the tests' FakeClock (1 Jan 2026, 09:00 UTC), so the
times on the pages are known. Each browser sends a User-Agent of its own, so
the sessions page names each device differently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chromium import click_and_wait, focused_id, look, replay, session_cookie, sign_in
from helpers import PASSWORD, create_user
from playwright.async_api import expect

# What each browser says it is, and what the sessions page calls it (ua-parser).
LINUX_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)
WINDOWS_FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
MAC_CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
LINUX = "Chrome 126 on Linux"
IPHONE = "Mobile Safari 17 on iOS 17.1 (iPhone)"
WINDOWS = "Firefox 128 on Windows 10"
MAC = "Chrome 126 on Mac OS X 10.15"

PHONE = {
    "user_agent": IPHONE_SAFARI,
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 3,
    "is_mobile": True,
    "has_touch": True,
}

NEW_PASSWORD = "plum kettle orbit 1987"

ACME_LOGO = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32" width="32" height="32">
  <rect width="32" height="32" rx="7" fill="#0b7285"/>
  <path d="M8 24 16 8l8 16z" fill="#ffffff"/>
</svg>
"""
ACME = {"name": "ACME Portal", "accent_color": "#0b7285", "footer": "Help desk: ext. 1234"}

# What the Tab key can reach, in document order (the pages have no tabindex).
# The per-session "Sign out" buttons (not "Sign out all other sessions", not the nav link).
PER_SESSION = "form.session-action button"
FOCUSABLE = "a[href], button:not([disabled]), input:not([type=hidden]):not([hidden])"


# -- a person at a browser ------------------------------------------------------------


async def signed_in(
    new_context, s, username: str = "alice", *, remember: bool = False, **options: Any
) -> Any:
    """A new browser (its own profile), signed in on the sign-in page: its page."""
    page = await (await new_context(**options)).new_page()
    await page.goto(f"{s.url}/_gateway/login")
    assert (await sign_in(page, username, remember=remember)).status == 200
    return page


async def heading(page) -> str:
    return await page.get_by_role("heading", level=1).inner_text()


async def main_text(page) -> str:
    return await page.locator("main").inner_text()


async def pairs(page, section: str) -> dict[str, str]:
    """The name/value list under the heading `section`, as the person reads it."""
    found = {}
    for row in await page.locator(f"dl[aria-labelledby={section}] .pair").all():
        found[await row.locator("dt").inner_text()] = await row.locator("dd").inner_text()
    return found


async def devices(page) -> list[str]:
    """The device headings of the sessions list, top to bottom."""
    sessions = page.get_by_role("list", name="Signed-in sessions")
    return await sessions.get_by_role("heading", level=2).all_inner_texts()


def session_of(page, device: str):
    """The list item of the session on `device` (named by its heading)."""
    return page.get_by_role("listitem", name=device, exact=True)


async def facts(item) -> dict[str, str]:
    found = {}
    for fact in await item.locator(".fact").all():
        found[await fact.locator("dt").inner_text()] = await fact.locator("dd").inner_text()
    return found


async def current_tab(page) -> str:
    nav = page.get_by_role("navigation", name="Your account")
    return await nav.locator("[aria-current=page]").inner_text()


async def is_signed_out(page, s) -> bool:
    """The person opens an app page: true if the gateway asks them to sign in."""
    await page.goto(f"{s.url}/app")
    return page.url.startswith(f"{s.url}/_gateway/login?rd=") and await heading(page) == "Sign in"


async def app_greets(page, s) -> str:
    """The person opens an app page: the echo app's greeting ('' when not shown)."""
    await page.goto(f"{s.url}/app")
    text = await main_text(page)
    return next((line for line in text.splitlines() if "The gateway says" in line), "")


async def settled(page) -> None:
    """Let colour transitions (a focus ring) finish before reading styles."""
    await page.evaluate("Promise.all(document.getAnimations().map((a) => a.finished))")


async def tab_through(page) -> list[dict]:
    """Press Tab from the top of the page until focus leaves it.

    Returns, per stop, the focused element's place among the page's focusable
    elements (document order), its label, whether :focus-visible matched, and
    its focus style. Fails if Tab cycles inside the page (a trap).
    """
    total = await page.locator(FOCUSABLE).count()
    stops = []
    for _ in range(total + 1):
        await page.keyboard.press("Tab")
        stop = await page.evaluate(
            """(selector) => {
              const el = document.activeElement;
              if (!el || el === document.body) return null;
              const style = getComputedStyle(el);
              return {
                index: Array.from(document.querySelectorAll(selector)).indexOf(el),
                label: (el.innerText || el.id || el.name || "").trim(),
                visible: el.matches(":focus-visible"),
                outline: style.outlineStyle,
                outlineWidth: parseFloat(style.outlineWidth) || 0,
                ring: style.boxShadow,
              };
            }""",
            FOCUSABLE,
        )
        if stop is None:
            return stops
        stops.append(stop)
    raise AssertionError(f"Tab never left the page: {[s['label'] for s in stops]}")


def assert_outlined(stops: list[dict]) -> None:
    for stop in stops:
        assert stop["visible"], f"{stop['label']!r}: not :focus-visible after Tab"
        assert stop["outline"] != "none" and stop["outlineWidth"] >= 1, (
            f"{stop['label']!r}: no focus outline ({stop['outline']} {stop['outlineWidth']}px)"
        )


# -- 1. each page, looked at --------------------------------------------------------------


async def test_account_page_says_who_you_are_and_about_this_session(site, page, alice):
    s = await site()
    await page.goto(f"{s.url}/_gateway/login?rd=/_gateway/account")
    await sign_in(page)
    assert page.url == f"{s.url}/_gateway/account"
    assert await page.title() == "Your account · Gateway"
    assert await heading(page) == "Your account"
    assert "You are signed in as Alice." in await main_text(page)
    assert await current_tab(page) == "Account"
    assert await pairs(page, "who") == {
        "Username": "alice",
        "Name": "Alice",
        "Email": "alice@example.com",
        "Groups": "staff",
    }
    assert await pairs(page, "this-session") == {
        "Signed in": "1 Jan 2026, 09:00 UTC (just now)",
        "Ends": "1 Jan 2026, 10:00 UTC (in 1 hour), or after 60 minutes without activity",
        "Keep me signed in": "no",
    }
    assert await page.locator("footer").inner_text() == "Protected by Gateway"
    await look(page, "account")

    await click_and_wait(page, page.get_by_role("link", name="See your sessions and devices"))
    assert page.url == f"{s.url}/_gateway/sessions"
    await page.go_back()
    await click_and_wait(page, page.get_by_role("link", name="Change your password"))
    assert page.url == f"{s.url}/_gateway/password"


async def test_account_page_of_a_kept_session_ends_in_30_days(site, new_context, alice):
    s = await site()
    page = await signed_in(new_context, s, remember=True)
    await page.goto(f"{s.url}/_gateway/account")
    assert await pairs(page, "this-session") == {
        "Signed in": "1 Jan 2026, 09:00 UTC (just now)",
        "Ends": "31 Jan 2026, 09:00 UTC (in 30 days)",
        "Keep me signed in": "yes",
    }


async def test_sessions_page_lists_every_device_and_signs_one_out(site, new_context, alice):
    s = await site()
    phone = await signed_in(new_context, s, **PHONE)
    kept = await signed_in(new_context, s, remember=True, user_agent=WINDOWS_FIREFOX)
    page = await signed_in(new_context, s, user_agent=LINUX_CHROME)

    await page.goto(f"{s.url}/_gateway/sessions")
    assert await heading(page) == "Your sessions"
    assert await current_tab(page) == "Sessions"
    shown = await devices(page)
    assert shown[0] == LINUX  # this one first
    assert sorted(shown[1:]) == sorted([IPHONE, WINDOWS])
    this = session_of(page, LINUX)
    assert await this.locator(".badge").inner_text() == "This device"
    assert await this.get_by_role("button").count() == 0  # this one ends by signing out
    assert await facts(this) == {
        "IP address": "127.0.0.1",
        "Signed in": "1 Jan 2026, 09:00 UTC",
        "Last active (approximate)": "now",
        "Keep me signed in": "no",
        "Ends": "1 Jan 2026, 10:00 UTC",
    }
    assert await facts(session_of(page, WINDOWS)) == {
        "IP address": "127.0.0.1",
        "Signed in": "1 Jan 2026, 09:00 UTC",
        "Last active (approximate)": "just now",
        "Keep me signed in": "yes",
        "Ends": "31 Jan 2026, 09:00 UTC",
    }
    assert (await facts(session_of(page, IPHONE)))["Keep me signed in"] == "no"
    assert await session_of(page, IPHONE).locator(".badge").count() == 0
    assert await page.locator(PER_SESSION).count() == 2
    await expect(page.get_by_role("button", name="Sign out all other sessions")).to_be_visible()
    await expect(page.get_by_role("button", name="Sign out everywhere")).to_be_visible()
    await expect(page.get_by_role("status")).to_have_count(0)
    await look(page, "sessions")

    await click_and_wait(page, session_of(page, IPHONE).get_by_role("button", name="Sign out"))
    assert page.url == f"{s.url}/_gateway/sessions?ended=1"
    assert await page.get_by_role("status").inner_text() == "1 session was signed out."
    assert await devices(page) == [LINUX, WINDOWS]
    await look(page, "sessions-signed-out-one")

    assert await is_signed_out(phone, s)
    assert await app_greets(kept, s) == "The gateway says you are alice."
    assert await app_greets(page, s) == "The gateway says you are alice."


async def test_password_page(site, page, alice):
    s = await site()
    await page.goto(f"{s.url}/_gateway/login?rd=/_gateway/password")
    await sign_in(page)
    assert await page.title() == "Change your password · Gateway"
    assert await heading(page) == "Change your password"
    assert await current_tab(page) == "Password"
    assert "Changing it signs out every other session of your account." in await main_text(page)
    await expect(page.locator("#current_password")).to_be_focused()
    await expect(page.get_by_label("New password", exact=True)).to_have_accessible_description(
        "At least 10 characters. Not your username, and not one of the most common passwords."
    )
    await expect(page.get_by_role("alert")).to_have_count(0)
    await look(page, "password")


async def fill_password_form(page, current: str, new: str, again: str | None = None) -> Any:
    await page.get_by_label("Current password").fill(current)
    await page.get_by_label("New password", exact=True).fill(new)
    await page.get_by_label("New password again").fill(new if again is None else again)
    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name="Change password").click()
    return await navigation.value


async def test_password_page_with_the_wrong_current_password(site, page, alice):
    s = await site()
    await page.goto(f"{s.url}/_gateway/login?rd=/_gateway/password")
    await sign_in(page)
    answer = await fill_password_form(page, "not my password", NEW_PASSWORD)
    assert answer.status == 401
    assert await heading(page) == "Change your password"
    assert await page.get_by_role("alert").inner_text() == (
        "Your current password is not correct. Nothing was changed."
    )
    # Nothing typed is sent back; the person starts again at the top.
    for label in ("Current password", "New password", "New password again"):
        assert await page.get_by_label(label, exact=True).input_value() == ""
    await expect(page.locator("#current_password")).to_be_focused()
    await look(page, "password-wrong-current")
    assert "The gateway says you are alice." in await app_greets(page, s)  # still signed in


async def test_password_page_refuses_a_common_password(site, page, alice):
    s = await site()
    await page.goto(f"{s.url}/_gateway/login?rd=/_gateway/password")
    await sign_in(page)
    answer = await fill_password_form(page, PASSWORD, "Password123")
    assert answer.status == 400
    assert await page.get_by_role("alert").inner_text() == (
        "This password is one of the most common ones, which attackers try first. "
        "Choose another. Nothing was changed."
    )
    await look(page, "password-too-common")


async def test_password_page_when_the_new_passwords_differ(site, page, alice):
    s = await site()
    await page.goto(f"{s.url}/_gateway/login?rd=/_gateway/password")
    await sign_in(page)
    answer = await fill_password_form(page, PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "!")
    assert answer.status == 400
    assert await page.get_by_role("alert").inner_text() == (
        "The new passwords do not match. Nothing was changed."
    )


async def test_password_changed_page(site, page, alice):
    s = await site()
    await page.goto(f"{s.url}/_gateway/login?rd=/_gateway/password")
    await sign_in(page)
    answer = await fill_password_form(page, PASSWORD, NEW_PASSWORD)
    assert answer.status == 200
    assert await page.title() == "Password changed · Gateway"
    assert await heading(page) == "Your password has been changed"
    text = await main_text(page)
    assert "You had no other sessions to sign out." in text
    assert "the old session cookie no longer works anywhere" in text
    assert await current_tab(page) == "Password"
    await look(page, "password-changed")
    await click_and_wait(page, page.get_by_role("link", name="Back to your account"))
    assert await heading(page) == "Your account"


def acme_branding(tmp_path: Path) -> dict:
    logo = tmp_path / "acme.svg"
    logo.write_text(ACME_LOGO)
    return {**ACME, "logo": str(logo)}


async def test_branded_sign_in_page(site, page, alice, tmp_path: Path):
    s = await site(branding=acme_branding(tmp_path))
    await page.goto(f"{s.url}/_gateway/account")
    assert await heading(page) == "Sign in"
    assert await page.title() == "Sign in · ACME Portal"
    await assert_branded(page)
    button = page.get_by_role("button", name="Sign in")
    assert await button.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(11, 114, 133)"
    await look(page, "sign-in-branded")
    await sign_in(page)
    assert page.url == f"{s.url}/_gateway/account"


async def test_branded_account_page(site, page, alice, tmp_path: Path):
    s = await site(branding=acme_branding(tmp_path))
    await page.goto(f"{s.url}/_gateway/login?rd=/_gateway/account")
    await sign_in(page)
    assert await page.title() == "Your account · ACME Portal"
    await assert_branded(page)
    tab = page.get_by_role("navigation", name="Your account").locator("[aria-current=page]")
    assert await tab.evaluate("t => getComputedStyle(t).color") == "rgb(11, 114, 133)"
    await look(page, "account-branded")


async def assert_branded(page) -> None:
    """The header shows the operator's logo (loaded) and name; the footer their line."""
    header = page.locator("main header.brand")
    img = header.locator("img")  # alt="": presentational, so not an "img" role
    assert await img.get_attribute("src") == "/_gateway/branding/logo"
    assert await img.get_attribute("alt") == ""  # the name beside it says it
    assert await img.evaluate("i => i.complete && i.naturalWidth > 0")
    assert await img.evaluate("i => i.getBoundingClientRect().height") == 32
    assert await header.locator("svg.brand-mark").count() == 0
    assert await header.inner_text() == "ACME Portal"
    assert await page.locator("footer").inner_text() == "Help desk: ext. 1234"


# -- 2. not signed in -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "title"),
    [
        ("account", "Your account"),
        ("sessions", "Your sessions"),
        ("password", "Change your password"),
    ],
)
async def test_a_visitor_signs_in_and_lands_back_on_the_account_page(
    site, page, alice, path, title
):
    s = await site()
    await page.goto(f"{s.url}/_gateway/{path}")
    assert page.url == f"{s.url}/_gateway/login?rd=/_gateway/{path}"
    assert await heading(page) == "Sign in"
    await expect(page.get_by_label("Username")).to_be_focused()
    await sign_in(page)
    assert page.url == f"{s.url}/_gateway/{path}"
    assert await heading(page) == title


# -- 3. one person, several devices; and someone else ------------------------------------


async def test_signing_out_another_device_from_the_sessions_page(site, new_context, alice, db):
    await create_user(db, "bob")
    s = await site()
    bob = await signed_in(new_context, s, "bob", user_agent=MAC_CHROME)
    a = await signed_in(new_context, s, user_agent=WINDOWS_FIREFOX)
    b = await signed_in(new_context, s, user_agent=LINUX_CHROME)

    # One at a time: B signs A out.
    await b.goto(f"{s.url}/_gateway/sessions")
    assert await devices(b) == [LINUX, WINDOWS]
    await click_and_wait(b, session_of(b, WINDOWS).get_by_role("button", name="Sign out"))
    assert await b.get_by_role("status").inner_text() == "1 session was signed out."
    assert await devices(b) == [LINUX]
    # With no other session left, only "everywhere" remains.
    await expect(b.get_by_role("button", name="Sign out all other sessions")).to_have_count(0)
    assert await is_signed_out(a, s)
    assert await app_greets(b, s) == "The gateway says you are alice."
    assert await app_greets(bob, s) == "The gateway says you are bob."

    # All others: B ends A (signed in again) and C at once.
    await a.goto(f"{s.url}/_gateway/login")
    await sign_in(a)
    c = await signed_in(new_context, s, **PHONE)
    await b.goto(f"{s.url}/_gateway/sessions")
    assert sorted(await devices(b)) == sorted([LINUX, WINDOWS, IPHONE])
    await click_and_wait(b, b.get_by_role("button", name="Sign out all other sessions"))
    assert b.url == f"{s.url}/_gateway/sessions?ended=2"
    assert await b.get_by_role("status").inner_text() == "2 sessions were signed out."
    assert await devices(b) == [LINUX]
    assert await is_signed_out(a, s)
    assert await is_signed_out(c, s)
    assert await app_greets(b, s) == "The gateway says you are alice."
    assert await app_greets(bob, s) == "The gateway says you are bob."

    # Everywhere: B ends A (signed in once more) and itself.
    await a.goto(f"{s.url}/_gateway/login")
    await sign_in(a)
    await b.goto(f"{s.url}/_gateway/sessions")
    await click_and_wait(b, b.get_by_role("button", name="Sign out everywhere"))
    assert b.url == f"{s.url}/_gateway/logout?everywhere=1"
    assert await heading(b) == "You have been signed out"
    text = await main_text(b)
    assert "Every session of your account has been ended on all devices." in text
    assert [k for k in await b.context.cookies() if k["name"] == "gateway_session"] == []
    assert await is_signed_out(a, s)
    assert await is_signed_out(b, s)

    # Bob was never touched, and his page never showed Alice's devices.
    assert await app_greets(bob, s) == "The gateway says you are bob."
    await bob.goto(f"{s.url}/_gateway/sessions")
    assert await devices(bob) == [MAC]
    assert await session_of(bob, MAC).locator(".badge").inner_text() == "This device"
    await expect(bob.get_by_role("button", name="Sign out all other sessions")).to_have_count(0)


async def test_someone_elses_sessions_never_show(site, new_context, alice, db):
    await create_user(db, "bob")
    s = await site()
    await signed_in(new_context, s, user_agent=WINDOWS_FIREFOX)
    await signed_in(new_context, s, **PHONE)
    bob = await signed_in(new_context, s, "bob", user_agent=MAC_CHROME)
    await bob.goto(f"{s.url}/_gateway/sessions")
    assert await devices(bob) == [MAC]
    text = await main_text(bob)
    assert WINDOWS not in text and IPHONE not in text
    assert await bob.locator(PER_SESSION).count() == 0
    await bob.goto(f"{s.url}/_gateway/account")
    assert (await pairs(bob, "who"))["Username"] == "bob"


# -- 4. changing the password, keyboard only -------------------------------------------


async def test_changing_the_password_with_the_keyboard_ends_every_other_session(
    site, new_context, alice
):
    s = await site()
    other = await signed_in(new_context, s, **PHONE)
    page = await signed_in(new_context, s, user_agent=LINUX_CHROME)
    before = (await session_cookie(page.context))["value"]

    await page.goto(f"{s.url}/_gateway/password")
    keyboard = page.keyboard
    # autofocus: the first field (applied at a rendering step after load, hence expect)
    await expect(page.locator("#current_password")).to_be_focused()
    await keyboard.type(PASSWORD)
    await keyboard.press("Tab")
    assert await focused_id(page) == "new_password"
    # A field shows focus with a ring (the accent border and a shadow), not an outline.
    field = page.locator("#new_password")
    await settled(page)
    assert await field.evaluate("e => getComputedStyle(e).boxShadow") != "none"
    assert await field.evaluate("e => getComputedStyle(e).borderColor") == "rgb(59, 79, 216)"
    await keyboard.type(NEW_PASSWORD)
    await keyboard.press("Tab")
    assert await focused_id(page) == "confirm_password"
    await keyboard.type(NEW_PASSWORD)
    async with page.expect_navigation() as navigation:
        await keyboard.press("Enter")
    assert (await navigation.value).status == 200

    assert await heading(page) == "Your password has been changed"
    assert "1 other session was signed out." in await main_text(page)
    after = (await session_cookie(page.context))["value"]
    assert after != before
    userinfo = f"{s.url}/_gateway/userinfo"
    assert (await replay(userinfo, f"gateway_session={before}")).status == 401
    assert (await replay(userinfo, f"gateway_session={after}")).status == 200
    assert await is_signed_out(other, s)
    assert await app_greets(page, s) == "The gateway says you are alice."

    # The old password no longer signs in; the new one does.
    assert (await sign_in(other, "alice", PASSWORD)).status == 401
    assert await other.get_by_role("alert").inner_text() == "Incorrect username or password."
    assert (await sign_in(other, "alice", NEW_PASSWORD)).status == 200
    assert other.url == f"{s.url}/app"
    assert await app_greets(other, s) == "The gateway says you are alice."


# -- 5. keyboard and screen reader --------------------------------------------------------


async def test_sessions_page_for_keyboard_and_screen_reader(site, new_context, alice):
    s = await site()
    await signed_in(new_context, s, **PHONE)
    await signed_in(new_context, s, remember=True, user_agent=WINDOWS_FIREFOX)
    page = await signed_in(new_context, s, user_agent=LINUX_CHROME)
    await page.goto(f"{s.url}/_gateway/sessions")

    # The tabs: one landmark, named, saying which page this is.
    nav = page.get_by_role("navigation", name="Your account")
    await expect(nav).to_have_count(1)
    assert await nav.get_by_role("link").all_inner_texts() == [
        "Account",
        "Sessions",
        "Password",
        "Sign out",
    ]
    await expect(nav.locator("[aria-current]")).to_have_count(1)
    await expect(nav.get_by_role("link", name="Sessions")).to_have_attribute("aria-current", "page")

    # Each "Sign out" is named by the device it signs out (the visible label first, as
    # WCAG 2.5.3 asks): a screen reader's list of buttons tells them apart.
    buttons = page.locator(PER_SESSION)
    assert await buttons.count() == 2
    for device in (IPHONE, WINDOWS):
        button = session_of(page, device).get_by_role("button", name=f"Sign out {device}")
        await expect(button).to_have_accessible_name(f"Sign out {device}")
        await expect(button).to_have_text("Sign out")
    # The list item a screen reader enters is named by its device too.
    await expect(session_of(page, LINUX)).to_have_count(1)

    # Tab walks the tabs and buttons in document order, each visibly outlined, then leaves.
    stops = await tab_through(page)
    assert [stop["index"] for stop in stops] == list(range(await page.locator(FOCUSABLE).count()))
    assert [stop["label"] for stop in stops] == [
        "Account",
        "Sessions",
        "Password",
        "Sign out",
        "Sign out",
        "Sign out",
        "Sign out all other sessions",
        "Sign out everywhere",
    ]
    assert_outlined(stops)

    # Shift+Tab goes back the same way; Enter on a focused "Sign out" does it.
    for _ in range(3):
        await page.keyboard.press("Shift+Tab")
    assert await page.evaluate("document.activeElement.innerText") == "Sign out"
    label = await page.evaluate("document.activeElement.getAttribute('aria-label')")
    device = label.removeprefix("Sign out ")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert await page.get_by_role("status").inner_text() == "1 session was signed out."
    assert device not in await devices(page)


async def test_account_page_for_the_keyboard(site, page, alice):
    s = await site()
    await page.goto(f"{s.url}/_gateway/login?rd=/_gateway/account")
    await sign_in(page)
    stops = await tab_through(page)
    assert [stop["label"] for stop in stops] == [
        "Account",
        "Sessions",
        "Password",
        "Sign out",
        "See your sessions and devices",
        "Change your password",
    ]
    assert [stop["index"] for stop in stops] == list(range(6))
    assert_outlined(stops)


# -- 6. ways to the account page --------------------------------------------------------


async def test_sign_out_page_leads_to_the_account_page(site, page, alice):
    s = await site()
    await page.goto(f"{s.url}/_gateway/login")
    await sign_in(page)
    await page.goto(f"{s.url}/_gateway/logout")
    assert await heading(page) == "Sign out"
    await click_and_wait(page, page.get_by_role("link", name="Your account"))
    assert page.url == f"{s.url}/_gateway/account"
    assert await heading(page) == "Your account"
    await page.go_back()
    await click_and_wait(page, page.get_by_role("link", name="See your sessions"))
    assert page.url == f"{s.url}/_gateway/sessions"


async def test_denied_page_leads_a_signed_in_person_to_the_account_page(site, page, alice):
    s = await site(rule=[{"path": "/finance/", "groups": ["finance"]}])
    await page.goto(f"{s.url}/finance/q3")
    await sign_in(page)
    assert await heading(page) == "Access denied"
    await click_and_wait(page, page.get_by_role("link", name="Your account"))
    assert page.url == f"{s.url}/_gateway/account"
    assert (await pairs(page, "who"))["Groups"] == "staff"
