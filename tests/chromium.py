"""The browser layer: Debian's Chromium, driven by Playwright, one browser per test run.

Chromium is launched by path (`/usr/bin/chromium`, or GATEWAY_TEST_CHROMIUM);
`playwright install`, which downloads a browser of its own, is never run.
Each test gets a fresh context (its own cookies, cache and storage). Outside
CI a missing Chromium or Playwright skips the browser tests with one line;
under CI=true it fails them.

`look(page, name)` is how a page is checked for looks and access: a
screenshot at 1280 px and at 375 px (light) and 375 px (dark) under
.screenshots/, axe-core in both colour schemes (no serious or critical
violation), no horizontal scroll at 375 px, and no console error (a CSP
refusal is one).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from helpers import PASSWORD, REPO, free_port, require_binary, unavailable

SCREENSHOTS = Path(os.environ.get("GATEWAY_TEST_SCREENSHOTS") or REPO / ".screenshots")
# As root (CI, containers) Chromium needs --no-sandbox, which Playwright passes
# by default. The rest keep a headless run off the network it has no business on.
LAUNCH_ARGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
]
WIDE, NARROW = 1280, 375
TIMEOUT_MS = 10_000
SERIOUS = frozenset({"serious", "critical"})

# Console errors per page, collected from the moment the page opens.
_CONSOLE: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Any]:
    """The one browser of this test run."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("Playwright not installed: pip install -e '.[test]'")
    executable = require_binary("chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def new_context(chromium: Any) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """`ctx = await new_context(**options)`: a fresh browser profile, closed after the test."""
    made: list[Any] = []

    async def make(**options: Any) -> Any:
        options.setdefault("viewport", {"width": WIDE, "height": 800})
        context = await chromium.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        context.on("page", _watch_console)
        made.append(context)
        return context

    yield make
    for context in made:
        await context.close()


@pytest.fixture
async def page(new_context: Callable[..., Awaitable[Any]]) -> Any:
    """A page in a fresh context: the person at their own browser."""
    context = await new_context()
    return await context.new_page()


# What Chromium logs for every page whose own status is 4xx/5xx: not a fault of the page.
_DOCUMENT_STATUS = "Failed to load resource: the server responded with a status of"


def _watch_console(page: Any) -> None:
    errors = _CONSOLE.setdefault(page, [])
    documents: set[str] = set()

    def on_console(msg: Any) -> None:
        if msg.type != "error":
            return
        if msg.text.startswith(_DOCUMENT_STATUS) and msg.location.get("url") in documents:
            return
        errors.append(f"{msg.text} ({msg.location.get('url')})")

    def on_response(response: Any) -> None:
        if response.request.resource_type == "document":
            documents.add(response.url)

    page.on("response", on_response)
    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))


def console_errors(page: Any) -> list[str]:
    """Errors the page's console showed: CSP refusals, failed assets, script errors."""
    return list(_CONSOLE.get(page, []))


async def look(page: Any, name: str) -> None:
    """Screenshots, axe-core, no sideways scroll at 375 px, no console error.

    Leaves the page at its original viewport and colour scheme.
    """
    from axe_playwright_python.async_playwright import Axe

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    original = page.viewport_size
    axe = Axe()
    try:
        for scheme in ("light", "dark"):
            await _scheme(page, scheme)
            results = await axe.run(page)
            serious = [
                f"{v['id']} ({v['impact']}): {v['help']} at "
                + ", ".join(str(node["target"]) for node in v["nodes"][:3])
                for v in results.response["violations"]
                if v["impact"] in SERIOUS
            ]
            assert not serious, f"{name} ({scheme}): axe-core found\n" + "\n".join(serious)
        for width, scheme in ((WIDE, "light"), (NARROW, "light"), (NARROW, "dark")):
            await _scheme(page, scheme)
            await page.set_viewport_size({"width": width, "height": 800})
            suffix = f"{width}" if scheme == "light" else f"{width}-dark"
            await page.screenshot(path=SCREENSHOTS / f"{name}-{suffix}.png", full_page=True)
            if width == NARROW:
                overflow = await page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                assert overflow <= 0, f"{name}: scrolls sideways by {overflow}px at {NARROW}px"
    finally:
        await page.emulate_media(color_scheme="light")
        if original:
            await page.set_viewport_size(original)
    assert console_errors(page) == [], f"{name}: console errors"


async def _scheme(page: Any, scheme: str) -> None:
    """Switch colour scheme and let the colour transitions finish before anyone looks."""
    await page.emulate_media(color_scheme=scheme)
    await page.evaluate("Promise.all(document.getAnimations().map((a) => a.finished))")


# -- the gateway at an address a person types ------------------------------------


@dataclass
class Site:
    url: str  # the public_url: what the person types, without a trailing slash
    client: TestClient  # the gateway itself, for arranging and checking

    @property
    def port(self) -> int:
        return self.client.port  # type: ignore[return-value]


@pytest.fixture
def site(gateway, make_config) -> Callable[..., Awaitable[Site]]:
    """`s = await site(host="localhost", **config_sections)`: the gateway listening at
    http://HOST:PORT with that as its public_url."""

    async def start(host: str = "localhost", **sections: Any) -> Site:
        port = free_port()
        url = f"http://{host}:{port}"
        server = {"public_url": url, **sections.pop("server", {})}
        client = await gateway(make_config(server=server, **sections), port=port)
        return Site(url, client)

    return start


# -- what a person does -------------------------------------------------------------


async def sign_in(
    page: Any, username: str = "alice", password: str = PASSWORD, *, remember: bool = False
) -> Any:
    """On the sign-in page: type, tick, press Enter. Returns the answer to the POST."""
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    if remember:
        await page.get_by_label("Keep me signed in").check()
    async with page.expect_navigation() as navigation:
        await page.get_by_label("Password").press("Enter")
    return await navigation.value


async def click_and_wait(page: Any, locator: Any) -> Any:
    """Click something that navigates; returns the response the page ended on."""
    async with page.expect_navigation() as navigation:
        await locator.click()
    return await navigation.value


async def session_cookie(context: Any, name: str = "gateway_session") -> dict:
    cookies = [c for c in await context.cookies() if c["name"] == name]
    assert len(cookies) == 1, f"expected one {name} cookie, got {cookies}"
    return cookies[0]


async def replay(
    url: str, cookie: str, *, verify_tls: bool = True, **headers: str
) -> aiohttp.ClientResponse:
    """A plain HTTP client presenting a copied cookie: no browser, no jar.

    `verify_tls=False` accepts the test's own certificate."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        response = await http.get(
            url, headers={"Cookie": cookie, **headers}, allow_redirects=False, ssl=verify_tls
        )
        await response.read()
        return response


async def app_saw(page: Any) -> dict[str, list[str]]:
    """The headers the demo app lists on its page (what it received), names lower-cased."""
    pairs = await page.eval_on_selector_all(
        "dl.pairs .pair",
        "els => els.map(e => [e.querySelector('dt').textContent,"
        " e.querySelector('dd').textContent])",
    )
    seen: dict[str, list[str]] = {}
    for name, value in pairs:
        seen.setdefault(name.lower(), []).append(value)
    return seen


async def focused_id(page: Any) -> str:
    return await page.evaluate("document.activeElement && document.activeElement.id")
