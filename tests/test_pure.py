"""The pure modules as plain functions: no aiohttp server, no database.

redirects.safe_redirect, rules.RuleSet, proxy_routes.UpstreamTable, csrf,
passwords, cookies.split_cookies, paths.normalize_host,
header_names.header_key and the session token helpers.
"""

from __future__ import annotations

import hashlib
import re

import argon2
import pytest

from gateway.config import Rule, Upstream, build_config
from gateway.header_names import header_key
from gateway.policy.cookies import split_cookies
from gateway.policy.csrf import CsrfSigner, origin_of
from gateway.policy.csrf import check as csrf_check
from gateway.policy.passwords import (
    MAX_PASSWORD_BYTES,
    PasswordRejected,
    Passwords,
    check_new_password,
)
from gateway.policy.paths import normalize_host
from gateway.policy.redirects import safe_redirect
from gateway.policy.rules import Decision, RuleSet
from gateway.policy.upstreams import UpstreamTable
from gateway.store.sessions import hash_token, is_token, new_token
from gateway.web.headers import MEMO_KEY_CHARS, HeaderRules, _Dropper

# ==========================================================================
# redirects.safe_redirect

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


def test_hostile_table_is_big_enough():
    assert len(HOSTILE) >= 30


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


# ==========================================================================
# rules.RuleSet / Decision


def decide(rules: list[Rule], host: str = "app.local", path: str = "/", method: str = "GET"):
    return RuleSet(tuple(rules)).decide(host, path, method)


def test_no_rules_means_authenticated():
    decision = decide([])
    assert decision == Decision("authenticated")
    assert decision.groups == ()


def test_unmatched_request_is_authenticated():
    decision = decide([Rule(path="/static/", policy="public")], path="/app")
    assert decision.policy == "authenticated"


def test_first_match_wins():
    rules = [
        Rule(path="/static/secret/", policy="deny"),
        Rule(path="/static/", policy="public"),
        Rule(path="/", policy="deny"),
    ]
    assert decide(rules, path="/static/secret/key").policy == "deny"
    assert decide(rules, path="/static/app.css").policy == "public"
    assert decide(rules, path="/other").policy == "deny"


def test_first_match_wins_even_when_later_is_more_specific():
    rules = [Rule(path="/", policy="public"), Rule(path="/admin/", policy="deny")]
    assert decide(rules, path="/admin/x").policy == "public"


@pytest.mark.parametrize(
    ("path", "matches"),
    [
        ("/static/", True),
        ("/static/app.css", True),
        ("/static/a/b/c.js", True),
        ("/static", True),  # a "/static/" rule also covers the bare directory path
        ("/", False),
        ("/app/static/x", False),
        ("/STATIC/x", False),
    ],
)
def test_path_prefix(path, matches):
    decision = decide([Rule(path="/static/", policy="public")], path=path)
    assert decision.policy == ("public" if matches else "authenticated")


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        (r"^/api/v[0-9]+/public", "/api/v2/public/x", True),
        (r"^/api/v[0-9]+/public", "/api/vX/public", False),
        (r"^/api/v[0-9]+/public", "/x/api/v1/public", False),
        (r"\.css$", "/a/b/site.css", True),
        (r"\.css$", "/a/b/site.css.map", False),
        # re.search semantics: unanchored patterns match anywhere
        (r"admin", "/x/admin/y", True),
        (r"admin", "/x/y", False),
        (r"/(foo|bar)/", "/a/bar/b", True),
    ],
)
def test_regex_path(pattern, path, matches):
    decision = decide([Rule(path=pattern, regex=True, policy="deny")], path=path)
    assert decision.policy == ("deny" if matches else "authenticated")


def test_regex_path_is_not_a_prefix():
    # As a plain prefix "/a.c" would not match "/abc"; as a regex it does.
    assert decide([Rule(path="/a.c", regex=True, policy="deny")], path="/abc").policy == "deny"
    assert decide([Rule(path="/a.c", policy="deny")], path="/abc").policy == "authenticated"


@pytest.mark.parametrize(
    ("rule_host", "host", "matches"),
    [
        ("app.example.com", "app.example.com", True),
        ("app.example.com", "APP.Example.COM", True),
        ("app.example.com", "app.example.com.", True),
        ("app.example.com", "other.example.com", False),
        ("app.example.com", "xapp.example.com", False),
        ("app.example.com", "app.example.com.evil", False),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "A.Example.Com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "badexample.com", False),
        ("*.example.com", ".example.com", False),
        ("*.example.com", "example.com.evil.com", False),
        ("*.example.com", "a.example.org", False),
    ],
)
def test_host_match(rule_host, host, matches):
    decision = decide([Rule(host=rule_host, policy="public")], host=host)
    assert decision.policy == ("public" if matches else "authenticated")


def test_host_and_path_must_both_match():
    rules = [Rule(host="api.example.com", path="/public/", policy="public")]
    assert decide(rules, host="api.example.com", path="/public/x").policy == "public"
    assert decide(rules, host="api.example.com", path="/private").policy == "authenticated"
    assert decide(rules, host="www.example.com", path="/public/x").policy == "authenticated"


@pytest.mark.parametrize(
    ("method", "matches"),
    [("GET", True), ("get", True), ("HEAD", True), ("POST", False), ("DELETE", False)],
)
def test_methods(method, matches):
    decision = decide([Rule(path="/", methods=("GET", "HEAD"), policy="public")], method=method)
    assert decision.policy == ("public" if matches else "authenticated")


def test_no_methods_means_every_method():
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        assert decide([Rule(path="/", policy="deny")], method=method).policy == "deny"


def test_method_specific_rule_then_fallback():
    rules = [
        Rule(path="/api/", methods=("GET",), policy="public"),
        Rule(path="/api/", policy="authenticated", groups=("writers",)),
    ]
    assert decide(rules, path="/api/items").policy == "public"
    post = decide(rules, path="/api/items", method="POST")
    assert post == Decision("authenticated", ("writers",))


def test_decision_carries_groups():
    rules = [Rule(path="/admin/", groups=("admins", "ops"))]
    assert decide(rules, path="/admin/x") == Decision("authenticated", ("admins", "ops"))


@pytest.mark.parametrize(
    ("decision", "groups", "allowed"),
    [
        (Decision("authenticated"), (), True),
        (Decision("authenticated"), ("anything",), True),
        (Decision("public"), (), True),
        (Decision("authenticated", ("admins",)), ("admins",), True),
        (Decision("authenticated", ("admins", "ops")), ("users", "ops"), True),
        (Decision("authenticated", ("admins",)), (), False),
        (Decision("authenticated", ("admins",)), ("users",), False),
        (Decision("authenticated", ("admins",)), ("Admins",), False),
        (Decision("authenticated", ("admins",)), ("admin",), False),
        (Decision("deny"), (), False),
        (Decision("deny"), ("admins",), False),
        (Decision("deny", ("admins",)), ("admins",), False),
    ],
)
def test_decision_allows(decision, groups, allowed):
    assert decision.allows(groups) is allowed


def test_deny_rule_denies_everyone():
    decision = decide([Rule(path="/", policy="deny")])
    assert decision.policy == "deny"
    assert decision.allows(("admins", "users")) is False


# ==========================================================================
# proxy_routes.UpstreamTable


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


# ==========================================================================
# csrf

SECRET = b"0123456789abcdef0123456789abcdef"


@pytest.fixture
def signer() -> CsrfSigner:
    return CsrfSigner(SECRET)


def test_csrf_round_trip(signer):
    nonce = CsrfSigner.new_nonce()
    token = signer.token(nonce)
    assert signer.valid(nonce, token) is True
    # deterministic for the same secret and nonce, so a second form works too
    assert CsrfSigner(SECRET).token(nonce) == token
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)


def test_csrf_new_nonces_are_valid_and_unique():
    nonces = {CsrfSigner.new_nonce() for _ in range(50)}
    assert len(nonces) == 50
    assert all(CsrfSigner.is_nonce(n) for n in nonces)


def test_csrf_wrong_secret(signer):
    nonce = CsrfSigner.new_nonce()
    assert (
        CsrfSigner(b"another secret of enough length!").valid(nonce, signer.token(nonce)) is False
    )


def test_csrf_wrong_nonce(signer):
    nonce, other = CsrfSigner.new_nonce(), CsrfSigner.new_nonce()
    assert signer.valid(other, signer.token(nonce)) is False


def test_csrf_tampered_token(signer):
    nonce = CsrfSigner.new_nonce()
    token = signer.token(nonce)
    flipped = ("A" if token[0] != "A" else "B") + token[1:]
    for bad in (flipped, token[:-1], token + "A", token.upper(), token[::-1], token + "="):
        assert signer.valid(nonce, bad) is False, bad


@pytest.mark.parametrize("token", [None, "", " ", "é" * 43, "\u0410" * 43, "\x00"])
def test_csrf_missing_or_odd_token(signer, token):
    assert signer.valid(CsrfSigner.new_nonce(), token) is False


@pytest.mark.parametrize(
    "nonce",
    [
        None,
        "",
        "short",
        "a" * 21,
        "a" * 65,
        "a" * 23 + "+",
        "a" * 23 + "/",
        "a" * 23 + "=",
        "a" * 23 + " ",
        "a" * 23 + ".",
        "é" * 24,
        "a" * 24 + "\n",
        "\n" + "a" * 24,
    ],
)
def test_csrf_malformed_nonce(signer, nonce):
    assert CsrfSigner.is_nonce(nonce) is False
    # even with the token the server itself would compute for it
    token = signer.token(nonce) if nonce and nonce.isascii() else "x" * 43
    assert signer.valid(nonce, token) is False


OWN_ORIGINS = {"http://localhost:8080", "https://gw.example.com"}


@pytest.mark.parametrize(
    ("origin", "fetch_site", "refused"),
    [
        (None, None, None),
        (None, "same-origin", None),
        (None, "none", None),
        ("http://localhost:8080", None, None),
        ("http://localhost:8080", "same-origin", None),
        ("HTTP://LOCALHOST:8080", None, None),
        ("https://gw.example.com", "same-origin", None),
        # Chromium's own same-origin form under a no-referrer policy: Sec-Fetch-Site decides.
        ("null", "same-origin", None),
        (None, " Same-Origin ", None),
        # The browser's Sec-Fetch-Site outranks whatever Origin says.
        ("https://evil.com", "same-origin", None),
        (None, "cross-site", "fetch-site"),
        (None, "Cross-Site", "fetch-site"),
        ("http://localhost:8080", "cross-site", "fetch-site"),
        # A sibling subdomain (or another port on our host) is same-site, not ours.
        ("https://app.example.com", "same-site", "fetch-site"),
        ("http://localhost:8080", "same-site", "fetch-site"),
        (None, "", "fetch-site"),
        (None, "bogus", "fetch-site"),
        # No Sec-Fetch-Site (older browsers, curl): Origin decides.
        ("https://evil.com", None, "origin"),
        ("null", None, "origin"),
        ("", None, "origin"),
        ("http://localhost:8081", None, "origin"),
        ("https://localhost:8080", None, "origin"),
        ("http://localhost:8080.evil.com", None, "origin"),
    ],
)
def test_csrf_fetch_metadata(origin, fetch_site, refused):
    signer = CsrfSigner(b"k" * 32)
    nonce = signer.new_nonce()
    refusal = csrf_check(
        signer,
        origin=origin,
        fetch_site=fetch_site,
        own_origins=OWN_ORIGINS,
        nonce=nonce,
        token=signer.token(nonce),
    )
    assert (refusal.kind if refusal else None) == refused


@pytest.mark.parametrize(
    ("nonce", "token", "refused"),
    [
        (None, "Zm9yZ2VkLXRva2Vu", "cookie"),
        ("short", "Zm9yZ2VkLXRva2Vu", "cookie"),
        ("n" * 30, None, "token"),
        ("n" * 30, "Zm9yZ2VkLXRva2Vu", "token"),
        ("n" * 30, "é" * 20, "token"),
    ],
)
def test_csrf_token_is_checked_whatever_the_browser_says(nonce, token, refused):
    signer = CsrfSigner(b"k" * 32)
    for fetch_site in ("same-origin", "none", None):
        refusal = csrf_check(
            signer,
            origin=None,
            fetch_site=fetch_site,
            own_origins=OWN_ORIGINS,
            nonce=nonce,
            token=token,
        )
        assert refusal is not None and refusal.kind == refused
        assert token is None or token not in refusal.detail


def test_csrf_refusal_detail_is_short_and_names_the_header():
    signer = CsrfSigner(b"k" * 32)
    refusal = csrf_check(
        signer,
        origin="https://" + "e" * 500,
        fetch_site=None,
        own_origins=OWN_ORIGINS,
        nonce=None,
        token=None,
    )
    assert refusal.kind == "origin"
    assert refusal.detail.startswith("Origin: ")
    assert len(refusal.detail) < 120


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://localhost:8080", "http://localhost:8080"),
        ("https://GW.Example.com/x/y?z", "https://gw.example.com"),
        ("https://gw.example.com:8443/", "https://gw.example.com:8443"),
    ],
)
def test_origin_of(url, origin):
    assert origin_of(url) == origin


# ==========================================================================
# passwords

PW = "correct horse battery staple"


@pytest.fixture(scope="module")
def passwords():
    p = Passwords(workers=1)
    yield p
    p.close()


@pytest.fixture(scope="module")
def stored(passwords) -> str:
    return passwords.hash(PW)


def test_hash_is_argon2id_with_owasp_parameters(stored):
    assert stored.startswith("$argon2id$")
    params = argon2.extract_parameters(stored)
    assert params.type is argon2.Type.ID
    assert params.memory_cost >= 19456
    assert params.time_cost >= 2
    assert params.parallelism >= 1
    assert params.salt_len >= 16


def test_hash_is_salted(passwords, stored):
    assert passwords.hasher.hash(PW) != stored


def test_verify_ok(passwords, stored):
    result = passwords.verify_sync(stored, PW)
    assert result.ok is True
    assert result.new_hash is None


@pytest.mark.parametrize("attempt", ["wrong password", PW.upper(), PW + " ", "", PW[:-1]])
def test_verify_mismatch(passwords, stored, attempt):
    result = passwords.verify_sync(stored, attempt)
    assert result.ok is False
    assert result.new_hash is None


def test_verify_unknown_user_is_not_ok(passwords):
    assert passwords.verify_sync(None, PW).ok is False
    assert passwords.verify_sync("", PW).ok is False


@pytest.mark.parametrize("stored_hash", [None, ""])
def test_verify_unknown_user_with_the_dummy_password_is_not_ok(passwords, stored_hash):
    # The dummy hash's own password must not sign anyone in, nor crash the login.
    result = passwords.verify_sync(stored_hash, "dummy password for unknown users")
    assert result.ok is False
    assert result.new_hash is None


@pytest.mark.parametrize("stored_hash", ["garbage", "$argon2id$v=19$m=1,t=1,p=1$x$y", "$2b$12$x"])
def test_verify_bad_stored_hash_is_not_ok(passwords, stored_hash):
    assert passwords.verify_sync(stored_hash, PW).ok is False


@pytest.mark.parametrize(
    "password",
    [
        "a" * (MAX_PASSWORD_BYTES + 1),
        "é" * (MAX_PASSWORD_BYTES // 2 + 1),
        "a" * 100_000,
    ],
)
def test_verify_overlong_password_is_not_ok(passwords, stored, password):
    assert len(password.encode("utf-8")) > MAX_PASSWORD_BYTES
    assert passwords.verify_sync(stored, password).ok is False


def test_verify_lone_surrogate_does_not_raise(passwords, stored):
    assert passwords.verify_sync(stored, "\ud800" * 10).ok is False


async def test_verify_async_in_pool(passwords, stored):
    assert (await passwords.verify(stored, PW)).ok is True
    assert (await passwords.verify(stored, "nope")).ok is False
    assert (await passwords.verify(None, PW)).ok is False


@pytest.mark.parametrize(
    "password", ["", "a", "1234567", "a" * (MAX_PASSWORD_BYTES + 1), "é" * 513]
)
def test_check_new_password_rejects(password):
    with pytest.raises(PasswordRejected):
        check_new_password(password)


@pytest.mark.parametrize("password", ["12345678", "a" * MAX_PASSWORD_BYTES, "é" * 512, PW])
def test_check_new_password_accepts(password):
    check_new_password(password)


def test_hash_rejects_bad_new_password(passwords):
    with pytest.raises(PasswordRejected):
        passwords.hash("short")
    with pytest.raises(PasswordRejected):
        passwords.hash("x" * (MAX_PASSWORD_BYTES + 1))


def test_rehash_weak_hash_on_successful_verify(passwords):
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8192).hash(PW)
    assert passwords.hasher.check_needs_rehash(weak)
    result = passwords.verify_sync(weak, PW)
    assert result.ok is True
    assert result.new_hash is not None
    assert result.new_hash.startswith("$argon2id$")
    params = argon2.extract_parameters(result.new_hash)
    assert params.time_cost == passwords.hasher.time_cost
    assert params.memory_cost == passwords.hasher.memory_cost
    assert not passwords.hasher.check_needs_rehash(result.new_hash)
    assert passwords.verify_sync(result.new_hash, PW) == type(result)(True)


def test_no_rehash_on_failed_verify(passwords):
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8192).hash(PW)
    result = passwords.verify_sync(weak, "wrong password")
    assert result.ok is False
    assert result.new_hash is None


# ==========================================================================
# cookies.split_cookies / paths.normalize_host

OURS = frozenset({"gateway_session", "gateway_csrf"})


@pytest.mark.parametrize(
    ("header", "mine", "rest"),
    [
        ("", {}, ""),
        ("a=1", {}, "a=1"),
        ("gateway_session=tok", {"gateway_session": "tok"}, ""),
        ("a=1; gateway_session=tok; b=2", {"gateway_session": "tok"}, "a=1; b=2"),
        ("a=1;gateway_session=tok;b=2", {"gateway_session": "tok"}, "a=1; b=2"),
        ("  a=1 ;  gateway_session=tok  ; b=2  ", {"gateway_session": "tok"}, "a=1; b=2"),
        ("a=1;; ;b=2", {}, "a=1; b=2"),
        (";gateway_session=tok;", {"gateway_session": "tok"}, ""),
        ('gateway_session="tok"', {"gateway_session": "tok"}, ""),
        # Ours twice: ambiguous (None), never "first wins"; neither value goes on.
        (
            "gateway_session=first; gateway_session=second",
            {"gateway_session": None},
            "",
        ),
        ("gateway_session=same; a=1; gateway_session=same", {"gateway_session": None}, "a=1"),
        # Look-alikes make ours ambiguous too, and are cut like ours.
        ("GATEWAY_SESSION=m; gateway_session=t", {"gateway_session": None}, ""),
        ("gateway_session=t; \u2000gateway_session=m", {"gateway_session": None}, ""),
        ("\ufeffgateway_csrf=m; x=1", {"gateway_csrf": None}, "x=1"),
        ("\uff47ateway_session=m", {"gateway_session": None}, ""),  # fullwidth g
        # Only ASCII space and tab are trimmed; names otherwise compare byte for byte.
        ("\tgateway_session=t\t", {"gateway_session": "t"}, ""),
        ("gateway_session =t", {"gateway_session": "t"}, ""),
        (
            "gateway_csrf=n1; x=y; gateway_session=t1",
            {"gateway_csrf": "n1", "gateway_session": "t1"},
            "x=y",
        ),
        # other cookies keep their exact bytes: quotes, '=' in values, odd chars
        ('pref="a b"; gateway_session=t', {"gateway_session": "t"}, 'pref="a b"'),
        ("jwt=a.b=c==; gateway_session=t", {"gateway_session": "t"}, "jwt=a.b=c=="),
        ("flag; gateway_session=t; x=", {"gateway_session": "t"}, "flag; x="),
        ("x=%7B%22a%22%7D; y=caf\u00e9", {}, "x=%7B%22a%22%7D; y=caf\u00e9"),
        # names are exact: a longer or shorter name is someone else's cookie
        ("gateway_session_old=u", {}, "gateway_session_old=u"),
        ("xgateway_session=t", {}, "xgateway_session=t"),
        ("gateway=t; session=u", {}, "gateway=t; session=u"),
    ],
)
def test_split_cookies(header, mine, rest):
    assert split_cookies(header, OURS) == (mine, rest)


# The Unicode spaces str.strip() removes: each once made "X__Host-..." our cookie.
UNICODE_SPACES = [
    "\u00a0", "\u0085", "\u1680", *(chr(c) for c in range(0x2000, 0x200B)),
    "\u2028", "\u2029", "\u202f", "\u205f", "\u3000",
]  # fmt: skip
HOST = frozenset({"__Host-gateway_session", "__Host-gateway_session_csrf"})


@pytest.mark.parametrize("space", UNICODE_SPACES, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize("where", ["before", "after"])
def test_a_unicode_space_never_makes_a_cookie_ours(space, where):
    planted = (
        f"{space}__Host-gateway_session" if where == "before" else f"__Host-gateway_session{space}"
    )
    assert space.strip() == ""  # str.strip() would have removed it
    # Alone: not our cookie, and not passed on either.
    assert split_cookies(f"{planted}=mallory; x=1", HOST) == (
        {"__Host-gateway_session": None},
        "x=1",
    )
    # Beside the real one, in either order: neither wins.
    for header in (
        f"{planted}=mallory; __Host-gateway_session=alice",
        f"__Host-gateway_session=alice; {planted}=mallory",
    ):
        assert split_cookies(header, HOST) == ({"__Host-gateway_session": None}, "")


def test_split_cookies_our_value_never_forwarded():
    header = "a=1; gateway_session=SECRET; b=2; gateway_session=SECRET2"
    _, rest = split_cookies(header, OURS)
    assert "SECRET" not in rest
    assert "gateway_session" not in rest


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("Example.COM.:8080", "example.com"),
        ("example.com.", "example.com"),
        ("example.com:443", "example.com"),
        (" example.com ", "example.com"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("[2001:DB8::1]:443", "2001:db8::1"),
        ("::1", "::1"),
        ("127.0.0.1:8080", "127.0.0.1"),
        ("", ""),
    ],
)
def test_normalize_host(host, name):
    assert normalize_host(host) == name


# ==========================================================================
# header_names.header_key


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("X-Remote-User", "x-remote-user"),
        ("x-remote-user", "x-remote-user"),
        ("X_Remote_User", "x-remote-user"),
        ("x.remote.user", "x-remote-user"),
        ("X-REMOTE_user", "x-remote-user"),
        ("X.Remote_User", "x-remote-user"),
        ("X-Remote-Groups", "x-remote-groups"),
    ],
)
def test_header_key_folds(name, key):
    assert header_key(name) == key


def test_header_key_keeps_different_names_apart():
    assert header_key("X-Remote-User") != header_key("X-Remote-Users")
    assert header_key("X-Remote-User") != header_key("XRemoteUser")


# ==========================================================================
# sessions: tokens


def test_new_token_shape():
    token = new_token()
    assert len(token) == 43
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    assert is_token(token)


def test_new_tokens_are_unique():
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000


def test_hash_token_is_sha256():
    token = new_token()
    digest = hash_token(token)
    assert isinstance(digest, bytes)
    assert len(digest) == 32
    assert digest == hashlib.sha256(token.encode("ascii")).digest()
    assert hash_token(token) == digest
    assert hash_token(new_token()) != digest


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a" * 42,
        "a" * 44,
        "a" * 86,
        "a" * 42 + "+",
        "a" * 42 + "/",
        "a" * 42 + "=",
        "a" * 42 + " ",
        "a" * 42 + ".",
        "a" * 42 + "é",
        "a" * 43 + "\n",
        " " + "a" * 42,
        "a" * 21 + "\x00" + "a" * 21,
    ],
)
def test_is_token_rejects(value):
    assert is_token(value) is False


@pytest.mark.parametrize("value", ["a" * 43, "_" * 43, "-" * 43, "A0_-" * 10 + "xyz"])
def test_is_token_accepts(value):
    assert is_token(value) is True


# proxy.HeaderRules.dropper: memoised per header name, bounded against junk names


@pytest.mark.parametrize("trusted", [False, True])
@pytest.mark.parametrize("websocket", [False, True])
def test_header_verdicts_stay_right_and_bounded_under_a_flood_of_names(websocket, trusted):
    config = build_config({"upstream": [{"url": "http://127.0.0.1:9"}]})
    dropped = HeaderRules(config).dropper(websocket, trusted)
    spoofs = ["X-Remote-User", "x_remote_user", "X.Remote.Groups", "Connection", "Cookie"]
    for _ in range(2):  # first computed, then from the memo
        assert all(dropped(name) for name in spoofs)
        assert not dropped("Accept")
    assert dropped("Sec-WebSocket-Key") is websocket
    for i in range(5 * _Dropper.MEMO_LIMIT):
        assert not dropped(f"X-Junk-{i}")
    assert not dropped("X-" + "y" * 5000)  # long names are not kept
    assert dropped("X_" + "Remote-User")
    memo = dropped.__self__._memo
    assert len(memo) <= _Dropper.MEMO_LIMIT
    assert all(len(name) <= MEMO_KEY_CHARS for name in memo)


ROUTING_SPELLINGS = [
    "X-Original-URL", "x-original-url", "X_Original_URL", "X.Original.URL", "X-Rewrite-URL",
    "X-Forwarded-Uri", "X-Forwarded-Prefix", "X-Forwarded-Port", "X-Forwarded-Server",
    "X-Real-IP", "X_Real_IP", "True-Client-IP", "Forwarded", "X-Client-IP", "X-Forwarded-Method",
]  # fmt: skip


@pytest.mark.parametrize("name", ROUTING_SPELLINGS)
def test_routing_claims_pass_only_from_a_trusted_proxy(name):
    rules = HeaderRules(build_config({"upstream": [{"url": "http://127.0.0.1:9"}]}))
    for websocket in (False, True):
        assert rules.dropper(websocket, trusted=False)(name) is True
        assert rules.dropper(websocket, trusted=True)(name) is False
