"""Sign-in without HTTP: throttle, verify, audit, rehash, and a brand-new session.

The login page (web/login.py) reads the form and renders the answer; the
order of the steps, which decides what an attacker can learn and what a
guess costs, is here in one function. Changing one's own password is the
same proof again (`change_password`), counted by the same throttle.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import asyncpg

from ..counters import LOGINS
from ..policy.identity import Session
from ..policy.passwords import Passwords, VerifyResult
from . import audit, users
from .db import connection
from .sessions import SessionStore
from .throttle import Throttle


class Outcome(enum.Enum):
    OK = "ok"
    THROTTLED = "throttled"
    FAILED = "failed"  # unknown user, disabled, or wrong password: never said which


@dataclass(frozen=True)
class SignIn:
    outcome: Outcome
    token: str = ""  # the new session's cookie value (OK only)
    session: Session | None = None
    retry_after: int | None = None  # seconds (THROTTLED only)
    ended: int = 0  # other live sessions ended (a password change)


@dataclass(frozen=True)
class Attempt:
    """What the person typed, and where from."""

    username: str  # normalised
    password: str
    remember: bool
    ip: str
    user_agent: str
    previous_token: str | None = None  # the session cookie this browser still holds


@dataclass(frozen=True)
class _Proof:
    """How a password proof went; on OK, the user and the verification."""

    outcome: Outcome
    user: users.User | None = None
    result: VerifyResult | None = None
    retry_after: int | None = None


async def _prove(
    pool: asyncpg.Pool,
    throttle: Throttle,
    passwords: Passwords,
    who: str,
    password: str,
    ip: str,
    agent: str,
    event: str,
) -> _Proof:
    """Throttle, look up, verify, and audit a refusal as `<event>_throttled` or
    `<event>_failed`: the proof a sign-in and a password change both ask for, in
    the order that decides what a guess costs and what it can learn."""
    async with connection(pool) as conn:
        counted = await throttle.begin(conn, who, ip)
        if counted.retry_after is not None:
            # Refused before hashing: a guessing attack costs us no CPU.
            await audit.record(conn, f"{event}_throttled", who, ip=ip, user_agent=agent)
            return _Proof(Outcome.THROTTLED, retry_after=counted.retry_after)
        user = await users.get_user(conn, who)
    # No connection is held while hashing. Unknown and disabled users are
    # hashed too (a dummy hash for the unknown), so neither the answer nor
    # its timing says which it was.
    result = await passwords.verify(user.password_hash if user else None, password)
    async with connection(pool) as conn:
        if user is None or user.disabled or not result.ok:
            # The attempt's row stays: it is the failure.
            why = "unknown user" if user is None else "disabled" if user.disabled else "password"
            await audit.record(conn, f"{event}_failed", who, ip=ip, user_agent=agent, detail=why)
            return _Proof(Outcome.FAILED)
        await throttle.succeeded(conn, counted, who)
    return _Proof(Outcome.OK, user, result)


async def sign_in(
    pool: asyncpg.Pool,
    throttle: Throttle,
    passwords: Passwords,
    store: SessionStore,
    attempt: Attempt,
) -> SignIn:
    """One sign-in attempt, start to finish. Raises DatabaseUnavailable (fail closed)."""
    who, ip, agent = attempt.username, attempt.ip, attempt.user_agent
    proof = await _prove(pool, throttle, passwords, who, attempt.password, ip, agent, "login")
    LOGINS.inc(proof.outcome.value)
    if proof.outcome is not Outcome.OK:
        return SignIn(proof.outcome, retry_after=proof.retry_after)
    user, result = proof.user, proof.result
    assert user is not None and result is not None
    async with connection(pool) as conn:
        if result.new_hash:
            # The same password under new parameters: nobody's sessions end.
            await users.set_password(conn, user.username, result.new_hash, end_sessions=False)
        await audit.record(
            conn,
            "login_ok",
            user.username,
            ip=ip,
            user_agent=agent,
            detail="remember" if attempt.remember else "",
        )
    await _end_previous(store, attempt.previous_token)
    token, session = await store.create(
        user.identity, remember=attempt.remember, ip=ip, user_agent=agent
    )
    return SignIn(Outcome.OK, token=token, session=session)


async def _end_previous(store: SessionStore, token: str | None) -> None:
    """A browser signing in again drops whatever session it held before.

    The old token is never reused (no fixation); ending it also stops a
    shared computer's previous user from lingering in the table.
    """
    if token:
        session = await store.lookup(token)
        if session is not None:
            await store.revoke(session.token_hash)


@dataclass(frozen=True)
class PasswordChange:
    """A signed-in person's own password change, and where it came from."""

    session: Session  # the session asking; it is replaced
    current: str
    new_password: str  # already held to the rules (policy.passwords.PasswordRules)
    ip: str
    user_agent: str


async def change_password(
    pool: asyncpg.Pool,
    throttle: Throttle,
    passwords: Passwords,
    store: SessionStore,
    change: PasswordChange,
) -> SignIn:
    """Check the current password (throttled like a sign-in: a stolen session must
    not become a free password-guessing oracle), then hash the new one and, in one
    transaction, set it, end every session of the user and make this browser a new one.

    Raises DatabaseUnavailable (fail closed)."""
    session = change.session
    who, ip, agent = session.identity.username, change.ip, change.user_agent
    proof = await _prove(
        pool, throttle, passwords, who, change.current, ip, agent, "password_change"
    )
    if proof.outcome is not Outcome.OK:
        return SignIn(proof.outcome, retry_after=proof.retry_after)
    user = proof.user
    assert user is not None
    # Hashed only once the current password is proven: a guess costs one hash, not two.
    new_hash = await passwords.hash_in_pool(change.new_password)
    async with connection(pool) as conn, conn.transaction():
        # What the person will read ("N other sessions were signed out") counts live
        # ones, not rows already over that the purge has not reached yet.
        others = await store.count_live_others(conn, session)
        await users.set_password(
            conn,
            who,
            new_hash,
            end_sessions=True,
            event="password_changed",
            ip=ip,
            user_agent=agent,
        )
        token, new = await store.create(
            user.identity, remember=session.remember, ip=ip, user_agent=agent, conn=conn
        )
    store.cache.evict_user(user.id)  # the NOTIFY does it too; this process at once
    return SignIn(Outcome.OK, token=token, session=new, ended=others)
