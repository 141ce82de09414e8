"""gateway/config.py and settings.py as plain functions: build_config, load_config, parsers.

No server, no database. Every bad value must come back as a ConfigError whose
`.errors` has one line naming the file and the key, and several mistakes must
all be reported at once.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.config import (
    Config,
    ConfigError,
    DatabaseConfig,
    IdentityHeaders,
    LoginConfig,
    Rule,
    ServerConfig,
    SessionConfig,
    Upstream,
    build_config,
    load_config,
)
from gateway.reference import default_cell, reference_markdown
from gateway.settings import REPEATABLE, SETTINGS, parse_duration, parse_listen

SOURCE = "/etc/gateway/test.toml"
REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"
GOOD_SECRET = "s" * 32


def build(data: dict[str, Any], env: dict[str, str] | None = None, **kwargs: Any) -> Config:
    return build_config(data, source=SOURCE, env={} if env is None else env, **kwargs)


def errors_of(data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build(data, env)
    errors = info.value.errors
    assert errors, "ConfigError without any error line"
    # The exception's text is every line, so printing it shows them all.
    assert str(info.value) == "\n".join(errors)
    return errors


def assert_names(errors: list[str], key: str, source: str = SOURCE) -> None:
    """Some line names both the file and the key."""
    hits = [line for line in errors if source in line and key in line]
    assert hits, f"no error line naming {source} and {key!r} in {errors!r}"


# --------------------------------------------------------------------------
# parse_duration / parse_listen


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("1s", 1),
        ("15m", 15 * 60),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2h15m30s", 2 * 3600 + 15 * 60 + 30),
        ("30d", 30 * 86400),
        ("1d12h", 36 * 3600),
        ("15M", 900),
        (" 15m ", 900),
    ],
)
def test_parse_duration_good(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text",
    [
        "1x",
        "0s",
        "0h0m",
        "",
        "   ",
        "15",
        "m",
        "-5m",
        "1.5h",
        "1h 30m",
        "h1",
        "1h30",
        "30m1x",
        "5 m",
    ],
)
def test_parse_duration_bad(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::]:443", ("::", 443)),
        (":8080", ("0.0.0.0", 8080)),
    ],
)
def test_parse_listen_good(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "8080",
        "localhost",
        "",
        "localhost:",
        "localhost:0",
        "localhost:65536",
        "localhost:abc",
        "localhost:-1",
        "localhost:+80",
        "[::1]:",
        "[::1]",
        "[::1:8080",  # unbalanced bracket is not a host
    ],
)
def test_parse_listen_bad(text):
    with pytest.raises(ValueError):
        parse_listen(text)


# --------------------------------------------------------------------------
# defaults and a fully specified file


def test_empty_config_gives_defaults(tmp_path):
    config = build({}, base_dir=tmp_path)
    assert config.server == ServerConfig()
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8080
    assert config.server.public_url == "http://localhost:8080"
    assert config.server.prefix == "/_gateway"
    assert config.server.trusted_proxies == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
    assert config.database == DatabaseConfig(url="", data_dir=tmp_path / ".gateway")
    assert config.session == SessionConfig()
    assert config.session.cookie_name == "gateway_session"
    assert config.session.idle_timeout == timedelta(hours=1)
    assert config.session.absolute_timeout == timedelta(hours=12)
    assert config.session.remember_me == timedelta(days=30)
    assert config.session.cache_trust == timedelta(seconds=2)
    assert config.server.head_timeout == timedelta(seconds=10)
    assert config.retention.audit_log == timedelta(days=90)
    assert config.retention.purge_interval == timedelta(minutes=10)
    assert config.session.allowed_redirect_hosts == ()
    assert config.login == LoginConfig(
        max_failures_per_user=10, max_failures_per_ip=50, window=timedelta(minutes=15)
    )
    assert config.identity_headers == IdentityHeaders(
        user="X-Remote-User", email="X-Remote-Email", name="X-Remote-Name", groups="X-Remote-Groups"
    )
    assert config.upstreams == ()
    assert config.rules == ()
    assert config.secret_key == ""
    assert config.source == SOURCE


def test_empty_sections_give_defaults(tmp_path):
    data = {"server": {}, "database": {}, "session": {}, "login": {}, "identity_headers": {}}
    assert build(data, base_dir=tmp_path) == build({}, base_dir=tmp_path)


FULL = {
    "server": {
        "listen": "[::1]:9443",
        "public_url": "https://Gate.Example.com/",
        "prefix": "/auth/gw/",
        "trusted_proxies": ["10.0.0.0/8", "fd00::/8", "192.168.1.7", "172.16.5.4/12"],
    },
    "database": {"url": "postgresql://gw@db/gw", "data_dir": "/var/lib/gateway"},
    "session": {
        "cookie_name": "sid",
        "cookie_domain": "Example.COM",
        "idle_timeout": "15m",
        "absolute_timeout": "1h30m",
        "remember_me": "7d",
        "allowed_redirect_hosts": ["Intranet.Corp", ".example.com"],
    },
    "login": {"max_failures_per_user": 3, "max_failures_per_ip": 100, "window": "90s"},
    "identity_headers": {
        "user": "X-User",
        "email": "X-Email",
        "name": "X-Name",
        "groups": "X-Groups",
    },
    "upstream": [
        {"name": "app", "url": "http://127.0.0.1:9000/", "path": "/", "timeout": "2m"},
        {"name": "wiki", "url": "https://wiki.internal", "host": "Wiki.Example.com."},
    ],
    "rule": [
        {"path": "/static/", "policy": "public"},
        {"path": "/admin/", "groups": ["admins", "ops"]},
        {"path": "^/api/v[0-9]+/", "regex": True, "methods": ["post", "Delete"], "policy": "deny"},
        {"host": "*.Example.COM."},
    ],
}


def test_every_key_parses(tmp_path):
    config = build(FULL, base_dir=tmp_path)
    server = config.server
    assert (server.host, server.port) == ("::1", 9443)
    assert server.public_url == "https://Gate.Example.com"
    assert server.https is True
    assert server.public_host == "gate.example.com"
    assert server.prefix == "/auth/gw"
    assert server.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("172.16.0.0/12"),
    )
    assert config.database == DatabaseConfig(
        url="postgresql://gw@db/gw", data_dir=Path("/var/lib/gateway")
    )
    assert config.session == SessionConfig(
        cookie_name="sid",
        cookie_domain="example.com",
        idle_timeout=timedelta(minutes=15),
        absolute_timeout=timedelta(hours=1, minutes=30),
        remember_me=timedelta(days=7),
        allowed_redirect_hosts=("intranet.corp", ".example.com"),
    )
    assert config.login == LoginConfig(
        max_failures_per_user=3, max_failures_per_ip=100, window=timedelta(seconds=90)
    )
    assert config.identity_headers.names() == ("X-User", "X-Email", "X-Name", "X-Groups")
    assert config.upstreams == (
        Upstream(name="app", url="http://127.0.0.1:9000", path="/", timeout=timedelta(minutes=2)),
        Upstream(name="wiki", url="https://wiki.internal", host="wiki.example.com"),
    )
    assert config.rules == (
        Rule(path="/static/", policy="public"),
        Rule(path="/admin/", groups=("admins", "ops")),
        Rule(path="^/api/v[0-9]+/", regex=True, methods=("POST", "DELETE"), policy="deny"),
        Rule(host="*.example.com"),
    )


def test_upstream_defaults():
    (upstream,) = build({"upstream": [{"url": "http://127.0.0.1:9000"}]}).upstreams
    assert upstream == Upstream(name="upstream0", url="http://127.0.0.1:9000")
    assert (upstream.host, upstream.path, upstream.timeout) == ("", "/", timedelta(seconds=60))


def test_rule_defaults():
    (rule,) = build({"rule": [{"path": "/x"}]}).rules
    assert rule == Rule(path="/x", host="", regex=False, methods=(), policy="authenticated")


@pytest.mark.parametrize("policy", ["public", "authenticated", "deny"])
def test_every_policy_accepted(policy):
    (rule,) = build({"rule": [{"path": "/", "policy": policy}]}).rules
    assert rule.policy == policy


def test_groups_with_authenticated_policy_is_fine():
    data = {"rule": [{"path": "/admin/", "policy": "authenticated", "groups": ["admins"]}]}
    assert build(data).rules[0].groups == ("admins",)


def test_idle_equal_to_absolute_is_fine():
    data = {"session": {"idle_timeout": "2h", "absolute_timeout": "2h"}}
    assert build(data).session.idle_timeout == timedelta(hours=2)


# --------------------------------------------------------------------------
# ServerConfig.https / public_host


@pytest.mark.parametrize(
    ("public_url", "https", "public_host"),
    [
        ("http://localhost:8080", False, "localhost:8080"),
        ("http://LocalHost:8080", False, "localhost:8080"),
        ("https://Example.COM", True, "example.com"),
        ("https://example.com:443", True, "example.com"),
        ("https://example.com:443/base", True, "example.com"),
        ("http://example.com:80", False, "example.com"),
        ("https://example.com:8443", True, "example.com:8443"),
        ("http://example.com:443", False, "example.com:443"),
        ("https://example.com:80", True, "example.com:80"),
        ("https://example.com./", True, "example.com"),
    ],
)
def test_server_https_and_public_host(public_url, https, public_host):
    server = ServerConfig(public_url=public_url)
    assert server.https is https
    assert server.public_host == public_host
    built = build({"server": {"public_url": public_url}}).server
    assert built.https is https
    assert built.public_host == public_host


# --------------------------------------------------------------------------
# environment overrides


def test_env_overrides_file_values():
    data = {
        "server": {"listen": "127.0.0.1:8080", "public_url": "http://localhost:8080"},
        "database": {"url": "postgresql://file/db"},
    }
    env = {
        "GATEWAY_LISTEN": "0.0.0.0:9000",
        "GATEWAY_PUBLIC_URL": "https://gw.example.com",
        "GATEWAY_DATABASE_URL": "postgres://env/db",
        "GATEWAY_SECRET_KEY": GOOD_SECRET,
    }
    config = build(data, env)
    assert (config.server.host, config.server.port) == ("0.0.0.0", 9000)
    assert config.server.public_url == "https://gw.example.com"
    assert config.server.https is True
    assert config.database.url == "postgres://env/db"
    assert config.secret_key == GOOD_SECRET


def test_env_overrides_defaults():
    env = {"GATEWAY_LISTEN": "[::1]:7000", "GATEWAY_DATABASE_URL": "postgresql://h/d"}
    config = build({}, env)
    assert (config.server.host, config.server.port) == ("::1", 7000)
    assert config.database.url == "postgresql://h/d"


def test_without_env_the_file_wins():
    data = {"server": {"listen": "10.1.1.1:81"}, "database": {"url": "postgresql://file/db"}}
    config = build(data, {})
    assert (config.server.host, config.server.port) == ("10.1.1.1", 81)
    assert config.database.url == "postgresql://file/db"
    assert config.secret_key == ""


def test_env_none_reads_os_environ(monkeypatch):
    monkeypatch.setenv("GATEWAY_LISTEN", "127.0.0.1:9999")
    monkeypatch.setenv("GATEWAY_SECRET_KEY", GOOD_SECRET)
    config = build_config({}, source=SOURCE)
    assert config.server.port == 9999
    assert config.secret_key == GOOD_SECRET


@pytest.mark.parametrize("length", [32, 33, 64])
def test_secret_key_long_enough(length):
    assert build({}, {"GATEWAY_SECRET_KEY": "k" * length}).secret_key == "k" * length


@pytest.mark.parametrize("secret", ["k", "k" * 31, "short-secret"])
def test_secret_key_too_short(secret):
    errors = errors_of({}, {"GATEWAY_SECRET_KEY": secret})
    assert any("GATEWAY_SECRET_KEY" in line for line in errors), errors


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_LISTEN", "nonsense"),
        ("GATEWAY_LISTEN", "127.0.0.1:0"),
        ("GATEWAY_PUBLIC_URL", "ftp://example.com"),
        ("GATEWAY_PUBLIC_URL", "localhost:8080"),
        ("GATEWAY_PUBLIC_URL", "http://[::1"),
        ("GATEWAY_PUBLIC_URL", "http://localhost:99999"),
        ("GATEWAY_DATABASE_URL", "mysql://db/x"),
    ],
)
def test_bad_env_value_names_the_variable(name, value):
    errors = errors_of({}, {name: value})
    assert any(name in line for line in errors), errors


# --------------------------------------------------------------------------
# unknown keys


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"serverr": {}}, "serverr"),
        ({"secret_key": "x"}, "secret_key"),
        ({"server": {"lisen": "127.0.0.1:8080"}}, "server.lisen"),
        ({"server": {"public_host": "x"}}, "server.public_host"),
        ({"database": {"uri": "postgresql://x"}}, "database.uri"),
        ({"session": {"cookie": "x"}}, "session.cookie"),
        ({"session": {"idle": "1h"}}, "session.idle"),
        ({"login": {"max_failures": 3}}, "login.max_failures"),
        ({"identity_headers": {"role": "X-Role"}}, "identity_headers.role"),
        ({"upstream": [{"url": "http://a", "timout": "5s"}]}, "upstream[0].timout"),
        (
            {"upstream": [{"url": "http://a"}, {"url": "http://b", "hosts": "x"}]},
            "upstream[1].hosts",
        ),
        ({"rule": [{"path": "/", "method": ["GET"]}]}, "rule[0].method"),
        ({"rule": [{"path": "/"}, {"path": "/x", "polciy": "deny"}]}, "rule[1].polciy"),
    ],
)
def test_unknown_key_is_an_error_naming_it(data, key):
    errors = errors_of(data)
    assert_names(errors, key)
    assert any("unknown" in line for line in errors), errors


# --------------------------------------------------------------------------
# bad values


BAD_VALUES = [
    # section shape
    ({"server": "127.0.0.1:8080"}, "server"),
    ({"session": ["x"]}, "session"),
    ({"upstream": {"url": "http://a"}}, "upstream"),
    ({"upstream": "http://a"}, "upstream"),
    ({"rule": {"path": "/"}}, "rule"),
    # server
    ({"server": {"listen": 8080}}, "server.listen"),
    ({"server": {"listen": "localhost"}}, "server.listen"),
    ({"server": {"listen": "127.0.0.1:0"}}, "server.listen"),
    ({"server": {"listen": "127.0.0.1:70000"}}, "server.listen"),
    ({"server": {"listen": "[::1:8080"}}, "server.listen"),
    ({"server": {"public_url": "ftp://example.com"}}, "server.public_url"),
    ({"server": {"public_url": "localhost:8080"}}, "server.public_url"),
    ({"server": {"public_url": "http://"}}, "server.public_url"),
    ({"server": {"public_url": "example.com"}}, "server.public_url"),
    ({"server": {"public_url": 8080}}, "server.public_url"),
    ({"server": {"public_url": "http://[::1"}}, "server.public_url"),
    ({"server": {"public_url": "http://localhost:notaport"}}, "server.public_url"),
    ({"server": {"public_url": "http://localhost:99999"}}, "server.public_url"),
    ({"server": {"prefix": "_gateway"}}, "server.prefix"),
    ({"server": {"prefix": "/"}}, "server.prefix"),
    ({"server": {"prefix": ""}}, "server.prefix"),
    ({"server": {"prefix": "/a b"}}, "server.prefix"),
    ({"server": {"prefix": "/a//b"}}, "server.prefix"),
    ({"server": {"prefix": "/gw?x"}}, "server.prefix"),
    ({"server": {"prefix": 1}}, "server.prefix"),
    ({"server": {"trusted_proxies": "127.0.0.1/32"}}, "server.trusted_proxies"),
    ({"server": {"trusted_proxies": ["10.0.0.0/33"]}}, "server.trusted_proxies"),
    ({"server": {"trusted_proxies": ["not-a-network"]}}, "server.trusted_proxies"),
    ({"server": {"trusted_proxies": ["10.0.0.0/8", "::1/129"]}}, "server.trusted_proxies"),
    ({"server": {"trusted_proxies": ["300.1.1.1"]}}, "server.trusted_proxies"),
    ({"server": {"trusted_proxies": [10]}}, "server.trusted_proxies"),
    ({"server": {"trusted_proxies": [""]}}, "server.trusted_proxies"),
    # database
    ({"database": {"url": "mysql://db/x"}}, "database.url"),
    ({"database": {"url": "db.example.com"}}, "database.url"),
    ({"database": {"url": 5432}}, "database.url"),
    ({"database": {"data_dir": 5}}, "database.data_dir"),
    # session
    ({"session": {"cookie_name": "my session"}}, "session.cookie_name"),
    ({"session": {"cookie_name": ""}}, "session.cookie_name"),
    ({"session": {"cookie_name": "a;b"}}, "session.cookie_name"),
    ({"session": {"cookie_name": "a=b"}}, "session.cookie_name"),
    ({"session": {"cookie_name": "gw\n"}}, "session.cookie_name"),
    ({"session": {"cookie_name": 1}}, "session.cookie_name"),
    ({"session": {"cookie_domain": 5}}, "session.cookie_domain"),
    ({"session": {"idle_timeout": "1x"}}, "session.idle_timeout"),
    ({"session": {"idle_timeout": "0s"}}, "session.idle_timeout"),
    ({"session": {"idle_timeout": ""}}, "session.idle_timeout"),
    ({"session": {"idle_timeout": 3600}}, "session.idle_timeout"),
    ({"session": {"idle_timeout": True}}, "session.idle_timeout"),
    ({"session": {"absolute_timeout": "-1h"}}, "session.absolute_timeout"),
    ({"session": {"absolute_timeout": "12 hours"}}, "session.absolute_timeout"),
    ({"session": {"remember_me": "forever"}}, "session.remember_me"),
    ({"session": {"remember_me": 1.5}}, "session.remember_me"),
    ({"session": {"idle_timeout": "13h"}}, "session.idle_timeout"),  # > default 12h absolute
    ({"session": {"idle_timeout": "2h", "absolute_timeout": "1h"}}, "session.idle_timeout"),
    ({"session": {"allowed_redirect_hosts": "example.com"}}, "session.allowed_redirect_hosts"),
    ({"session": {"allowed_redirect_hosts": [""]}}, "session.allowed_redirect_hosts"),
    ({"session": {"allowed_redirect_hosts": [1]}}, "session.allowed_redirect_hosts"),
    # login
    ({"login": {"max_failures_per_user": 0}}, "login.max_failures_per_user"),
    ({"login": {"max_failures_per_user": -1}}, "login.max_failures_per_user"),
    ({"login": {"max_failures_per_user": True}}, "login.max_failures_per_user"),
    ({"login": {"max_failures_per_user": "10"}}, "login.max_failures_per_user"),
    ({"login": {"max_failures_per_user": 1.5}}, "login.max_failures_per_user"),
    ({"login": {"max_failures_per_ip": -5}}, "login.max_failures_per_ip"),
    ({"login": {"max_failures_per_ip": False}}, "login.max_failures_per_ip"),
    ({"login": {"window": "0s"}}, "login.window"),
    ({"login": {"window": "1x"}}, "login.window"),
    ({"login": {"window": 900}}, "login.window"),
    # identity headers
    ({"identity_headers": {"user": "X Remote User"}}, "identity_headers.user"),
    ({"identity_headers": {"user": ""}}, "identity_headers.user"),
    ({"identity_headers": {"user": "X-Remote-User:"}}, "identity_headers.user"),
    ({"identity_headers": {"user": "X-Remote-User\n"}}, "identity_headers.user"),
    ({"identity_headers": {"email": "X-Émail"}}, "identity_headers.email"),
    ({"identity_headers": {"name": 5}}, "identity_headers.name"),
    ({"identity_headers": {"groups": ["X-Groups"]}}, "identity_headers.groups"),
    ({"identity_headers": {"email": "X-Remote-User"}}, "identity_headers"),
    ({"identity_headers": {"groups": "x-remote-user"}}, "identity_headers"),
    # Identity headers are compared case-insensitively and with '_' for '-'
    # (DESIGN: spoof stripping), so these two are the same header to an app.
    ({"identity_headers": {"email": "X_Remote_User"}}, "identity_headers"),
    # Names the gateway sets itself, or that frame the message: an identity
    # header there would be sent twice, or change how the request is read.
    ({"identity_headers": {"user": "X-Forwarded-Host"}}, "identity_headers"),
    ({"identity_headers": {"user": "x_request_id"}}, "identity_headers"),
    ({"identity_headers": {"name": "Cookie"}}, "identity_headers"),
    ({"identity_headers": {"groups": "Transfer-Encoding"}}, "identity_headers"),
    ({"identity_headers": {"email": "Host"}}, "identity_headers"),
    # upstreams
    ({"upstream": [{"name": "app"}]}, "upstream[0].url"),
    ({"upstream": [{"url": "localhost:9000"}]}, "upstream[0].url"),
    ({"upstream": [{"url": "ftp://files"}]}, "upstream[0].url"),
    ({"upstream": [{"url": 9000}]}, "upstream[0].url"),
    ({"upstream": [{"url": "http://127.0.0.1:99999"}]}, "upstream[0].url"),
    ({"upstream": [{"url": "http://a", "path": "app"}]}, "upstream[0].path"),
    ({"upstream": [{"url": "http://a", "path": 1}]}, "upstream[0].path"),
    ({"upstream": [{"url": "http://a", "timeout": "0s"}]}, "upstream[0].timeout"),
    ({"upstream": [{"url": "http://a", "timeout": 30}]}, "upstream[0].timeout"),
    ({"upstream": [{"url": "http://a", "name": 5}]}, "upstream[0].name"),
    ({"upstream": [{"url": "http://a", "host": 5}]}, "upstream[0].host"),
    ({"upstream": [{"url": "http://a"}, {"url": "nope"}]}, "upstream[1].url"),
    # rules
    ({"rule": [{"path": "/", "policy": "allow"}]}, "rule[0].policy"),
    ({"rule": [{"path": "/", "policy": "Public"}]}, "rule[0].policy"),
    ({"rule": [{"path": "/", "policy": 1}]}, "rule[0].policy"),
    ({"rule": [{"path": "/", "regex": "yes"}]}, "rule[0].regex"),
    ({"rule": [{"path": "/", "regex": 1}]}, "rule[0].regex"),
    ({"rule": [{"path": "admin/"}]}, "rule[0].path"),
    ({"rule": [{"path": 5}]}, "rule[0].path"),
    ({"rule": [{"path": "(", "regex": True}]}, "rule[0].path"),
    ({"rule": [{"path": "[a-", "regex": True}]}, "rule[0].path"),
    ({"rule": [{"path": "/", "methods": "GET"}]}, "rule[0].methods"),
    ({"rule": [{"path": "/", "methods": ["GET POST"]}]}, "rule[0].methods"),
    ({"rule": [{"path": "/", "methods": ["GET", ""]}]}, "rule[0].methods"),
    ({"rule": [{"path": "/", "methods": [1]}]}, "rule[0].methods"),
    ({"rule": [{"path": "/", "groups": "admins"}]}, "rule[0].groups"),
    ({"rule": [{"path": "/", "groups": [""]}]}, "rule[0].groups"),
    ({"rule": [{"path": "/", "policy": "deny", "groups": ["admins"]}]}, "rule[0].groups"),
    ({"rule": [{"path": "/", "policy": "public", "groups": ["admins"]}]}, "rule[0].groups"),
    ({"rule": [{"path": "/", "host": 5}]}, "rule[0].host"),
    ({"rule": [{"path": "/"}, {"path": "/x", "policy": "nope"}]}, "rule[1].policy"),
]


def _case_id(data: dict[str, Any], key: str) -> str:
    return f"{key}={_leaf(data)!r}"[:60]


def _leaf(value: Any) -> Any:
    while isinstance(value, dict | list) and len(value) >= 1:
        value = list(value.values())[-1] if isinstance(value, dict) else value[-1]
    return value


@pytest.mark.parametrize(
    ("data", "key"), BAD_VALUES, ids=[_case_id(data, key) for data, key in BAD_VALUES]
)
def test_bad_value_is_an_error_naming_file_and_key(data, key):
    assert_names(errors_of(data), key)


def test_bad_value_error_shows_the_value():
    errors = errors_of({"login": {"window": "1x"}})
    assert any("login.window" in line and "1x" in line for line in errors), errors


def test_every_mistake_is_reported_at_once():
    data = {
        "bogus": 1,
        "server": {"lisen": "x", "listen": "nowhere", "prefix": "gw"},
        "database": {"url": "mysql://x"},
        "session": {"idle_timeout": "1x", "remember_me": "0s"},
        "login": {"max_failures_per_user": -3, "window": True},
        "identity_headers": {"user": "bad header"},
        "upstream": [{"url": "nope", "timout": "1s"}],
        "rule": [{"path": "(", "regex": True}, {"path": "/", "policy": "deny", "groups": ["a"]}],
    }
    errors = errors_of(data, {"GATEWAY_SECRET_KEY": "short", "GATEWAY_LISTEN": "bad"})
    for key in [
        "bogus",
        "server.lisen",
        "server.listen",
        "server.prefix",
        "database.url",
        "session.idle_timeout",
        "session.remember_me",
        "login.max_failures_per_user",
        "login.window",
        "identity_headers.user",
        "upstream[0].url",
        "upstream[0].timout",
        "rule[0].path",
        "rule[1].groups",
    ]:
        assert_names(errors, key)
    assert any("GATEWAY_SECRET_KEY" in line for line in errors)
    assert any("GATEWAY_LISTEN" in line for line in errors)
    assert len(errors) >= 16
    # One line per problem: no line hides a second one.
    assert all("\n" not in line for line in errors)


def test_each_error_is_reported_once():
    errors = errors_of({"server": {"lisen": "x"}, "login": {"window": "0s"}})
    assert len(errors) == 2


# --------------------------------------------------------------------------
# load_config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_load_explicit_file(tmp_path):
    file = write(tmp_path / "gw.toml", '[server]\nlisten = "127.0.0.1:9001"\n')
    config = load_config(file, env={})
    assert config.server.port == 9001
    assert config.source == str(file)


def test_load_explicit_missing_file_is_an_error(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, env={})
    assert len(info.value.errors) == 1
    assert str(missing) in info.value.errors[0]


def test_load_gateway_config_env_names_the_file(tmp_path, monkeypatch):
    file = write(tmp_path / "elsewhere" / "gw.toml", '[login]\nwindow = "5m"\n')
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "config.toml", '[login]\nwindow = "1h"\n')
    assert load_config(env={"GATEWAY_CONFIG": str(file)}).login.window == timedelta(minutes=5)


def test_load_gateway_config_env_missing_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_config(env={"GATEWAY_CONFIG": str(missing)})
    assert str(missing) in info.value.errors[0]


def test_load_explicit_path_beats_gateway_config(tmp_path):
    a = write(tmp_path / "a.toml", '[login]\nwindow = "1m"\n')
    b = write(tmp_path / "b.toml", '[login]\nwindow = "2m"\n')
    assert load_config(a, env={"GATEWAY_CONFIG": str(b)}).login.window == timedelta(minutes=1)


def test_load_implicit_missing_config_gives_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(env={})
    assert config.server == ServerConfig()
    assert config.session == SessionConfig()
    assert config.upstreams == ()
    assert config.database.data_dir == tmp_path / ".gateway"


def test_load_implicit_missing_config_still_applies_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(env={"GATEWAY_LISTEN": "0.0.0.0:8000", "GATEWAY_SECRET_KEY": GOOD_SECRET})
    assert (config.server.host, config.server.port) == ("0.0.0.0", 8000)
    assert config.secret_key == GOOD_SECRET


def test_load_implicit_config_toml_in_cwd(tmp_path, monkeypatch):
    write(tmp_path / "config.toml", '[server]\nprefix = "/gw"\n')
    monkeypatch.chdir(tmp_path)
    assert load_config(env={}).server.prefix == "/gw"


@pytest.mark.parametrize(
    "text",
    [
        "[server\nlisten = 1\n",
        'listen = "a"\nlisten = "b"\n',
        "[server]\nlisten = \n",
        "[[upstream]\n",
    ],
)
def test_load_invalid_toml_is_one_clear_error(tmp_path, text):
    file = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(file, env={})
    (line,) = info.value.errors
    assert str(file) in line
    assert "TOML" in line


def test_load_non_utf8_file_is_an_error(tmp_path):
    file = tmp_path / "latin1.toml"
    file.write_bytes(b'[session]\ncookie_name = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(file, env={})
    assert str(file) in info.value.errors[0]


def test_load_errors_name_the_file(tmp_path):
    file = write(tmp_path / "gw.toml", '[server]\nlisen = "x"\n[login]\nwindow = "1x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(file, env={})
    assert_names(info.value.errors, "server.lisen", source=str(file))
    assert_names(info.value.errors, "login.window", source=str(file))


def test_relative_data_dir_resolves_against_config_dir(tmp_path, monkeypatch):
    file = write(tmp_path / "etc" / "gw.toml", '[database]\ndata_dir = "state/pg"\n')
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(file, env={})
    assert config.database.data_dir == (tmp_path / "etc" / "state" / "pg").resolve()


def test_relative_config_path_resolves_data_dir_absolutely(tmp_path, monkeypatch):
    write(tmp_path / "etc" / "gw.toml", "")
    monkeypatch.chdir(tmp_path)
    config = load_config("etc/gw.toml", env={})
    assert config.database.data_dir.is_absolute()
    assert config.database.data_dir == (tmp_path / "etc" / ".gateway").resolve()


def test_absolute_data_dir_is_kept(tmp_path):
    target = tmp_path / "abs" / "data"
    file = write(tmp_path / "gw.toml", f'[database]\ndata_dir = "{target.as_posix()}"\n')
    assert load_config(file, env={}).database.data_dir == target


def test_build_config_relative_data_dir_uses_base_dir(tmp_path):
    config = build({"database": {"data_dir": "pg"}}, base_dir=tmp_path)
    assert config.database.data_dir == tmp_path / "pg"


def test_repo_config_toml_loads():
    config = load_config(REPO_CONFIG, env={})
    assert config.source == str(REPO_CONFIG)
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.server.prefix == "/_gateway"
    assert config.database.data_dir == REPO_CONFIG.parent / ".gateway"
    assert [u.name for u in config.upstreams] == ["app"]
    assert config.upstreams[0].url == "http://127.0.0.1:9000"
    assert config.rules == (
        Rule(path="/static/", policy="public"),
        Rule(path="/admin/", groups=("admins",)),
    )


def test_reserved_identity_names_cover_every_header_the_proxy_rebuilds_or_drops():
    # An identity header named like one of these would be dropped, or sent twice.
    from gateway.header_names import RESERVED
    from gateway.web.headers import REQUEST_DROP

    assert REQUEST_DROP <= RESERVED


# --------------------------------------------------------------------------
# the one table: the README's reference is rendered from it


def test_readme_config_reference_is_the_tables_rendering():
    readme = (REPO_CONFIG.parent / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- config-reference:start")
    start = readme.index("-->\n", start) + len("-->\n")
    end = readme.index("<!-- config-reference:end -->")
    assert readme[start:end] == reference_markdown(), (
        "README.md's config reference is stale: paste `python -m gateway.config --markdown`"
    )


def test_reference_command_prints_the_reference_and_refuses_other_arguments():
    run = [sys.executable, "-m", "gateway.config"]
    done = subprocess.run([*run, "--markdown"], capture_output=True, text=True, check=True)
    assert done.stdout == reference_markdown()
    wrong = subprocess.run([*run, "--html"], capture_output=True, text=True)
    assert (wrong.returncode, wrong.stderr) == (1, "usage: python -m gateway.config --markdown\n")


@pytest.mark.parametrize(
    "setting", [s for s in SETTINGS if s.default is not None], ids=lambda s: f"{s.section}.{s.key}"
)
def test_a_default_spelled_out_reads_as_the_default(setting):
    base = {"url": "http://a"} if setting.section == "upstream" else {}

    def read(table):
        if setting.section in REPEATABLE:
            return build({setting.section: [table]})
        return build({setting.section: table})

    assert read({**base, setting.key: setting.default}) == read(base)
    assert f"| `{setting.key}` | {default_cell(setting)} |" in reference_markdown()
