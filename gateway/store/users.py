"""The users table: accounts, their groups and password hashes."""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from ..policy.identity import Identity
from . import audit

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,63}$")
_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,63}$")
# What the app receives in X-Remote-Email: one address, ASCII, no spaces, a
# dotted domain. Not RFC 5322's full grammar (quoted local parts, comments),
# which no app reading a header expects.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}}@{_LABEL}(?:\.{_LABEL})+")
MAX_EMAIL_CHARS = 254

# What an Identity is made of (`identity`); any query joining users selects these.
IDENTITY_COLUMNS = "u.id AS user_id, u.username, u.email, u.display_name, u.groups"
SELECT_USER = f"""
SELECT {IDENTITY_COLUMNS}, u.password_hash, u.disabled
FROM users u WHERE u.username = $1"""
SELECT_USERS = f"""
SELECT {IDENTITY_COLUMNS}, u.password_hash, u.disabled
FROM users u ORDER BY u.username"""
INSERT_USER = """
INSERT INTO users (username, email, display_name, groups, password_hash)
VALUES ($1, $2, $3, $4, $5)
RETURNING id"""
UPDATE_PASSWORD = """
UPDATE users SET password_hash = $2, updated_at = now() WHERE username = $1 RETURNING id"""
UPDATE_DISABLED = """
UPDATE users SET disabled = $2, updated_at = now() WHERE username = $1 RETURNING id"""
DELETE_USER = "DELETE FROM users WHERE username = $1 RETURNING id"


class UserError(Exception):
    """An operator mistake: unknown user, duplicate name, bad value."""


@dataclass(frozen=True)
class User:
    identity: Identity
    password_hash: str
    disabled: bool

    @property
    def id(self) -> int:
        return self.identity.user_id

    @property
    def username(self) -> str:
        return self.identity.username

    @property
    def email(self) -> str:
        return self.identity.email

    @property
    def display_name(self) -> str:
        return self.identity.name

    @property
    def groups(self) -> tuple[str, ...]:
        return self.identity.groups


def identity(row: asyncpg.Record) -> Identity:
    """The one user-to-identity mapping, from a row with IDENTITY_COLUMNS."""
    return Identity(
        user_id=row["user_id"],
        username=row["username"],
        email=row["email"],
        name=row["display_name"],
        groups=tuple(row["groups"]),
    )


def normalize_username(name: str) -> str:
    """Usernames are case-insensitive: 'Alice' and 'alice' are one account."""
    return name.strip().lower()


def check_username(name: str) -> str:
    username = normalize_username(name)
    if not _USERNAME.fullmatch(username):
        raise UserError(
            f"invalid username {name!r}: use 1-64 of a-z 0-9 . _ @ + - (letter or digit first)"
        )
    return username


def check_email(email: str) -> str:
    """'' (no address) or one plain address; raises UserError."""
    email = email.strip()
    if email and (len(email) > MAX_EMAIL_CHARS or not _EMAIL.fullmatch(email)):
        raise UserError(f"invalid email {email!r}: expected an address such as alice@example.com")
    return email


def check_groups(groups: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    for group in groups:
        if not _GROUP.fullmatch(group):
            raise UserError(f"invalid group {group!r}: use letters, digits and . _ : @ + -")
    return tuple(dict.fromkeys(groups))


def _user(row: asyncpg.Record) -> User:
    return User(identity(row), row["password_hash"], row["disabled"])


async def get_user(db: asyncpg.Pool | asyncpg.Connection, username: str) -> User | None:
    row = await db.fetchrow(SELECT_USER, normalize_username(username))
    return _user(row) if row else None


async def list_users(db: asyncpg.Pool | asyncpg.Connection) -> list[User]:
    return [_user(row) for row in await db.fetch(SELECT_USERS)]


async def add_user(
    conn: asyncpg.Connection,
    username: str,
    password_hash: str,
    *,
    email: str = "",
    name: str = "",
    groups: tuple[str, ...] = (),
) -> int:
    username = check_username(username)
    groups = check_groups(groups)
    email = check_email(email)
    try:
        async with conn.transaction():
            user_id = await conn.fetchval(
                INSERT_USER, username, email, name.strip(), list(groups), password_hash
            )
            await audit.record(conn, "user_added", username)
    except asyncpg.UniqueViolationError:
        raise UserError(f"user {username!r} already exists") from None
    return user_id


async def set_password(
    conn: asyncpg.Connection,
    username: str,
    password_hash: str,
    *,
    end_sessions: bool,
    event: str = "user_password_changed",
    ip: str = "",
    user_agent: str = "",
) -> int:
    """Change a password and, unless told not to, end every session of the user:
    whoever knew the old password may be signed in. Returns sessions ended.

    `event`: user_password_changed (an operator) or password_changed (the user)."""
    username = normalize_username(username)
    async with conn.transaction():
        user_id = await conn.fetchval(UPDATE_PASSWORD, username, password_hash)
        if user_id is None:
            raise UserError(f"no such user {username!r}")
        from .sessions import revoke_user  # see set_disabled

        ended = await revoke_user(conn, user_id) if end_sessions else 0
        detail = f"sessions ended: {ended}" if end_sessions else "sessions kept"
        await audit.record(conn, event, username, ip=ip, user_agent=user_agent, detail=detail)
    return ended


async def set_disabled(conn: asyncpg.Connection, username: str, disabled: bool) -> int:
    """Disable (ending every session of the user) or enable; returns sessions ended."""
    username = normalize_username(username)
    async with conn.transaction():
        user_id = await conn.fetchval(UPDATE_DISABLED, username, disabled)
        if user_id is None:
            raise UserError(f"no such user {username!r}")
        # Imported here: sessions reads users' columns through this module.
        from .sessions import revoke_user

        ended = 0
        if disabled:
            ended = await revoke_user(conn, user_id)
        await audit.record(
            conn,
            "user_disabled" if disabled else "user_enabled",
            username,
            detail=f"sessions ended: {ended}" if disabled else "",
        )
    return ended


async def delete_user(conn: asyncpg.Connection, username: str) -> None:
    """Delete the user; their sessions go with them (ON DELETE CASCADE)."""
    username = normalize_username(username)
    async with conn.transaction():
        if await conn.fetchval(DELETE_USER, username) is None:
            raise UserError(f"no such user {username!r}")
        await audit.record(conn, "user_deleted", username)
