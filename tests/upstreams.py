"""Real upstream servers for the proxy tests, plus a raw HTTP/1.1 client.

Nothing here is a mock: every helper listens on (or talks to) a real socket
on 127.0.0.1, so the gateway's HTTP client and server code run for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from yarl import URL

GZIP_PAYLOAD = b"compressible text, " * 4096


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: list[tuple[str, str]]


@dataclass
class Recorder:
    """An upstream that records every request and answers with a tagged JSON.

    Special paths: /redirect (302), /redirect-absolute (307), /cookies
    (several Set-Cookie), /gzip (a gzip-encoded body, not decoded by anyone).
    """

    tag: str
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.raw_path, list(request.headers.items())))
        await request.read()
        if request.path == "/redirect":
            return web.Response(status=302, headers={"Location": "/landing?from=app&x=%2F"})
        if request.path == "/redirect-absolute":
            return web.Response(status=307, headers={"Location": self.url + "/internal/next"})
        if request.path == "/cookies":
            response = web.Response(text="cookies")
            for value in (
                "gateway_session=planted; Path=/; HttpOnly",
                "app_pref=1; Path=/",
                "gateway_session_csrf=planted; Path=/",
                "theme=dark",
            ):
                response.headers.add("Set-Cookie", value)
            return response
        if request.path == "/gzip":
            return web.Response(
                body=gzip.compress(GZIP_PAYLOAD, mtime=0),
                headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
            )
        return web.json_response({"upstream": self.tag, "path": request.raw_path})


@asynccontextmanager
async def recorder(tag: str) -> AsyncIterator[Recorder]:
    rec = Recorder(tag)
    server = TestServer(rec.app(), host="127.0.0.1")
    await server.start_server()
    rec.url = str(server.make_url("")).rstrip("/")
    try:
        yield rec
    finally:
        await server.close()


@dataclass
class RawUpstream:
    """Answers every request with the same raw bytes, so any header can be sent."""

    response: bytes
    heads: list[bytes] = field(default_factory=list)
    url: str = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(self.response)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def raw_upstream(response: bytes) -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream(response)
    server = await asyncio.start_server(upstream._serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    upstream.url = f"http://127.0.0.1:{port}"
    try:
        yield upstream
    finally:
        server.close()
        await server.wait_closed()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_ECHO_CHILD = """
import socket, sys
from aiohttp import web
from gateway.demo.echo import create_echo_app
sock = socket.socket(fileno=int(sys.argv[1]))
web.run_app(create_echo_app(), sock=sock, print=None, handle_signals=True)
"""


@asynccontextmanager
async def echo_subprocess() -> AsyncIterator[str]:
    """gateway.demo.echo in its own process (another core), on a socket we bound first."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", _ECHO_CHILD, str(sock.fileno())],
        pass_fds=(sock.fileno(),),
        cwd=Path(__file__).resolve().parent.parent,
    )
    sock.close()  # the child holds the listening socket; connections queue until it accepts
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, and SIGKILL if it has not gone within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class RawResponse:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readline()).split(b";")[0].strip(), 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def raw_request(
    host: str,
    port: int,
    method: str,
    target: str,
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    body: bytes = b"",
    *,
    encoding: str = "latin-1",
) -> RawResponse:
    """One HTTP/1.1 request written byte for byte: header names, order and duplicates as given.

    `encoding="utf-8"` writes non-Latin-1 text (a Unicode space in a cookie name) as a
    browser or an attacker would."""
    names = {name.lower() for name, _ in headers}
    lines = [f"{method} {target} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {host}:{port}")
    lines += [f"{name}: {value}" for name, value in headers]
    if body and "content-length" not in names:
        lines.append(f"Content-Length: {len(body)}")
    if "connection" not in names:
        lines.append("Connection: close")
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode(encoding) + body)
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *header_lines = head.split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        parsed: CIMultiDict[str] = CIMultiDict()
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                parsed.add(name.strip(), value.strip())
        if method == "HEAD" or status in (204, 304):
            data = b""
        elif "chunked" in parsed.get("Transfer-Encoding", "").lower():
            data = await _read_chunked(reader)
        elif "Content-Length" in parsed:
            data = await reader.readexactly(int(parsed["Content-Length"]))
        else:
            data = await reader.read()
        return RawResponse(status, parsed, data)
    finally:
        writer.close()


class Relay:
    """A TCP relay in front of a PostgreSQL server that the test can freeze.

    Frozen, it stops moving bytes both ways while every connection stays
    open: a hung host or network, not a dead one (no RST, no FIN), which is
    the case a closed socket would never show.
    """

    def __init__(self, target_url: str) -> None:
        self.target = URL(target_url)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The target's URL (user, database, options) with the relay as its host."""
        query = {k: v for k, v in self.target.query.items() if k != "host"}
        return str(self.target.with_host("127.0.0.1").with_port(self.port).with_query(query))

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    async def _open_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        socket_dir = self.target.query.get("host")
        if socket_dir:  # the embedded server listens on a Unix socket only
            port = self.target.port or 5432
            return await asyncio.open_unix_connection(f"{socket_dir}/.s.PGSQL.{port}")
        return await asyncio.open_connection(self.target.host, self.target.port or 5432)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await self._open_target()
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, target_writer), self._pipe(target_reader, writer))

    async def __aenter__(self) -> Relay:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.thaw()
        assert self.server is not None
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 5)
