"""The table of config settings, their converters, and the reference it renders.

Pure module. gateway.config reads a file through SETTINGS; the README's
config reference is rendered from it (gateway.reference), so
the keys a file may use, their defaults, their error messages and their
documentation cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

POLICIES = ("public", "authenticated", "deny")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")

_DURATION = re.compile(r"(\d+)([smhd])")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
# RFC 9110 tokens: both header and cookie names are one.
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


def parse_duration(value: str) -> timedelta:
    """'90s', '15m', '1h30m', '30d' -> timedelta. Raises ValueError."""
    text = value.strip().lower()
    if not text:
        raise ValueError("empty duration")
    pos = 0
    total = timedelta()
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})
        pos = match.end()
    if pos != len(text) or total <= timedelta():
        raise ValueError(value)
    return total


def parse_listen(value: str) -> tuple[str, int]:
    """'127.0.0.1:8080', '[::1]:8080', ':8080' -> (host, port). Raises ValueError."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(value)
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(value)
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise ValueError(value)
        host = host[1:-1]
    if "[" in host or "]" in host:
        raise ValueError(value)
    return host or "0.0.0.0", port


# Converters take a TOML value and raise ValueError or TypeError for a bad one.


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _matching(pattern: str | re.Pattern[str]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if not re.fullmatch(pattern, text := _string(value)):
            raise ValueError(text)
        return text

    return convert


def _choice(options: tuple[str, ...], *, fold: bool = False) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = _string(value).lower() if fold else _string(value)
        if text not in options:
            raise ValueError(text)
        return text

    return convert


def _integer(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        # TOML booleans are ints to Python; `true` is not a count.
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(value)
        if maximum is not None and value > maximum:
            raise ValueError(value)
        return value

    return convert


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(value)
    return value


def _string_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TypeError(value)
    return tuple(value)


def _duration(value: Any) -> timedelta:
    return parse_duration(_string(value))


def _listen(value: Any) -> tuple[str, int]:
    return parse_listen(_string(value))


def _http_url(value: Any) -> str:
    text = _string(value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(text)
    _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
    return text.rstrip("/")


def _prefix(value: Any) -> str:
    return _matching(r"(/[A-Za-z0-9._~-]+)+")(_string(value).rstrip("/"))


def _networks(value: Any) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in _string_list(value))


def _host(value: Any) -> str:
    # Hosts are compared lower-case and without the root's trailing dot.
    return _string(value).lower().rstrip(".")


def _host_list(value: Any) -> tuple[str, ...]:
    return tuple(h.lower() for h in _string_list(value))


def _lower(value: Any) -> str:
    return _string(value).lower()


def _path_prefix(value: Any) -> str:
    if not (text := _string(value)).startswith("/"):
        raise ValueError(text)
    return text


def _plain_text(limit: int) -> Callable[[Any], str]:
    """One line a page prints as text: no control characters, at most `limit` characters."""

    def convert(value: Any) -> str:
        text = _string(value).strip()
        if len(text) > limit or re.search(r"[\x00-\x1f\x7f-\x9f]", text):
            raise ValueError(text)
        return text

    return convert


def _product_name(value: Any) -> str:
    if not (text := _plain_text(40)(value)):
        raise ValueError(text)
    return text


def _hex_colour(value: Any) -> str:
    """'' (the built-in look) or '#rgb' / '#rrggbb', returned as '#rrggbb' lower-case."""
    text = _string(value).strip().lower()
    if not text:
        return ""
    if not re.fullmatch(r"#([0-9a-f]{3}|[0-9a-f]{6})", text):
        raise ValueError(text)
    if len(text) == 4:
        text = "#" + "".join(c * 2 for c in text[1:])
    return text


def _methods(value: Any) -> tuple[str, ...]:
    methods = _string_list(value)
    if not all(re.fullmatch(r"[A-Za-z]+", m) for m in methods):
        raise ValueError(value)
    return tuple(m.upper() for m in methods)


@dataclass(frozen=True)
class Setting:
    """One key of one config table: how to read it, and how to document it."""

    section: str
    key: str
    convert: Callable[[Any], Any]
    default: Any  # as written in TOML; None when required or computed
    expected: str  # error messages read "expected <this>, got <value>"
    help: str
    env: str = ""
    env_expected: str = ""  # for the variable's error, when unlike `expected`
    env_if_set: bool = False  # an empty variable leaves the file's value alone
    required: bool = False
    shown: str = ""  # the default column, when the TOML literal would mislead

    def value(self) -> Any:
        """The default, converted as a file's value would be."""
        return None if self.default is None else self.convert(self.default)


DURATION = "a duration such as '30m', '12h' or '30d'"
COUNT = "a whole number of at least 1"
HEADER = "an HTTP header name"
URL = "an http:// or https:// URL"

# fmt: off
SETTINGS: tuple[Setting, ...] = (
    Setting("server", "listen", _listen, "127.0.0.1:8080", "host:port such as '127.0.0.1:8080'",
        '`host:port` to listen on. `":8080"` means all IPv4 interfaces. Write IPv6 hosts in '
        'brackets: `"[::1]:8080"`.', env="GATEWAY_LISTEN", env_expected="host:port"),
    Setting("server", "public_url", _http_url, "http://localhost:8080", URL,
        "The URL users type. `https://` turns on Secure and `__Host-` cookies. Its host (and "
        'port) counts as "ours" for redirects and the CSRF origin check.',
        env="GATEWAY_PUBLIC_URL", env_expected="an http(s) URL"),
    Setting("server", "prefix", _prefix, "/_gateway", "a path such as '/_gateway'",
        "Path under which the gateway's own pages live. It is never proxied."),
    Setting("server", "trusted_proxies", _networks, ["127.0.0.1/32", "::1/128"],
        "a list of CIDR networks",
        "CIDR networks whose `X-Forwarded-For`, `-Proto`, `-Host` and `X-Request-ID` headers "
        "are believed, and whose routing headers (`X-Original-URL`, `X-Real-IP`, `Forwarded`, "
        "...) are passed to the app."),
    Setting("server", "head_timeout", _duration, "10s", "a duration such as '10s'",
        "A new connection must send a complete request head within this, or it is closed "
        "(slow-header clients). From a peer that is not a trusted proxy, so must every later "
        "head on a kept-alive connection: it idles between requests for at most this and a "
        "second. Trusted proxies' idle connections close after 75 s, longer than their own "
        "keep-alive."),
    Setting("server", "max_pending_per_ip", _integer(1), 64, COUNT,
        "How many connections one IP may hold that have owed a complete request head for over "
        "a second; beyond it, new ones are closed at once. Younger ones are not counted, so a "
        "burst (many people behind one address, a backlog accepted at once) is not refused. "
        "Trusted proxies are not counted. Per worker process."),
    Setting("database", "url", _string, "", "a string",
        "`postgresql://` URL. If empty, the embedded PostgreSQL is used.",
        env="GATEWAY_DATABASE_URL", env_if_set=True),
    Setting("database", "data_dir", _string, ".gateway", "a path",
        "Where the embedded PostgreSQL keeps its files. Relative paths are resolved from the "
        "config file's directory."),
    Setting("session", "cookie_name", _matching(_TOKEN), "gateway_session", "a cookie name",
        "Session cookie name. The CSRF cookie is `<cookie_name>_csrf`. On https without "
        "`cookie_domain`, both names get the `__Host-` prefix."),
    Setting("session", "cookie_domain", _lower, "", "a domain",
        'Set it (for example `"example.com"`) to share one sign-in across subdomains. If '
        "empty, the cookie is host-only."),
    Setting("session", "idle_timeout", _duration, "1h", DURATION,
        "A session ends after this long without a request. It must not be longer than "
        "`absolute_timeout`."),
    Setting("session", "absolute_timeout", _duration, "12h", DURATION,
        "A session ends this long after sign-in, however busy it is."),
    Setting("session", "remember_me", _duration, "30d", DURATION,
        'Session lifetime when "Keep me signed in" is ticked.'),
    Setting("session", "allowed_redirect_hosts", _host_list, [],
        "a list of host names",
        "Hosts a post-login redirect may go to, besides our own. Use exact names, or "
        '`".example.com"` for every subdomain.'),
    Setting("session", "cache_trust", _duration, "2s", "a duration such as '2s'",
        "Cached sessions are served only while the database's notification connection has "
        "answered a question asked within this long (it is asked every third of it). Longer "
        "means fewer heartbeats and a longer window in which a silent database hang still "
        "serves cached sessions."),
    Setting("login", "max_failures_per_user", _integer(1), 10, COUNT,
        "Failed sign-ins per username within `window` before that username is throttled."),
    Setting("login", "max_failures_per_ip", _integer(1), 50, COUNT,
        "Failed sign-ins per client IP within `window` before that IP is throttled."),
    Setting("login", "window", _duration, "15m", "a duration such as '15m'",
        "Counting window."),
    Setting("password", "min_length", _integer(8, 1024), 10, "a whole number from 8 to 1024",
        "Shortest new password, in characters (on the password page and for `gateway user "
        "add`/`passwd`), at most 1024: no password may be longer than 1024 bytes. A new "
        "password also may not be the username or one of the 20,000 "
        "most common passwords shipped with the gateway."),
    Setting("log", "level", _choice(LOG_LEVELS, fold=True), "info",
        "one of " + ", ".join(LOG_LEVELS), "`debug`, `info`, `warning` or `error`.",
        env="GATEWAY_LOG_LEVEL"),
    Setting("log", "format", _choice(LOG_FORMATS, fold=True), "text",
        "one of " + ", ".join(LOG_FORMATS), "`text`, or `json` for one JSON object per line.",
        env="GATEWAY_LOG_FORMAT"),
    Setting("log", "access_log", _boolean, True, "true or false",
        "One line per request (see [Observability](#observability))."),
    Setting("retention", "audit_log", _duration, "90d", "a duration such as '90d' or '10m'",
        "How long audit rows are kept."),
    Setting("retention", "purge_interval", _duration, "10m", "a duration such as '90d' or '10m'",
        "How often dead rows are purged."),
    Setting("branding", "name", _product_name, "Gateway", "1-40 characters of plain text",
        "The name the gateway's pages show (title, header, footer) instead of \"Gateway\"."),
    Setting("branding", "logo", _string, "", "a path",
        "An SVG or PNG file (at most 256 KiB) shown instead of the built-in mark, served at "
        "`{prefix}/branding/logo`. Relative paths are resolved from the config file's "
        "directory. Checked at start and by `check-config`."),
    Setting("branding", "accent_color", _hex_colour, "", "a hex colour such as '#0b7285'",
        "The colour of buttons, links and focus rings. Light and dark variants with readable "
        "text on them are derived from it. If empty, the built-in blue."),
    Setting("branding", "footer", _plain_text(200), "", "at most 200 characters of plain text",
        'A line under every page (help desk, owner), instead of "Protected by <name>".'),
    Setting("identity_headers", "user", _matching(_TOKEN), "X-Remote-User", HEADER, "username"),
    Setting("identity_headers", "email", _matching(_TOKEN), "X-Remote-Email", HEADER,
        "email address"),
    Setting("identity_headers", "name", _matching(_TOKEN), "X-Remote-Name", HEADER,
        "display name (CR/LF and characters outside Latin-1 are replaced)"),
    Setting("identity_headers", "groups", _matching(_TOKEN), "X-Remote-Groups", HEADER,
        "groups, comma-separated"),
    Setting("upstream", "name", _string, None, "a string", "Label used in logs.",
        shown='`"upstream<N>"`'),
    Setting("upstream", "url", _http_url, None, URL,
        "`http://` or `https://` base URL of the app. The request path is appended to it "
        "unchanged; the matched prefix is not stripped.", required=True, shown="required"),
    Setting("upstream", "host", _host, "", "a host name",
        "If set, the upstream serves only requests whose `Host` (without port) equals this "
        "name exactly."),
    Setting("upstream", "path", _path_prefix, "/", "a path starting with '/'",
        "Path prefix, matched by segment: `/app` serves `/app` and `/app/x`, not `/apple`."),
    Setting("upstream", "timeout", _duration, "60s", "a duration such as '60s'",
        "Limit on connecting, and on each wait for data from the app (and from a client "
        "sending a body: one that stalls mid-body gets 408). It does not limit the total "
        "response time."),
    Setting("upstream", "max_websockets", _integer(1), 4096, COUNT,
        "WebSockets open to this app at once, per worker process; one more gets 503. Each "
        "holds a connection of its own: no request ever waits on a shared pool for a "
        "connection a WebSocket or a long download holds."),
    Setting("rule", "path", _string, "", "a path",
        "A string prefix of the normalised path. A prefix ending in `/` also covers the bare "
        "path (`/admin/` matches `/admin`, `/admin/` and `/admin/x`); `/admin` without the "
        "slash also matches `/administrator`. With `regex = true`, it is a regular expression "
        'searched anywhere in the path, so anchor it: `"^/admin(/|$)"`.', shown='`""` (any)'),
    Setting("rule", "regex", _boolean, False, "true or false",
        "Treat `path` as a regular expression."),
    Setting("rule", "host", _host, "", "a host name",
        'Exact host, or `"*.example.com"` for its subdomains.', shown='`""` (any)'),
    Setting("rule", "methods", _methods, [], "a list of HTTP methods",
        'For example `["POST", "DELETE"]`.', shown="`[]` (any)"),
    Setting("rule", "policy", _choice(POLICIES), "authenticated",
        "one of " + ", ".join(POLICIES),
        "`public` (no sign-in needed), `authenticated`, or `deny` (403 for everyone)."),
    Setting("rule", "groups", _string_list, [], "a list of group names",
        "With `authenticated`: the user must be in at least one of these groups, or gets 403."),
)
# fmt: on

# Sections in the order the reference documents them.
SECTIONS: dict[str, dict[str, Setting]] = {}
for _setting in SETTINGS:
    SECTIONS.setdefault(_setting.section, {})[_setting.key] = _setting
REPEATABLE = frozenset({"upstream", "rule"})
# Each key's default as a value of its type, for the config dataclasses.
DEFAULTS = {name: {k: s.value() for k, s in keys.items()} for name, keys in SECTIONS.items()}
