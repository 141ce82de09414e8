"""CSRF: a per-browser nonce in a cookie, and form tokens signed over it.

Pure module (no aiohttp). A form token is HMAC(secret, nonce); a POST is
accepted only when its token matches the nonce cookie that same browser
sent. An attacker's page can neither read our cookie nor compute the HMAC,
so it cannot forge a form — including a login form that would sign the
victim into the attacker's account.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

FIELD = "csrf_token"
_NONCE = re.compile(r"[A-Za-z0-9_-]{22,64}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class CsrfSigner:
    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"gateway-csrf\x00" + secret).digest()

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(24)

    @staticmethod
    def is_nonce(value: str | None) -> bool:
        return bool(value and _NONCE.fullmatch(value))

    def token(self, nonce: str) -> str:
        return _b64(hmac.new(self._key, nonce.encode("ascii"), hashlib.sha256).digest())

    def valid(self, nonce: str | None, token: str | None) -> bool:
        if not self.is_nonce(nonce) or not token or not token.isascii():
            return False
        return hmac.compare_digest(self.token(nonce), token)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


# Sec-Fetch-Site values that mean "our own page sent this" ("none": the person
# did it themselves, no page involved). "same-site" is not enough: a sibling
# subdomain is same-site, and may be someone else's.
_OWN_FETCH_SITES = frozenset({"same-origin", "none"})
_DETAIL_CHARS = 80  # client-chosen values are cut short in the log


@dataclass(frozen=True)
class Refusal:
    """Why a POST was refused. `kind` labels the metric; `detail` is for the log
    and never holds the token."""

    kind: str  # fetch-site | origin | cookie | token
    detail: str


def check(
    signer: CsrfSigner,
    *,
    origin: str | None,
    fetch_site: str | None,
    own_origins: set[str],
    nonce: str | None,
    token: str | None,
) -> Refusal | None:
    """None when this POST may proceed, else why not.

    Where the browser sends `Sec-Fetch-Site` (every current one), it decides:
    `Origin` is not consulted, because a page with a `no-referrer` policy makes
    Chromium send `Origin: null` with its own same-origin form. Without it
    (older browsers, curl), an `Origin` that is not ours (`null` included)
    refuses. The token is checked in every case.
    """
    if fetch_site is not None:
        site = fetch_site.strip().lower()
        if site not in _OWN_FETCH_SITES:
            return Refusal("fetch-site", f"Sec-Fetch-Site: {site[:_DETAIL_CHARS]!r}")
    elif origin is not None and origin.lower() not in own_origins:
        return Refusal("origin", f"Origin: {origin[:_DETAIL_CHARS]!r}")
    if not CsrfSigner.is_nonce(nonce):
        return Refusal("cookie", "no CSRF cookie (expired, blocked, or another browser)")
    if not signer.valid(nonce, token):
        return Refusal("token", "the form's token does not match this browser's CSRF cookie")
    return None
