"""What the nginx and Caddy integration tests share: a browser, the sign-in
dance through a front proxy, and the hostile inputs both must withstand."""

from __future__ import annotations

import re

import aiohttp
from conftest import PASSWORD
from yarl import URL

IDENTITY = frozenset({"x-remote-user", "x-remote-email", "x-remote-name", "x-remote-groups"})

# Client-sent identity headers in the spellings app servers read as the real thing.
SPOOFS = [
    ("X-Remote-User", "mallory"),
    ("x-remote-user", "mallory"),
    ("X_Remote_User", "mallory"),
    ("X-Remote_User", "mallory"),
    ("X.Remote.User", "mallory"),
    ("X-Remote-Groups", "admins"),
    ("X_Remote_Groups", "admins"),
    ("X-Remote-Email", "mallory@evil.example"),
    ("X-Remote-Name", "Mallory"),
]

# Spellings an app resolves to /admin: a deny rule on "/admin/" must hold for each.
DENIED_SPELLINGS = [
    "/admin",
    "/admin/",
    "/admin/x",
    "//admin/x",
    "/./admin/x",
    "/%61dmin/x",
    "/public/../admin/x",
    "/public/%2e%2e/admin/x",
    "/admin;x=1/y",
    "/public/..%2Fadmin/x",
]


def with_addresses(text: str, source: str, replacements: list[tuple[str, str]]) -> str:
    """A shipped example config with only its addresses changed: each pattern exactly once."""
    for pattern, value in replacements:
        text, count = re.subn(pattern, value, text)
        assert count == 1, f"{source} no longer has exactly one {pattern!r}"
    return text


def browser() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden {name} on the page"
    return match.group(1).replace("&amp;", "&")


async def login_through(
    http: aiohttp.ClientSession, base: str, user: str = "alice", target: str = "/"
) -> URL:
    """Anonymous visit -> 302 to login -> form -> POST -> 303 back. Returns the final Location."""
    first = await http.get(base + target, headers={"Accept": "text/html"}, allow_redirects=False)
    assert first.status == 302, await first.text()
    page = await http.get(URL(base).join(URL(first.headers["Location"])))
    assert page.status == 200
    html = await page.text()
    response = await http.post(
        base + "/_gateway/login",
        data={
            "csrf_token": hidden(html, "csrf_token"),
            "rd": hidden(html, "rd"),
            "username": user,
            "password": PASSWORD,
        },
        headers={"Origin": base},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    return URL(response.headers["Location"])


def session_cookie(http: aiohttp.ClientSession) -> str:
    for cookie in http.cookie_jar:
        if cookie.key == "gateway_session":
            return cookie.value
    raise AssertionError("no session cookie")


def identity_seen(seen: list[list[str]]) -> dict[str, list[str]]:
    """Identity headers the app received, under any spelling (X_Remote_User, X.Remote.User)."""
    found: dict[str, list[str]] = {}
    for name, value in seen:
        canonical = name.lower().replace("_", "-").replace(".", "-")
        if canonical in IDENTITY:
            found.setdefault(canonical, []).append(value)
    return found
