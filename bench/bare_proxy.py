"""The floor: the least a Python (aiohttp) reverse proxy can cost.

No auth, no identity headers, no X-Forwarded-*, no rules, no metrics, no
access log. Only the per-request work any correct streaming proxy must do,
done the same way the gateway does it (gateway/proxy.py, gateway/app.py):

- one shared ClientSession: DummyCookieJar, auto_decompress=False, no
  automatic User-Agent/Accept/Accept-Encoding, TCPConnector(limit=0) with
  keep-alive pools, connect/read timeouts;
- a catch-all route; the target URL is upstream + the client's raw path;
- request headers copied minus hop-by-hop (RFC 9110 7.6.1, and whatever
  `Connection` names) into a list, request body streamed with iter_chunked;
- response headers copied minus hop-by-hop, response body streamed with
  StreamResponse + iter_chunked; 502/504 when the upstream fails.

N processes share one port with SO_REUSEPORT, like `gateway serve --workers N`
(gateway/server.py); uvloop is used when installed, exactly like the gateway.

It is also the floor for nginx's auth backend: `GET /_gateway/auth` (the path
examples/nginx/gateway.conf sends its auth_request sub-request to) answers 200
with an empty body and fixed X-Remote-User/-Email/-Name/-Groups headers: no
cookie, no session lookup, nothing but the answer nginx waits for. Every other
path is proxied as above.

    python bench/bare_proxy.py --listen 127.0.0.1:PORT --upstream http://127.0.0.1:UP --workers N
"""

from __future__ import annotations

import argparse
import multiprocessing
import signal
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from yarl import URL

# The same constant and loop switch as the gateway, so the floor differs only in duties.
from gateway.header_names import HOP_BY_HOP
from gateway.server import use_uvloop

CHUNK = 64 * 1024
TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 10.0


HTTP = web.AppKey("http", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)

# What the gateway's /auth sends nginx for a signed-in user; web.Response copies it.
AUTH_PATH = "/_gateway/auth"
IDENTITY = {
    "X-Remote-User": "bench",
    "X-Remote-Email": "bench@example.com",
    "X-Remote-Name": "Bench User",
    "X-Remote-Groups": "staff",
}


def _drop(headers) -> frozenset[str] | set[str]:
    values = headers.getall("Connection", ())
    if not values:
        return HOP_BY_HOP
    listed = {token.strip().lower() for value in values for token in value.split(",")}
    return HOP_BY_HOP | listed


def _copy(headers) -> list[tuple[str, str]]:
    # A list, as the gateway builds them: aiohttp copies whatever it gets into its own.
    drop = _drop(headers)
    return [(name, value) for name, value in headers.items() if name.lower() not in drop]


async def handle(request: web.Request) -> web.StreamResponse:
    body = request.content.iter_chunked(CHUNK) if request.body_exists else None
    try:
        upstream = await request.app[HTTP].request(
            request.method,
            URL(request.app[UPSTREAM] + request.raw_path, encoded=True),
            headers=_copy(request.headers),
            data=body,
            allow_redirects=False,
        )
    except TimeoutError:
        return web.Response(status=504, text="upstream timed out\n")
    except aiohttp.ClientError:
        return web.Response(status=502, text="upstream unreachable\n")
    async with upstream:
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=_copy(upstream.headers)
        )
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        try:
            async for chunk in upstream.content.iter_chunked(CHUNK):
                await response.write(chunk)
        except (TimeoutError, aiohttp.ClientError):
            if request.transport is not None:
                request.transport.abort()  # a truncated body must not look whole
            return response
    await response.write_eof()
    return response


async def auth(_request: web.Request) -> web.Response:
    return web.Response(status=200, headers=IDENTITY)


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=256),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=TIMEOUT, sock_read=TIMEOUT),
    ) as session:
        app[HTTP] = session
        yield


def create_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_http_client)
    # Before the catch-all: the first matching route wins.
    app.router.add_get(AUTH_PATH, auth)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def run(host: str, port: int, upstream: str, reuse_port: bool) -> None:
    use_uvloop()
    web.run_app(
        create_app(upstream),
        host=host,
        port=port,
        reuse_port=reuse_port or None,
        print=None,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )


def _worker(host: str, port: int, upstream: str) -> None:
    run(host, port, upstream, reuse_port=True)


def supervise(host: str, port: int, upstream: str, workers: int) -> int:
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(host, port, upstream), name=f"bare-proxy-{i}")
        for i in range(workers)
    ]
    stopping = False

    def stop(_signum: int = 0, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive():
                proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for proc in procs:
        proc.start()
    deadline = None
    while any(proc.is_alive() for proc in procs):
        time.sleep(0.2)
        if not stopping and any(not proc.is_alive() for proc in procs):
            print("bare_proxy: a worker exited unexpectedly; stopping", file=sys.stderr)
            stop()
        if stopping:
            deadline = deadline or time.monotonic() + SHUTDOWN_TIMEOUT + 5
            if time.monotonic() > deadline:
                for proc in procs:
                    proc.kill()
    return 0 if all(proc.exitcode == 0 for proc in procs) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--upstream", required=True, metavar="URL")
    parser.add_argument("--workers", type=int, default=1, metavar="N")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit() or args.workers < 1:
        parser.error("expected --listen HOST:PORT and --workers >= 1")
    if args.workers == 1:
        run(host, int(port), args.upstream, reuse_port=False)
        return 0
    return supervise(host, int(port), args.upstream, args.workers)


if __name__ == "__main__":
    sys.exit(main())
