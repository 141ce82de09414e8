"""The second factors of each user: TOTP authenticators and recovery codes.

Each code is *consumed* by one UPDATE that only a first use can satisfy
(a TOTP time step later than the last one taken; a recovery code not yet
used), so a replayed code fails on every worker and replica, however many
try it at once. Secrets arrive and leave sealed (policy.totp.SecretBox);
recovery codes only as keyed hashes (policy.recovery.CodeHasher).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from .db import rows_affected

MAX_NAME_CHARS = 64
# An unconfirmed factor (QR code shown, no code typed yet) is gone after this.
PENDING_LIFETIME = timedelta(minutes=10)

INSERT_PENDING_TOTP = """
INSERT INTO totp_factors (user_id, name, secret_sealed, created_at)
VALUES ($1, $2, $3, $4) RETURNING id"""
SELECT_PENDING_TOTP = """
SELECT secret_sealed FROM totp_factors
WHERE id = $1 AND user_id = $2 AND confirmed_at IS NULL AND created_at > $3"""
# The confirming code is consumed like any later one.
CONFIRM_TOTP = """
UPDATE totp_factors SET confirmed_at = $3, last_step = $4, last_used_at = $3
WHERE id = $1 AND user_id = $2 AND confirmed_at IS NULL AND created_at > $5
RETURNING id"""
SELECT_CONFIRMED_TOTP = """
SELECT id, name, secret_sealed, created_at, last_used_at FROM totp_factors
WHERE user_id = $1 AND confirmed_at IS NOT NULL ORDER BY id"""
CONSUME_TOTP_STEP = """
UPDATE totp_factors SET last_step = $3, last_used_at = $4
WHERE id = $1 AND user_id = $2 AND confirmed_at IS NOT NULL
  AND (last_step IS NULL OR last_step < $3)
RETURNING id"""
DELETE_TOTP = "DELETE FROM totp_factors WHERE id = $1 AND user_id = $2 RETURNING name"
PURGE_PENDING_TOTP = """
DELETE FROM totp_factors WHERE confirmed_at IS NULL AND created_at <= $1"""

# Replacing or resetting a user's codes takes the user's row first: two at once
# (two tabs pressing "new codes") would otherwise each delete only what was
# committed before it began, and leave both new sets valid.
LOCK_USER = "SELECT 1 FROM users WHERE id = $1 FOR UPDATE"
DELETE_RECOVERY_CODES = "DELETE FROM recovery_codes WHERE user_id = $1"
INSERT_RECOVERY_CODES = """
INSERT INTO recovery_codes (user_id, code_hash, created_at)
SELECT $1, h, $3 FROM unnest($2::bytea[]) AS h"""
CONSUME_RECOVERY_CODE = """
UPDATE recovery_codes SET used_at = $3
WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL
RETURNING id"""
COUNT_RECOVERY_CODES_LEFT = """
SELECT count(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL"""
DELETE_ALL_TOTP = "DELETE FROM totp_factors WHERE user_id = $1 RETURNING id"
# Per user: confirmed authenticators, recovery codes left (for `gateway user list`).
SELECT_SUMMARIES = """
SELECT u.id,
       (SELECT count(*) FROM totp_factors t
        WHERE t.user_id = u.id AND t.confirmed_at IS NOT NULL) AS totp,
       (SELECT count(*) FROM recovery_codes r
        WHERE r.user_id = u.id AND r.used_at IS NULL) AS recovery
FROM users u"""


class FactorError(Exception):
    """A factor change that cannot be made: the message says why."""


@dataclass(frozen=True)
class TotpFactor:
    id: int
    name: str
    secret_sealed: bytes
    created_at: datetime
    last_used_at: datetime | None


# Tabs and line breaks a form may send are spacing; any other control character,
# and invisible format characters (bidi overrides, zero-width), would let a name
# on the page read other than it is.
_NOT_TEXT = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})


def check_name(name: str) -> str:
    """A device name a person typed ('Work phone'), trimmed; raises FactorError."""
    bad = any(unicodedata.category(c) in _NOT_TEXT and c not in "\t\n\r" for c in name)
    text = " ".join(name.split())
    if not text and not bad:
        raise FactorError("Give the authenticator a name, such as \u201cWork phone\u201d.")
    if bad or len(text) > MAX_NAME_CHARS:
        raise FactorError(f"The name must be plain text of at most {MAX_NAME_CHARS} characters.")
    return text


# -- TOTP ---------------------------------------------------------------------------


async def add_pending_totp(
    conn: asyncpg.Connection, user_id: int, name: str, sealed: bytes, now: datetime
) -> int:
    """Save a factor being enrolled; it counts for nothing until `confirm_totp`."""
    return await conn.fetchval(INSERT_PENDING_TOTP, user_id, check_name(name), sealed, now)


async def pending_totp(
    conn: asyncpg.Connection, factor_id: int, user_id: int, now: datetime
) -> bytes | None:
    """The sealed secret of this user's unconfirmed factor, if it has not gone stale."""
    return await conn.fetchval(SELECT_PENDING_TOTP, factor_id, user_id, now - PENDING_LIFETIME)


async def confirm_totp(
    conn: asyncpg.Connection, factor_id: int, user_id: int, step: int, now: datetime
) -> bool:
    """Confirm with the step its first code matched (that step is consumed too)."""
    found = await conn.fetchval(CONFIRM_TOTP, factor_id, user_id, now, step, now - PENDING_LIFETIME)
    return found is not None


async def totp_factors(conn: asyncpg.Connection, user_id: int) -> list[TotpFactor]:
    return [
        TotpFactor(r["id"], r["name"], r["secret_sealed"], r["created_at"], r["last_used_at"])
        for r in await conn.fetch(SELECT_CONFIRMED_TOTP, user_id)
    ]


async def consume_totp_step(
    conn: asyncpg.Connection, factor_id: int, user_id: int, step: int, now: datetime
) -> bool:
    """Take `step` for this factor: False if it, or a later one, was taken already."""
    return await conn.fetchval(CONSUME_TOTP_STEP, factor_id, user_id, step, now) is not None


async def remove_totp(conn: asyncpg.Connection, factor_id: int, user_id: int) -> str | None:
    """Remove one of the user's factors; its name, or None if it is not theirs."""
    return await conn.fetchval(DELETE_TOTP, factor_id, user_id)


async def purge_pending_totp(conn: asyncpg.Connection, now: datetime) -> int:
    return rows_affected(await conn.execute(PURGE_PENDING_TOTP, now - PENDING_LIFETIME))


# -- recovery codes -------------------------------------------------------------------


async def replace_recovery_codes(
    conn: asyncpg.Connection, user_id: int, hashes: list[bytes], now: datetime
) -> None:
    """The new set, in one transaction: every old code stops working."""
    async with conn.transaction():
        await conn.execute(LOCK_USER, user_id)
        await conn.execute(DELETE_RECOVERY_CODES, user_id)
        await conn.execute(INSERT_RECOVERY_CODES, user_id, hashes, now)


async def consume_recovery_code(
    conn: asyncpg.Connection, user_id: int, code_hash: bytes, now: datetime
) -> bool:
    """Use one code: True once, False ever after (and for a code that is not theirs)."""
    return await conn.fetchval(CONSUME_RECOVERY_CODE, user_id, code_hash, now) is not None


async def recovery_codes_left(conn: asyncpg.Connection, user_id: int) -> int:
    return await conn.fetchval(COUNT_RECOVERY_CODES_LEFT, user_id)


async def reset(conn: asyncpg.Connection, user_id: int) -> tuple[int, int]:
    """Remove every second factor of the user (an operator's `user 2fa reset`).
    Returns (authenticators, recovery codes) removed, pending ones included."""
    async with conn.transaction():
        await conn.execute(LOCK_USER, user_id)
        totp = len(await conn.fetch(DELETE_ALL_TOTP, user_id))
        codes = rows_affected(await conn.execute(DELETE_RECOVERY_CODES, user_id))
    return totp, codes


async def summaries(conn: asyncpg.Connection) -> dict[int, tuple[int, int]]:
    """user id -> (confirmed authenticators, unused recovery codes)."""
    return {r["id"]: (r["totp"], r["recovery"]) for r in await conn.fetch(SELECT_SUMMARIES)}
