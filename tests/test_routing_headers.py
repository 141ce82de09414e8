"""Routing claims (X-Original-URL, X-Real-IP, Forwarded, ...) reach the app only from
a trusted proxy: from anyone else they are the client's own words."""

from __future__ import annotations

import pytest
from front_proxy import ROUTING_SPOOFS, routing_seen
from upstreams import raw_request, recorder

PUBLIC = [{"path": "/", "policy": "public"}]


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted-peer", "trusted-proxy"])
async def test_routing_claims_reach_the_app_only_from_a_trusted_proxy(gateway, trusted):
    async with recorder("app") as app:
        client = await gateway(
            upstream=[{"name": "app", "url": app.url}],
            rule=PUBLIC,
            # The test connects from 127.0.0.1: trusted by default, or not.
            server={} if trusted else {"trusted_proxies": ["192.0.2.0/24"]},
        )
        response = await raw_request(
            "127.0.0.1", client.port, "GET", "/page", [*ROUTING_SPOOFS, ("X-Other", "kept")]
        )
        assert response.status == 200
        (seen,) = app.seen
        headers = [list(h) for h in seen.headers]
        if trusted:
            expected: dict[str, list[str]] = {}
            for name, value in ROUTING_SPOOFS:
                expected.setdefault(name.lower().replace("_", "-"), []).append(value)
            assert routing_seen(headers) == expected
        else:
            assert routing_seen(headers) == {}
        assert ["X-Other", "kept"] in headers


async def test_an_untrusted_peers_routing_claims_leave_a_websocket_too(gateway, alice):
    async with recorder("app") as app:
        client = await gateway(
            upstream=[{"name": "app", "url": app.url}],
            rule=PUBLIC,
            server={"trusted_proxies": ["192.0.2.0/24"]},
        )
        response = await raw_request(
            "127.0.0.1",
            client.port,
            "GET",
            "/live",
            [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13"),
                *ROUTING_SPOOFS,
            ],
        )
        assert response.status == 200  # the recorder is no WebSocket app; it answered
        (seen,) = app.seen
        assert routing_seen([list(h) for h in seen.headers]) == {}
