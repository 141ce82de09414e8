"""Every header the app and `/auth`'s front proxy receive from the gateway.

The one place where identity headers are set (`HeaderRules.identity`), where
client-sent copies of them and other headers that must not pass are
stripped (`upstream_headers`), and where X-Forwarded-* and X-Request-ID are
written. The header names themselves are in header_names.py.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from ..config import Config
from ..header_names import HOP_BY_HOP, REBUILT, ROUTING, header_key
from ..policy.cookies import is_own_cookie
from ..policy.identity import Identity, Session
from .exchange import Exchange

# aiohttp's WebSocket client writes its own handshake headers.
WEBSOCKET_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
REQUEST_DROP = HOP_BY_HOP | REBUILT
WEBSOCKET_DROP = REQUEST_DROP | WEBSOCKET_HANDSHAKE
NOTHING: frozenset[str] = frozenset()


class HeaderRules:
    """One app's header decisions: which request headers never pass, and the
    identity headers' names. Built once per app."""

    def __init__(self, config: Config) -> None:
        ih = config.identity_headers
        self.names = ih
        identity = frozenset(header_key(n) for n in ih.names())
        # One check per kind of request: (websocket?, from a trusted proxy?).
        self._droppers = {
            (websocket, trusted): _dropper(
                WEBSOCKET_DROP if websocket else REQUEST_DROP,
                identity if trusted else identity | ROUTING,
            )
            for websocket in (False, True)
            for trusted in (False, True)
        }

    def dropper(self, websocket: bool, trusted: bool) -> Callable[[str], bool]:
        """`dropped(name)`: is this request header never forwarded (hop-by-hop,
        rebuilt, identity, or a routing claim from a peer we do not trust)?"""
        return self._droppers[websocket, trusted]

    def identity(self, ident: Identity) -> list[tuple[str, str]]:
        """The identity as header (name, value) pairs, for the app and for /auth."""
        names = self.names
        return [
            (names.user, ident.username),
            (names.email, _header_safe(ident.email)),  # checked on the way in; rows may predate
            (names.name, _header_safe(ident.name)),
            (names.groups, ",".join(ident.groups)),
        ]


HEADER_RULES = web.AppKey("header_rules", HeaderRules)


def _header_safe(value: str) -> str:
    """Display names are free text; a header value may not carry CR/LF or non-latin-1."""
    if value.isascii() and value.isprintable():
        return value  # the common case, checked in C
    cleaned = value.replace("\r", " ").replace("\n", " ")
    return cleaned.encode("latin-1", "replace").decode("latin-1")


def _dropper(exact: frozenset[str], folded: frozenset[str]) -> Callable[[str], bool]:
    """exact: lower-case names; folded: header_key()s, every spelling of which goes."""

    def dropped(name: str) -> bool:
        return name.lower() in exact or header_key(name) in folded

    return dropped


def connection_listed(headers: CIMultiDict[str] | object) -> frozenset[str]:
    """The header names a message's Connection header lists (lower case)."""
    if "Connection" not in headers:  # type: ignore[operator]
        return NOTHING  # the common case for requests: no set is built
    value = ",".join(headers.getall("Connection"))  # type: ignore[attr-defined]
    return frozenset(token.strip().lower() for token in value.split(","))


def is_websocket(request: web.Request) -> bool:
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in connection_listed(request.headers)
    )


def upstream_headers(
    ex: Exchange, session: Session | None, *, websocket: bool = False
) -> list[tuple[str, str]]:
    """The headers the app gets: the client's, minus what must not pass, plus ours.

    A list, not a CIMultiDict: aiohttp's client copies whatever it is given
    into its own, and a list is the cheapest thing to build and to copy.
    """
    request = ex.request
    rules = ex.app[HEADER_RULES]
    headers = request.headers
    listed = connection_listed(headers)
    trusted = ex.peer_trusted()
    dropped = rules.dropper(websocket, trusted)
    out = [
        (name, value)
        for name, value in headers.items()
        if not (dropped(name) or (listed and name.lower() in listed))
    ]

    # The app never sees the session token; its own cookies pass untouched.
    if "cookie" not in listed:
        rest = ex.cookies()[1]
        if rest:
            out.append(("Cookie", rest))

    peer = request.remote or ""
    if trusted:
        # Several X-Forwarded-For lines are one list (RFC 9110 5.3): keep them all.
        forwarded_for = ", ".join(headers.getall("X-Forwarded-For", ()))
        proto = headers.get("X-Forwarded-Proto", "")
        host = headers.get("X-Forwarded-Host", "")
    else:
        forwarded_for = proto = host = ""
    out.append(("X-Forwarded-For", f"{forwarded_for}, {peer}" if forwarded_for else peer))
    out.append(("X-Forwarded-Proto", proto or request.scheme))
    out.append(("X-Forwarded-Host", host or request.host))
    out.append(("X-Request-ID", ex.request_id()))

    if session is not None:
        out.extend(rules.identity(session.identity))
    return out


def auth_headers(ex: Exchange, response: web.StreamResponse, session: Session) -> None:
    """What /auth tells the front proxy to pass on: the identity headers."""
    headers = response.headers
    for name, value in ex.app[HEADER_RULES].identity(session.identity):
        headers[name] = value


def response_headers(
    upstream: aiohttp.ClientResponse, own_cookies: frozenset[str]
) -> list[tuple[str, str]]:
    """The app's answer's headers, minus hop-by-hop ones and any cookie of ours."""
    listed = connection_listed(upstream.headers)
    out = []
    for name, value in upstream.headers.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in listed:  # no union set built per answer
            continue
        # An app may not set the gateway's own cookies, nor look-alikes of them.
        if lower == "set-cookie" and is_own_cookie(value.split("=", 1)[0], own_cookies):
            continue
        out.append((name, value))
    return out
