"""A real nginx running the shipped examples/nginx/gateway.conf in front of the gateway.

The config is the one operators copy, changed only in its three addresses.
Skipped with a hint when nginx is not installed; required in CI (.ci/run
installs it).
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
    login_through,
    nginx_in_front,
    session_cookie,
)
from helpers import create_user, free_port
from upstreams import raw_request

from gateway.header_names import ROUTING

pytestmark = pytest.mark.needs("nginx")

RULES = [
    {"path": "/public/", "policy": "public"},
    {"path": "/admin/", "policy": "deny"},
    {"path": "/finance/", "groups": ["finance"]},
    {"path": "(?i)^/reports(/|$)", "regex": True, "policy": "deny"},
]


@pytest.fixture
async def stack(tmp_path: Path, gateway, make_config, echo_server) -> AsyncIterator[Stack]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # trusted_proxies stays the default (127.0.0.1/32, ::1/128): the front proxy's address.
    client = await gateway(make_config(server={"public_url": base}, rule=RULES))
    async with nginx_in_front(tmp_path, port, client.port, echo_server.port):
        yield Stack(base, port)


async def test_full_browser_flow_through_nginx(stack, alice):
    async with browser() as http:
        # 1. anonymous -> 302 to the login page, rd is the full original URL
        first = await http.get(
            f"{stack.base}/dashboard?tab=1&sort=desc",
            headers={"Accept": "text/html"},
            allow_redirects=False,
        )
        assert first.status == 302
        assert first.headers["Location"] == (
            f"{stack.base}/_gateway/login?rd={stack.base}/dashboard?tab=1&sort=desc"
        )
        # 2-3. sign in through nginx: 303 back to exactly the original URL
        back = await login_through(http, stack.base, "alice", "/dashboard?tab=1&sort=desc")
        assert str(back) == f"{stack.base}/dashboard?tab=1&sort=desc"
        # 4. the app sees who it is, and not the gateway's cookies
        app = await http.get(
            str(back), headers={"Accept": "application/json", "Cookie": "theme=dark"}
        )
        assert app.status == 200
        seen = (await app.json())["headers"]
        headers = {k.lower(): v for k, v in seen}
        assert headers["x-remote-user"] == "alice"
        assert headers["x-remote-email"] == "alice@example.com"
        assert headers["x-remote-groups"] == "staff"
        assert (await app.json())["path"] == "/dashboard?tab=1&sort=desc"
        cookies = ";".join(v for k, v in seen if k.lower() == "cookie")
        assert "gateway_session" not in cookies
        assert "theme=dark" in cookies
        token = session_cookie(http)

        # 5. sign out through nginx
        page = await http.get(f"{stack.base}/_gateway/logout")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', await page.text()).group(1)
        out = await http.post(
            f"{stack.base}/_gateway/logout",
            data={"csrf_token": csrf},
            headers={"Origin": stack.base},
        )
        assert out.status == 200
        assert out.headers["Clear-Site-Data"] == '"cache", "cookies"'

    # 6. the old cookie, replayed through nginx, gets the login redirect, never the app
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as replay:
        response = await replay.get(
            f"{stack.base}/dashboard",
            headers={"Cookie": f"gateway_session={token}", "Accept": "text/html"},
            allow_redirects=False,
        )
        assert response.status == 302
        assert response.headers["Location"].startswith(f"{stack.base}/_gateway/login?rd=")
        api = await replay.get(
            f"{stack.base}/api/data",
            headers={"Cookie": f"gateway_session={token}"},
            allow_redirects=False,
        )
        # The shipped nginx.conf turns every 401 from /auth into the sign-in redirect.
        assert api.status == 302
        assert api.headers["Location"].startswith(f"{stack.base}/_gateway/login?rd=")
        assert "x-remote-user" not in (await api.text()).lower()


async def test_spoofed_identity_headers_never_reach_the_app(stack, alice):
    async with browser() as http:
        await login_through(http, stack.base, "alice")
        token = session_cookie(http)
    signed_in = await raw_request(
        "127.0.0.1",
        stack.port,
        "GET",
        "/whoami",
        [("Cookie", f"gateway_session={token}"), ("Accept", "application/json"), *SPOOFS],
    )
    assert signed_in.status == 200
    seen = signed_in.json()["headers"]
    values = [v for _, v in seen]
    assert "mallory" not in values and "admins" not in values
    assert [v for k, v in seen if k.lower() == "x-remote-user"] == ["alice"]

    public = await raw_request(
        "127.0.0.1", stack.port, "GET", "/public/page", [("Accept", "application/json"), *SPOOFS]
    )
    assert public.status == 200
    names = {k.lower().replace("_", "-").replace(".", "-") for k, _ in public.json()["headers"]}
    assert not names & {"x-remote-user", "x-remote-groups", "x-remote-email"}


@pytest.mark.parametrize("path", DENIED_SPELLINGS)
async def test_deny_rule_holds_for_every_spelling(stack, alice, path):
    async with browser() as http:
        await login_through(http, stack.base, "alice")
        token = session_cookie(http)
    response = await raw_request(
        "127.0.0.1",
        stack.port,
        "GET",
        path,
        [("Cookie", f"gateway_session={token}"), ("Accept", "application/json")],
    )
    assert response.status == 403, (path, response.status, response.text)


@pytest.mark.parametrize(
    "path", ["/finance/q3", "//finance/q3", "/%66inance/q3", "/public/../finance/q3"]
)
async def test_groups_rule_holds_through_nginx(stack, db, alice, path):
    await create_user(db, "fiona", groups=("finance",))
    async with browser() as alice_browser:
        await login_through(alice_browser, stack.base, "alice")
        alice_token = session_cookie(alice_browser)
    async with browser() as fiona_browser:
        await login_through(fiona_browser, stack.base, "fiona")
        fiona_token = session_cookie(fiona_browser)
    refused = await raw_request(
        "127.0.0.1", stack.port, "GET", path, [("Cookie", f"gateway_session={alice_token}")]
    )
    assert refused.status == 403
    allowed = await raw_request(
        "127.0.0.1",
        stack.port,
        "GET",
        path,
        [("Cookie", f"gateway_session={fiona_token}"), ("Accept", "application/json")],
    )
    assert allowed.status == 200
    assert [v for k, v in allowed.json()["headers"] if k.lower() == "x-remote-user"] == ["fiona"]


async def test_path_case_is_the_operators_rule(stack, alice):
    """Paths are case-sensitive, as the docs promise: a plain '/admin/' rule does not
    cover '/ADMIN/', and a `(?i)` regex rule (here on /reports) covers every case."""
    async with browser() as http:
        await login_through(http, stack.base, "alice")
        token = session_cookie(http)
    cookie = [("Cookie", f"gateway_session={token}"), ("Accept", "application/json")]
    upper = await raw_request("127.0.0.1", stack.port, "GET", "/ADMIN/x", cookie)
    assert upper.status == 200
    for spelling in ("/reports", "/REPORTS/q", "/Reports/", "//rEpOrTs/x"):
        response = await raw_request("127.0.0.1", stack.port, "GET", spelling, cookie)
        assert response.status == 403, spelling


async def test_websocket_through_nginx(stack, alice):
    async with browser() as http:
        await login_through(http, stack.base, "alice")
        token = session_cookie(http)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as ws_client:
        async with ws_client.ws_connect(
            f"{stack.base}/live", headers={"Cookie": f"gateway_session={token}"}
        ) as ws:
            assert (await ws.receive_json()) == {"hello": "alice"}
            await ws.send_str("ping through nginx")
            assert (await ws.receive_str()) == "ping through nginx"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await ws_client.ws_connect(f"{stack.base}/live")
        # nginx's error_page sends the anonymous upgrade to the login page: no socket.
        assert refused.value.request_info.url.path == "/_gateway/login"


async def test_routing_claims_never_reach_the_app(stack, alice):
    """X-Original-URL, X-Real-IP, Forwarded and friends from the client: cleared by nginx."""
    async with browser() as http:
        await login_through(http, stack.base, "alice")
        token = session_cookie(http)
    await assert_no_routing_lies(stack.port, token)


def test_the_example_clears_every_routing_claim():
    """header_names.ROUTING is the list; the shipped config must clear all of it."""
    text = (EXAMPLES / "nginx/gateway.conf").read_text()
    cleared = {n.lower() for n in re.findall(r'proxy_set_header (\S+)\s+"";', text)}
    assert cleared >= ROUTING, sorted(ROUTING - cleared)
