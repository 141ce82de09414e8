"""policy.redirects.safe_redirect: where a post-login `rd` may send the browser.

DESIGN "Sessions and credentials": only a path starting with one `/`, or an
absolute http(s) URL to our host or an allowed_redirect_hosts entry; no
userinfo, control characters or backslashes. Anything else goes to `/`.
"""

from __future__ import annotations

import pytest

from gateway.policy.redirects import safe_redirect

OWN = "localhost:8080"
# Allowed hosts are configured in every hostile case, so a lookalike of an
# allowed host is tested against the real check, not an empty list.
ALLOWED = (".example.com", "intranet.corp")

HOSTILE = [
    # protocol-relative and backslash tricks
    "//evil.com",
    "///evil.com",
    "////evil.com",
    "//evil.com/path",
    "/\\evil.com",
    "\\/evil.com",
    "\\\\evil.com",
    "/\\/evil.com",
    "//\\evil.com",
    # schemes without // or with a single /
    "https:evil.com",
    "http:evil.com",
    "http:/evil.com",
    "https:/\\evil.com",
    "http:///evil.com",
    "http://evil.com",
    "https://evil.com/",
    "HTTP://evil.com/",
    # percent-encoded slashes and backslashes that decode to // or /\
    "/%2F%2Fevil.com",
    "/%2f%2fevil.com",
    "/%2Fevil.com",
    "/%2Fok",
    "/%5Cevil.com",
    "/%5cevil.com",
    "%2F%2Fevil.com",
    # userinfo
    "//evil.com@localhost:8080",
    "http://localhost:8080@evil.com",
    "http://localhost:8080@evil.com/",
    "http://user:pass@localhost:8080/",
    "http://@localhost:8080/",
    "https://evil.com@app.example.com/",
    # our host as a prefix/suffix/fragment/query of another host
    "http://localhost.evil.com",
    "http://localhost.evil.com:8080/",
    "http://localhost:8080.evil.com/",
    "http://evil.com#@localhost:8080",
    "http://evil.com?@localhost:8080",
    "http://evil.com\\@localhost:8080",
    "http://evil.com/localhost:8080",
    # our host name on another port, bad ports
    "http://localhost/",
    "http://localhost:9090/",
    "http://localhost:8080:80/",
    "http://localhost:abc/",
    "http://localhost:99999/",
    # script and other schemes
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "javascript://localhost:8080/%0aalert(1)",
    "data:text/html,x",
    "vbscript:msgbox(1)",
    "ftp://localhost:8080/",
    "ws://localhost:8080/",
    "file:///etc/passwd",
    "localhost:8080/x",
    "evil.com",
    # control characters, whitespace
    "/\t/evil.com",
    "/\n/evil.com",
    "\t//evil.com",
    "/x\r\nSet-Cookie: a=b",
    "/x\x00",
    "\x00/x",
    "/x\x7f",
    "http://localhost:8080/\x00",
    "  /x",
    " /x",
    "/x ",
    " http://localhost:8080/",
    "/%09/evil.com",
    "/%0a/evil.com",
    "/%0d%0aSet-Cookie:%20a=b",
    "/%00",
    # full-width / ideographic lookalikes
    "/\uff0f\uff0fevil.com",
    "\uff0f\uff0fevil.com",
    "/\uff3cevil.com",
    "//evil%E3%80%82com",
    "http://evil%E3%80%82com/",
    "http://evil\u3002com/",
    "http://localhost\uff0e:8080/",
    "http://ex\u0430mple.com/",
    # lookalikes of the allowed hosts
    "https://badexample.com/",
    "https://example.com.evil.com/",
    "https://.example.com/",
    "https://evil.com/.example.com",
    "https://evilintranet.corp/",
    "https://intranet.corp.evil.com/",
    "https://evil.com?intranet.corp",
    # IP literals and empty hosts
    "http://[::1]/",
    "http://[::1]:8080/",
    "http://[localhost]/",
    "http://127.0.0.1:8080/",
    "http://:8080/",
    "http:",
    "https://",
    # empty and very long
    "",
    "/" + "a" * 5000,
    "http://localhost:8080/" + "a" * 5000,
]


@pytest.mark.parametrize("rd", HOSTILE)
def test_hostile_redirect_goes_home(rd):
    assert safe_redirect(rd, OWN, ALLOWED) == "/"
    assert safe_redirect(rd, OWN) == "/"


def test_none_redirect_goes_home():
    assert safe_redirect(None, OWN, ALLOWED) == "/"


@pytest.mark.parametrize(
    ("rd", "allowed"),
    [
        ("/", ()),
        ("/a", ()),
        ("/a/b?c=d#e", ()),
        ("/a/b/?x=1&y=2", ()),
        ("/~user/page.html", ()),
        ("/a%2Fb", ()),
        ("/path?next=%2Fhome", ()),
        ("/search?q=a+b", ()),
        # %20 decodes to a space, which is neither a control character nor a
        # backslash: a search URL the user was on must survive the login.
        ("/search?q=a%20b", ()),
        ("/#/route", ()),
        ("http://localhost:8080", ()),
        ("http://localhost:8080/x", ()),
        ("http://LOCALHOST:8080/x", ()),
        ("https://localhost:8080/x?y=1", ()),
        ("http://localhost.:8080/x", ()),
        ("https://app.example.com/x", (".example.com",)),
        ("https://a.b.example.com/", (".example.com",)),
        ("http://app.example.com:8443/x", (".example.com",)),
        ("http://intranet.corp/x", ("intranet.corp",)),
        ("https://intranet.corp/x", ("intranet.corp",)),
        ("http://intranet.corp:9999/x", ("intranet.corp",)),
        ("https://intranet.corp:443/", ALLOWED),
    ],
)
def test_good_redirect_is_returned_unchanged(rd, allowed):
    assert safe_redirect(rd, OWN, allowed) == rd


@pytest.mark.parametrize(
    ("rd", "own"),
    [
        ("http://example.com/x", "example.com"),
        ("http://example.com:80/x", "example.com"),
        ("https://example.com/x", "example.com"),
        ("https://example.com:443/x", "example.com"),
    ],
)
def test_default_port_matches_own_host_without_port(rd, own):
    assert safe_redirect(rd, own) == rd


def test_own_host_is_compared_case_insensitively():
    assert safe_redirect("http://localhost:8080/x", "LocalHost:8080") == "http://localhost:8080/x"


def test_allowed_host_does_not_cover_other_hosts():
    assert safe_redirect("https://other.corp/", OWN, ("intranet.corp",)) == "/"
    assert safe_redirect("https://intranet.corp/", OWN, ()) == "/"


def test_subdomain_entry_needs_the_leading_dot():
    # "example.com" (no dot) is one exact host, not a wildcard.
    assert safe_redirect("https://app.example.com/", OWN, ("example.com",)) == "/"
    assert safe_redirect("https://example.com/", OWN, ("example.com",)) == "https://example.com/"
