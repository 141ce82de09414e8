"""The gateway's cookies are exactly its own: no Unicode-space prefix, no duplicate,
no look-alike ever chooses the session.

With an https:// public_url the session cookie is `__Host-gateway_session`,
which a browser lets no sibling subdomain set. `str.strip()` once turned
`\\u2000__Host-gateway_session=<mallory>` (a name a sibling *can* set) into
ours, and the first value won: the victim worked inside mallory's account.
Now names compare byte for byte after trimming ASCII space and tab only, and
a request carrying our name twice, or beside a look-alike, carries none:
anonymous, cookie cleared. Checked on the proxy, /auth and the gateway's pages.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from helpers import create_user
from upstreams import raw_request, raw_upstream, recorder

from gateway.policy.identity import Identity
from gateway.store.users import get_user
from gateway.web.exchange import SESSIONS
from gateway.web.forms import CSRF

PUBLIC_URL = "https://gw.example.com"
SESSION = "__Host-gateway_session"
CSRF_COOKIE = "__Host-gateway_session_csrf"
UNICODE_SPACES = [
    "\u00a0", "\u0085", "\u1680", *(chr(c) for c in range(0x2000, 0x200B)),
    "\u2028", "\u2029", "\u202f", "\u205f", "\u3000",
]  # fmt: skip
LOOKALIKES = [
    "__HOST-gateway_session",
    "__host-gateway_session",
    "\u200b__Host-gateway_session",
    "\ufeff__Host-gateway_session",
    "__Host-gateway_session\u200d",
    "\uff3f\uff3fHost-gateway_session",  # fullwidth low lines
    *(f"{space}__Host-gateway_session" for space in UNICODE_SPACES),
]
JSON = ("Accept", "application/json")


async def session_of(client, db, username: str) -> str:
    """A real session, made by the gateway's own store (what a sign-in makes)."""
    user = await get_user(db, username)
    identity = Identity(user.id, user.username, user.email, user.display_name, user.groups)
    token, _ = await client.app[SESSIONS].create(identity, remember=False, ip="", user_agent="")
    return token


async def get(client, path: str, cookie: str, *extra: tuple[str, str]):
    return await raw_request(
        "127.0.0.1", client.port, "GET", path, [JSON, ("Cookie", cookie), *extra], encoding="utf-8"
    )


def clears_session(response) -> bool:
    return any(
        v.startswith(f"{SESSION}=;") or v.startswith(f'{SESSION}="";')
        for v in response.headers.getall("Set-Cookie", ())
    )


@pytest.fixture
async def two(gateway, db, alice):
    """A gateway on https, the app behind it, and sessions for alice and for mallory."""
    await create_user(db, "mallory")
    async with recorder("app") as app:
        client = await gateway(
            server={"public_url": PUBLIC_URL}, upstream=[{"name": "app", "url": app.url}]
        )
        alice_token = await session_of(client, db, "alice")
        mallory_token = await session_of(client, db, "mallory")
        # The real cookie alone works: the refusals below are about the planting.
        ok = await get(client, "/x", f"{SESSION}={alice_token}")
        assert ok.status == 200
        app.seen.clear()
        yield client, app, alice_token, mallory_token


def planted_cookies(name: str, alice: str, mallory: str) -> list[str]:
    """The planted name alone, and beside alice's real cookie in either order."""
    return [
        f"{name}={alice}",
        f"{name}={mallory}; {SESSION}={alice}",
        f"{SESSION}={alice}; {name}={mallory}",
    ]


@pytest.mark.parametrize("name", LOOKALIKES, ids=lambda n: n.encode("unicode_escape").decode())
async def test_a_lookalike_never_opens_the_app_and_never_picks_the_identity(two, name):
    client, app, alice, mallory = two
    for cookie in planted_cookies(name, alice, mallory):
        response = await get(client, "/x", cookie)
        assert response.status == 401, (cookie, response.status)
        assert clears_session(response), cookie
    assert app.seen == []  # no request reached the app, as alice or as mallory


@pytest.mark.parametrize("name", LOOKALIKES, ids=lambda n: n.encode("unicode_escape").decode())
async def test_a_lookalike_is_anonymous_to_forward_auth_and_userinfo(two, name):
    client, _, alice, mallory = two
    for cookie in planted_cookies(name, alice, mallory):
        auth = await get(client, "/_gateway/auth", cookie, ("X-Original-URL", f"{PUBLIC_URL}/x"))
        assert auth.status == 401, (cookie, auth.status)
        assert "X-Remote-User" not in auth.headers
        info = await get(client, "/_gateway/userinfo", cookie)
        assert info.status == 401, (cookie, info.status)


@pytest.mark.parametrize(
    "arrangement", ["alice-twice", "mallory-then-alice", "alice-then-mallory", "two-lines"]
)
async def test_our_cookie_twice_is_no_cookie(two, arrangement):
    client, app, alice, mallory = two
    first, second = {
        "alice-twice": (alice, alice),
        "mallory-then-alice": (mallory, alice),
        "alice-then-mallory": (alice, mallory),
        "two-lines": (mallory, alice),
    }[arrangement]
    if arrangement == "two-lines":
        response = await raw_request(
            "127.0.0.1",
            client.port,
            "GET",
            "/x",
            [JSON, ("Cookie", f"{SESSION}={first}"), ("Cookie", f"{SESSION}={second}")],
        )
    else:
        response = await get(client, "/x", f"{SESSION}={first}; {SESSION}={second}")
    assert response.status == 401
    assert clears_session(response)
    assert app.seen == []


async def test_the_app_gets_no_lookalike_and_no_copy_of_our_cookies_on_public_paths(
    gateway, db, alice
):
    async with recorder("app") as app:
        client = await gateway(
            server={"public_url": PUBLIC_URL},
            upstream=[{"name": "app", "url": app.url}],
            rule=[{"path": "/public/", "policy": "public"}],
        )
        cookie = "; ".join(f"{name}=planted{i}" for i, name in enumerate(LOOKALIKES))
        cookie += f"; {SESSION}=first; {SESSION}=second"  # and ours twice
        response = await get(client, "/public/x", f"theme=dark; {cookie}; lang=en")
        assert response.status == 200
        (seen,) = app.seen
        forwarded = [v for k, v in seen.headers if k.lower() == "cookie"]
        assert forwarded == ["theme=dark; lang=en"]


@pytest.mark.parametrize("space", ["\u2000", "\u00a0", "\u3000"], ids=["2000", "00A0", "3000"])
async def test_an_app_cannot_plant_a_lookalike_of_our_cookies(gateway, space):
    planted = f"{space}{SESSION}".encode()
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
        b"Set-Cookie: " + planted + b"=mallory; Path=/\r\n"
        b"Set-Cookie: __HOST-gateway_session=mallory; Path=/\r\n"
        b"Set-Cookie: theme=dark; Path=/\r\n\r\nok"
    )
    async with raw_upstream(answer) as app:
        client = await gateway(
            server={"public_url": PUBLIC_URL},
            upstream=[{"name": "app", "url": app.url}],
            rule=[{"path": "/", "policy": "public"}],
        )
        response = await get(client, "/x", "a=1")
        assert response.status == 200
        assert response.headers.getall("Set-Cookie") == ["theme=dark; Path=/"]


# -- the gateway's own pages: the CSRF cookie follows the same rule -----------------


async def csrf_pair(client) -> tuple[str, str]:
    """(a fresh nonce, the form token for it), as the sign-in page hands them out."""
    page = await raw_request("127.0.0.1", client.port, "GET", "/_gateway/login", [])
    nonce = re.search(rf"{CSRF_COOKIE}=([^;]+);", page.headers["Set-Cookie"]).group(1)
    assert client.app[CSRF].valid(nonce, client.app[CSRF].token(nonce))
    return nonce, client.app[CSRF].token(nonce)


async def post_login(client, cookie: str, token: str):
    body = f"csrf_token={quote(token)}&username=alice&password=x".encode()
    return await raw_request(
        "127.0.0.1",
        client.port,
        "POST",
        "/_gateway/login",
        [("Cookie", cookie), ("Content-Type", "application/x-www-form-urlencoded")],
        body,
        encoding="utf-8",
    )


@pytest.mark.parametrize(
    "shape",
    ["lookalike-alone", "lookalike-beside", "twice", "two-nonces"],
)
async def test_the_csrf_cookie_must_be_ours_exactly_and_once(gateway, db, alice, shape):
    client = await gateway(server={"public_url": PUBLIC_URL})
    nonce, token = await csrf_pair(client)
    other, _ = await csrf_pair(client)
    # Control: the nonce alone, under its exact name, gets past CSRF (to the password check).
    assert (await post_login(client, f"{CSRF_COOKIE}={nonce}", token)).status == 401
    cookie = {
        "lookalike-alone": f"\u2000{CSRF_COOKIE}={nonce}",
        "lookalike-beside": f"\u2000{CSRF_COOKIE}={other}; {CSRF_COOKIE}={nonce}",
        "twice": f"{CSRF_COOKIE}={nonce}; {CSRF_COOKIE}={nonce}",
        "two-nonces": f"{CSRF_COOKIE}={nonce}; {CSRF_COOKIE}={other}",
    }[shape]
    response = await post_login(client, cookie, token)
    assert response.status == 403
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0
