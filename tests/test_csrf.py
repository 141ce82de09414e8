"""policy.csrf: the signed per-browser token (CsrfSigner), the Origin /
Sec-Fetch-Site verdict (check) and origin_of.
"""

from __future__ import annotations

import re

import pytest

from gateway.policy.csrf import CsrfSigner, origin_of
from gateway.policy.csrf import check as csrf_check

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


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: ("A" if t[0] != "A" else "B") + t[1:],
        lambda t: t[:-1],
        lambda t: t + "A",
        lambda t: t.upper(),
        lambda t: t[::-1],
        lambda t: t + "=",
    ],
    ids=["first-char-flipped", "shortened", "lengthened", "upper-cased", "reversed", "padded"],
)
def test_csrf_tampered_token(signer, tamper):
    nonce = CsrfSigner.new_nonce()
    token = signer.token(nonce)
    bad = tamper(token)
    assert bad != token
    assert signer.valid(nonce, bad) is False


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
@pytest.mark.parametrize("fetch_site", ["same-origin", "none", None])
def test_csrf_token_is_checked_whatever_the_browser_says(nonce, token, refused, fetch_site):
    signer = CsrfSigner(b"k" * 32)
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
