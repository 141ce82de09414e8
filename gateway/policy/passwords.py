"""Password hashing: Argon2id, verified off the event loop in a bounded pool.

Pure module (no aiohttp). Parameters are argon2-cffi's RFC 9106 "low memory"
profile (t=3, m=64 MiB, p=4), above OWASP's minimum for Argon2id.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MAX_PASSWORD_BYTES = 1024
MIN_PASSWORD_CHARS = 8


class PasswordRejected(ValueError):
    """A password that may not be set (too short, too long)."""


def check_new_password(password: str) -> None:
    """Raise PasswordRejected with an operator-readable reason."""
    try:
        encoded = password.encode("utf-8")
    except UnicodeEncodeError:
        raise PasswordRejected("password is not valid text") from None
    if len(password) < MIN_PASSWORD_CHARS:
        raise PasswordRejected(f"password must be at least {MIN_PASSWORD_CHARS} characters")
    if len(encoded) > MAX_PASSWORD_BYTES:
        raise PasswordRejected(f"password must be at most {MAX_PASSWORD_BYTES} bytes")


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    new_hash: str | None = None  # set when the stored hash used old parameters


class Passwords:
    """Hash and verify with a fixed number of worker threads.

    Argon2 releases the GIL, so threads give real parallelism; the pool size
    caps how much CPU and memory a login storm can take from the proxy.
    """

    def __init__(self, hasher: argon2.PasswordHasher | None = None, workers: int | None = None):
        self.hasher = hasher or argon2.PasswordHasher()
        self._pool = ThreadPoolExecutor(
            max_workers=workers or max(1, (os.cpu_count() or 2) // 2),
            thread_name_prefix="argon2",
        )
        # Verifying against this costs the same as a real hash, so an unknown
        # user cannot be told apart from a wrong password by timing.
        self._dummy_hash = self.hasher.hash("dummy password for unknown users")

    def hash(self, password: str) -> str:
        check_new_password(password)
        return self.hasher.hash(password)

    def verify_sync(self, stored_hash: str | None, password: str) -> VerifyResult:
        try:
            secret = password.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: no real password looks like that
            return VerifyResult(False)
        if len(secret) > MAX_PASSWORD_BYTES:
            return VerifyResult(False)
        try:
            self.hasher.verify(stored_hash or self._dummy_hash, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return VerifyResult(False)
        if not stored_hash:
            return VerifyResult(False)
        if self.hasher.check_needs_rehash(stored_hash):
            return VerifyResult(True, self.hasher.hash(password))
        return VerifyResult(True)

    async def verify(self, stored_hash: str | None, password: str) -> VerifyResult:
        """Verify in the pool; `stored_hash=None` runs the dummy hash and fails."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.verify_sync, stored_hash, password)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
