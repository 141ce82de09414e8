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

# Headers by which a front proxy tells an app where a request came from or
# what it was before rewriting. From a peer that is not a trusted proxy they
# are the client's own claims, and apps that route or filter by them (the
# Symfony X-Original-URL bypass, CVE-2018-14773; IP allow-lists by
# X-Real-IP) can be steered past the gateway's rules: only trusted proxies'
# copies are passed on. Compared with '_' and '.' read as '-', like the
# identity headers.
ROUTING = frozenset(
    {
        "x-original-url",
        "x-original-uri",
        "x-rewrite-url",
        "x-original-method",
        "x-original-host",
        "x-forwarded-uri",
        "x-forwarded-prefix",
        "x-forwarded-port",
        "x-forwarded-server",
        "x-forwarded-method",
        "x-forwarded-scheme",
        "x-forwarded-ssl",
        "x-forwarded-protocol",
        "x-original-forwarded-for",
        "x-url-scheme",
        "x-scheme",
        "front-end-https",
        "x-host",
        "x-real-ip",
        "true-client-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "forwarded",
    }
)

# What an identity header may not be named: it would be dropped, sent twice,
# or change how the message is framed.
RESERVED = HOP_BY_HOP | REBUILT | {"host", "content-length", "content-type"}


def header_key(name: str) -> str:
    """How a header name compares for spoofing: case, '_' and '.' folded to '-'.

    nginx drops headers with underscores by default; aiohttp keeps them, and
    many app frameworks (CGI-style environ, PHP, Django META) treat
    X_Remote_User as X-Remote-User, so every spelling is removed.
    """
    return name.lower().replace("_", "-").replace(".", "-")


def identity_name_errors(names: tuple[str, ...]) -> list[str]:
    """Why these identity header names cannot be used, compared the way the proxy
    strips spoofed copies ('_' and '.' read as '-'); empty when they can."""
    keys = [header_key(n) for n in names]
    errors = [] if len(set(keys)) == len(keys) else ["header names must be distinct"]
    errors += [
        f"{taken} is set by the gateway or by HTTP itself" for taken in sorted(set(keys) & RESERVED)
    ]
    return errors
