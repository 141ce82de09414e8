"""Small request/response facts shared by the gateway's handlers."""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
import secrets
import unicodedata
from collections.abc import Callable

from aiohttp import web

from .config import Config, IPNetwork
from .state import TRUSTED_PEER, Exchange, exchange


def peer_ip(request: web.BaseRequest) -> str:
    # aiohttp's `remote` is the socket's peer, read once per connection and
    # cached per request; asking the transport again costs a syscall each time.
    return request.remote or ""


def is_trusted(ip: str, trusted: tuple[IPNetwork, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1, however it was accepted
    return any(addr in net for net in trusted)


def trusted_peer_check(trusted: tuple[IPNetwork, ...]) -> Callable[[str], bool]:
    """A memoised `ip -> is it a trusted proxy?` for one config (built once per app)."""

    @functools.lru_cache(maxsize=4096)
    def check(ip: str) -> bool:
        return is_trusted(ip, trusted)

    return check


def peer_trusted(request: web.Request, app: web.Application | None = None) -> bool:
    """Is the socket's peer one of server.trusted_proxies? (Asked on every request.)"""
    return (request.app if app is None else app)[TRUSTED_PEER](request.remote or "")


def client_ip(request: web.BaseRequest, config: Config) -> str:
    """The browser's address: X-Forwarded-For is believed only from a trusted proxy.

    Walks the list from the right, skipping trusted hops, so a client cannot
    choose its own address by sending a forged X-Forwarded-For.
    """
    peer = peer_ip(request)
    trusted = config.server.trusted_proxies
    if not is_trusted(peer, trusted):
        return peer
    header = ",".join(request.headers.getall("X-Forwarded-For", ()))
    hops = [h.strip() for h in header.split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return hops[0] if hops else peer


def wants_html(request: web.BaseRequest) -> bool:
    """A browser navigation: GET/HEAD asking for HTML, not an XHR or API call."""
    if request.method not in ("GET", "HEAD"):
        return False
    if request.headers.get("X-Requested-With", "").lower() == "xmlhttprequest":
        return False
    mode = request.headers.get("Sec-Fetch-Mode")
    if mode is not None and mode != "navigate":
        return False
    return "text/html" in request.headers.get("Accept", "")


# Cookie names and values are trimmed of these and only these: Python's
# str.strip() also removes Unicode spaces (U+00A0, U+2000-200A, U+3000, ...),
# which turned "\u2000__Host-gateway_session" into our cookie, a name no
# browser would ever let a sibling subdomain set (the "__Host-" bypass).
ASCII_SPACE = " \t"


def split_cookies(header: str, own: frozenset[str]) -> tuple[dict[str, str | None], str]:
    """Our cookies, and the Cookie header without them.

    A name of ours matches only byte for byte (after trimming ASCII space and
    tab). One of ours sent twice, or beside a look-alike of it (see
    `lookalike`), maps to None: ambiguous, so treated as absent, never "the
    first one wins" (a planted copy must not choose the session). Look-alikes
    are cut from the forwarded header like our own cookies.

    Parsed by hand because the forwarded header must keep every other cookie
    byte for byte, which a parse-and-reserialise round trip would not.
    """
    folded, lengths = _folded(own)
    mine: dict[str, str | None] = {}
    rest = []
    for raw in header.split(";"):
        part = raw.strip(ASCII_SPACE)
        if not part:
            continue
        name, _, value = part.partition("=")
        name = name.rstrip(ASCII_SPACE)
        if name in own:
            mine[name] = None if name in mine else value.strip(ASCII_SPACE).strip('"')
            continue
        twin = _twin(name, own, folded, lengths)
        if twin is not None:
            mine[twin] = None
            continue
        rest.append(part)
    return mine, "; ".join(rest)


def lookalike(name: str, own: frozenset[str]) -> str | None:
    """The name of ours that `name` imitates without being it, or None.

    Imitates: equal after Unicode normalisation (NFKC), dropping invisible
    format characters (U+200B, U+FEFF, ...), trimming any space, and ignoring
    case. Browsers keep such names apart from ours, but an app or another
    proxy may not, and nothing honest sends them.
    """
    folded = unicodedata.normalize("NFKC", name)
    # Format characters (category Cf: U+200B, U+FEFF, ...) render as nothing.
    key = "".join(ch for ch in folded if unicodedata.category(ch) != "Cf").strip().casefold()
    twin = _folded(own)[0].get(key)
    return twin if twin != name else None


def _twin(
    name: str, own: frozenset[str], folded: dict[str, str], lengths: frozenset[int]
) -> str | None:
    """`lookalike` for a name that is not exactly ours, with a cheap way out for
    the common ASCII name: a look-alike of that kind differs from ours only in
    case (so has our length) or by surrounding white space."""
    if name.isascii():
        if len(name) in lengths:
            return folded.get(name.lower())
        if name == name.strip():
            return None
    return lookalike(name, own)


def is_own_cookie(name: str, own: frozenset[str]) -> bool:
    """Is a cookie called this one of ours, or a look-alike of one (names as sent)?"""
    name = name.strip(ASCII_SPACE)
    return name in own or _twin(name, own, *_folded(own)) is not None


def _folded(own: frozenset[str]) -> tuple[dict[str, str], frozenset[int]]:
    """Our names case-folded, and their lengths: made once per set of names.

    A plain dict, not lru_cache: this runs on every request, and lru_cache's
    call costs a third of the whole split (bench: split_cookies per call).
    """
    found = _FOLDED.get(own)
    if found is None:
        if len(_FOLDED) >= 64:  # one set per app; tests make many apps
            _FOLDED.clear()
        found = _FOLDED[own] = (
            {name.casefold(): name for name in own},
            frozenset(len(name) for name in own),
        )
    return found


_FOLDED: dict[frozenset[str], tuple[dict[str, str], frozenset[int]]] = {}


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Unique without a syscall per request: a random prefix per process, then a counter.
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count(1)


def request_id(request: web.Request, ex: Exchange | None = None) -> str:
    """This request's id: a trusted proxy's X-Request-ID if well-formed, else a new one."""
    ex = ex or exchange(request)
    if not ex.request_id:
        incoming = request.headers.get("X-Request-ID", "")
        if not (incoming and _REQUEST_ID.fullmatch(incoming) and peer_trusted(request, ex.app)):
            incoming = f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"  # 32 hex digits, like a UUID
        ex.request_id = incoming
    return ex.request_id
