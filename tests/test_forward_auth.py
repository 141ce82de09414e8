"""`GET /_gateway/auth` (nginx auth_request, Traefik/Caddy forward-auth) and the
`[[rule]]` engine through the built-in proxy, on real sockets.

Every request goes over a real socket to a real gateway, from a client with no
cookie jar, so each one carries exactly the session cookie the test gives it.
Raw path spellings are sent with `yarl.URL(..., encoded=True)` so neither the
client nor yarl tidies them before the gateway sees them; the echo upstream
shows which path arrived.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp.test_utils import TestClient
from helpers import cookie_header, create_user, csrf_token, sign_in
from multidict import CIMultiDictProxy

AUTH = "/_gateway/auth"
IDENTITY = ("X-Remote-User", "X-Remote-Email", "X-Remote-Name", "X-Remote-Groups")
ALICE = {
    "X-Remote-User": "alice",
    "X-Remote-Email": "alice@example.com",
    "X-Remote-Name": "Alice",
    "X-Remote-Groups": "staff",
}
APP = "http://app.example.com"


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def identity(self) -> dict[str, str]:
        return {name: self.headers[name] for name in IDENTITY if name in self.headers}


def nginx(url: str, method: str | None = "GET") -> dict[str, str]:
    headers = {"X-Original-URL": url}
    if method is not None:
        headers["X-Original-Method"] = method
    return headers


def traefik(
    uri: str, host: str = "app.example.com", method: str = "GET", proto: str = "https"
) -> dict[str, str]:
    # Traefik and Caddy send the same set; Caddy's values arrive the same way.
    return {
        "X-Forwarded-Method": method,
        "X-Forwarded-Proto": proto,
        "X-Forwarded-Host": host,
        "X-Forwarded-Uri": uri,
        "X-Forwarded-For": "203.0.113.7",
    }


async def raw(
    client: TestClient,
    raw_path: str,
    headers: dict[str, str] | None = None,
    token: str | None = None,
    method: str = "GET",
) -> Answer:
    """Send `raw_path` byte for byte (no client-side normalisation), no cookie jar."""
    url = yarl.URL(str(client.make_url("")).rstrip("/") + raw_path, encoded=True)
    sent = dict(headers or {})
    if token:
        sent.update(cookie_header(token))
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.request(method, url, headers=sent, allow_redirects=False) as response,
    ):
        return Answer(response.status, response.headers, await response.read())


async def ask(client: TestClient, headers: dict[str, str], token: str | None = None) -> Answer:
    """The front proxy's sub-request to /_gateway/auth."""
    answer = await raw(client, AUTH, headers, token)
    # Whatever the input, the forward-auth answer is never a redirect.
    assert not 300 <= answer.status < 400, answer
    assert "Location" not in answer.headers
    return answer


def rule(path: str = "", **fields: Any) -> dict[str, Any]:
    return {"path": path, **fields} if path else dict(fields)


async def signed_in(client: TestClient, username: str = "alice") -> str:
    # A fresh browser: the client's jar may hold another user's session.
    client.session.cookie_jar.clear()
    result = await sign_in(client, username)
    assert result.status == 303 and result.token, result.text
    return result.token


@pytest.fixture
async def start(gateway, alice):
    """A gateway with these rules, and alice's session token on it."""

    async def run(*rules: dict[str, Any], **sections: Any) -> tuple[TestClient, str]:
        if rules:
            sections["rule"] = list(rules)
        client = await gateway(**sections)
        return client, await signed_in(client)

    return run


# --- the basic answers --------------------------------------------------------


async def test_anonymous_is_401_with_no_body_and_no_location(start):
    client, _ = await start()
    answer = await ask(client, nginx(APP + "/dashboard"))
    assert answer.status == 401
    assert answer.body == b""
    assert answer.headers.get("Content-Length", "0") == "0"
    assert "no-store" in answer.headers["Cache-Control"]
    assert answer.identity() == {}


async def test_signed_in_is_200_with_the_identity(start):
    client, token = await start()
    answer = await ask(client, nginx(APP + "/dashboard"), token)
    assert answer.status == 200
    assert answer.identity() == ALICE
    assert answer.body == b""
    assert answer.headers.get("Content-Length", "0") == "0"
    assert "no-store" in answer.headers["Cache-Control"]
    assert "text/html" not in answer.headers.get("Content-Type", "")


async def test_nginx_style_methods_all_pass_when_signed_in(start):
    client, token = await start()
    for method in ("GET", "POST", "DELETE", "get", None):
        answer = await ask(client, nginx(APP + "/api/items", method), token)
        assert answer.status == 200 and answer.identity() == ALICE, method


async def test_traefik_and_caddy_style_signed_in_and_anonymous(start):
    client, token = await start()
    signed = await ask(client, traefik("/dashboard?tab=1"), token)
    assert signed.status == 200 and signed.identity() == ALICE
    anonymous = await ask(client, traefik("/dashboard?tab=1"))
    assert anonymous.status == 401 and anonymous.identity() == {} and anonymous.body == b""


@pytest.mark.parametrize("proto", ["ws", "wss", "WSS"])
async def test_traefik_websocket_upgrades_say_ws_and_are_judged_like_http(start, proto):
    """Traefik sends X-Forwarded-Proto: ws (or wss) for a WebSocket upgrade."""
    client, token = await start()
    signed = await ask(client, traefik("/live", proto=proto), token)
    assert signed.status == 200 and signed.identity() == ALICE
    anonymous = await ask(client, traefik("/live", proto=proto))
    assert anonymous.status == 401


@pytest.mark.parametrize("proto", ["ftp", "wsx", "gopher"])
async def test_other_schemes_are_unreadable(start, proto):
    client, token = await start()
    answer = await ask(client, traefik("/live", proto=proto), token)
    assert answer.status == 400 and answer.identity() == {}


async def test_head_is_answered_like_get(start):
    client, token = await start()
    answer = await raw(client, AUTH, nginx(APP + "/x"), token, method="HEAD")
    assert answer.status == 200 and answer.identity() == ALICE


# --- what cannot be parsed is never a pass -----------------------------------

MALFORMED = [
    ("missing", {}),
    ("method-only", {"X-Original-Method": "GET"}),
    ("uri-without-host", {"X-Forwarded-Uri": "/x"}),
    ("host-without-uri", {"X-Forwarded-Host": "app.example.com"}),
    ("empty-url", nginx("")),
    ("relative", nginx("/x")),
    ("scheme-relative", nginx("//app.example.com/x")),
    ("userinfo", nginx("http://a@b/")),
    ("userinfo-password", nginx("http://u:p@app.example.com/x")),
    ("javascript", nginx("javascript:alert(1)")),
    ("ftp", nginx("ftp://app.example.com/x")),
    ("garbage", nginx("garbage")),
    ("no-host", nginx("http:///x")),
    ("broken-ipv6", nginx("http://[::1/x")),
    ("host-with-space", nginx("http://app example.com/x")),
    ("nul", nginx(APP + "/%00")),
    ("crlf", nginx(APP + "/a%0d%0aX-Remote-User:%20root")),
    ("bad-utf8", nginx(APP + "/%ff")),
    ("bad-method", nginx(APP + "/x", "BREW")),
    ("two-methods", nginx(APP + "/x", "GET POST")),
    ("proto-ftp", traefik("/x", proto="ftp")),
    ("xfh-space", traefik("/x", host="app example.com")),
    ("xfh-userinfo", traefik("/x", host="a@app.example.com")),
    ("uri-relative", traefik("x")),
    ("uri-nul", traefik("/%00")),
    ("xfm-bad", traefik("/x", method="BREW")),
]


async def test_malformed_original_is_400_signed_in_or_not(start):
    # A public rule for every path: a parse failure must not fall through to it.
    client, token = await start(rule("/", policy="public"))
    wrong = []
    for name, headers in MALFORMED:
        for who in (None, token):
            answer = await ask(client, headers, who)
            assert answer.body == b"" and "no-store" in answer.headers["Cache-Control"]
            if answer.status != 400 or answer.identity():
                wrong.append((name, "signed-in" if who else "anonymous", answer.status))
    assert wrong == []


# --- rules ----------------------------------------------------------------------


async def test_deny_rule_is_403_for_a_signed_in_user(start):
    client, token = await start(rule("/admin/", policy="deny"))
    denied = await ask(client, nginx(APP + "/admin/users"), token)
    assert denied.status == 403 and denied.identity() == {} and denied.body == b""
    assert (await ask(client, nginx(APP + "/other"), token)).status == 200


async def test_deny_rule_is_403_anonymous_too(start):
    """Closed to everyone: signing in would not help, so no 401 invites it."""
    client, _ = await start(rule("/admin/", policy="deny"))
    denied = await ask(client, nginx(APP + "/admin/users"))
    assert denied.status == 403 and denied.identity() == {}


async def test_groups_rule(start, db):
    client, alice_token = await start(rule("/admin/", groups=["admins"]))
    await create_user(db, "bob", groups=("admins", "ops"))
    bob_token = await signed_in(client, "bob")

    alice = await ask(client, nginx(APP + "/admin/users"), alice_token)
    assert alice.status == 403 and alice.identity() == {}

    bob = await ask(client, nginx(APP + "/admin/users"), bob_token)
    assert bob.status == 200
    assert bob.headers["X-Remote-User"] == "bob"
    assert bob.headers["X-Remote-Groups"] == "admins,ops"

    assert (await ask(client, nginx(APP + "/admin/users"))).status == 401
    # Outside the rule, alice passes as before.
    assert (await ask(client, nginx(APP + "/home"), alice_token)).status == 200


async def test_public_rule(start):
    client, token = await start(rule("/static/", policy="public"))
    anonymous = await ask(client, nginx(APP + "/static/app.css"))
    assert anonymous.status == 200
    assert anonymous.identity() == {}
    signed = await ask(client, nginx(APP + "/static/app.css"), token)
    assert signed.status == 200 and signed.identity() == ALICE
    # The public rule covers its prefix only.
    assert (await ask(client, nginx(APP + "/staticx"))).status == 401
    assert (await ask(client, nginx(APP + "/static/../private"))).status == 401


async def test_host_rule_uses_the_original_host_not_the_host_header(start):
    client, token = await start(rule(host="*.example.com", policy="deny"))
    denied = [
        nginx("http://app.example.com/x"),
        nginx("http://APP.Example.com./x"),
        nginx("http://app.example.com:8443/x"),
        nginx("https://Deep.App.EXAMPLE.com.:443/x"),
        traefik("/x", host="app.example.com"),
        traefik("/x", host="APP.example.com.:8443"),
    ]
    spared = [
        nginx("http://other.test/x"),
        nginx("http://example.com/x"),  # '*.example.com' is subdomains only
        nginx("http://app.example.com.evil.test/x"),
        traefik("/x", host="notexample.com"),
    ]
    # The sub-request's own Host header names the gateway (nginx: whatever
    # proxy_set_header Host says); the rule must look at the original host.
    for headers in denied:
        answer = await ask(client, {**headers, "Host": "other.test"}, token)
        assert answer.status == 403, headers
    for headers in spared:
        answer = await ask(client, {**headers, "Host": "app.example.com"}, token)
        assert answer.status == 200 and answer.identity() == ALICE, headers


async def test_exact_host_rule(start):
    client, token = await start(rule(host="admin.example.com", policy="deny"))
    assert (await ask(client, nginx("http://ADMIN.example.com.:8080/"), token)).status == 403
    assert (await ask(client, nginx("http://app.example.com/"), token)).status == 200


METHOD_CASES = [
    (nginx(APP + "/api/items", "POST"), 403),
    (nginx(APP + "/api/items", "post"), 403),
    ({"X-Original-URL": APP + "/api/items", "X-Forwarded-Method": "POST"}, 403),
    (traefik("/api/items", method="POST"), 403),
    (nginx(APP + "/api/items", "GET"), 200),
    (nginx(APP + "/api/items", None), 200),  # no method header: GET
    (traefik("/api/items", method="PUT"), 200),
    (nginx(APP + "/other", "POST"), 200),
]


@pytest.mark.parametrize(("headers", "status"), METHOD_CASES)
async def test_methods_rule(start, headers, status):
    client, token = await start(rule("/api/", methods=["POST"], policy="deny"))
    assert (await ask(client, headers, token)).status == status


# Spellings an upstream resolves to /admin or /admin/...
ADMIN_SPELLINGS = [
    "/admin",
    "/admin/",
    "/admin/x",
    "//admin",
    "//admin/x",
    "/./admin",
    "/./admin/x",
    "/%61dmin",
    "/%61dmin/x",
    "/public/../admin",
    "/public/../admin/x",
    "/public/%2e%2e/admin/x",
    "/admin;x",
    "/admin;jsessionid=1/x",
    "/public/..;/admin/x",
    "/admin%2Fx",
    "/admin%5Cx",
    "/admin\\x",
    "/admin?x=/public/",
]
# ...and spellings that are not /admin to the upstream (controls).
NOT_ADMIN = ["/public/x", "/administrator", "/%2561dmin/x", "/ADMIN", "/Admin/x"]


async def test_every_spelling_is_denied_by_auth(start):
    client, token = await start(rule("/admin/", policy="deny"))
    passed = []
    for path in ADMIN_SPELLINGS:
        for style, headers in (("nginx", nginx(APP + path)), ("traefik", traefik(path))):
            answer = await ask(client, headers, token)
            if answer.status != 403:
                passed.append((style, path, answer.status))
    assert passed == []


async def test_other_paths_pass_the_admin_deny_rule(start):
    client, token = await start(rule("/admin/", policy="deny"))
    for path in NOT_ADMIN:
        answer = await ask(client, nginx(APP + path), token)
        assert answer.status == 200 and answer.identity() == ALICE, path


async def test_case_insensitive_regex_rule(start):
    prefix_client, token = await start(rule("/admin/", policy="deny"))
    # Path matching is case-sensitive: a plain prefix rule does not cover /ADMIN.
    assert (await ask(prefix_client, nginx(APP + "/ADMIN"), token)).status == 200

    client, token = await start(rule("(?i)^/admin(/|$)", regex=True, policy="deny"))
    for path in ("/ADMIN", "/Admin/x", "/admin", "/%41DMIN/x", "//ADMIN/./x"):
        assert (await ask(client, nginx(APP + path), token)).status == 403, path
    assert (await ask(client, nginx(APP + "/administrator"), token)).status == 200


# --- trust ---------------------------------------------------------------------


async def test_untrusted_peer_never_gets_200(start):
    # The test client connects from 127.0.0.1, outside 10.0.0.0/8.
    client, token = await start(
        rule("/static/", policy="public"), server={"trusted_proxies": ["10.0.0.0/8"]}
    )
    for headers in (nginx(APP + "/static/x"), traefik("/static/x"), {}, nginx(APP + "/x")):
        for who in (token, None):
            answer = await ask(client, headers, who)
            assert answer.status == 403, (headers, who, answer.status)
            assert answer.identity() == {}


async def test_trusted_proxies_that_include_the_peer_are_believed(start):
    client, token = await start(
        rule("/static/", policy="public"), server={"trusted_proxies": ["127.0.0.0/8"]}
    )
    assert (await ask(client, nginx(APP + "/static/x"))).status == 200
    assert (await ask(client, nginx(APP + "/x"), token)).status == 200


async def test_client_identity_headers_change_nothing(start):
    client, token = await start(
        rule("/static/", policy="public"), rule("/admin/", groups=["admins"])
    )
    forged = {
        "X-Remote-User": "root",
        "X-Remote-Groups": "admins",
        "X-Remote-Email": "root@evil.test",
        "X-Remote-Name": "Root",
        "X_Remote_User": "root",
    }
    public = await ask(client, {**nginx(APP + "/static/x"), **forged})
    assert public.status == 200 and public.identity() == {}

    assert (await ask(client, {**nginx(APP + "/x"), **forged})).status == 401

    signed = await ask(client, {**nginx(APP + "/x"), **forged}, token)
    assert signed.status == 200 and signed.identity() == ALICE

    groups = await ask(client, {**nginx(APP + "/admin/x"), **forged}, token)
    assert groups.status == 403


@pytest.mark.parametrize(
    ("injected", "real"),
    [
        # Traefik and Caddy copy the client's headers onto the sub-request, so a
        # client can add an X-Original-URL of its own next to the real
        # X-Forwarded-* description of its request.
        pytest.param(nginx(APP + "/static/x"), traefik("/admin/x"), id="client-x-original-url"),
        # nginx sets X-Original-URL itself; a client-sent X-Forwarded-Uri rides along.
        pytest.param(traefik("/static/x"), nginx(APP + "/admin/x"), id="client-x-forwarded-uri"),
    ],
)
async def test_a_second_description_of_the_request_never_opens_a_denied_path(start, injected, real):
    client, token = await start(rule("/static/", policy="public"), rule("/admin/", policy="deny"))
    for who in (None, token):
        answer = await ask(client, {**injected, **real}, who)
        assert answer.status != 200, (who, answer)


# --- sessions -------------------------------------------------------------------


async def test_unknown_token_is_401(start):
    client, _ = await start()
    answer = await ask(client, nginx(APP + "/x"), "not-a-real-token")
    assert answer.status == 401 and answer.identity() == {}


async def test_expired_session_is_401(start, clock):
    client, token = await start()
    assert (await ask(client, nginx(APP + "/x"), token)).status == 200
    clock.advance(3600 + 1)  # past the default 1h idle timeout
    answer = await ask(client, nginx(APP + "/x"), token)
    assert answer.status == 401 and answer.identity() == {} and answer.body == b""


async def test_logged_out_session_is_401(start):
    client, token = await start()
    assert (await ask(client, nginx(APP + "/x"), token)).status == 200
    logout = await client.post(
        "/_gateway/logout",
        data={"csrf_token": await csrf_token(client, "/_gateway/logout")},
        allow_redirects=False,
    )
    assert logout.status == 200
    answer = await ask(client, nginx(APP + "/x"), token)
    assert answer.status == 401 and answer.identity() == {}


# --- never a redirect, for any input in these tables ---------------------------

EVERY_INPUT = (
    [headers for _, headers in MALFORMED]
    + [nginx(APP + p) for p in ADMIN_SPELLINGS + NOT_ADMIN]
    + [traefik(p) for p in ADMIN_SPELLINGS + NOT_ADMIN]
    + [nginx(APP + "/static/x"), nginx("http://APP.Example.com.:8443/api/x", "POST")]
)


async def test_never_a_redirect_and_never_a_body(start, clock):
    client, token = await start(
        rule("/static/", policy="public"),
        rule("/admin/", policy="deny"),
        rule("/api/", methods=["POST"], groups=["admins"]),
    )
    seen: set[int] = set()
    for headers in EVERY_INPUT:
        for who in (None, token, "bogus"):
            answer = await ask(client, headers, who)  # asserts: not 3xx, no Location
            assert answer.body == b"", (headers, answer)
            assert "no-store" in answer.headers["Cache-Control"]
            seen.add(answer.status)
    assert seen == {200, 400, 401, 403}


# --- the same rule engine in the built-in proxy --------------------------------

JSON = {"Accept": "application/json"}


def echoed(answer: Answer) -> dict[str, Any]:
    """What the echo upstream received: its method, raw path and headers."""
    assert answer.status == 200, answer.body
    facts = json.loads(answer.body)
    facts["header_map"] = {k.lower(): v for k, v in facts["headers"]}
    return facts


async def test_proxy_denies_every_spelling(start):
    client, token = await start(rule("/admin/", policy="deny"))
    passed = []
    for path in ADMIN_SPELLINGS:
        answer = await raw(client, path, JSON, token)
        # 403 with the gateway's own JSON, not anything from the app.
        if answer.status != 403 or json.loads(answer.body).get("error") != "forbidden":
            passed.append((path, answer.status))
    assert passed == []


async def test_proxy_groups_rule_every_spelling(start, db):
    client, alice_token = await start(rule("/admin/", groups=["admins"]))
    await create_user(db, "bob", groups=("admins",))
    bob_token = await signed_in(client, "bob")
    passed = []
    for path in ADMIN_SPELLINGS:
        alice = await raw(client, path, JSON, alice_token)
        if alice.status != 403 or json.loads(alice.body).get("error") != "forbidden":
            passed.append((path, alice.status))
        bob = echoed(await raw(client, path, JSON, bob_token))
        assert bob["path"] == path and bob["header_map"]["x-remote-user"] == "bob", path
    assert passed == []


async def test_spellings_reach_the_upstream_unchanged(start):
    # With no rule in the way, the echo app shows each raw spelling arrived as
    # sent: the 403s above were decided on the spelling itself, not on a copy
    # the client or the gateway had tidied up.
    client, token = await start()
    for path in ADMIN_SPELLINGS + NOT_ADMIN:
        facts = echoed(await raw(client, path, JSON, token))
        assert facts["path"] == path
        assert facts["header_map"]["x-remote-user"] == "alice"


async def test_proxy_lets_other_paths_through_the_deny_rule(start):
    client, token = await start(rule("/admin/", policy="deny"))
    for path in NOT_ADMIN:
        assert echoed(await raw(client, path, JSON, token))["path"] == path


async def test_proxy_case_insensitive_regex_rule(start):
    client, token = await start(rule("(?i)^/admin(/|$)", regex=True, policy="deny"))
    for path in ("/ADMIN", "/Admin/x", "/%41dmin", "//ADMIN"):
        assert (await raw(client, path, JSON, token)).status == 403, path
    assert (await raw(client, "/administrator", JSON, token)).status == 200


async def test_proxy_methods_rule(start):
    client, token = await start(rule("/api/", methods=["POST"], policy="deny"))
    assert (await raw(client, "/api/items", JSON, token, method="POST")).status == 403
    assert (await raw(client, "/%61pi/items", JSON, token, method="POST")).status == 403
    assert (await raw(client, "/api/items", JSON, token)).status == 200
