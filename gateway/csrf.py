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


def cross_site(origin: str | None, fetch_site: str | None, own_origins: set[str]) -> bool:
    """True when the browser tells us the POST came from another site.

    Browsers without these headers (old ones, curl) are judged by the token alone.
    """
    if fetch_site and fetch_site.lower() == "cross-site":
        return True
    if origin is None:
        return False
    return origin.lower() not in own_origins
