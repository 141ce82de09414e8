"""The audit_log table: who signed in, out, was revoked or changed, and from where."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import asyncpg

from .db import rows_affected

INSERT_AUDIT = """
INSERT INTO audit_log (event, username, ip, user_agent, detail)
VALUES ($1, $2, $3, $4, $5)"""


PURGE_OLD = """
DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at <= $1 LIMIT $2)"""


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


SELECT_AUDIT = """
SELECT at, event, username, ip, user_agent, detail FROM audit_log
WHERE ($1::text IS NULL OR username = $1) AND at >= $2
ORDER BY at DESC, id DESC LIMIT $3"""


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    event: str
    username: str
    ip: str
    user_agent: str
    detail: str


async def entries(
    db: asyncpg.Pool | asyncpg.Connection, *, username: str | None, since: datetime, limit: int
) -> list[AuditEntry]:
    """Newest first."""
    return [AuditEntry(**dict(row)) for row in await db.fetch(SELECT_AUDIT, username, since, limit)]


async def purge_old(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    """Delete up to `limit` entries from before `before`."""
    return rows_affected(await conn.execute(PURGE_OLD, before, limit))
