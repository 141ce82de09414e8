"""Who a request is from, and the session that vouches for it. Pure: no I/O.

`Clock` is how every time-dependent rule gets "now", so tests move time
instead of sleeping.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Identity:
    user_id: int
    username: str
    email: str
    name: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Session:
    id: uuid.UUID
    token_hash: bytes
    identity: Identity
    created_at: datetime
    last_seen: datetime
    expires_at: datetime
    remember: bool
