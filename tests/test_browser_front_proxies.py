"""Sign-in, sign-out and "sign out of all devices" in Chromium behind the shipped
front-proxy examples: nginx (plain and with TLS and an https:// public_url),
Caddy and Traefik, each run from examples/ changed only in its addresses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest
from chromium import app_saw, click_and_wait, replay, session_cookie, sign_in
from front_proxy import Tls, caddy_in_front, nginx_in_front, traefik_in_front
from helpers import free_port


@dataclass
class Front:
    name: str
    host: str  # what the person types
    scheme: str
    tool: str  # the binary it runs (helpers.BINARIES)
    start: Callable[..., AbstractAsyncContextManager]  # (directory, port, gateway, app, host)
    # nginx's example cuts the gateway's cookies from what the app gets; Caddy's
    # and Traefik's cannot (README, "Traefik and Caddy").
    cuts_cookies: bool = False


FRONTS = [
    Front(
        "nginx",
        "localhost",
        "http",
        "nginx",
        lambda d, port, gw, app, host: nginx_in_front(d, port, gw, app),
        cuts_cookies=True,
    ),
    Front(
        "nginx-https",
        "localhost",
        "https",
        "nginx",
        lambda d, port, gw, app, host: nginx_in_front(d, port, gw, app, Tls.make(d)),
        cuts_cookies=True,
    ),
    Front(
        "caddy",
        "127.0.0.1",  # the Caddyfile's site address names one host
        "http",
        "caddy",
        lambda d, port, gw, app, host: caddy_in_front(d, port, gw, app),
    ),
    Front(
        "traefik",
        "localhost",
        "http",
        "traefik",
        lambda d, port, gw, app, host: traefik_in_front(d, port, gw, app, host=host),
    ),
]


@dataclass
class Fronted:
    url: str  # the front proxy's address: the public_url
    cookie: str  # the session cookie's name there
    cuts_cookies: bool


@pytest.fixture(
    params=[pytest.param(f, id=f.name, marks=pytest.mark.needs(f.tool)) for f in FRONTS]
)
async def fronted(
    request, tmp_path: Path, gateway, make_config, echo_server
) -> AsyncIterator[Fronted]:
    front: Front = request.param
    port = free_port()
    url = f"{front.scheme}://{front.host}:{port}"
    client = await gateway(make_config(server={"public_url": url}))
    name = "__Host-gateway_session" if front.scheme == "https" else "gateway_session"
    async with front.start(tmp_path, port, client.port, echo_server.port, front.host):
        yield Fronted(url, name, front.cuts_cookies)


async def test_sign_in_sign_out_and_everywhere_behind_the_front_proxy(fronted, new_context, alice):
    https = fronted.url.startswith("https:")
    laptop = await (await new_context(ignore_https_errors=https)).new_page()
    phone = await (await new_context(ignore_https_errors=https)).new_page()
    deep = f"{fronted.url}/reports/q3?tab=1&sort=desc"

    # Deep link, sign in, back to exactly that address; the app knows who it is.
    await laptop.goto(deep)
    assert await laptop.get_by_role("heading", level=1).inner_text() == "Sign in"
    assert (await sign_in(laptop)).status == 200
    assert laptop.url == deep
    seen = await app_saw(laptop)
    assert seen["x-remote-user"] == ["alice"]
    assert seen["x-remote-groups"] == ["staff"]
    if fronted.cuts_cookies:
        assert "gateway_session" not in " ".join(seen.get("cookie", []))
    cookie = await session_cookie(laptop.context, fronted.cookie)
    assert cookie["secure"] is https
    assert cookie["httpOnly"] is True
    copied = cookie["value"]

    # Sign out: the signed-out page, and the copied cookie is dead through the front.
    await laptop.goto(f"{fronted.url}/_gateway/logout")
    await click_and_wait(laptop, laptop.get_by_role("button", name="Sign out", exact=True))
    assert await laptop.get_by_role("heading", level=1).inner_text() == "You have been signed out"
    dead = await replay(
        f"{fronted.url}/_gateway/userinfo", f"{fronted.cookie}={copied}", verify_tls=not https
    )
    assert dead.status == 401

    # Sign out of all devices, from the phone, ends the laptop's new session too.
    for page in (laptop, phone):
        await page.goto(deep)
        await sign_in(page)
        assert page.url == deep
    await phone.goto(f"{fronted.url}/_gateway/logout")
    await click_and_wait(phone, phone.get_by_role("button", name="Sign out of all devices"))
    text = await phone.locator("main").inner_text()
    assert "Every session of your account has been ended on all devices." in text
    await laptop.reload()
    assert await laptop.get_by_role("heading", level=1).inner_text() == "Sign in"
