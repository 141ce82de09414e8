"""Access rules: request facts in, a policy out. Pure, first match wins.

A rule may name a host (exact, or '*.example.com'), a path (prefix, or a
regular expression when regex = true) and methods; a request matches when
every part it names matches. No match means "authenticated".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import Rule

PUBLIC = "public"
AUTHENTICATED = "authenticated"
DENY = "deny"


@dataclass(frozen=True)
class Decision:
    policy: str
    groups: tuple[str, ...] = ()

    def allows(self, groups: tuple[str, ...]) -> bool:
        """For a signed-in user with these groups: may they pass?"""
        if self.policy == DENY:
            return False
        return not self.groups or any(g in self.groups for g in groups)


DEFAULT = Decision(AUTHENTICATED)


class _Compiled:
    __slots__ = ("bare_path", "decision", "pattern", "rule")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.pattern = re.compile(rule.path) if rule.regex and rule.path else None
        self.decision = Decision(rule.policy, rule.groups)
        self.bare_path = rule.path.rstrip("/") if rule.path.endswith("/") else None

    def matches(self, host: str, path: str, method: str) -> bool:
        rule = self.rule
        if rule.host:
            if rule.host.startswith("*."):
                if not (host.endswith(rule.host[1:]) and len(host) > len(rule.host) - 1):
                    return False
            elif host != rule.host:
                return False
        if rule.methods and method not in rule.methods:
            return False
        if self.pattern is not None:
            return self.pattern.search(path) is not None
        # '/admin/' also covers the bare '/admin', which apps serve as the same page.
        return path.startswith(rule.path) or path == self.bare_path


class RuleSet:
    """Rules compiled once at start-up; `decide` runs on every request."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self._rules = [_Compiled(r) for r in rules]

    def decide(self, host: str, path: str, method: str) -> Decision:
        host = host.lower().rstrip(".")
        for compiled in self._rules:
            if compiled.matches(host, path, method.upper()):
                return compiled.decision
        return DEFAULT
