"""What the gateway's own answers say and carry, over plain HTTP.

How they look and behave in a browser is tests/test_browser_*.py; this is
the wire: headers, JSON bodies, logs and counts.
"""

from __future__ import annotations

import logging
import re

import pytest
from helpers import PASSWORD, csrf_token, metric, scrape, sign_in
from upstreams import closed_port, raw_request, raw_upstream

API = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}
HTML_ACCEPT = ("Accept", "text/html")
RULES = [{"path": "/admin/", "policy": "deny"}, {"path": "/finance/", "groups": ["finance"]}]


@pytest.mark.parametrize(
    "path", ["/_gateway/login", "/_gateway/healthz", "/_gateway/nope", "/app", "/admin/x"]
)
async def test_no_answer_names_the_server_software_or_its_version(gateway, path):
    client = await gateway(rule=RULES)
    response = await client.get(path, headers=HTML, allow_redirects=False)
    assert response.headers["Server"] == "Gateway"


async def test_a_malformed_request_answer_names_no_version_either(gateway):
    """aiohttp answers these before any handler runs."""
    client = await gateway()
    answer = await raw_request(
        "127.0.0.1", client.port, "GET", "/x", [("Host", "a"), ("Bad Header", "1")]
    )
    assert answer.status == 400
    assert answer.headers["Server"] == "Gateway"


async def test_an_apps_own_server_header_passes_as_the_app_sent_it(gateway):
    answer = b"HTTP/1.1 200 OK\r\nServer: EchoApp/1.0\r\nContent-Length: 2\r\n\r\nok"
    async with raw_upstream(answer) as app:
        client = await gateway(
            upstream=[{"name": "app", "url": app.url}], rule=[{"path": "/", "policy": "public"}]
        )
        response = await client.get("/x", headers=API)
        assert response.status == 200
        assert response.headers.getall("Server") == ["EchoApp/1.0"]


@pytest.mark.parametrize(
    "path", ["//evil.example/x", "/\\evil.example/x", "//evil.example/x?y=1", "/%2F%2Fevil.example"]
)
async def test_try_again_never_links_off_site(gateway, path):
    """The proxy serves `//evil.example/x` as a path; printed as a link, a browser
    would leave for evil.example. The 502 page's "Try again" goes to / instead."""
    client = await gateway(
        upstream=[{"name": "app", "url": f"http://127.0.0.1:{closed_port()}"}],
        rule=[{"path": "/", "policy": "public"}],
    )
    response = await raw_request("127.0.0.1", client.port, "GET", path, [HTML_ACCEPT])
    assert response.status == 502
    links = re.findall(r'href="([^"]*)"', response.text)
    assert "evil.example" not in " ".join(links)
    assert links.count("/") == 2  # "Try again" fell back to the start page, like the other


async def test_try_again_repeats_a_safe_address_exactly(gateway):
    client = await gateway(
        upstream=[{"name": "app", "url": f"http://127.0.0.1:{closed_port()}"}],
        rule=[{"path": "/", "policy": "public"}],
    )
    response = await raw_request(
        "127.0.0.1", client.port, "GET", "/reports/q3?tab=1&x=%2F", [HTML_ACCEPT]
    )
    assert response.status == 502
    assert 'href="/reports/q3?tab=1&amp;x=%2F">Try again</a>' in response.text


@pytest.mark.parametrize(
    ("headers", "kind", "detail"),
    [
        ({"Sec-Fetch-Site": "cross-site"}, "fetch-site", "Sec-Fetch-Site: 'cross-site'"),
        ({"Sec-Fetch-Site": "same-site"}, "fetch-site", "Sec-Fetch-Site: 'same-site'"),
        ({"Origin": "https://evil.example"}, "origin", "Origin: 'https://evil.example'"),
    ],
)
async def test_a_csrf_refusal_is_logged_with_its_reason_and_counted(
    gateway, alice, db, caplog, headers, kind, detail
):
    client = await gateway()
    token = await csrf_token(client)
    before = metric(await scrape(client), "gateway_csrf_refused_total", kind=kind)
    form = {"csrf_token": token, "username": "alice", "password": PASSWORD}
    with caplog.at_level(logging.WARNING, logger="gateway.web.forms"):
        response = await client.post(
            "/_gateway/login", data=form, headers=headers, allow_redirects=False
        )
    assert response.status == 403
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0
    refusals = [r.getMessage() for r in caplog.records if r.name == "gateway.web.forms"]
    assert refusals == [f"refused POST /_gateway/login from 127.0.0.1: {detail}"]
    assert token not in refusals[0] and PASSWORD not in refusals[0]
    after = metric(await scrape(client), "gateway_csrf_refused_total", kind=kind)
    assert after - before == 1


@pytest.mark.parametrize(
    ("cookie", "token", "kind"),
    [(False, True, "cookie"), (True, False, "token")],
)
async def test_a_missing_cookie_or_a_bad_token_is_named_too(
    gateway, alice, caplog, cookie, token, kind
):
    client = await gateway()
    real = await csrf_token(client)
    if not cookie:
        client.session.cookie_jar.clear()
    form = {"csrf_token": real if token else "forged", "username": "alice", "password": PASSWORD}
    before = metric(await scrape(client), "gateway_csrf_refused_total", kind=kind)
    with caplog.at_level(logging.WARNING, logger="gateway.web.forms"):
        response = await client.post("/_gateway/login", data=form, allow_redirects=False)
    assert response.status == 403
    (message,) = [r.getMessage() for r in caplog.records if r.name == "gateway.web.forms"]
    assert real not in message
    assert metric(await scrape(client), "gateway_csrf_refused_total", kind=kind) - before == 1


async def test_a_deny_rule_refusal_does_not_blame_the_visitors_account(gateway):
    client = await gateway(rule=RULES)
    page = await client.get("/admin/x", headers=HTML)
    assert page.status == 403
    html = await page.text()
    assert "account" not in html.lower()
    assert 'href="/"' in html  # a way on
    api = await client.get("/admin/x", headers=API)
    assert await api.json() == {
        "error": "forbidden",
        "message": "This address is closed: the gateway does not let anyone open it.",
    }


async def test_a_groups_refusal_names_the_person_and_offers_a_switch(gateway, alice):
    client = await gateway(rule=RULES)
    await sign_in(client)
    page = await client.get("/finance/q3?x=1", headers=HTML)
    assert page.status == 403
    html = await page.text()
    assert "You are signed in as <strong>Alice</strong> (alice)." in html
    assert '<input type="hidden" name="rd" value="/finance/q3?x=1">' in html
    assert 'name="csrf_token" value="' in html
    assert 'href="/_gateway/logout"' in html
    api = await client.get("/finance/q3", headers=API)
    assert await api.json() == {
        "error": "forbidden",
        "message": "Your account is not allowed to open this page.",
    }
