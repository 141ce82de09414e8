"""policy.rules: RuleSet.decide (first matching `[[rule]]` wins) and Decision.allows."""

from __future__ import annotations

import pytest

from gateway.config import Rule
from gateway.policy.rules import Decision, RuleSet


def decide(rules: list[Rule], host: str = "app.local", path: str = "/", method: str = "GET"):
    return RuleSet(tuple(rules)).decide(host, path, method)


def test_no_rules_means_authenticated():
    decision = decide([])
    assert decision == Decision("authenticated")
    assert decision.groups == ()


def test_unmatched_request_is_authenticated():
    decision = decide([Rule(path="/static/", policy="public")], path="/app")
    assert decision.policy == "authenticated"


def test_first_match_wins():
    rules = [
        Rule(path="/static/secret/", policy="deny"),
        Rule(path="/static/", policy="public"),
        Rule(path="/", policy="deny"),
    ]
    assert decide(rules, path="/static/secret/key").policy == "deny"
    assert decide(rules, path="/static/app.css").policy == "public"
    assert decide(rules, path="/other").policy == "deny"


def test_first_match_wins_even_when_later_is_more_specific():
    rules = [Rule(path="/", policy="public"), Rule(path="/admin/", policy="deny")]
    assert decide(rules, path="/admin/x").policy == "public"


@pytest.mark.parametrize(
    ("path", "matches"),
    [
        ("/static/", True),
        ("/static/app.css", True),
        ("/static/a/b/c.js", True),
        ("/static", True),  # a "/static/" rule also covers the bare directory path
        ("/", False),
        ("/app/static/x", False),
        ("/STATIC/x", False),
    ],
)
def test_path_prefix(path, matches):
    decision = decide([Rule(path="/static/", policy="public")], path=path)
    assert decision.policy == ("public" if matches else "authenticated")


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        (r"^/api/v[0-9]+/public", "/api/v2/public/x", True),
        (r"^/api/v[0-9]+/public", "/api/vX/public", False),
        (r"^/api/v[0-9]+/public", "/x/api/v1/public", False),
        (r"\.css$", "/a/b/site.css", True),
        (r"\.css$", "/a/b/site.css.map", False),
        # re.search semantics: unanchored patterns match anywhere
        (r"admin", "/x/admin/y", True),
        (r"admin", "/x/y", False),
        (r"/(foo|bar)/", "/a/bar/b", True),
    ],
)
def test_regex_path(pattern, path, matches):
    decision = decide([Rule(path=pattern, regex=True, policy="deny")], path=path)
    assert decision.policy == ("deny" if matches else "authenticated")


def test_regex_path_is_not_a_prefix():
    # As a plain prefix "/a.c" would not match "/abc"; as a regex it does.
    assert decide([Rule(path="/a.c", regex=True, policy="deny")], path="/abc").policy == "deny"
    assert decide([Rule(path="/a.c", policy="deny")], path="/abc").policy == "authenticated"


@pytest.mark.parametrize(
    ("rule_host", "host", "matches"),
    [
        ("app.example.com", "app.example.com", True),
        ("app.example.com", "APP.Example.COM", True),
        ("app.example.com", "app.example.com.", True),
        ("app.example.com", "other.example.com", False),
        ("app.example.com", "xapp.example.com", False),
        ("app.example.com", "app.example.com.evil", False),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "A.Example.Com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "badexample.com", False),
        ("*.example.com", ".example.com", False),
        ("*.example.com", "example.com.evil.com", False),
        ("*.example.com", "a.example.org", False),
    ],
)
def test_host_match(rule_host, host, matches):
    decision = decide([Rule(host=rule_host, policy="public")], host=host)
    assert decision.policy == ("public" if matches else "authenticated")


def test_host_and_path_must_both_match():
    rules = [Rule(host="api.example.com", path="/public/", policy="public")]
    assert decide(rules, host="api.example.com", path="/public/x").policy == "public"
    assert decide(rules, host="api.example.com", path="/private").policy == "authenticated"
    assert decide(rules, host="www.example.com", path="/public/x").policy == "authenticated"


@pytest.mark.parametrize(
    ("method", "matches"),
    [("GET", True), ("get", True), ("HEAD", True), ("POST", False), ("DELETE", False)],
)
def test_methods(method, matches):
    decision = decide([Rule(path="/", methods=("GET", "HEAD"), policy="public")], method=method)
    assert decision.policy == ("public" if matches else "authenticated")


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_no_methods_means_every_method(method):
    assert decide([Rule(path="/", policy="deny")], method=method).policy == "deny"


def test_method_specific_rule_then_fallback():
    rules = [
        Rule(path="/api/", methods=("GET",), policy="public"),
        Rule(path="/api/", policy="authenticated", groups=("writers",)),
    ]
    assert decide(rules, path="/api/items").policy == "public"
    post = decide(rules, path="/api/items", method="POST")
    assert post == Decision("authenticated", ("writers",))


def test_decision_carries_groups():
    rules = [Rule(path="/admin/", groups=("admins", "ops"))]
    assert decide(rules, path="/admin/x") == Decision("authenticated", ("admins", "ops"))


@pytest.mark.parametrize(
    ("decision", "groups", "allowed"),
    [
        (Decision("authenticated"), (), True),
        (Decision("authenticated"), ("anything",), True),
        (Decision("public"), (), True),
        (Decision("authenticated", ("admins",)), ("admins",), True),
        (Decision("authenticated", ("admins", "ops")), ("users", "ops"), True),
        (Decision("authenticated", ("admins",)), (), False),
        (Decision("authenticated", ("admins",)), ("users",), False),
        (Decision("authenticated", ("admins",)), ("Admins",), False),
        (Decision("authenticated", ("admins",)), ("admin",), False),
        (Decision("deny"), (), False),
        (Decision("deny"), ("admins",), False),
        (Decision("deny", ("admins",)), ("admins",), False),
    ],
)
def test_decision_allows(decision, groups, allowed):
    assert decision.allows(groups) is allowed


def test_deny_rule_denies_everyone():
    decision = decide([Rule(path="/", policy="deny")])
    assert decision.policy == "deny"
    assert decision.allows(("admins", "users")) is False
