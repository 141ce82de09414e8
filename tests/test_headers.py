"""Header names and verdicts: header_names.header_key (how a name is compared) and
web.headers.HeaderRules (which request headers never reach the app).
"""

from __future__ import annotations

import pytest

from gateway.config import build_config
from gateway.header_names import header_key
from gateway.web.headers import HeaderRules

# header_names.header_key


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("X-Remote-User", "x-remote-user"),
        ("x-remote-user", "x-remote-user"),
        ("X_Remote_User", "x-remote-user"),
        ("x.remote.user", "x-remote-user"),
        ("X-REMOTE_user", "x-remote-user"),
        ("X.Remote_User", "x-remote-user"),
        ("X-Remote-Groups", "x-remote-groups"),
    ],
)
def test_header_key_folds(name, key):
    assert header_key(name) == key


def test_header_key_keeps_different_names_apart():
    assert header_key("X-Remote-User") != header_key("X-Remote-Users")
    assert header_key("X-Remote-User") != header_key("XRemoteUser")


# web.headers.HeaderRules.dropper: memoised per header name, bounded against junk names


@pytest.mark.parametrize("trusted", [False, True])
@pytest.mark.parametrize("websocket", [False, True])
def test_header_verdicts_for_every_kind_of_request(websocket, trusted):
    config = build_config({"upstream": [{"url": "http://127.0.0.1:9"}]})
    dropped = HeaderRules(config).dropper(websocket, trusted)
    spoofs = ["X-Remote-User", "x_remote_user", "X.Remote.Groups", "Connection", "Cookie"]
    assert all(dropped(name) for name in spoofs)
    assert not dropped("Accept")
    assert dropped("Sec-WebSocket-Key") is websocket
    assert dropped("X-Original-URL") is not trusted
    assert not dropped("X-" + "y" * 5000)
    assert dropped("X_" + "Remote-User")


ROUTING_SPELLINGS = [
    "X-Original-URL", "x-original-url", "X_Original_URL", "X.Original.URL", "X-Rewrite-URL",
    "X-Forwarded-Uri", "X-Forwarded-Prefix", "X-Forwarded-Port", "X-Forwarded-Server",
    "X-Real-IP", "X_Real_IP", "True-Client-IP", "Forwarded", "X-Client-IP", "X-Forwarded-Method",
]  # fmt: skip


@pytest.mark.parametrize("websocket", [False, True])
@pytest.mark.parametrize("name", ROUTING_SPELLINGS)
def test_routing_claims_pass_only_from_a_trusted_proxy(name, websocket):
    rules = HeaderRules(build_config({"upstream": [{"url": "http://127.0.0.1:9"}]}))
    assert rules.dropper(websocket, trusted=False)(name) is True
    assert rules.dropper(websocket, trusted=True)(name) is False
