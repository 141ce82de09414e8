"""Another site, opened in the same Chromium, cannot sign the person in or out.

The attacker's page lives on a second origin and auto-submits a form to the
gateway's sign-in or sign-out. Two such origins: another site altogether
(127.0.0.1 against a gateway at localhost: the browser sends no SameSite=Lax
cookie with it) and a same-site neighbour (another port on localhost: the
cookies do come along). The attacker even holds a valid token for the
victim's own CSRF cookie, so only the browser's `Sec-Fetch-Site` stands in
the way, and it must be enough: 403, no session made, none ended.
"""

from __future__ import annotations

import html
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from chromium import click_and_wait, replay, session_cookie, sign_in
from helpers import PASSWORD, create_user, metric, scrape

from gateway.web.forms import CSRF

ATTACK_PAGE = """<!doctype html><html><body>
<form method="post" action="{action}">{fields}</form>
<script>document.forms[0].submit()</script>
</body></html>"""


class Attacker:
    """A page on another origin that posts the form it is given as soon as it loads."""

    def __init__(self) -> None:
        self.forms: dict[str, tuple[str, dict[str, str]]] = {}
        self.server: TestServer | None = None

    async def page(self, request: web.Request) -> web.Response:
        action, fields = self.forms[request.match_info["name"]]
        inputs = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in fields.items()
        )
        return web.Response(
            text=ATTACK_PAGE.format(action=html.escape(action), fields=inputs),
            content_type="text/html",
        )

    def url(self, host: str, name: str, action: str, fields: dict[str, str]) -> str:
        self.forms[name] = (action, fields)
        assert self.server is not None
        return f"http://{host}:{self.server.port}/{name}"


@pytest.fixture
async def attacker() -> AsyncIterator[Attacker]:
    evil = Attacker()
    app = web.Application()
    app.router.add_get("/{name}", evil.page)
    evil.server = TestServer(app, host="127.0.0.1")
    await evil.server.start_server()
    yield evil
    await evil.server.close()


# (where the attacker's page is, what Chromium then says in Sec-Fetch-Site)
ORIGINS = [("127.0.0.1", "cross-site"), ("localhost", "same-site")]


async def victims_token(page, s) -> str:
    """A valid form token for the victim's own CSRF cookie: the attacker's best case."""
    nonce = (await session_cookie(page.context, "gateway_session_csrf"))["value"]
    return s.client.app[CSRF].token(nonce)


async def fetch_site_refusals(s) -> float:
    return metric(await scrape(s.client), "gateway_csrf_refused_total", kind="fetch-site")


async def land(page, url: str, s, path: str) -> int:
    """Open the attacker's page; return the status of the POST it makes to the gateway."""
    async with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.startswith(f"{s.url}{path}")
    ) as posted:
        await page.goto(url)
    response = await posted.value
    await page.wait_for_load_state()
    return response.status


@pytest.mark.parametrize(("evil_host", "fetch_site"), ORIGINS)
async def test_another_site_cannot_sign_the_victim_into_its_account(
    site, page, db, attacker, evil_host, fetch_site
):
    await create_user(db, "mallory")
    s = await site("localhost")
    await page.goto(f"{s.url}/_gateway/login")  # the victim's browser has its CSRF cookie
    fields = {
        "csrf_token": await victims_token(page, s),
        "username": "mallory",
        "password": PASSWORD,
        "rd": "/",
    }
    before = await fetch_site_refusals(s)
    url = attacker.url(evil_host, "login", f"{s.url}/_gateway/login", fields)

    assert await land(page, url, s, "/_gateway/login") == 403
    assert (
        "Your sign-in form expired or came from another site"
        in await page.locator("main").inner_text()
    )
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0
    assert [c for c in await page.context.cookies() if c["name"] == "gateway_session"] == []
    assert await fetch_site_refusals(s) - before == 1, fetch_site


@pytest.mark.parametrize(("evil_host", "fetch_site"), ORIGINS)
@pytest.mark.parametrize("everywhere", [False, True])
async def test_another_site_cannot_sign_the_victim_out(
    site, page, alice, db, attacker, evil_host, fetch_site, everywhere
):
    s = await site("localhost")
    await page.goto(f"{s.url}/_gateway/login")
    await sign_in(page)
    token = (await session_cookie(page.context))["value"]
    fields = {"csrf_token": await victims_token(page, s)}
    action = f"{s.url}/_gateway/logout" + ("?everywhere=1" if everywhere else "")
    before = await fetch_site_refusals(s)

    url = attacker.url(evil_host, "logout", action, fields)
    assert await land(page, url, s, "/_gateway/logout") == 403
    assert await page.get_by_role("heading", level=1).inner_text() == "Sign-out not confirmed"
    assert await db.fetchval("SELECT count(*) FROM sessions") == 1
    alive = await replay(f"{s.url}/_gateway/userinfo", f"gateway_session={token}")
    assert alive.status == 200
    assert await fetch_site_refusals(s) - before == 1, fetch_site

    # The person's own sign-out, from the gateway's page, still works.
    await page.goto(f"{s.url}/_gateway/logout")
    await click_and_wait(page, page.get_by_role("button", name="Sign out", exact=True))
    assert await page.get_by_role("heading", level=1).inner_text() == "You have been signed out"
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0
