"""The gateway's HTTP server, per connection: what aiohttp leaves open.

- A connection must send its first request head within `server.head_timeout`
  (aiohttp would wait for its keep-alive timeout, 75 s, for a slow-header
  client), and, from a peer that is not a trusted proxy, every later head
  too: such a connection idles between requests for at most that long (and
  a second). One
  IP may hold only `server.max_pending_per_ip` connections that have owed a
  head for over a second; a burst of new ones (an office behind one address,
  a backlog accepted at once after a busy moment) is not refused for it.
  Trusted proxies are exempt from the count and keep the long keep-alive.
- A request the HTTP parser refuses (400 before any handler runs) is one INFO
  line (peer, reason), rate-limited, and a count, instead of a traceback at
  ERROR for every fuzzer packet.
- Handlers are not cancelled when the client leaves (aiohttp's default for
  run_app; its test server differs), so the proxy can tell a client's hang-up
  from an upstream's failure.

`GatewayRunner` installs this for `gateway serve`, `gateway demo` and the
test suite alike. `listen()` binds the socket first, so a taken port is
reported before anything else starts.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from ..counters import BAD_REQUESTS, CONNECTIONS_DROPPED
from .exchange import CONFIG, TRUSTED_PEER

log = logging.getLogger(__name__)

# Idle keep-alive connections (a complete request served, none begun since)
# close after this, as with web.run_app: longer than a front proxy's own
# upstream keep-alive, so it never sends on a connection we are closing.
KEEPALIVE_SECONDS = 75.0
# A connection owing its head for less than this is not counted against its IP:
# its bytes may simply be waiting in the buffer behind a busy event loop.
PENDING_GRACE_SECONDS = 1.0
SHUTDOWN_SECONDS = 10.0
# At most this many parser-refusal lines per second per process; the rest are counted.
BAD_REQUEST_LINES_PER_SECOND = 10


def stop_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM: a stop is then the caller's clean shutdown
    (pending requests finished, the embedded PostgreSQL stopped), not an abort."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, listening socket. Raises OSError (port taken, no such address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # As asyncio does: "[::]" is IPv6 only, so an IPv4 peer never shows up
            # as ::ffff:a.b.c.d, which trusted_proxies would not recognise.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class _Sampler:
    """Lets `per_second` lines through each second and counts the rest."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self.second = 0
        self.used = 0
        self.held_back = 0

    def allow(self) -> tuple[bool, int]:
        """(log this one?, how many were held back before it)."""
        now = int(time.monotonic())
        if now != self.second:
            self.second, self.used = now, 0
        if self.used >= self.per_second:
            self.held_back += 1
            return False, 0
        self.used += 1
        held, self.held_back = self.held_back, 0
        return True, held


class ConnectionRules:
    """One worker's limits, and what they are tracking: connections owing a head, per IP."""

    def __init__(
        self,
        head_timeout: float,
        max_pending_per_ip: int,
        trusted: Callable[[str], bool],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.head_timeout = head_timeout
        self.max_pending_per_ip = max_pending_per_ip
        self.trusted = trusted
        self.monotonic = monotonic
        # ip -> {connection: since}, oldest first (dicts keep insertion order).
        self.pending: dict[str, dict[object, float]] = {}
        self.bad_request_lines = _Sampler(BAD_REQUEST_LINES_PER_SECOND)

    def take(self, ip: str, connection: object) -> bool:
        """Count a new connection from `ip` as owing a head; False when it may not:
        the IP already holds the most that have owed one for over the grace."""
        held = self.pending.setdefault(ip, {})
        now = self.monotonic()
        overdue_before = now - PENDING_GRACE_SECONDS
        # Oldest first: the overdue ones are a prefix, and only up to the cap matters.
        for count, since in enumerate(held.values(), start=1):
            if since > overdue_before:
                break
            if count >= self.max_pending_per_ip:
                return False
        held[connection] = now
        return True

    def release(self, ip: str, connection: object) -> None:
        held = self.pending.get(ip)
        if held is not None:
            held.pop(connection, None)
            if not held:
                del self.pending[ip]


class GatewayRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol, with the head timeout and the per-IP bound.

    Reads aiohttp's `_request_count` (requests parsed on this connection) and
    `_manager` (the Server): private, and pinned by the aiohttp range in
    pyproject.toml; tests/test_hostile_clients.py notices if they change.
    """

    _head_timer: asyncio.TimerHandle | None = None
    _pending_ip: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        rules: ConnectionRules = self._manager.rules  # type: ignore[union-attr]
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else ""
        trusted = rules.trusted(ip)
        if not trusted:
            # Later heads (and idling between requests) get the same bound as the
            # first, through aiohttp's keep-alive timer. A second later than ours,
            # so the first head's overdue close is ours, and counted. Set before
            # aiohttp's connection_made, which starts serving.
            self._keepalive_timeout = min(self._keepalive_timeout, rules.head_timeout + 1)
        super().connection_made(transport)
        if not trusted:
            if not rules.take(ip, self):
                CONNECTIONS_DROPPED.inc("too_many_pending")
                self.force_close()
                return
            self._pending_ip = ip
        self._head_timer = asyncio.get_running_loop().call_later(
            rules.head_timeout, self._head_overdue
        )

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_timer is not None and self._request_count:
            self._head_arrived()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._head_arrived()
        super().connection_lost(exc)

    def _head_arrived(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._pending_ip is not None:
            self._manager.rules.release(self._pending_ip, self)  # type: ignore[union-attr]
            self._pending_ip = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if not self._request_count:
            CONNECTIONS_DROPPED.inc("head_timeout")
            self._head_arrived()
            self.force_close()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not (
            isinstance(exc, HttpProcessingError)
            and status == 400
            and request.writer.output_size == 0
        ):
            return super().handle_error(request, status, exc, message)
        # Anyone can send garbage: one line, sampled, and a count. aiohttp's own
        # handling logs a traceback for each (at ERROR, or DEBUG for a bad method).
        BAD_REQUESTS.inc(type(exc).__name__)
        allowed, held = self._manager.rules.bad_request_lines.allow()  # type: ignore[union-attr]
        if allowed:
            log.info(
                "bad request from %s: %s%s",
                request.remote,
                str(exc.message)[:120],
                f" ({held} more since, not logged)" if held else "",
            )
        # What aiohttp answers (a short text/plain 400), without its logging.
        response = web.Response(status=status, text=message or "Bad Request")
        response.force_close()
        return response


class _GatewayServer(Server):
    """aiohttp's Server, making GatewayRequestHandlers."""

    rules: ConnectionRules

    def __call__(self) -> RequestHandler:
        return GatewayRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """AppRunner for the gateway's app: its connection rules, its keep-alive, no handler
    cancellation (so a client's hang-up reaches the proxy's own code)."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", KEEPALIVE_SECONDS)
        kwargs.setdefault("shutdown_timeout", SHUTDOWN_SECONDS)
        kwargs["handler_cancellation"] = False
        super().__init__(app, **kwargs)

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        # aiohttp has no setting for the protocol class: the Server it built
        # (app startup done, every argument in place) becomes ours, which
        # differs only in the class of the handlers it makes.
        server.__class__ = _GatewayServer
        config = self.app[CONFIG].server
        server.rules = ConnectionRules(  # type: ignore[attr-defined]
            config.head_timeout.total_seconds(), config.max_pending_per_ip, self.app[TRUSTED_PEER]
        )
        return server
