"""Paths and hosts as the access rules see them, and the forward-auth request parser. Pure.

The contract (DESIGN.md, the `[[rule]]` issue): a path is normalised exactly as
the upstream will see it before any rule looks at it, so no spelling of
`/admin/x` slips past a deny or groups rule. These tables are the spellings.
"""

from __future__ import annotations

import pytest
from helpers import NONSENSE_HOSTS
from multidict import CIMultiDict

from gateway.config import Rule
from gateway.policy.paths import (
    BadPath,
    _request_host,
    normalize_host,
    normalize_path,
    request_host,
    valid_host,
)
from gateway.policy.rules import AUTHENTICATED, DENY, PUBLIC, RuleSet
from gateway.web.forward_auth import OriginalRequest, Unparseable, original_request
from gateway.web.login import rd_from_query

# --- normalize_path ---------------------------------------------------------

# Every spelling an app could resolve to /admin/x.
ADMIN_X = [
    "/admin/x",
    "//admin/x",
    "///admin//x",
    "/admin//x",
    "/./admin/x",
    "/admin/./x",
    "/././admin/./x",
    "/%61dmin/x",
    "/%61%64%6d%69%6e/%78",
    "/%2e/admin/x",
    "/public/../admin/x",
    "/public/./../admin/x",
    "/a/b/../../admin/x",
    "/public/%2e%2e/admin/x",
    "/public/%2E%2E/admin/x",
    "/public/.%2e/admin/x",
    "/public/%2e./admin/x",
    "/admin/y/../x",
    "/admin;jsessionid=1/x",
    "/admin/x;jsessionid=1",
    "/admin;a=1;b=2/x;c=3",
    "/;x/admin/x",
    "/public/..;/admin/x",
    "/public/..;jsessionid=1/admin/x",
    "/.;/admin/x",
    "/admin\\x",
    "/\\admin\\x",
    "/admin%5Cx",
    "/admin%5cx",
    "/public%5C..%5Cadmin%5Cx",
    "/admin%2Fx",
    "/admin%2fx",
    "/public%2F..%2Fadmin%2Fx",
    "/admin/x?y=1",
    "/admin/x?next=/../public",
    "/admin/x#frag",
    "/admin/x#/../../public",
    "/admin/x?a#b",
    "/public%3F/../admin/x",
]

# Every spelling an app could resolve to the bare /admin.
ADMIN_BARE = [
    "/admin",
    "//admin",
    "/./admin",
    "/%61dmin",
    "/public/../admin",
    "/public/%2e%2e/admin",
    "/admin;jsessionid=1",
    "/admin;",
    "/admin?x=1",
    "/admin#top",
    "/../admin",
    "/public/..;/admin",
]


@pytest.mark.parametrize("raw", ADMIN_X)
def test_spellings_of_admin_x_normalise_to_admin_x(raw):
    assert normalize_path(raw) == "/admin/x"


@pytest.mark.parametrize("raw", ADMIN_BARE)
def test_spellings_of_bare_admin_normalise_to_admin(raw):
    assert normalize_path(raw) == "/admin"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Decoded exactly once, as the app decodes PATH_INFO once: a double
        # encoding is a literal '%61' to the app, so it is not /admin to us.
        ("/%2561dmin/x", "/%61dmin/x"),
        ("/%2561dmin", "/%61dmin"),
        ("/public/%252e%252e/admin", "/public/%2e%2e/admin"),
        ("/admin%252Fx", "/admin%2Fx"),
        ("/%25", "/%"),
        # Case is kept: matching is case-sensitive (an operator writes a regex otherwise).
        ("/ADMIN/x", "/ADMIN/x"),
        ("/%41dmin/x", "/Admin/x"),
        # Not /admin at all.
        ("/administrator", "/administrator"),
        ("/admin%3Fx", "/admin?x"),
        ("/public/x", "/public/x"),
        ("/%C3%A9t%C3%A9", "/\u00e9t\u00e9"),
        ("/...", "/..."),
        ("/a/.../b", "/a/.../b"),
        ("/.hidden/x", "/.hidden/x"),
    ],
)
def test_what_does_not_become_admin(raw, expected):
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("//", "/"),
        ("/admin/", "/admin/"),
        ("/admin//", "/admin/"),
        ("/admin/.", "/admin/"),
        ("/admin/%2e", "/admin/"),
        ("/admin/x/..", "/admin/"),
        ("/admin/x/%2e%2e", "/admin/"),
        ("/admin;x/", "/admin/"),
        ("/admin/;x", "/admin/"),
        ("/admin/.;", "/admin/"),
        ("/admin/x/", "/admin/x/"),
        ("/admin/..", "/"),
        ("/admin", "/admin"),
        ("/admin/?q", "/admin/"),
    ],
)
def test_trailing_slash(raw, expected):
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/..", "/"),
        ("/../", "/"),
        ("/../admin", "/admin"),
        ("/../../../admin/x", "/admin/x"),
        ("/%2e%2e/%2e%2e/admin", "/admin"),
        ("/a/../../admin/x", "/admin/x"),
        ("/..;/admin", "/admin"),
        ("/..\\admin", "/admin"),
    ],
)
def test_dot_dot_above_root_stays_at_root(raw, expected):
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        # control characters, raw or encoded
        "/admin%00/x",
        "/admin/x%00",
        "/%00",
        "/admin%0d%0aX-Injected:%201",
        "/admin%0A",
        "/admin%0D",
        "/admin%09",
        "/admin\t/x",
        "/admin\x00",
        "/admin\r\n",
        "/admin%7f",
        "/admin%1b",
        "/admin;%00/x",
        # invalid UTF-8 after decoding
        "/%ff",
        "/admin%ff/x",
        "/admin%c0%ae%c0%ae/x",
        "/%e2%82",
        "/%80",
        # no leading slash
        "",
        "admin/x",
        "*",
        "?x=1",
        "#x",
        "%2Fadmin",
        "\\admin",
        "http://h/admin",
    ],
)
def test_bad_paths_raise(raw):
    with pytest.raises(BadPath):
        normalize_path(raw)


def test_bad_path_is_a_value_error():
    assert issubclass(BadPath, ValueError)


# --- normalize_host ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("APP.Example.com", "app.example.com"),
        ("example.com.", "example.com"),
        ("Example.COM.", "example.com"),
        ("example.com:8080", "example.com"),
        ("example.com:443", "example.com"),
        ("Example.COM.:8080", "example.com"),
        ("example.com:", "example.com"),
        ("  example.com  ", "example.com"),
        (" example.com ", "example.com"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:8080", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[::1]:8080", "::1"),
        ("[FE80::1]:443", "fe80::1"),
        ("[2001:DB8::1]", "2001:db8::1"),
        ("[2001:DB8::1]:443", "2001:db8::1"),
        ("::1", "::1"),
        ("localhost", "localhost"),
        ("", ""),
    ],
)
def test_normalize_host(raw, expected):
    assert normalize_host(raw) == expected


# --- original_request -------------------------------------------------------


def h(**headers: str) -> CIMultiDict[str]:
    return CIMultiDict((k.replace("_", "-"), v) for k, v in headers.items())


def test_nginx_style():
    got = original_request(
        h(
            X_Original_URL="https://App.Example.com:8443/public/../admin/x?y=1",
            X_Original_Method="POST",
        )
    )
    assert got == OriginalRequest("POST", "https", "app.example.com", "/admin/x")


def test_nginx_style_header_names_are_case_insensitive():
    headers = CIMultiDict(
        {"x-original-url": "http://app.example.com/a", "x-original-method": "PUT"}
    )
    assert original_request(headers) == OriginalRequest("PUT", "http", "app.example.com", "/a")


def test_nginx_style_without_path_is_root():
    assert original_request(h(X_Original_URL="http://app.example.com")).path == "/"


def test_nginx_style_scheme_is_lower_cased():
    assert original_request(h(X_Original_URL="HTTPS://app.example.com/")).scheme == "https"


def test_nginx_style_ipv6_host():
    got = original_request(h(X_Original_URL="http://[::1]:8080/x"))
    assert (got.host, got.path) == ("::1", "/x")


def test_memoised_answers_follow_every_describing_header():
    # original_request is memoised on its headers: each of them must be part of the key.
    url = "http://app.example.com/memo"
    assert original_request(h(X_Original_URL=url)).method == "GET"
    assert original_request(h(X_Original_URL=url, X_Original_Method="POST")).method == "POST"
    assert original_request(h(X_Original_URL=url)).method == "GET"
    with pytest.raises(Unparseable):
        original_request(h(X_Original_URL=url, X_Forwarded_Method="PUT", X_Original_Method="GET"))
    with pytest.raises(Unparseable):  # a refusal is not remembered as an answer
        original_request(h(X_Original_URL=url, X_Forwarded_Uri="/other", X_Forwarded_Host="x"))
    assert original_request(h(X_Original_URL=url)).path == "/memo"


def test_long_original_requests_are_answered_but_not_memoised():
    from gateway.web.forward_auth import MEMO_MAX_CHARS, _original_request

    before = _original_request.cache_info().currsize
    for i in range(20):
        path = f"/long/{i}/" + "x" * MEMO_MAX_CHARS
        got = original_request(h(X_Original_URL="http://app.example.com" + path))
        assert got.path == path
    assert _original_request.cache_info().currsize == before


TRAEFIK = {
    "X-Forwarded-Method": "DELETE",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "APP.example.com.:8443",
    "X-Forwarded-Uri": "/api/../admin;x/items/1?x=2",
    "X-Forwarded-For": "203.0.113.9",
}


def test_traefik_style():
    got = original_request(CIMultiDict(TRAEFIK))
    assert got == OriginalRequest("DELETE", "https", "app.example.com", "/admin/items/1")


def test_caddy_style_is_the_same_header_set():
    # Caddy's forward_auth sends X-Forwarded-Method/-Uri; its reverse_proxy adds
    # X-Forwarded-For/-Proto/-Host. Header names arrive in Go's canonical case.
    caddy = CIMultiDict(
        [
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-Host", "app.example.com"),
            ("X-Forwarded-Method", "PATCH"),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Uri", "/%61dmin/x"),
        ]
    )
    assert original_request(caddy) == OriginalRequest(
        "PATCH", "http", "app.example.com", "/admin/x"
    )


def test_forwarded_proto_defaults_to_http_and_is_lower_cased():
    base = {"X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "/"}
    assert original_request(CIMultiDict(base)).scheme == "http"
    assert original_request(CIMultiDict({**base, "X-Forwarded-Proto": "HTTPS"})).scheme == "https"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Original-URL": "http://app.example.com/x"},
        {"X-Original-URL": "http://app.example.com/x", "X-Original-Method": ""},
        {"X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "/x"},
    ],
)
def test_method_defaults_to_get(headers):
    assert original_request(CIMultiDict(headers)).method == "GET"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Original-URL": "http://app.example.com/x", "X-Original-Method": "post"},
        {"X-Original-URL": "http://app.example.com/x", "X-Forwarded-Method": "Post"},
        {
            "X-Forwarded-Host": "app.example.com",
            "X-Forwarded-Uri": "/x",
            "X-Forwarded-Method": "post",
        },
    ],
)
def test_method_is_upper_cased(headers):
    assert original_request(CIMultiDict(headers)).method == "POST"


def test_conflicting_method_headers_are_unparseable():
    """Either could be the client's own: a methods rule must not hang on a guess."""
    headers = h(
        X_Original_URL="http://app.example.com/x", X_Original_Method="PUT", X_Forwarded_Method="GET"
    )
    with pytest.raises(Unparseable):
        original_request(headers)
    agreeing = h(
        X_Original_URL="http://app.example.com/x", X_Original_Method="PUT", X_Forwarded_Method="put"
    )
    assert original_request(agreeing).method == "PUT"


@pytest.mark.parametrize("method", ["BREW", "G ET", "GET\t", "GET,POST", "G\u00c9T", "-", "GET;"])
@pytest.mark.parametrize("style", ["nginx", "traefik"])
def test_bad_method_is_unparseable(method, style):
    if style == "nginx":
        headers = h(X_Original_URL="http://app.example.com/x", X_Original_Method=method)
    else:
        headers = h(
            X_Forwarded_Host="app.example.com", X_Forwarded_Uri="/x", X_Forwarded_Method=method
        )
    with pytest.raises(Unparseable):
        original_request(headers)


UNPARSEABLE = [
    pytest.param({}, id="missing-everything"),
    pytest.param({"X-Original-Method": "GET"}, id="method-only"),
    pytest.param({"X-Forwarded-Uri": "/x"}, id="uri-without-host"),
    pytest.param({"X-Forwarded-Host": "app.example.com"}, id="host-without-uri"),
    pytest.param({"X-Forwarded-Host": "", "X-Forwarded-Uri": "/x"}, id="empty-host"),
    pytest.param({"X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": ""}, id="empty-uri"),
    pytest.param({"X-Original-URL": ""}, id="empty-url"),
    pytest.param({"X-Original-URL": "/x"}, id="relative"),
    pytest.param({"X-Original-URL": "//app.example.com/x"}, id="scheme-relative"),
    pytest.param({"X-Original-URL": "http://a@b/"}, id="userinfo"),
    pytest.param({"X-Original-URL": "http://user:pw@app.example.com/"}, id="userinfo-password"),
    pytest.param({"X-Original-URL": "http://app.example.com\\@evil.test/"}, id="backslash-at"),
    pytest.param({"X-Original-URL": "javascript:alert(1)"}, id="javascript"),
    pytest.param({"X-Original-URL": "ftp://app.example.com/x"}, id="ftp"),
    pytest.param({"X-Original-URL": "file:///etc/passwd"}, id="file"),
    pytest.param({"X-Original-URL": "garbage"}, id="garbage"),
    pytest.param({"X-Original-URL": "::::"}, id="colons"),
    pytest.param({"X-Original-URL": "http:///admin"}, id="no-host"),
    pytest.param({"X-Original-URL": "http://[::1/x"}, id="broken-ipv6"),
    pytest.param({"X-Original-URL": "http://app example.com/"}, id="host-with-space"),
    pytest.param({"X-Original-URL": "http://app.example.com\\admin"}, id="backslash-host"),
    pytest.param({"X-Original-URL": "http://app.example.com/%00"}, id="nul-path"),
    pytest.param({"X-Original-URL": "http://app.example.com/%0d%0aX:1"}, id="crlf-path"),
    pytest.param({"X-Original-URL": "http://app.example.com/%ff"}, id="bad-utf8-path"),
    pytest.param(
        {
            "X-Forwarded-Proto": "ftp",
            "X-Forwarded-Host": "app.example.com",
            "X-Forwarded-Uri": "/x",
        },
        id="proto-ftp",
    ),
    pytest.param(
        {"X-Forwarded-Proto": "javascript", "X-Forwarded-Host": "h", "X-Forwarded-Uri": "/x"},
        id="proto-javascript",
    ),
    pytest.param({"X-Forwarded-Host": "app example.com", "X-Forwarded-Uri": "/x"}, id="xfh-space"),
    pytest.param({"X-Forwarded-Host": "a@app.example.com", "X-Forwarded-Uri": "/x"}, id="xfh-at"),
    pytest.param({"X-Forwarded-Host": "app.example.com/x", "X-Forwarded-Uri": "/"}, id="xfh-slash"),
    pytest.param({"X-Forwarded-Host": "app\\example", "X-Forwarded-Uri": "/"}, id="xfh-backslash"),
    pytest.param({"X-Forwarded-Host": ".", "X-Forwarded-Uri": "/x"}, id="xfh-dot"),
    pytest.param(
        {"X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "x"}, id="uri-relative"
    ),
    pytest.param({"X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "/%00"}, id="uri-nul"),
    pytest.param({"X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "/%ff"}, id="uri-utf8"),
]


@pytest.mark.parametrize("headers", UNPARSEABLE)
def test_unparseable(headers):
    with pytest.raises(Unparseable):
        original_request(CIMultiDict(headers))


def test_unparseable_is_a_value_error():
    assert issubclass(Unparseable, ValueError)


# --- the property: no spelling slips past a deny rule -----------------------

DENY_ADMIN = RuleSet((Rule(path="/admin/", policy=DENY), Rule(path="/public/", policy=PUBLIC)))

DENIED_SPELLINGS = [
    ("app.example.com", "/admin", "GET"),
    ("app.example.com", "/admin/", "GET"),
    ("app.example.com", "/admin/x", "POST"),
    ("APP.Example.com.", "//admin/x", "get"),
    ("app.example.com:8080", "/./admin", "HEAD"),
    ("app.example.com", "/%61dmin", "GET"),
    ("app.example.com", "/%61dmin/x", "DELETE"),
    ("app.example.com", "/public/../admin", "GET"),
    ("app.example.com", "/public/%2e%2e/admin/x", "GET"),
    ("app.example.com", "/public/%2E%2E/admin", "PUT"),
    ("app.example.com", "/admin;jsessionid=1", "GET"),
    ("app.example.com", "/admin;jsessionid=1/x", "GET"),
    ("app.example.com", "/public/..;/admin/x", "GET"),
    ("app.example.com", "/admin\\x", "GET"),
    ("app.example.com", "/admin%5Cx", "GET"),
    ("app.example.com", "/admin%2Fx", "GET"),
    ("app.example.com", "/admin?x=/public/", "GET"),
    ("app.example.com", "/admin#/public/", "GET"),
    ("app.example.com", "/../../admin/x", "OPTIONS"),
    ("[::1]:8080", "/admin//x", "GET"),
    ("app.example.com", "/public/./../admin/.", "GET"),
    ("app.example.com", "/public%2F..%2Fadmin", "GET"),
]


@pytest.mark.parametrize(("host", "path", "method"), DENIED_SPELLINGS)
def test_no_spelling_slips_past_a_deny_rule(host, path, method):
    decision = DENY_ADMIN.decide(normalize_host(host), normalize_path(path), method)
    assert decision.policy == DENY


@pytest.mark.parametrize(
    ("path", "policy"),
    [
        ("/public/x", PUBLIC),
        ("/public/%2e%2e%2fx", AUTHENTICATED),  # '%2f' is '/': this is /public/../x = /x
        ("/x", AUTHENTICATED),
        ("/administrator", AUTHENTICATED),
        ("/%2561dmin/x", AUTHENTICATED),
        ("/ADMIN/x", AUTHENTICATED),
    ],
)
def test_the_deny_rule_is_not_a_blanket(path, policy):
    # Controls for the property above: the same rule set lets other paths through.
    assert DENY_ADMIN.decide("app.example.com", normalize_path(path), "GET").policy == policy


# --- rd_from_query ----------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "rd"),
    [
        ("rd=http://h/p?a=1&b=2", "http://h/p?a=1&b=2"),
        ("rd=%2Fx%3Fa%3D1", "/x?a=1"),
        ("foo=1&rd=/y", "/y"),
        ("", ""),
        ("foo=1", ""),
        ("rd=", ""),
        ("rd=/a%26b", "/a&b"),
    ],
)
def test_rd_from_query(query, rd):
    assert rd_from_query(query) == rd


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "example.com:8080",
        "127.0.0.1:18080",
        "[::1]",
        "[::1]:8080",
        "a_b.internal",
        "localhost",
        "xn--bcher-kva.example",
    ],
)
def test_valid_host(host):
    assert valid_host(host)
    assert request_host(host) == normalize_host(host)  # and the same through the memo
    assert request_host(host) == normalize_host(host)


@pytest.mark.parametrize("host", NONSENSE_HOSTS)
def test_nonsense_host_is_not_valid(host):
    assert not valid_host(host)
    assert request_host(host) is None


def test_longest_valid_host_still_passes_and_long_ones_are_not_memoised():
    longest = "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61 + ":65535"
    assert valid_host(longest) and request_host(longest) == normalize_host(longest)
    before = _request_host.cache_info().currsize
    for i in range(50):
        assert request_host(f"{i}" + "h" * 4000) is None
    assert _request_host.cache_info().currsize == before
