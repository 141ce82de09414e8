"""`GET {prefix}/auth`: nginx auth_request and Traefik/Caddy forward-auth.

The front proxy asks "may this request pass, and who is it?" and gets 200
with the identity headers, 401 (no valid session: the proxy sends the
browser to the login), or 403 (signed in but not allowed). Never a redirect
and never a body to render: nginx only looks at the status.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from multidict import CIMultiDict

from ..policy.access import Verdict
from ..policy.paths import BadPath, normalize_host, normalize_path
from .exchange import exchange
from .headers import auth_headers

METHODS = frozenset(
    {
        "GET",
        "HEAD",
        "POST",
        "PUT",
        "PATCH",
        "DELETE",
        "OPTIONS",
        "CONNECT",
        "TRACE",
        "PROPFIND",
        "PROPPATCH",
        "MKCOL",
        "COPY",
        "MOVE",
        "LOCK",
        "UNLOCK",
        "REPORT",
        "SEARCH",
    }
)


@dataclass(frozen=True)
class OriginalRequest:
    method: str
    scheme: str
    host: str  # normalised, no port
    path: str  # normalised, as rules see it


class Unparseable(ValueError):
    pass


def _facts(method: str, scheme: str, host: str, uri: str) -> OriginalRequest:
    method = method.upper()
    if method not in METHODS:
        raise Unparseable("method")
    if scheme not in ("http", "https"):
        raise Unparseable("scheme")
    try:
        path = normalize_path(uri)
    except BadPath:
        raise Unparseable("path") from None
    host_name = normalize_host(host)
    if not host_name or any(c in host_name for c in "/\\ @"):
        raise Unparseable("host")
    return OriginalRequest(method, scheme, host_name, path)


def _from_nginx(get: Callable[[str], str | None]) -> OriginalRequest | None:
    url = get("X-Original-URL")
    if url is None:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        raise Unparseable("X-Original-URL") from None
    if not parts.netloc or "@" in parts.netloc:
        raise Unparseable("X-Original-URL")
    method, other = get("X-Original-Method"), get("X-Forwarded-Method")
    if method and other and method.upper() != other.upper():
        # One of them is the client's: refuse rather than guess (a methods rule may hang on it).
        raise Unparseable("X-Original-Method and X-Forwarded-Method disagree")
    return _facts(method or other or "GET", parts.scheme, parts.netloc, parts.path or "/")


def _from_forwarded(get: Callable[[str], str | None]) -> OriginalRequest | None:
    uri, host = get("X-Forwarded-Uri"), get("X-Forwarded-Host")
    if uri is None:
        return None
    if not uri or not host:
        raise Unparseable("X-Forwarded-Uri needs X-Forwarded-Host")
    scheme = (get("X-Forwarded-Proto") or "http").lower()
    # Traefik says "ws"/"wss" for a WebSocket upgrade: the same origin as http/https.
    scheme = _WEBSOCKET_SCHEMES.get(scheme, scheme)
    return _facts(get("X-Forwarded-Method") or "GET", scheme, host, uri)


_WEBSOCKET_SCHEMES = {"ws": "http", "wss": "https"}


def original_request(headers: CIMultiDict[str] | object) -> OriginalRequest:
    """The request the front proxy is asking about. Raises Unparseable.

    nginx sends X-Original-URL (and X-Original-Method); Traefik and Caddy send
    X-Forwarded-Method/-Proto/-Host/-Uri. Each of them also passes the
    client's own headers along, so a client can add the *other* style's
    headers; when both styles are present they must describe the same
    request, or nobody can say which one is true. Pure: headers in, facts out.
    """
    get = headers.get  # type: ignore[attr-defined]
    values = tuple(map(get, _DESCRIBING))
    if sum(len(v) for v in values if v) > MEMO_MAX_CHARS:
        # Client-shaped values: long ones are answered but not kept, so the
        # memo stays small (1024 entries of at most MEMO_MAX_CHARS).
        return _original_request.__wrapped__(*values)
    return _original_request(*values)


MEMO_MAX_CHARS = 2048
# Every header original_request reads; its answer depends on nothing else.
_DESCRIBING = (
    "X-Original-URL",
    "X-Original-Method",
    "X-Forwarded-Method",
    "X-Forwarded-Uri",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
)


@functools.lru_cache(maxsize=1024)
def _original_request(*values: str | None) -> OriginalRequest:
    # Memoised: nginx asks about the same few URLs over and over (bench/cpu.py
    # --auth, no-memo-original-request: +13 µs per /auth, 91 -> 104 µs).
    get = CIMultiDict(zip(_DESCRIBING, values, strict=True)).get
    nginx, forwarded = _from_nginx(get), _from_forwarded(get)
    if nginx is not None and forwarded is not None and nginx != forwarded:
        raise Unparseable("X-Original-URL and X-Forwarded-Uri describe different requests")
    original = nginx or forwarded
    if original is None:
        raise Unparseable("X-Original-URL or X-Forwarded-Uri/-Host")
    return original


def _status(status: int, reason: str) -> web.Response:
    # No body, no template: this runs on every request nginx passes.
    return web.Response(
        status=status, headers={"Cache-Control": "no-store", "X-Gateway-Reason": reason}
    )


_STATUS = {
    Verdict.CLOSED: 403,
    Verdict.UNAVAILABLE: 503,
    Verdict.UNAUTHENTICATED: 401,
    Verdict.FORBIDDEN: 403,
}


async def handle_auth(request: web.Request) -> web.Response:
    ex = exchange(request)
    ex.gateway_page = False  # headers for nginx, not a page: no browser hardening
    if not ex.peer_trusted():
        # Only a trusted proxy may describe "the original request"; anyone
        # else could simply claim to be asking about a public path.
        return _status(403, "untrusted-peer")
    try:
        original = original_request(request.headers)
    except Unparseable as exc:
        return _status(400, f"bad-original-request: {exc}")
    outcome, session = await ex.access(original.host, original.path, original.method)
    if outcome is not Verdict.PASS:
        return _status(_STATUS[outcome], outcome.value)
    if session is None:
        return _status(200, "public")
    response = _status(200, "ok")
    auth_headers(ex, response, session)
    return response
