"""The `gateway` command line, run as a real subprocess against this test's schema.

Every command gets GATEWAY_DATABASE_URL pointing at the per-test schema and runs
in tmp_path, so no ./config.toml is found unless a test writes one.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import argon2
import asyncpg
import pytest
from helpers import PASSWORD, cli_env, create_user, free_port, fresh_get, sign_in, start_cli

from gateway.cli import build_parser
from gateway.policy import recovery, totp
from gateway.store import factors
from gateway.store.db import embedded_postgres

NEW_PASSWORD = "a brand new password"


@dataclass
class Run:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def describe(self) -> str:
        return (
            f"gateway {' '.join(self.args)} -> {self.returncode}\n"
            f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        )


@pytest.fixture
def cli(db_url: str, tmp_path: Path):
    """`await cli("user", "list", stdin="...")` runs `python -m gateway` on this test's schema.

    stdin=None means no terminal and nothing to read (/dev/null).
    """

    async def run(
        *args: str,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> Run:
        proc = await start_cli(tmp_path, cli_env(db_url, env), *args, stdin=stdin is not None)
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(None if stdin is None else stdin.encode()), timeout
            )
        except TimeoutError:
            proc.kill()
            await proc.wait()
            pytest.fail(f"gateway {' '.join(args)} did not finish within {timeout}s")
        return Run(args, proc.returncode, out.decode(), err.decode())

    return run


def assert_one_line_error(run: Run, *fragments: str, status: int | None = None) -> str:
    """Non-zero exit, exactly one line on stderr containing every fragment, no traceback."""
    assert run.returncode != 0, run.describe()
    if status is not None:
        assert run.returncode == status, run.describe()
    assert "Traceback" not in run.stderr, run.describe()
    assert len(run.stderr_lines) == 1, run.describe()
    line = run.stderr_lines[0]
    for fragment in fragments:
        assert fragment in line, run.describe()
    return line


@pytest.fixture
def real_time(clock) -> None:
    """The gateway's fake clock set to now, so `sessions list` (real time) sees its sessions."""
    clock.now = datetime.now(UTC)


async def audit_events(db, username: str | None = None) -> list[str]:
    """Audit events other than sign-ins, oldest first (optionally of one user)."""
    rows = await db.fetch(
        "SELECT event FROM audit_log WHERE ($1::text IS NULL OR username = $1)"
        " AND event NOT LIKE 'login%' ORDER BY id",
        username,
    )
    return [r["event"] for r in rows]


async def assert_signed_in(client, token: str) -> None:
    response = await fresh_get(client, "/x", token, Accept="application/json")
    assert response.status == 200, "session should still work"


async def assert_signed_out(client, token: str) -> None:
    response = await fresh_get(client, "/x", token, Accept="application/json")
    assert response.status == 401, "old cookie should be refused"


async def try_sign_in(client, username: str, password: str):
    """Sign in from a clean cookie jar (a signed-in browser is sent past the login form)."""
    client.session.cookie_jar.clear()
    return await sign_in(client, username, password)


async def signed_in_token(client, username: str = "alice", password: str = PASSWORD) -> str:
    result = await try_sign_in(client, username, password)
    assert result.status == 303, result.text
    assert result.token
    await assert_signed_in(client, result.token)
    return result.token


# -- user add ---------------------------------------------------------------------


async def test_user_add_creates_a_user_who_can_sign_in(cli, db, gateway):
    run = await cli(
        "user",
        "add",
        "Bob",
        "--email",
        "bob@example.com",
        "--name",
        "Bob Builder",
        "--group",
        "staff",
        "--group",
        "admins",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert run.returncode == 0, run.describe()
    assert "bob" in run.stdout

    row = await db.fetchrow("SELECT * FROM users")
    assert row["username"] == "bob"
    assert row["email"] == "bob@example.com"
    assert row["display_name"] == "Bob Builder"
    assert list(row["groups"]) == ["staff", "admins"]
    assert row["disabled"] is False
    assert row["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in row["password_hash"]
    assert argon2.PasswordHasher().verify(row["password_hash"], PASSWORD)
    assert await audit_events(db, "bob") == ["user_added"]

    client = await gateway()
    # The trailing newline from stdin is not part of the password; the name is case-insensitive.
    assert (await try_sign_in(client, "bob", PASSWORD + "\n")).status == 401
    result = await try_sign_in(client, "BOB", PASSWORD)
    assert result.status == 303, result.text
    assert result.token
    response = await client.get("/_gateway/userinfo")
    assert response.status == 200
    info = await response.json()
    assert info["user"] == "bob"
    assert sorted(info["groups"]) == ["admins", "staff"]


async def test_user_add_duplicate_is_refused_and_changes_nothing(cli, db, alice, gateway):
    before = await db.fetchrow("SELECT * FROM users")
    audit_before = await audit_events(db)

    run = await cli("user", "add", "ALICE", "--password-stdin", stdin=NEW_PASSWORD + "\n")

    assert_one_line_error(run, "alice", "already exists")
    assert await db.fetch("SELECT * FROM users") == [before]
    assert await audit_events(db) == audit_before
    client = await gateway()
    assert (await try_sign_in(client, "alice", NEW_PASSWORD)).status == 401
    assert (await try_sign_in(client, "alice", PASSWORD)).status == 303


@pytest.mark.parametrize(
    ("args", "stdin", "fragments"),
    [
        pytest.param(
            ["bad name!", "--password-stdin"], PASSWORD + "\n", ["invalid username"], id="username"
        ),
        pytest.param(
            ["carol", "--group", "bad group", "--password-stdin"],
            PASSWORD + "\n",
            ["invalid group", "bad group"],
            id="group",
        ),
        pytest.param(
            ["carol", "--password-stdin"],
            "short\n",
            ["at least 10 characters"],
            id="short-password",
        ),
        pytest.param(
            ["carolcarol", "--password-stdin"],
            "carolcarol\n",
            ["not be your username"],
            id="same-as-username",
        ),
        pytest.param(
            ["carol", "--password-stdin"], "1234567890\n", ["most common"], id="common-password"
        ),
        pytest.param(["carol", "--password-stdin"], "", ["--password-stdin"], id="empty-stdin"),
        pytest.param(["carol"], None, ["--password-stdin"], id="no-tty"),
        pytest.param(
            ["carol", "--email", "carol", "--password-stdin"],
            PASSWORD + "\n",
            ["invalid email 'carol'", "alice@example.com"],
            id="email-without-domain",
        ),
        pytest.param(
            ["carol", "--email", "carol@example", "--password-stdin"],
            PASSWORD + "\n",
            ["invalid email 'carol@example'"],
            id="email-undotted-domain",
        ),
        pytest.param(
            ["carol", "--email", "carol smith@example.com", "--password-stdin"],
            PASSWORD + "\n",
            ["invalid email"],
            id="email-with-space",
        ),
        pytest.param(
            ["carol", "--email", "carol@example.com\r\nX-Remote-User: admin", "--password-stdin"],
            PASSWORD + "\n",
            ["invalid email"],
            id="email-with-a-header-in-it",
        ),
    ],
)
async def test_user_add_rejects_bad_input_as_a_usage_error(cli, db, args, stdin, fragments):
    """Each is the operator's typing: exit 2 (README, Command line), nothing added."""
    run = await cli("user", "add", *args, stdin=stdin)

    assert_one_line_error(run, *fragments, status=2)
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    assert await audit_events(db) == []


# -- user passwd / disable / enable / delete / list ---------------------------------


async def test_user_passwd_replaces_the_password_and_ends_every_session(cli, db, alice, gateway):
    client = await gateway()
    tokens = [await signed_in_token(client), await signed_in_token(client)]
    await create_user(db, "bob")
    bobs = await signed_in_token(client, "bob")

    run = await cli("user", "passwd", "Alice", "--password-stdin", stdin=NEW_PASSWORD + "\n")

    assert run.returncode == 0, run.describe()
    assert run.stdout == "password of alice changed, 2 session(s) ended\n"
    for token in tokens:
        await assert_signed_out(client, token)  # at once: the same NOTIFY evicts the cache
    await assert_signed_in(client, bobs)
    stored = await db.fetchval("SELECT password_hash FROM users WHERE username = 'alice'")
    assert stored.startswith("$argon2id$")
    assert NEW_PASSWORD not in stored
    assert (await try_sign_in(client, "alice", PASSWORD)).status == 401
    result = await try_sign_in(client, "alice", NEW_PASSWORD)
    assert result.status == 303, result.text
    assert result.token
    assert await audit_events(db, "alice") == ["user_added", "user_password_changed"]
    detail = "SELECT detail FROM audit_log WHERE event = 'user_password_changed'"
    assert await db.fetchval(detail) == "sessions ended: 2"


async def test_user_passwd_keep_sessions_leaves_them_signed_in(cli, db, alice, gateway):
    client = await gateway()
    token = await signed_in_token(client)

    run = await cli(
        "user", "passwd", "alice", "--password-stdin", "--keep-sessions", stdin=NEW_PASSWORD + "\n"
    )

    assert run.returncode == 0, run.describe()
    assert run.stdout == "password of alice changed, sessions kept\n"
    await assert_signed_in(client, token)
    assert (await try_sign_in(client, "alice", NEW_PASSWORD)).status == 303
    detail = "SELECT detail FROM audit_log WHERE event = 'user_password_changed'"
    assert await db.fetchval(detail) == "sessions kept"


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        pytest.param(["user", "passwd", "nobody", "--password-stdin"], NEW_PASSWORD, id="passwd"),
        pytest.param(["user", "disable", "nobody"], None, id="disable"),
        pytest.param(["user", "delete", "nobody"], None, id="delete"),
        pytest.param(["sessions", "revoke", "--user", "nobody"], None, id="revoke"),
    ],
)
async def test_unknown_user_is_a_clear_error(cli, db, alice, args, stdin):
    audit_before = await audit_events(db)
    row_before = await db.fetchrow("SELECT * FROM users")

    run = await cli(*args, stdin=stdin)

    assert_one_line_error(run, "no such user", "nobody")
    assert await audit_events(db) == audit_before
    assert await db.fetch("SELECT * FROM users") == [row_before]


async def test_user_disable_ends_sessions_and_enable_restores_sign_in(cli, db, alice, gateway):
    client = await gateway()
    token = await signed_in_token(client)

    run = await cli("user", "disable", "alice")

    assert run.returncode == 0, run.describe()
    assert "1 session(s) ended" in run.stdout
    assert await db.fetchval("SELECT disabled FROM users WHERE username = 'alice'") is True
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0
    await assert_signed_out(client, token)
    assert (await try_sign_in(client, "alice", PASSWORD)).status == 401

    run = await cli("user", "enable", "alice")

    assert run.returncode == 0, run.describe()
    assert await db.fetchval("SELECT disabled FROM users WHERE username = 'alice'") is False
    await signed_in_token(client)
    await assert_signed_out(client, token)  # the old session stays dead
    assert await audit_events(db, "alice") == ["user_added", "user_disabled", "user_enabled"]


async def test_user_delete_removes_the_user_and_their_sessions(cli, db, alice, gateway):
    await create_user(db, "bob")
    client = await gateway()
    alice_token = await signed_in_token(client, "alice")
    bob_token = await signed_in_token(client, "bob")

    run = await cli("user", "delete", "alice")

    assert run.returncode == 0, run.describe()
    assert await db.fetchval("SELECT count(*) FROM users WHERE username = 'alice'") == 0
    assert await db.fetchval("SELECT count(*) FROM sessions") == 1  # bob's
    await assert_signed_out(client, alice_token)
    await assert_signed_in(client, bob_token)
    assert (await try_sign_in(client, "alice", PASSWORD)).status == 401
    assert await audit_events(db, "alice") == ["user_added", "user_deleted"]


async def test_user_list_shows_users_and_status(cli, db, alice):
    await create_user(db, "bob", email="bob@example.com")
    await db.execute("UPDATE users SET disabled = true WHERE username = 'bob'")

    run = await cli("user", "list")

    assert run.returncode == 0, run.describe()
    lines = run.stdout.splitlines()
    assert "USERNAME" in lines[0]
    assert "STATUS" in lines[0]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"alice", "bob"}
    assert "staff" in rows["alice"]
    assert rows["alice"].split()[-1] == "active"
    assert "bob@example.com" in rows["bob"]
    assert rows["bob"].split()[-1] == "disabled"


# -- second factors ---------------------------------------------------------------


async def give_factors(db, user_id: int, *, codes: int = 10) -> None:
    """A confirmed authenticator "Work phone" and `codes` unused recovery codes."""
    when = datetime(2026, 1, 1, 9, tzinfo=UTC)
    sealed = totp.SecretBox(b"k" * 32).seal(totp.new_secret(), user_id)
    factor = await factors.add_pending_totp(db, user_id, "Work phone", sealed, when)
    assert await factors.confirm_totp(db, factor, user_id, totp.step_at(when), when)
    hasher = recovery.CodeHasher(b"k" * 32)
    hashes = [hasher.hash(code) for code in recovery.new_codes(codes)]
    await factors.replace_recovery_codes(db, user_id, hashes, when)


async def test_user_list_says_who_has_which_second_factor(cli, db, alice):
    bob = await create_user(db, "bob")
    carol = await create_user(db, "carol")
    await give_factors(db, bob)
    await give_factors(db, carol, codes=0)

    run = await cli("user", "list")

    assert run.returncode == 0, run.describe()
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["USERNAME", "EMAIL", "NAME", "GROUPS", "2FA", "STATUS"]
    column = {line.split()[0]: line.split()[-2] for line in lines[1:]}
    assert column == {"alice": "none", "bob": "totp+recovery", "carol": "totp"}


async def test_user_2fa_list_names_each_factor(cli, db, alice):
    await give_factors(db, alice)
    run = await cli("user", "2fa", "list", "ALICE")
    assert run.returncode == 0, run.describe()
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "ADDED", "LAST", "USED"]
    assert lines[1].split()[:3] == ["totp", "Work", "phone"]
    assert lines[2].split() == ["recovery", "10", "code(s)", "left"]


async def test_user_2fa_list_of_a_user_without_factors(cli, alice):
    run = await cli("user", "2fa", "list", "alice")
    assert run.returncode == 0, run.describe()
    assert run.stdout == "alice has no second factor\n"


async def test_user_2fa_reset_removes_the_factors_and_ends_the_sessions(cli, db, alice, gateway):
    bob = await create_user(db, "bob")
    await give_factors(db, alice)
    await give_factors(db, bob)
    client = await gateway()
    alice_token = await signed_in_token(client, "alice")
    bob_token = await signed_in_token(client, "bob")

    run = await cli("user", "2fa", "reset", "alice")

    assert run.returncode == 0, run.describe()
    assert run.stdout == (
        "second factors of alice removed (1 authenticator(s), 10 recovery code(s)), "
        "1 session(s) ended\n"
    )
    await assert_signed_out(client, alice_token)
    await assert_signed_in(client, bob_token)
    assert await db.fetchval("SELECT count(*) FROM totp_factors WHERE user_id = $1", alice) == 0
    assert await db.fetchval("SELECT count(*) FROM recovery_codes WHERE user_id = $1", alice) == 0
    assert await db.fetchval("SELECT count(*) FROM totp_factors WHERE user_id = $1", bob) == 1
    assert await db.fetchval("SELECT count(*) FROM recovery_codes WHERE user_id = $1", bob) == 10
    detail = await db.fetchval("SELECT detail FROM audit_log WHERE event = 'two_factor_reset'")
    assert detail == "authenticators: 1, recovery codes: 10, sessions ended: 1"


@pytest.mark.parametrize("command", ["list", "reset"])
async def test_user_2fa_of_an_unknown_user_is_an_error_and_changes_nothing(cli, db, alice, command):
    await give_factors(db, alice)
    run = await cli("user", "2fa", command, "nobody")
    assert run.returncode == 1, run.describe()
    assert run.stderr == "gateway: no such user 'nobody'\n"
    assert await db.fetchval("SELECT count(*) FROM totp_factors") == 1
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE event = 'two_factor_reset'") == 0


# -- sessions -----------------------------------------------------------------------


async def session_id(db, username: str) -> str:
    return str(
        await db.fetchval(
            "SELECT s.id FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.username = $1",
            username,
        )
    )


async def test_sessions_list_shows_signed_in_sessions(cli, db, alice, gateway, real_time):
    await create_user(db, "bob")
    client = await gateway()
    await signed_in_token(client, "alice")
    await signed_in_token(client, "bob")
    alice_id, bob_id = await session_id(db, "alice"), await session_id(db, "bob")

    run = await cli("sessions", "list")

    assert run.returncode == 0, run.describe()
    rows = {line.split()[0]: line for line in run.stdout.splitlines()[1:]}
    assert set(rows) == {alice_id, bob_id}
    assert rows[alice_id].split()[1] == "alice"
    assert rows[bob_id].split()[1] == "bob"

    run = await cli("sessions", "list", "--user", "ALICE")

    assert run.returncode == 0, run.describe()
    rows = {line.split()[0]: line for line in run.stdout.splitlines()[1:]}
    assert set(rows) == {alice_id}


async def test_sessions_list_names_the_browser_as_the_sessions_page_does(
    cli, db, alice, gateway, real_time
):
    client = await gateway()
    await signed_in_token(client, "alice")
    firefox = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
    await db.execute("UPDATE sessions SET user_agent = $1", firefox)

    run = await cli("sessions", "list")

    assert run.returncode == 0, run.describe()
    assert run.stdout.splitlines()[1].endswith("  Firefox 133 on Windows 10")


async def test_sessions_list_leaves_out_sessions_ended_by_idleness(
    cli, db, alice, gateway, real_time
):
    # Idle past session.idle_timeout (1h) is over, as a request would find it,
    # though its absolute expiry (12h) is still ahead and the purge has not run.
    await create_user(db, "bob")
    client = await gateway()
    await signed_in_token(client, "alice")
    await signed_in_token(client, "bob")
    await db.execute(
        "UPDATE sessions SET last_seen = now() - interval '61 minutes'"
        " WHERE user_id = (SELECT id FROM users WHERE username = 'alice')"
    )

    run = await cli("sessions", "list")

    assert run.returncode == 0, run.describe()
    listed = [line.split()[1] for line in run.stdout.splitlines()[1:]]
    assert listed == ["bob"]


async def test_sessions_list_for_an_unknown_user_is_an_error(cli, db, alice):
    run = await cli("sessions", "list", "--user", "nobody")
    assert_one_line_error(run, "no such user 'nobody'", status=1)
    assert run.stdout == ""


async def test_sessions_revoke_by_id_ends_only_that_session(cli, db, alice, gateway):
    client = await gateway()
    first = await signed_in_token(client)
    first_id = await session_id(db, "alice")
    second = await signed_in_token(client)

    run = await cli("sessions", "revoke", first_id)

    assert run.returncode == 0, run.describe()
    assert "1 session(s) ended" in run.stdout
    await assert_signed_out(client, first)
    await assert_signed_in(client, second)
    assert "sessions_revoked" in await audit_events(db)


async def test_sessions_revoke_user_ends_only_that_users_sessions(cli, db, alice, gateway):
    await create_user(db, "bob")
    client = await gateway()
    alice_tokens = [await signed_in_token(client, "alice") for _ in range(2)]
    bob_token = await signed_in_token(client, "bob")

    run = await cli("sessions", "revoke", "--user", "Alice")

    assert run.returncode == 0, run.describe()
    assert "2 session(s) ended" in run.stdout
    for token in alice_tokens:
        await assert_signed_out(client, token)
    await assert_signed_in(client, bob_token)
    assert "sessions_revoked" in await audit_events(db)


async def test_sessions_revoke_all_ends_every_session(cli, db, alice, gateway):
    await create_user(db, "bob")
    client = await gateway()
    tokens = [await signed_in_token(client, "alice"), await signed_in_token(client, "bob")]

    run = await cli("sessions", "revoke", "--all")

    assert run.returncode == 0, run.describe()
    assert "2 session(s) ended" in run.stdout
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0
    for token in tokens:
        await assert_signed_out(client, token)
    assert "sessions_revoked" in await audit_events(db)


@pytest.mark.parametrize(
    ("session", "fragment"),
    [
        pytest.param("not-a-uuid", "invalid session id", id="malformed"),
        pytest.param(str(uuid.uuid4()), "no such session", id="unknown"),
    ],
)
async def test_sessions_revoke_bad_id_is_a_clear_error(cli, db, alice, gateway, session, fragment):
    client = await gateway()
    token = await signed_in_token(client)

    run = await cli("sessions", "revoke", session)

    assert_one_line_error(run, fragment, session)
    await assert_signed_in(client, token)
    assert "sessions_revoked" not in await audit_events(db)


# -- config -------------------------------------------------------------------------

GOOD_CONFIG = """
[server]
listen = "127.0.0.1:8099"
public_url = "https://gw.example.com"

[session]
idle_timeout = "30m"

[[upstream]]
name = "app"
url = "http://127.0.0.1:9000"

[[rule]]
path = "/admin/"
groups = ["admins"]
"""


async def test_check_config_accepts_a_good_file(cli, tmp_path):
    (tmp_path / "good.toml").write_text(GOOD_CONFIG)

    run = await cli("check-config", "-c", "good.toml")

    assert run.returncode == 0, run.describe()
    assert "good.toml" in run.stdout
    assert "ok" in run.stdout
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        pytest.param('[server]\nlisen = "127.0.0.1:8080"\n', ["server.lisen"], id="unknown-key"),
        pytest.param(
            '[session]\nidle_timeout = "soon"\n', ["session.idle_timeout", "soon"], id="bad-value"
        ),
        pytest.param("[server\nlisten = 1\n", ["bad.toml", "TOML"], id="invalid-toml"),
    ],
)
async def test_check_config_names_the_problem(cli, tmp_path, text, fragments):
    (tmp_path / "bad.toml").write_text(text)

    run = await cli("check-config", "-c", "bad.toml")

    assert_one_line_error(run, "bad.toml", *fragments, status=2)


async def test_check_config_prints_every_error(cli, tmp_path):
    (tmp_path / "bad.toml").write_text(
        "[server]\n"
        'lisen = "127.0.0.1:8080"\n'
        'public_url = "ftp://example.com"\n'
        "[login]\n"
        "max_failures_per_user = 0\n"
        "[[rule]]\n"
        'policy = "sometimes"\n'
    )

    run = await cli("check-config", "-c", "bad.toml")

    assert run.returncode == 2, run.describe()
    assert "Traceback" not in run.stderr
    keys = ["server.lisen", "server.public_url", "login.max_failures_per_user", "rule[0].policy"]
    assert len(run.stderr_lines) == len(keys), run.describe()
    for key in keys:
        assert sum(key in line for line in run.stderr_lines) == 1, (key, run.describe())


async def test_check_config_missing_explicit_file(cli):
    run = await cli("check-config", "-c", "nowhere.toml")

    assert_one_line_error(run, "nowhere.toml", status=2)


async def test_check_config_reads_dot_config_toml_by_default(cli, tmp_path):
    (tmp_path / "config.toml").write_text("[sesion]\n")

    run = await cli("check-config")

    assert_one_line_error(run, "config.toml", "sesion", status=2)


async def test_check_config_honours_gateway_config_env(cli, tmp_path):
    (tmp_path / "config.toml").write_text(GOOD_CONFIG)
    (tmp_path / "env.toml").write_text('[login]\nwindow = "forever"\n')

    run = await cli("check-config", env={"GATEWAY_CONFIG": "env.toml"})

    assert_one_line_error(run, "env.toml", "login.window", status=2)


async def test_serve_with_a_bad_config_exits_2_naming_the_key(cli, tmp_path):
    (tmp_path / "bad.toml").write_text('[server]\nlisen = "127.0.0.1:8080"\n')

    run = await cli("serve", "-c", "bad.toml", timeout=20)

    assert_one_line_error(run, "bad.toml", "server.lisen", status=2)


@pytest.mark.parametrize("workers", [1, 2])
async def test_serve_migrates_serves_and_stops_cleanly(db_url, tmp_path, workers):
    """`serve [--workers N]` (DESIGN: N processes share the port): migrate, listen, SIGTERM."""
    port = free_port()
    (tmp_path / "serve.toml").write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[[upstream]]\nname = "app"\nurl = "http://127.0.0.1:{free_port()}"\n'
    )
    proc = await start_cli(
        tmp_path, cli_env(db_url), "serve", "-c", "serve.toml", "--workers", str(workers)
    )
    try:
        ready = False
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                if proc.returncode is not None:
                    break
                try:
                    async with http.get(f"http://127.0.0.1:{port}/_gateway/readyz") as response:
                        if response.status == 200:
                            ready = True
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        if not ready:
            if proc.returncode is None:
                proc.kill()
            _out, err = await proc.communicate()
            pytest.fail(f"serve never became ready (exit {proc.returncode}):\n{err.decode()}")
        conn = await asyncpg.connect(db_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") >= 1
        finally:
            await conn.close()
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()


async def test_unreachable_database_is_one_line(cli):
    port = free_port()  # nothing listens there
    run = await cli(
        "user", "list", env={"GATEWAY_DATABASE_URL": f"postgresql://gw@127.0.0.1:{port}/gw"}
    )

    assert_one_line_error(run, "database")


# -- migrate --------------------------------------------------------------------------


async def test_migrate_applies_then_reports_up_to_date(cli, db_url):
    run = await cli("migrate")

    assert run.returncode == 0, run.describe()
    assert "001_initial" in run.stdout
    conn = await asyncpg.connect(db_url)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        assert 1 in versions
        assert await conn.fetchval("SELECT count(*) FROM users") == 0
    finally:
        await conn.close()

    run = await cli("migrate")

    assert run.returncode == 0, run.describe()
    assert "up to date" in run.stdout
    assert "001_initial" not in run.stdout


# -- usage errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param(["frobnicate"], "frobnicate", id="unknown-command"),
        pytest.param(["user", "rename", "alice"], "rename", id="unknown-user-command"),
        pytest.param(["user", "add"], "NAME", id="missing-name"),
        pytest.param(["sessions", "revoke"], "", id="revoke-without-target"),
        pytest.param(["user", "list", "--bogus"], "--bogus", id="unknown-option"),
    ],
)
async def test_usage_errors_exit_2_with_one_line(cli, args, fragment):
    run = await cli(*args)

    assert_one_line_error(run, fragment, status=2)
    assert run.stdout == ""


@pytest.mark.parametrize(
    ("args", "commands"),
    [
        ([], ["serve", "demo", "migrate", "check-config", "user", "sessions", "audit"]),
        (["user"], ["add", "passwd", "disable", "enable", "delete", "list", "2fa"]),
        (["user", "2fa"], ["list", "reset"]),
        (["sessions"], ["list", "revoke"]),
    ],
)
async def test_a_bare_command_group_prints_its_usage(cli, args, commands):
    run = await cli(*args)
    assert run.returncode == 2, run.describe()
    assert run.stderr == ""
    assert run.stdout.startswith(f"usage: gateway{''.join(' ' + a for a in args)} [-h] COMMAND")
    listed = re.findall(r"(?m)^    (\S+)", run.stdout)  # the commands column
    assert listed == commands


def _every_argument(parser, path=("gateway",)):
    """(command path, argument) for every positional and option of every command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _every_argument(child, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield " ".join(path), action


def test_every_argument_of_every_command_says_what_it_is():
    found = list(_every_argument(build_parser()))
    assert len(found) > 30
    missing = [
        f"{path} {action.option_strings or action.dest}"
        for path, action in found
        if not action.help or action.help == argparse.SUPPRESS
    ]
    assert missing == []
    helps = {(path, tuple(a.option_strings)): a.help for path, a in found}
    assert "repeat" in helps[("gateway user add", ("--group",))]
    assert "(default: 200)" in helps[("gateway audit", ("--limit",))]
    assert "(default: 24h)" in helps[("gateway audit", ("--since",))]


async def test_the_cli_says_whether_it_starts_or_joins_the_embedded_postgresql(cli, tmp_path):
    (tmp_path / "config.toml").write_text('[database]\ndata_dir = "pg"\n')
    no_url = {"GATEWAY_DATABASE_URL": ""}
    alone = await cli("user", "list", env=no_url)
    assert alone.returncode == 0, alone.describe()
    assert f"starting embedded PostgreSQL in {tmp_path / 'pg' / 'pgdata'}" in alone.stderr
    assert "joining" not in alone.stderr

    with embedded_postgres(tmp_path / "pg"):  # as a running `gateway serve` would hold it
        beside = await cli("user", "list", env=no_url)
    assert beside.returncode == 0, beside.describe()
    assert (
        f"joining the embedded PostgreSQL already running in {tmp_path / 'pg' / 'pgdata'}"
        in beside.stderr
    )
    assert "starting embedded" not in beside.stderr
