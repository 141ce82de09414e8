"""Header names with a fixed meaning to the gateway, as lower case. Pure.

Shared by the proxy (what it never copies) and the config (what an identity
header may not be called).
"""

from __future__ import annotations

# RFC 9110 7.6.1, plus the old Proxy-Connection that some clients still send.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Headers the gateway sets itself (or rebuilds, like Cookie) are never copied.
# Expect is answered by the gateway itself (pages.expect_continue) before it
# forwards anything: passed on, it would make the app's client side wait for a
# 100 that has already been sent.
REBUILT = frozenset(
    {"cookie", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id", "expect"}
)

# What an identity header may not be named: it would be dropped, sent twice,
# or change how the message is framed.
RESERVED = HOP_BY_HOP | REBUILT | {"host", "content-length", "content-type"}
