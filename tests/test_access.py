"""policy.access.verdict: the one answer the proxy and /auth both give."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from gateway.policy.access import Verdict, needs_lookup, verdict
from gateway.policy.identity import Identity, Session
from gateway.policy.rules import AUTHENTICATED, DENY, PUBLIC, Decision

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def session(*groups: str) -> Session:
    who = Identity(1, "alice", "", "", groups)
    return Session(uuid.uuid4(), b"h", who, NOW, NOW, NOW, False)


ADMINS = Decision(AUTHENTICATED, ("admins",))


@pytest.mark.parametrize(
    ("decision", "who", "database_up", "expected"),
    [
        (Decision(DENY), None, True, Verdict.CLOSED),
        (Decision(DENY), session("admins"), True, Verdict.CLOSED),
        (Decision(DENY), None, False, Verdict.CLOSED),
        (Decision(PUBLIC), None, True, Verdict.PASS),
        (Decision(PUBLIC), session(), True, Verdict.PASS),
        (Decision(PUBLIC), None, False, Verdict.PASS),
        (Decision(AUTHENTICATED), None, True, Verdict.UNAUTHENTICATED),
        (Decision(AUTHENTICATED), None, False, Verdict.UNAVAILABLE),
        (Decision(AUTHENTICATED), session(), True, Verdict.PASS),
        (ADMINS, session(), True, Verdict.FORBIDDEN),
        (ADMINS, session("staff"), True, Verdict.FORBIDDEN),
        (ADMINS, session("staff", "admins"), True, Verdict.PASS),
        (ADMINS, None, True, Verdict.UNAUTHENTICATED),
        (ADMINS, None, False, Verdict.UNAVAILABLE),
    ],
)
def test_verdict(decision, who, database_up, expected):
    assert verdict(decision, who, database_up=database_up) is expected


@pytest.mark.parametrize(
    ("decision", "expected"),
    [(Decision(DENY), False), (Decision(PUBLIC), True), (ADMINS, True)],
)
def test_only_deny_skips_the_session_lookup(decision, expected):
    assert needs_lookup(decision) is expected


def test_reasons_are_the_documented_auth_reasons():
    # /auth puts these in X-Gateway-Reason; the README's /auth table names them.
    assert {v.value for v in Verdict} == {
        "ok",
        "denied",
        "database-unavailable",
        "unauthenticated",
        "forbidden",
    }
