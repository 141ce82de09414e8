"""A real Caddy 2 running the shipped examples/caddy/Caddyfile in front of the gateway.

The Caddyfile is the one operators copy, changed only in its three addresses
(the site becomes plain http on a free port, so no ACME). A global options
block turns the admin endpoint off (it would otherwise bind the fixed port
2019), and HOME/XDG_* point into the test's tmp dir, so Caddy writes nothing
outside it. Skipped with a hint when caddy is not installed; required in CI.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from front_proxy import (
    DENIED_SPELLINGS,
    EXAMPLES,
    SPOOFS,
    Stack,
    assert_no_routing_lies,
    browser,
    caddy_in_front,
    hidden,
    identity_seen,
    login_through,
    session_cookie,
)
from helpers import PASSWORD, free_port
from upstreams import raw_request
from yarl import URL

from gateway.header_names import ROUTING

pytestmark = pytest.mark.needs("caddy")

RULES = [
    {"path": "/public/", "policy": "public"},
    {"path": "/admin/", "policy": "deny"},
]


@pytest.fixture
async def stack(tmp_path: Path, gateway, make_config, echo_server) -> AsyncIterator[Stack]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # trusted_proxies stays the default (127.0.0.1/32, ::1/128): the front proxy's address.
    client = await gateway(make_config(server={"public_url": base}, rule=RULES))
    async with caddy_in_front(tmp_path, port, client.port, echo_server.port) as log:
        yield Stack(base, port, log)


async def signed_in_token(stack: Stack) -> str:
    async with browser() as http:
        await login_through(http, stack.base)
        return session_cookie(http)


async def test_full_browser_flow_through_caddy(stack, alice):
    target = "/dashboard?x=1&y=2"
    original = stack.base + target
    async with browser() as http:
        # 1. anonymous -> 302 to the login page; rd is the full original URL, port included
        first = await http.get(original, headers={"Accept": "text/html"}, allow_redirects=False)
        assert first.status == 302, await first.text()
        assert first.headers["Location"] == f"/_gateway/login?rd={original}"
        # 2. the login page (through Caddy) carries that rd, query and all
        page = await http.get(URL(stack.base).join(URL(first.headers["Location"])))
        assert page.status == 200
        html = await page.text()
        assert hidden(html, "rd") == original
        # 3. sign in through Caddy: 303 back to exactly the original URL
        response = await http.post(
            stack.base + "/_gateway/login",
            data={
                "csrf_token": hidden(html, "csrf_token"),
                "rd": hidden(html, "rd"),
                "username": "alice",
                "password": PASSWORD,
            },
            headers={"Origin": stack.base},
            allow_redirects=False,
        )
        assert response.status == 303, await response.text()
        assert response.headers["Location"] == original
        # 4. the app (through Caddy) sees who it is, and the original path and query
        app = await http.get(original, headers={"Accept": "application/json"})
        assert app.status == 200
        body = await app.json()
        assert body["path"] == target
        assert identity_seen(body["headers"]) == {
            "x-remote-user": ["alice"],
            "x-remote-email": ["alice@example.com"],
            "x-remote-name": ["Alice"],
            "x-remote-groups": ["staff"],
        }
        token = session_cookie(http)

        # 5. sign out through Caddy
        page = await http.get(f"{stack.base}/_gateway/logout")
        out = await http.post(
            f"{stack.base}/_gateway/logout",
            data={"csrf_token": hidden(await page.text(), "csrf_token")},
            headers={"Origin": stack.base},
        )
        assert out.status == 200
        assert out.headers["Clear-Site-Data"] == '"cache", "cookies"'

    # 6. the old cookie, replayed through Caddy, gets the login redirect, never the app
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as replay:
        response = await replay.get(
            original,
            headers={"Cookie": f"gateway_session={token}", "Accept": "text/html"},
            allow_redirects=False,
        )
        assert response.status == 302
        assert response.headers["Location"] == f"/_gateway/login?rd={original}"
        api = await replay.get(
            f"{stack.base}/api/data",
            headers={"Cookie": f"gateway_session={token}"},
            allow_redirects=False,
        )
        # The shipped Caddyfile turns every 401 from /auth into the sign-in redirect.
        assert api.status == 302
        assert api.headers["Location"] == f"/_gateway/login?rd={stack.base}/api/data"
        assert "x-remote-user" not in (await api.text()).lower()


async def test_spoofed_identity_headers_never_reach_the_app(stack, alice):
    token = await signed_in_token(stack)
    signed_in = await raw_request(
        "127.0.0.1",
        stack.port,
        "GET",
        "/whoami",
        [("Cookie", f"gateway_session={token}"), ("Accept", "application/json"), *SPOOFS],
    )
    assert signed_in.status == 200, signed_in.text
    seen = identity_seen(signed_in.json()["headers"])
    assert seen == {
        "x-remote-user": ["alice"],
        "x-remote-email": ["alice@example.com"],
        "x-remote-name": ["Alice"],
        "x-remote-groups": ["staff"],
    }

    # A public path, not signed in: no identity header at all (neither the
    # client's nor Caddy's unexpanded "{http.reverse_proxy.header.…}" text).
    public = await raw_request(
        "127.0.0.1", stack.port, "GET", "/public/page", [("Accept", "application/json"), *SPOOFS]
    )
    assert public.status == 200, public.text
    assert identity_seen(public.json()["headers"]) == {}


CADDY_DENIED_SPELLINGS = [
    *DENIED_SPELLINGS,
    # Caddy routes /_gateway/* straight to the gateway: no way out of it either.
    "/_gateway/../admin/x",
    "/_gateway/%2e%2e/admin/x",
    "/_GATEWAY/../admin/x",
]


async def test_deny_rule_holds_for_every_spelling(stack, alice):
    token = await signed_in_token(stack)
    cookie = [("Cookie", f"gateway_session={token}"), ("Accept", "application/json")]
    statuses = {}
    for path in CADDY_DENIED_SPELLINGS:
        response = await raw_request("127.0.0.1", stack.port, "GET", path, cookie)
        statuses[path] = response.status
    assert statuses == dict.fromkeys(CADDY_DENIED_SPELLINGS, 403)
    # ...while the same cookie does open an ordinary path (the 403s are not a broken login).
    ok = await raw_request("127.0.0.1", stack.port, "GET", "/dashboard", cookie)
    assert ok.status == 200


async def test_client_sent_original_request_headers_do_not_open_admin(stack, alice):
    """Caddy's forward_auth copies the client's headers onto the auth request; it
    sets X-Forwarded-Method/-Uri/-Host itself but would pass a client's
    X-Original-URL (nginx's header) through. The Caddyfile strips it first, so
    naming a public path there cannot open /admin/ (nor even confuse /auth)."""
    token = await signed_in_token(stack)
    lies = [
        [("X-Original-URL", f"{stack.base}/public/x")],
        [("X-Original-URL", f"{stack.base}/public/x"), ("X-Original-Method", "GET")],
        [("X-Original-URL", "http://elsewhere.example/public/x")],
        [("X-Forwarded-Uri", "/public/x"), ("X-Forwarded-Host", "127.0.0.1")],
        [("X-Forwarded-Uri", "/public/x"), ("X-Original-URL", f"{stack.base}/public/x")],
    ]
    for cookie in ([], [("Cookie", f"gateway_session={token}")]):
        for headers in lies:
            response = await raw_request(
                "127.0.0.1",
                stack.port,
                "GET",
                "/admin/x",
                [("Accept", "application/json"), *cookie, *headers],
            )
            # The Caddyfile strips the client's account of the request: the real path is denied.
            assert response.status == 403, (cookie, headers, response.status)
            assert '"path"' not in response.text, (headers, response.text)  # not the app's echo
    # The refusal is the disagreement, not the header: one that tells the truth passes.
    honest = await raw_request(
        "127.0.0.1",
        stack.port,
        "GET",
        "/public/page",
        [("Accept", "application/json"), ("X-Original-URL", f"{stack.base}/public/page")],
    )
    assert honest.status == 200
    # A public X-Original-URL on a protected path does not skip the login either.
    anonymous = await raw_request(
        "127.0.0.1",
        stack.port,
        "GET",
        "/dashboard",
        [("Accept", "text/html"), ("X-Original-URL", f"{stack.base}/public/x")],
    )
    assert anonymous.status == 302, anonymous.status


async def test_routing_claims_never_reach_the_app(stack, alice):
    """X-Original-URL, X-Real-IP, Forwarded and friends from the client: cleared."""
    token = await signed_in_token(stack)
    await assert_no_routing_lies(stack.port, token)


async def test_websocket_through_caddy(stack, alice):
    token = await signed_in_token(stack)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as ws_client:
        async with ws_client.ws_connect(
            f"{stack.base}/live", headers={"Cookie": f"gateway_session={token}"}
        ) as ws:
            assert (await ws.receive_json()) == {"hello": "alice"}
            await ws.send_str("ping through caddy")
            assert (await ws.receive_str()) == "ping through caddy"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await ws_client.ws_connect(f"{stack.base}/live")
        # The Caddyfile's handle_response sends the anonymous upgrade to the sign-in page.
        assert refused.value.request_info.url.path == "/_gateway/login"


def test_the_example_clears_every_routing_claim():
    """header_names.ROUTING is the list; the shipped config must clear all of it."""
    text = (EXAMPLES / "caddy/Caddyfile").read_text()
    cleared = {n.lower() for n in re.findall(r"request_header -(\S+)", text)}
    assert cleared >= ROUTING, sorted(ROUTING - cleared)
