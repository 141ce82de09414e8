"""Small request/response facts shared by the gateway's handlers."""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
import secrets
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
