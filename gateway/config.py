"""Configuration: TOML file plus GATEWAY_* environment overrides.

Pure module (no aiohttp). Every key is read through one table,
gateway.settings.SETTINGS: its converter, default, error phrase and
environment variable. Validation walks the whole file and collects every
problem before failing, so an operator fixes a config in one round trip
instead of one error per restart (oauth2-proxy does the same).

`python -m gateway.config --markdown` prints the README's config reference
from the same table (gateway/reference.py).
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .header_names import identity_name_errors
from .settings import (
    DEFAULTS,
    SECTIONS,
    IPNetwork,
    Setting,
)

__all__ = ["Config", "ConfigError", "build_config", "load_config"]

DEFAULT_CONFIG_FILE = "config.toml"


class ConfigError(Exception):
    """Every problem found in a config, one human-readable line each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULTS["server"]["listen"][0]
    port: int = DEFAULTS["server"]["listen"][1]
    public_url: str = DEFAULTS["server"]["public_url"]
    prefix: str = DEFAULTS["server"]["prefix"]
    trusted_proxies: tuple[IPNetwork, ...] = DEFAULTS["server"]["trusted_proxies"]
    head_timeout: timedelta = DEFAULTS["server"]["head_timeout"]
    max_pending_per_ip: int = DEFAULTS["server"]["max_pending_per_ip"]

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
    url: str = DEFAULTS["database"]["url"]
    data_dir: Path = Path(DEFAULTS["database"]["data_dir"])


@dataclass(frozen=True)
class SessionConfig:
    cookie_name: str = DEFAULTS["session"]["cookie_name"]
    cookie_domain: str = DEFAULTS["session"]["cookie_domain"]
    idle_timeout: timedelta = DEFAULTS["session"]["idle_timeout"]
    absolute_timeout: timedelta = DEFAULTS["session"]["absolute_timeout"]
    remember_me: timedelta = DEFAULTS["session"]["remember_me"]
    allowed_redirect_hosts: tuple[str, ...] = DEFAULTS["session"]["allowed_redirect_hosts"]
    cache_trust: timedelta = DEFAULTS["session"]["cache_trust"]


@dataclass(frozen=True)
class LoginConfig:
    max_failures_per_user: int = DEFAULTS["login"]["max_failures_per_user"]
    max_failures_per_ip: int = DEFAULTS["login"]["max_failures_per_ip"]
    window: timedelta = DEFAULTS["login"]["window"]


@dataclass(frozen=True)
class PasswordConfig:
    min_length: int = DEFAULTS["password"]["min_length"]


LOGO_MAX_BYTES = 256 * 1024


@dataclass(frozen=True)
class BrandingConfig:
    name: str = DEFAULTS["branding"]["name"]
    logo: Path | None = None
    logo_type: str = ""  # image/svg+xml or image/png, read off the file at load
    # The file as checked: what is served is what was checked, read once.
    logo_data: bytes = field(default=b"", repr=False)
    accent_color: str = DEFAULTS["branding"]["accent_color"]
    footer: str = DEFAULTS["branding"]["footer"]


@dataclass(frozen=True)
class IdentityHeaders:
    user: str = DEFAULTS["identity_headers"]["user"]
    email: str = DEFAULTS["identity_headers"]["email"]
    name: str = DEFAULTS["identity_headers"]["name"]
    groups: str = DEFAULTS["identity_headers"]["groups"]

    def names(self) -> tuple[str, ...]:
        return (self.user, self.email, self.name, self.groups)


@dataclass(frozen=True)
class Upstream:
    name: str
    url: str
    host: str = DEFAULTS["upstream"]["host"]
    path: str = DEFAULTS["upstream"]["path"]
    timeout: timedelta = DEFAULTS["upstream"]["timeout"]
    max_websockets: int = DEFAULTS["upstream"]["max_websockets"]


@dataclass(frozen=True)
class Rule:
    path: str = DEFAULTS["rule"]["path"]
    host: str = DEFAULTS["rule"]["host"]
    regex: bool = DEFAULTS["rule"]["regex"]
    methods: tuple[str, ...] = DEFAULTS["rule"]["methods"]
    policy: str = DEFAULTS["rule"]["policy"]
    groups: tuple[str, ...] = DEFAULTS["rule"]["groups"]


@dataclass(frozen=True)
class LogConfig:
    level: str = DEFAULTS["log"]["level"]
    format: str = DEFAULTS["log"]["format"]
    access_log: bool = DEFAULTS["log"]["access_log"]


@dataclass(frozen=True)
class RetentionConfig:
    audit_log: timedelta = DEFAULTS["retention"]["audit_log"]
    purge_interval: timedelta = DEFAULTS["retention"]["purge_interval"]


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    login: LoginConfig = field(default_factory=LoginConfig)
    password: PasswordConfig = field(default_factory=PasswordConfig)
    branding: BrandingConfig = field(default_factory=BrandingConfig)
    identity_headers: IdentityHeaders = field(default_factory=IdentityHeaders)
    upstreams: tuple[Upstream, ...] = ()
    rules: tuple[Rule, ...] = ()
    log: LogConfig = field(default_factory=LogConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    secret_key: str = ""
    source: str = "<defaults>"

    def with_database_url(self, url: str) -> Config:
        return replace(self, database=replace(self.database, url=url))


class _Reader:
    """Reads tables through SETTINGS, recording errors instead of raising."""

    def __init__(self, errors: list[str], source: str, env: Mapping[str, str]) -> None:
        self.errors = errors
        self.source = source
        self.env = env

    def error(self, key: str, message: str) -> None:
        self.errors.append(f"{self.source}: {key}: {message}")

    def unknown(self, table: Mapping[str, Any], allowed: Mapping[str, Any], where: str) -> None:
        for key in table:
            if key not in allowed:
                self.error(f"{where}.{key}" if where else key, "unknown key")

    def section(self, data: Mapping[str, Any], name: str) -> dict[str, Any]:
        """A [name] table's values, its defaults filled in, then the environment's."""
        table = data.get(name, {})
        if not isinstance(table, dict):
            self.error(name, "expected a table")
            table = {}
        values = self.values(table, name, name)
        for key, setting in SECTIONS[name].items():
            if setting.env:
                self._environment(values, key, setting)
        return values

    def tables(self, data: Mapping[str, Any], name: str) -> list[tuple[str, dict[str, Any]]]:
        """Each [[name]] table's values, with where its errors are reported."""
        tables = data.get(name, [])
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            self.error(name, f"expected [[{name}]] tables")
            return []
        return [
            (f"{name}[{i}]", self.values(t, name, f"{name}[{i}]")) for i, t in enumerate(tables)
        ]

    def values(self, table: Mapping[str, Any], section: str, where: str) -> dict[str, Any]:
        settings = SECTIONS[section]
        self.unknown(table, settings, where)
        for key, setting in settings.items():
            if setting.required and key not in table:
                self.error(f"{where}.{key}", "missing")
        values = {}
        for key, setting in settings.items():
            values[key] = setting.value()
            if key in table:
                raw = table[key]
                try:
                    values[key] = setting.convert(raw)
                except (ValueError, TypeError):
                    self.error(f"{where}.{key}", f"expected {setting.expected}, got {raw!r}")
        return values

    def _environment(self, values: dict[str, Any], key: str, setting: Setting) -> None:
        raw = self.env.get(setting.env)
        if raw is None or (setting.env_if_set and not raw):
            return
        try:
            values[key] = setting.convert(raw)
        except (ValueError, TypeError):
            expected = setting.env_expected or setting.expected
            self.errors.append(f"{setting.env}: expected {expected}, got {raw!r}")


def _server(r: _Reader, data: Mapping[str, Any]) -> ServerConfig:
    values = r.section(data, "server")
    host, port = values.pop("listen")
    return ServerConfig(host=host, port=port, **values)


def _database(r: _Reader, data: Mapping[str, Any], base: Path) -> DatabaseConfig:
    values = r.section(data, "database")
    url = values["url"]
    if url and urlsplit(url).scheme not in ("postgres", "postgresql"):
        from_env = r.env.get("GATEWAY_DATABASE_URL")
        where = "GATEWAY_DATABASE_URL" if from_env else f"{r.source}: database.url"
        r.errors.append(f"{where}: expected a postgresql:// URL")
    data_dir = Path(values["data_dir"])
    return DatabaseConfig(url=url, data_dir=data_dir if data_dir.is_absolute() else base / data_dir)


def _session(r: _Reader, data: Mapping[str, Any]) -> SessionConfig:
    session = SessionConfig(**r.section(data, "session"))
    if session.idle_timeout > session.absolute_timeout:
        r.error("session.idle_timeout", "must not be longer than session.absolute_timeout")
    return session


def logo_type(data: bytes) -> str | None:
    """image/png or image/svg+xml by what the file holds (not its name), else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    # An XML declaration, comments or a DOCTYPE may come before the <svg> element
    # (editors and icon sites write them); an HTML page is not a logo.
    head = data[:8192].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<") and b"<svg" in head and b"<html" not in head:
        return "image/svg+xml"
    return None


def _branding(r: _Reader, data: Mapping[str, Any], base: Path) -> BrandingConfig:
    values = r.section(data, "branding")
    logo = values.pop("logo")
    if not logo:
        return BrandingConfig(**values)
    path = Path(logo) if Path(logo).is_absolute() else base / logo
    where = "branding.logo"
    try:
        size = path.stat().st_size
        if size > LOGO_MAX_BYTES:
            r.error(where, f"{path} is {size} bytes; a logo may be at most {LOGO_MAX_BYTES}")
            return BrandingConfig(**values)
        data = path.read_bytes()
    except OSError as exc:
        r.error(where, f"cannot read {path}: {exc.strerror or exc}")
        return BrandingConfig(**values)
    kind = logo_type(data)
    if kind is None:
        r.error(where, f"{path} is neither an SVG nor a PNG file")
        return BrandingConfig(**values)
    return BrandingConfig(logo=path, logo_type=kind, logo_data=data, **values)


def _upstreams(r: _Reader, data: Mapping[str, Any]) -> tuple[Upstream, ...]:
    upstreams = []
    for i, (_, values) in enumerate(r.tables(data, "upstream")):
        values["name"] = values["name"] or f"upstream{i}"
        values["url"] = values["url"] or "http://invalid"  # reported missing or bad
        upstreams.append(Upstream(**values))
    # The file is still validated when the environment replaces its upstreams.
    if url := r.env.get("GATEWAY_UPSTREAM_URL"):
        try:
            return (Upstream(name="app", url=SECTIONS["upstream"]["url"].convert(url)),)
        except ValueError:
            r.errors.append(f"GATEWAY_UPSTREAM_URL: expected an http(s) URL, got {url!r}")
    return tuple(upstreams)


def _rules(r: _Reader, data: Mapping[str, Any]) -> tuple[Rule, ...]:
    rules = []
    for where, values in r.tables(data, "rule"):
        rule = Rule(**values)
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
    r = _Reader(errors, source, env)
    r.unknown(data, SECTIONS, "")
    config = Config(
        server=_server(r, data),
        database=_database(r, data, base_dir or Path.cwd()),
        session=_session(r, data),
        login=LoginConfig(**r.section(data, "login")),
        password=PasswordConfig(**r.section(data, "password")),
        branding=_branding(r, data, base_dir or Path.cwd()),
        identity_headers=IdentityHeaders(**r.section(data, "identity_headers")),
        upstreams=_upstreams(r, data),
        rules=_rules(r, data),
        log=LogConfig(**r.section(data, "log")),
        retention=RetentionConfig(**r.section(data, "retention")),
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


if __name__ == "__main__":
    from .reference import main

    sys.exit(main(sys.argv[1:]))
