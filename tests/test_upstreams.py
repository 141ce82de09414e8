"""policy.upstreams.UpstreamTable: which `[[upstream]]` a request goes to
(host-specific first, then the longest matching path prefix).
"""

from __future__ import annotations

import pytest

from gateway.config import Upstream
from gateway.policy.upstreams import UpstreamTable


def up(name: str, path: str = "/", host: str = "") -> Upstream:
    return Upstream(name=name, url=f"http://{name}.internal", host=host, path=path)


def match_name(upstreams: list[Upstream], host: str, path: str) -> str | None:
    found = UpstreamTable(tuple(upstreams)).match(host, path)
    return found.name if found else None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "root"),
        ("/other", "root"),
        ("/app", "app"),
        ("/app/", "app"),
        ("/app/x", "app"),
        ("/apple", "root"),
        ("/app-x", "root"),
        ("/app/api", "api"),
        ("/app/api/v1", "api"),
        ("/app/apix", "app"),
        ("/APP", "root"),
    ],
)
def test_longest_prefix_wins(path, expected):
    upstreams = [up("root", "/"), up("app", "/app"), up("api", "/app/api")]
    assert match_name(upstreams, "h", path) == expected
    # order in the config does not matter
    assert match_name(list(reversed(upstreams)), "h", path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/app", "app"), ("/app/x", "app"), ("/apple", None), ("/", None), ("/ap", None)],
)
def test_prefix_is_segment_aware(path, expected):
    assert match_name([up("app", "/app")], "h", path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/app/", "app"), ("/app/x", "app"), ("/apple", None)],
)
def test_prefix_with_trailing_slash(path, expected):
    assert match_name([up("app", "/app/")], "h", path) == expected


def test_nothing_matches_gives_none():
    assert UpstreamTable(()).match("h", "/") is None
    assert match_name([up("wiki", "/", host="wiki.example.com")], "app.example.com", "/") is None


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("wiki.example.com", "/", "wiki"),
        ("wiki.example.com", "/app/x", "wiki"),
        ("Wiki.Example.COM.", "/", "wiki"),
        ("wiki.example.com.evil", "/", "root"),
        ("app.example.com", "/", "root"),
        ("app.example.com", "/app/x", "app"),
        ("app.example.com", "/apple", "root"),
    ],
)
def test_host_specific_before_catch_all(host, path, expected):
    upstreams = [up("root", "/"), up("app", "/app"), up("wiki", "/", host="wiki.example.com")]
    assert match_name(upstreams, host, path) == expected
    assert match_name(list(reversed(upstreams)), host, path) == expected


def test_host_specific_longest_prefix():
    upstreams = [
        up("wiki", "/", host="wiki.example.com"),
        up("wiki-api", "/api", host="wiki.example.com"),
        up("root", "/"),
    ]
    assert match_name(upstreams, "wiki.example.com", "/api/x") == "wiki-api"
    assert match_name(upstreams, "wiki.example.com", "/apix") == "wiki"


def test_host_specific_without_matching_path_falls_back():
    upstreams = [up("wiki", "/wiki", host="wiki.example.com"), up("root", "/")]
    assert match_name(upstreams, "wiki.example.com", "/other") == "root"
    assert match_name(upstreams, "wiki.example.com", "/wiki/page") == "wiki"


def test_match_returns_the_upstream_object():
    app = up("app", "/app")
    assert UpstreamTable((app,)).match("h", "/app/x") is app
