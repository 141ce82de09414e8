"""TOTP (RFC 6238) codes, and the sealing that keeps their secrets unusable at rest.

Pure module. Codes are pyotp's (SHA-1, 6 digits, 30 s steps: what every
authenticator app speaks). `matching_step` says *which* time step a code
belongs to, so the store can consume that step atomically: a code, or any
code of an older step, is accepted once per factor, across workers
(store.factors). Secrets are sealed with AES-256-GCM under a key derived from
the gateway's secret key (HKDF), with the factor's owner bound in as
associated data: a leaked table, or a secret copied to another user's row,
opens nothing.
"""

from __future__ import annotations

import base64
import re
import secrets
from datetime import datetime

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1  # a code of the step before or after is accepted (clock drift)
SECRET_BYTES = 20  # 160 bits, RFC 4226's recommendation
_CODE = re.compile(r"[0-9]{6}")
_SEAL_INFO = b"gateway totp secret v1"
_NONCE_BYTES = 12


def new_secret() -> str:
    """A fresh base32 secret, as authenticator apps take it."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def normalize_code(typed: str) -> str | None:
    """What the person typed, as a 6-digit code ('123 456' and '123-456' too), or None."""
    code = typed.replace(" ", "").replace("-", "").strip()
    return code if _CODE.fullmatch(code) else None


def step_at(now: datetime) -> int:
    return int(now.timestamp()) // STEP_SECONDS


def matching_step(secret: str, typed: str, now: datetime) -> int | None:
    """The time step (within DRIFT_STEPS of now) whose code this is, else None.

    Latest step first: a code that matches two steps (it happens, 1 in 10^6) is
    consumed as the later one, which also refuses the earlier afterwards."""
    code = normalize_code(typed)
    if code is None:
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = step_at(now)
    for step in range(current + DRIFT_STEPS, current - DRIFT_STEPS - 1, -1):
        if secrets.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def provisioning_uri(secret: str, username: str, issuer: str) -> str:
    """The otpauth:// URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=username, issuer_name=issuer
    )


class SecretBox:
    """Seals TOTP secrets for the database; only this gateway's secret key opens them."""

    def __init__(self, gateway_secret: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_INFO).derive(
            gateway_secret
        )
        self._aead = AESGCM(key)

    def seal(self, secret: str, user_id: int) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret.encode("ascii"), _owner(user_id))

    def unseal(self, sealed: bytes, user_id: int) -> str | None:
        """The secret, or None when it was not sealed for this user under this key."""
        nonce, box = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, box, _owner(user_id)).decode("ascii")
        except (InvalidTag, ValueError):
            return None


def _owner(user_id: int) -> bytes:
    return f"user:{user_id}".encode("ascii")
