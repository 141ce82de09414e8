"""Configuration: TOML file plus GATEWAY_* environment overrides.

Pure module (no aiohttp). Validation walks the whole file and collects every
problem before failing, so an operator fixes a config in one round trip
instead of one error per restart (oauth2-proxy does the same).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .header_names import identity_name_errors

DEFAULT_CONFIG_FILE = "config.toml"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_DURATION = re.compile(r"(\d+)([smhd])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_COOKIE_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
POLICIES = ("public", "authenticated", "deny")


class ConfigError(Exception):
    """Every problem found in a config, one human-readable line each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://localhost:8080"
    prefix: str = "/_gateway"
    trusted_proxies: tuple[IPNetwork, ...] = (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
    # A connection must send its first request head within this, and one IP
    # (other than a trusted proxy) may hold this many connections still owing one.
    head_timeout: int = 10
    max_pending_per_ip: int = 64

    @property
    def https(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def public_host(self) -> str:
        """Host[:port] of public_url, lower-cased, default port left out."""
        parts = urlsplit(self.public_url)
        host = (parts.hostname or "").rstrip(".")
        default = 443 if parts.scheme == "https" else 80
        return host if parts.port in (None, default) else f"{host}:{parts.port}"


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = ""
    data_dir: Path = Path(".gateway")


@dataclass(frozen=True)
class SessionConfig:
    cookie_name: str = "gateway_session"
    cookie_domain: str = ""
    idle_timeout: int = 3600
    absolute_timeout: int = 12 * 3600
    remember_me: int = 30 * 86400
    allowed_redirect_hosts: tuple[str, ...] = ()
    # The session cache serves only while its LISTEN connection has answered
    # within this long: a silent database hang turns it off within this bound.
    cache_trust: int = 2


@dataclass(frozen=True)
class LoginConfig:
    max_failures_per_user: int = 10
    max_failures_per_ip: int = 50
    window: int = 15 * 60


@dataclass(frozen=True)
class IdentityHeaders:
    user: str = "X-Remote-User"
    email: str = "X-Remote-Email"
    name: str = "X-Remote-Name"
    groups: str = "X-Remote-Groups"

    def names(self) -> tuple[str, ...]:
        return (self.user, self.email, self.name, self.groups)


@dataclass(frozen=True)
class Upstream:
    name: str
    url: str
    host: str = ""
    path: str = "/"
    timeout: int = 60
    # WebSockets open to this app at once; beyond it, 503. Each holds a
    # connection of its own, so none of them keeps a request waiting.
    max_websockets: int = 4096


@dataclass(frozen=True)
class Rule:
    path: str = ""
    host: str = ""
    regex: bool = False
    methods: tuple[str, ...] = ()
    policy: str = "authenticated"
    groups: tuple[str, ...] = ()


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "text"  # "json": one JSON object per line, for log shippers
    access_log: bool = True


@dataclass(frozen=True)
class RetentionConfig:
    audit_log: int = 90 * 86400
    purge_interval: int = 600


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    login: LoginConfig = field(default_factory=LoginConfig)
    identity_headers: IdentityHeaders = field(default_factory=IdentityHeaders)
    upstreams: tuple[Upstream, ...] = ()
    rules: tuple[Rule, ...] = ()
    log: LogConfig = field(default_factory=LogConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    secret_key: str = ""
    source: str = "<defaults>"

    def with_database_url(self, url: str) -> Config:
        return replace(self, database=replace(self.database, url=url))


def parse_duration(value: str) -> int:
    """'90s', '15m', '1h30m', '30d' -> seconds. Raises ValueError."""
    text = value.strip().lower()
    if not text:
        raise ValueError("empty duration")
    pos = 0
    total = 0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or total <= 0:
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


class _Reader:
    """Walks one TOML table, recording errors instead of raising."""

    def __init__(self, errors: list[str], source: str) -> None:
        self.errors = errors
        self.source = source

    def error(self, key: str, message: str) -> None:
        self.errors.append(f"{self.source}: {key}: {message}")

    def table(self, data: Mapping[str, Any], name: str) -> dict[str, Any]:
        value = data.get(name, {})
        if not isinstance(value, dict):
            self.error(name, "expected a table")
            return {}
        return value

    def unknown(self, table: Mapping[str, Any], allowed: set[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                self.error(f"{where}.{key}" if where else key, "unknown key")

    def get(
        self,
        table: Mapping[str, Any],
        key: str,
        where: str,
        default: Any,
        convert: Callable[[Any], Any],
        expected: str,
    ) -> Any:
        if key not in table:
            return default
        raw = table[key]
        try:
            return convert(raw)
        except (ValueError, TypeError):
            self.error(f"{where}.{key}", f"expected {expected}, got {raw!r}")
            return default


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _integer(minimum: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(value)
        return value

    return convert


def _duration(value: Any) -> int:
    return parse_duration(_string(value))


def _string_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TypeError(value)
    return tuple(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(value)
    return value


def _http_url(value: Any) -> str:
    text = _string(value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(text)
    _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
    return text.rstrip("/")


def _prefix(value: Any) -> str:
    text = _string(value).rstrip("/")
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", text):
        raise ValueError(text)
    return text


def _networks(value: Any) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in _string_list(value))


def _header_name(value: Any) -> str:
    text = _string(value)
    if not _HEADER_NAME.fullmatch(text):
        raise ValueError(text)
    return text


def _cookie_name(value: Any) -> str:
    text = _string(value)
    if not _COOKIE_NAME.fullmatch(text):
        raise ValueError(text)
    return text


def _path_prefix(value: Any) -> str:
    text = _string(value)
    if not text.startswith("/"):
        raise ValueError(text)
    return text


def _methods(value: Any) -> tuple[str, ...]:
    methods = _string_list(value)
    if not all(re.fullmatch(r"[A-Za-z]+", m) for m in methods):
        raise ValueError(value)
    return tuple(m.upper() for m in methods)


def _policy(value: Any) -> str:
    text = _string(value)
    if text not in POLICIES:
        raise ValueError(text)
    return text


def _read_server(r: _Reader, data: Mapping[str, Any], env: Mapping[str, str]) -> ServerConfig:
    t = r.table(data, "server")
    r.unknown(
        t,
        {
            "listen",
            "public_url",
            "prefix",
            "trusted_proxies",
            "head_timeout",
            "max_pending_per_ip",
        },
        "server",
    )
    d = ServerConfig()
    listen = r.get(
        t,
        "listen",
        "server",
        (d.host, d.port),
        lambda v: parse_listen(_string(v)),
        "host:port such as '127.0.0.1:8080'",
    )
    if "GATEWAY_LISTEN" in env:
        try:
            listen = parse_listen(env["GATEWAY_LISTEN"])
        except ValueError:
            r.errors.append(f"GATEWAY_LISTEN: expected host:port, got {env['GATEWAY_LISTEN']!r}")
    public_url = r.get(
        t, "public_url", "server", d.public_url, _http_url, "an http:// or https:// URL"
    )
    if "GATEWAY_PUBLIC_URL" in env:
        try:
            public_url = _http_url(env["GATEWAY_PUBLIC_URL"])
        except ValueError:
            r.errors.append(
                f"GATEWAY_PUBLIC_URL: expected an http(s) URL, got {env['GATEWAY_PUBLIC_URL']!r}"
            )
    return ServerConfig(
        host=listen[0],
        port=listen[1],
        public_url=public_url,
        prefix=r.get(t, "prefix", "server", d.prefix, _prefix, "a path such as '/_gateway'"),
        trusted_proxies=r.get(
            t, "trusted_proxies", "server", d.trusted_proxies, _networks, "a list of CIDR networks"
        ),
        head_timeout=r.get(
            t, "head_timeout", "server", d.head_timeout, _duration, "a duration such as '10s'"
        ),
        max_pending_per_ip=r.get(
            t,
            "max_pending_per_ip",
            "server",
            d.max_pending_per_ip,
            _integer(1),
            "a whole number of at least 1",
        ),
    )


def _read_database(
    r: _Reader, data: Mapping[str, Any], env: Mapping[str, str], base: Path
) -> DatabaseConfig:
    t = r.table(data, "database")
    r.unknown(t, {"url", "data_dir"}, "database")
    url = r.get(t, "url", "database", "", _string, "a string")
    where = f"{r.source}: database.url"
    if env.get("GATEWAY_DATABASE_URL"):
        url, where = env["GATEWAY_DATABASE_URL"], "GATEWAY_DATABASE_URL"
    if url and urlsplit(url).scheme not in ("postgres", "postgresql"):
        r.errors.append(f"{where}: expected a postgresql:// URL")
    data_dir = Path(r.get(t, "data_dir", "database", ".gateway", _string, "a path"))
    return DatabaseConfig(url=url, data_dir=data_dir if data_dir.is_absolute() else base / data_dir)


def _read_session(r: _Reader, data: Mapping[str, Any]) -> SessionConfig:
    t = r.table(data, "session")
    keys = {
        "cookie_name",
        "cookie_domain",
        "idle_timeout",
        "absolute_timeout",
        "remember_me",
        "allowed_redirect_hosts",
        "cache_trust",
    }
    r.unknown(t, keys, "session")
    d = SessionConfig()
    dur = "a duration such as '30m', '12h' or '30d'"
    session = SessionConfig(
        cookie_name=r.get(
            t, "cookie_name", "session", d.cookie_name, _cookie_name, "a cookie name"
        ),
        cookie_domain=r.get(t, "cookie_domain", "session", "", _string, "a domain").lower(),
        idle_timeout=r.get(t, "idle_timeout", "session", d.idle_timeout, _duration, dur),
        absolute_timeout=r.get(
            t, "absolute_timeout", "session", d.absolute_timeout, _duration, dur
        ),
        remember_me=r.get(t, "remember_me", "session", d.remember_me, _duration, dur),
        allowed_redirect_hosts=tuple(
            h.lower()
            for h in r.get(
                t, "allowed_redirect_hosts", "session", (), _string_list, "a list of host names"
            )
        ),
        cache_trust=r.get(
            t, "cache_trust", "session", d.cache_trust, _duration, "a duration such as '2s'"
        ),
    )
    if session.idle_timeout > session.absolute_timeout:
        r.error("session.idle_timeout", "must not be longer than session.absolute_timeout")
    return session


def _read_login(r: _Reader, data: Mapping[str, Any]) -> LoginConfig:
    t = r.table(data, "login")
    r.unknown(t, {"max_failures_per_user", "max_failures_per_ip", "window"}, "login")
    d = LoginConfig()
    count = "a whole number of at least 1"
    return LoginConfig(
        max_failures_per_user=r.get(
            t, "max_failures_per_user", "login", d.max_failures_per_user, _integer(1), count
        ),
        max_failures_per_ip=r.get(
            t, "max_failures_per_ip", "login", d.max_failures_per_ip, _integer(1), count
        ),
        window=r.get(t, "window", "login", d.window, _duration, "a duration such as '15m'"),
    )


def _read_identity(r: _Reader, data: Mapping[str, Any]) -> IdentityHeaders:
    t = r.table(data, "identity_headers")
    r.unknown(t, {"user", "email", "name", "groups"}, "identity_headers")
    d = IdentityHeaders()
    name = "an HTTP header name"
    return IdentityHeaders(
        user=r.get(t, "user", "identity_headers", d.user, _header_name, name),
        email=r.get(t, "email", "identity_headers", d.email, _header_name, name),
        name=r.get(t, "name", "identity_headers", d.name, _header_name, name),
        groups=r.get(t, "groups", "identity_headers", d.groups, _header_name, name),
    )


def _array_of_tables(r: _Reader, data: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        r.error(name, f"expected [[{name}]] tables")
        return []
    return value


def _read_upstreams(r: _Reader, data: Mapping[str, Any]) -> tuple[Upstream, ...]:
    upstreams = []
    for i, t in enumerate(_array_of_tables(r, data, "upstream")):
        where = f"upstream[{i}]"
        r.unknown(t, {"name", "url", "host", "path", "timeout", "max_websockets"}, where)
        if "url" not in t:
            r.error(f"{where}.url", "missing")
        upstreams.append(
            Upstream(
                name=r.get(t, "name", where, f"upstream{i}", _string, "a string"),
                url=r.get(
                    t, "url", where, "http://invalid", _http_url, "an http:// or https:// URL"
                ),
                host=r.get(t, "host", where, "", _string, "a host name").lower().rstrip("."),
                path=r.get(t, "path", where, "/", _path_prefix, "a path starting with '/'"),
                timeout=r.get(t, "timeout", where, 60, _duration, "a duration such as '60s'"),
                max_websockets=r.get(
                    t,
                    "max_websockets",
                    where,
                    Upstream.max_websockets,
                    _integer(1),
                    "a whole number of at least 1",
                ),
            )
        )
    return tuple(upstreams)


def _read_rules(r: _Reader, data: Mapping[str, Any]) -> tuple[Rule, ...]:
    rules = []
    for i, t in enumerate(_array_of_tables(r, data, "rule")):
        where = f"rule[{i}]"
        r.unknown(t, {"path", "host", "regex", "methods", "policy", "groups"}, where)
        rule = Rule(
            path=r.get(t, "path", where, "", _string, "a path"),
            host=r.get(t, "host", where, "", _string, "a host name").lower().rstrip("."),
            regex=r.get(t, "regex", where, False, _boolean, "true or false"),
            methods=r.get(t, "methods", where, (), _methods, "a list of HTTP methods"),
            policy=r.get(
                t, "policy", where, "authenticated", _policy, "one of " + ", ".join(POLICIES)
            ),
            groups=r.get(t, "groups", where, (), _string_list, "a list of group names"),
        )
        if rule.regex:
            try:
                re.compile(rule.path)
            except re.error as exc:
                r.error(f"{where}.path", f"invalid regular expression: {exc}")
        elif rule.path and not rule.path.startswith("/"):
            r.error(f"{where}.path", "expected a path starting with '/'")
        if rule.groups and rule.policy != "authenticated":
            r.error(f"{where}.groups", "only makes sense with policy 'authenticated'")
        rules.append(rule)
    return tuple(rules)


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = _string(value).lower()
        if text not in options:
            raise ValueError(text)
        return text

    return convert


def _read_log(r: _Reader, data: Mapping[str, Any], env: Mapping[str, str]) -> LogConfig:
    t = dict(r.table(data, "log"))
    r.unknown(t, {"level", "format", "access_log"}, "log")
    d = LogConfig()
    level = r.get(
        t, "level", "log", d.level, _choice(LOG_LEVELS), "one of " + ", ".join(LOG_LEVELS)
    )
    fmt = r.get(
        t, "format", "log", d.format, _choice(LOG_FORMATS), "one of " + ", ".join(LOG_FORMATS)
    )
    for var, options in (("GATEWAY_LOG_LEVEL", LOG_LEVELS), ("GATEWAY_LOG_FORMAT", LOG_FORMATS)):
        if var in env:
            value = env[var].lower()
            if value not in options:
                r.errors.append(f"{var}: expected one of {', '.join(options)}, got {env[var]!r}")
            elif var == "GATEWAY_LOG_LEVEL":
                level = value
            else:
                fmt = value
    return LogConfig(
        level=level,
        format=fmt,
        access_log=r.get(t, "access_log", "log", d.access_log, _boolean, "true or false"),
    )


def _read_retention(r: _Reader, data: Mapping[str, Any]) -> RetentionConfig:
    t = r.table(data, "retention")
    r.unknown(t, {"audit_log", "purge_interval"}, "retention")
    d = RetentionConfig()
    dur = "a duration such as '90d' or '10m'"
    return RetentionConfig(
        audit_log=r.get(t, "audit_log", "retention", d.audit_log, _duration, dur),
        purge_interval=r.get(t, "purge_interval", "retention", d.purge_interval, _duration, dur),
    )


def _env_upstream(r: _Reader, env: Mapping[str, str]) -> tuple[Upstream, ...] | None:
    """GATEWAY_UPSTREAM_URL: one catch-all upstream, for config-less sidecars."""
    url = env.get("GATEWAY_UPSTREAM_URL")
    if not url:
        return None
    try:
        return (Upstream(name="app", url=_http_url(url)),)
    except ValueError:
        r.errors.append(f"GATEWAY_UPSTREAM_URL: expected an http(s) URL, got {url!r}")
        return None


def _override(from_file: tuple[Upstream, ...], from_env: tuple[Upstream, ...] | None):
    # The file is still validated when the environment replaces its upstreams.
    return from_env if from_env is not None else from_file


_TOP_LEVEL = {
    "server",
    "database",
    "session",
    "login",
    "identity_headers",
    "upstream",
    "rule",
    "log",
    "retention",
}


def build_config(
    data: Mapping[str, Any],
    *,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Config:
    """Validate parsed TOML (plus environment overrides) into a Config."""
    env = os.environ if env is None else env
    errors: list[str] = []
    r = _Reader(errors, source)
    r.unknown(data, _TOP_LEVEL, "")
    config = Config(
        server=_read_server(r, data, env),
        database=_read_database(r, data, env, base_dir or Path.cwd()),
        session=_read_session(r, data),
        login=_read_login(r, data),
        identity_headers=_read_identity(r, data),
        upstreams=_override(_read_upstreams(r, data), _env_upstream(r, env)),
        rules=_read_rules(r, data),
        log=_read_log(r, data, env),
        retention=_read_retention(r, data),
        secret_key=env.get("GATEWAY_SECRET_KEY", ""),
        source=source,
    )
    if config.secret_key and len(config.secret_key) < 32:
        errors.append("GATEWAY_SECRET_KEY: must be at least 32 characters")
    for problem in identity_name_errors(config.identity_headers.names()):
        r.error("identity_headers", problem)
    if errors:
        raise ConfigError(errors)
    return config


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read the config file named by `path`, else GATEWAY_CONFIG, else ./config.toml.

    A missing ./config.toml (the implicit default) means built-in defaults plus
    environment, which is how the container image runs; a file named
    explicitly must exist.
    """
    env = os.environ if env is None else env
    explicit = path or env.get("GATEWAY_CONFIG")
    file = Path(explicit or DEFAULT_CONFIG_FILE)
    try:
        text = file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError([f"{file}: file not found"]) from None
        return build_config({}, source="<defaults>", env=env)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{file}: cannot read: {exc}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{file}: invalid TOML: {exc}"]) from None
    return build_config(data, source=str(file), env=env, base_dir=file.resolve().parent)
