"""The one access verdict, for the proxy and for `/auth` alike. Pure.

The rules say what a request needs (`rules.Decision`); the session says who
asks. This turns the two into one answer, so the built-in proxy and every
front proxy asking `/auth` can never disagree about a request.
"""

from __future__ import annotations

import enum

from .identity import Session
from .rules import DENY, PUBLIC, Decision


class Verdict(enum.Enum):
    """What to do with a request. The value names it in `/auth`'s X-Gateway-Reason."""

    PASS = "ok"  # public, or signed in and allowed
    CLOSED = "denied"  # a deny rule: nobody passes, signed in or not
    UNAVAILABLE = "database-unavailable"  # needs a session; none can be checked now
    UNAUTHENTICATED = "unauthenticated"  # needs a session; there is none
    FORBIDDEN = "forbidden"  # signed in, but outside the rule's groups


def needs_lookup(decision: Decision) -> bool:
    """Is the session worth looking up? Not for a deny rule: its answer is known."""
    return decision.policy != DENY


def verdict(decision: Decision, session: Session | None, *, database_up: bool = True) -> Verdict:
    """The verdict for a request the rules decided on, from a session (or None).

    `database_up=False`: the session could not be checked. Public addresses keep
    working without an identity; everything else fails closed.
    """
    if decision.policy == DENY:
        return Verdict.CLOSED
    if decision.policy == PUBLIC:
        return Verdict.PASS
    if not database_up:
        return Verdict.UNAVAILABLE
    if session is None:
        return Verdict.UNAUTHENTICATED
    if not decision.allows(session.identity.groups):
        return Verdict.FORBIDDEN
    return Verdict.PASS
