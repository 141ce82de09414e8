"""Password hashing: Argon2id, verified off the event loop in a bounded pool.

Pure module (no aiohttp). Parameters are argon2-cffi's RFC 9106 "low memory"
profile (t=3, m=64 MiB, p=4), above OWASP's minimum for Argon2id.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MAX_PASSWORD_BYTES = 1024
MIN_PASSWORD_CHARS = 10  # [password] min_length's default


class PasswordRejected(ValueError):
    """A password that may not be set: the message says why, to the person choosing it."""


@functools.cache
def common_passwords(path: Path) -> frozenset[str]:
    """The shipped list of common passwords (data/SOURCES.md), lower-case, read once."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return frozenset(line.strip() for line in lines if line.strip())


@dataclass(frozen=True)
class PasswordRules:
    """What a new password must be: the same for the account page and the CLI."""

    min_length: int = MIN_PASSWORD_CHARS
    common: frozenset[str] = frozenset()

    def check(self, password: str, username: str = "") -> None:
        """Raise PasswordRejected with a reason a person can act on."""
        try:
            encoded = password.encode("utf-8")
        except UnicodeEncodeError:
            raise PasswordRejected("The password is not valid text.") from None
        if len(encoded) > MAX_PASSWORD_BYTES:
            raise PasswordRejected(f"The password must be at most {MAX_PASSWORD_BYTES} bytes.")
        if len(password) < self.min_length:
            raise PasswordRejected(
                f"The password must be at least {self.min_length} characters long."
            )
        folded = password.strip().lower()
        if username and folded == username.strip().lower():
            raise PasswordRejected("The password must not be your username.")
        if folded in self.common:
            raise PasswordRejected(
                "This password is one of the most common ones, which attackers try first. "
                "Choose another."
            )


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
        """The Argon2id hash. Only the size is checked here (what hashing can take);
        whether a person may choose this password is PasswordRules'."""
        PasswordRules(min_length=1).check(password)
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

    async def hash_in_pool(self, password: str) -> str:
        """`hash`, in the pool: a page's request must not hash on the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.hash, password)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
