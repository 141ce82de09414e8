"""What each `gateway` command does; cli.py only parses the arguments.

Operator mistakes raise CliError (one line on stderr, a non-zero exit).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import asyncpg

from .config import Config, ConfigError, load_config
from .policy.devices import describe
from .policy.identity import utc_now
from .policy.passwords import PasswordRejected, Passwords
from .resources import password_rules
from .settings import parse_duration
from .store import audit, factors, sessions, users
from .store.db import database_url, migrate

EXIT_USAGE = 2
EXIT_FAILURE = 1
T = TypeVar("T")
R = TypeVar("R")


class CliError(Exception):
    """One line for stderr, and the exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


def _config(args: argparse.Namespace) -> Config:
    try:
        return load_config(getattr(args, "config", None))
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


@contextlib.asynccontextmanager
async def _migrated(config: Config) -> AsyncIterator[tuple[asyncpg.Connection, list[str]]]:
    """A connection to the configured (or embedded) database, migrated first;
    and the migrations that this applied."""
    with database_url(config.database.url, config.database.data_dir) as url:
        try:
            conn = await asyncpg.connect(url, timeout=10)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            raise CliError(f"database: cannot connect: {exc}") from None
        try:
            yield conn, await migrate(conn)
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def _connection(config: Config) -> AsyncIterator[asyncpg.Connection]:
    """A migrated database connection for one CLI command."""
    async with _migrated(config) as (conn, _):
        yield conn


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
        if not password:
            raise CliError("--password-stdin: no password on standard input", EXIT_USAGE)
        return password
    if not sys.stdin.isatty():
        raise CliError("no terminal to ask for a password: use --password-stdin", EXIT_USAGE)
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise CliError("passwords do not match", EXIT_USAGE)
    return first


def _hash(config: Config, password: str, username: str) -> str:
    """A new password, held to the same rules as on the password page, hashed."""
    passwords = Passwords(workers=1)
    try:
        password_rules(config).check(password, users.normalize_username(username))
        return passwords.hash(password)
    except PasswordRejected as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    finally:
        passwords.close()


def _usage_checked(check: Callable[[T], R], value: T) -> R:
    """A value the operator typed, checked before anything runs: a bad one is a usage error."""
    try:
        return check(value)
    except users.UserError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


# -- commands -------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _config(args)
    print(f"{config.source}: ok")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve
    from .web.logs import setup_logging

    if not 1 <= args.workers <= 256:
        raise CliError("--workers: expected a number from 1 to 256", EXIT_USAGE)
    config = _config(args)
    setup_logging(config.log)
    return serve(config, workers=args.workers)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo.demo import run_demo

    return run_demo(listen=args.listen, data_dir=args.data_dir)


async def cmd_migrate(args: argparse.Namespace) -> int:
    async with _migrated(_config(args)) as (_, applied):
        pass
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


async def cmd_user_add(args: argparse.Namespace) -> int:
    config = _config(args)
    username = _usage_checked(users.check_username, args.name)
    groups = _usage_checked(users.check_groups, args.group)
    email = _usage_checked(users.check_email, args.email)
    password_hash = _hash(config, _read_password(args), username)
    async with _connection(config) as conn:
        await users.add_user(
            conn, username, password_hash, email=email, name=args.display_name, groups=groups
        )
    print(f"user {username} added")
    return 0


async def cmd_user_passwd(args: argparse.Namespace) -> int:
    config = _config(args)
    password_hash = _hash(config, _read_password(args), args.name)
    async with _connection(config) as conn:
        ended = await users.set_password(
            conn, args.name, password_hash, end_sessions=not args.keep_sessions
        )
    kept = "sessions kept" if args.keep_sessions else f"{ended} session(s) ended"
    print(f"password of {users.normalize_username(args.name)} changed, {kept}")
    return 0


async def cmd_user_disable(args: argparse.Namespace) -> int:
    async with _connection(_config(args)) as conn:
        ended = await users.set_disabled(conn, args.name, True)
    print(f"user {users.normalize_username(args.name)} disabled, {ended} session(s) ended")
    return 0


async def cmd_user_enable(args: argparse.Namespace) -> int:
    async with _connection(_config(args)) as conn:
        await users.set_disabled(conn, args.name, False)
    print(f"user {users.normalize_username(args.name)} enabled")
    return 0


async def cmd_user_delete(args: argparse.Namespace) -> int:
    async with _connection(_config(args)) as conn:
        await users.delete_user(conn, args.name)
    print(f"user {users.normalize_username(args.name)} deleted, sessions ended")
    return 0


def _factors_word(totp: int, recovery: int) -> str:
    """The 2FA column: which second factors a user has ('totp+recovery', 'none')."""
    kinds = [kind for kind, n in (("totp", totp), ("recovery", recovery)) if n]
    return "+".join(kinds) or "none"


async def cmd_user_list(args: argparse.Namespace) -> int:
    async with _connection(_config(args)) as conn:
        found = await users.list_users(conn)
        second = await factors.summaries(conn)
    rows = [("USERNAME", "EMAIL", "NAME", "GROUPS", "2FA", "STATUS")] + [
        (
            u.username,
            u.email,
            u.display_name,
            ",".join(u.groups),
            _factors_word(*second.get(u.id, (0, 0))),
            "disabled" if u.disabled else "active",
        )
        for u in found
    ]
    _print_table(rows)
    return 0


async def _known_user(conn: asyncpg.Connection, name: str) -> users.User:
    user = await users.get_user(conn, name)
    if user is None:
        raise CliError(f"no such user {users.normalize_username(name)!r}")
    return user


async def cmd_user_2fa_list(args: argparse.Namespace) -> int:
    async with _connection(_config(args)) as conn:
        user = await _known_user(conn, args.name)
        authenticators = await factors.totp_factors(conn, user.id)
        left = await factors.recovery_codes_left(conn, user.id)
    if not authenticators and not left:
        print(f"{user.username} has no second factor")
        return 0
    rows = [("KIND", "NAME", "ADDED", "LAST USED")] + [
        ("totp", f.name, _when(f.created_at), _when(f.last_used_at) if f.last_used_at else "never")
        for f in authenticators
    ]
    if left:
        rows.append(("recovery", f"{left} code(s) left", "", ""))
    _print_table(rows)
    return 0


async def cmd_user_2fa_reset(args: argparse.Namespace) -> int:
    """Remove every second factor and end every session: whoever holds the lost
    phone may be signed in, and the person enrols again at the next sign-in."""
    async with _connection(_config(args)) as conn, conn.transaction():
        user = await _known_user(conn, args.name)
        totp, codes = await factors.reset(conn, user.id)
        ended = await sessions.revoke_user(conn, user.id)
        await audit.record(
            conn,
            "two_factor_reset",
            user.username,
            detail=f"authenticators: {totp}, recovery codes: {codes}, sessions ended: {ended}",
        )
    print(
        f"second factors of {user.username} removed ({totp} authenticator(s), "
        f"{codes} recovery code(s)), {ended} session(s) ended"
    )
    return 0


async def cmd_sessions_list(args: argparse.Namespace) -> int:
    config = _config(args)
    async with _connection(config) as conn:
        username = None
        if args.user:
            username = (await _known_user(conn, args.user)).username
        idle = config.session.idle_timeout
        found = await sessions.list_sessions(conn, username, utc_now(), idle)
    rows = [("ID", "USER", "CREATED", "LAST SEEN", "EXPIRES", "IP", "BROWSER")] + [
        (
            str(s.id),
            s.username,
            _when(s.created_at),
            _when(s.last_seen),
            _when(s.expires_at),
            s.ip,
            describe(s.user_agent).summary(),
        )
        for s in found
    ]
    _print_table(rows)
    return 0


async def cmd_sessions_revoke(args: argparse.Namespace) -> int:
    async with _connection(_config(args)) as conn:
        if args.all:
            ended = await sessions.revoke_all(conn)
            detail = "all"
        elif args.user:
            user = await _known_user(conn, args.user)
            ended = await sessions.revoke_user(conn, user.id)
            detail = f"user {user.username}"
        else:
            try:
                session_id = uuid.UUID(args.id)
            except ValueError:
                raise CliError(f"invalid session id {args.id!r}", EXIT_USAGE) from None
            if not await sessions.revoke_by_id(conn, session_id):
                raise CliError(f"no such session {args.id}")
            ended, detail = 1, f"session {session_id}"
        await audit.record(conn, "sessions_revoked", detail=f"{detail}: {ended} by CLI")
    print(f"{ended} session(s) ended")
    return 0


async def cmd_audit(args: argparse.Namespace) -> int:
    try:
        since = utc_now() - parse_duration(args.since)
    except ValueError:
        raise CliError(
            f"--since: expected a duration such as '1h' or '7d', got {args.since!r}", EXIT_USAGE
        ) from None
    if args.limit < 1:
        raise CliError("--limit: expected a whole number of at least 1", EXIT_USAGE)
    async with _connection(_config(args)) as conn:
        found = await audit.entries(
            conn,
            username=users.normalize_username(args.user) if args.user else None,
            since=since,
            limit=args.limit,
        )
    rows = [("TIME", "EVENT", "USER", "IP", "DETAIL", "BROWSER")] + [
        (_when(e.at), e.event, e.username, e.ip, e.detail, e.user_agent[:40]) for e in found
    ]
    _print_table(rows)
    return 0


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
