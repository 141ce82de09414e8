"""The audit_log table: who signed in, out, was revoked or changed, and from where."""

from __future__ import annotations

from typing import Protocol

INSERT_AUDIT = """
INSERT INTO audit_log (event, username, ip, user_agent, detail)
VALUES ($1, $2, $3, $4, $5)"""


class Executor(Protocol):
    async def execute(self, query: str, *args: object) -> str: ...


async def record(
    db: Executor,
    event: str,
    username: str = "",
    *,
    ip: str = "",
    user_agent: str = "",
    detail: str = "",
) -> None:
    await db.execute(INSERT_AUDIT, event, username, ip, user_agent[:512], detail)
