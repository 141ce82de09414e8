"""Running the gateway: database first, then one or more processes on one port.

With `--workers N` the parent starts (or connects to) the database, applies
migrations once, then runs N worker processes that each bind the same port
with SO_REUSEPORT, so the kernel spreads connections across them. Each
worker has its own pool; nothing they share lives outside PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import time

from aiohttp import web

from .app import create_app
from .config import Config
from .store.db import DatabaseUnavailable, database_url, prepare_database
from .web.connections import GatewayRunner, listen, stop_signals
from .web.logs import AccessLogger, access_logger, setup_logging
from .web.metrics import MULTIPROC_ENV

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 10.0


def use_uvloop() -> bool:
    """uvloop when installed (the `fast` extra): a cheaper event loop for the proxy."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def _run_worker(config: Config, reuse_port: bool) -> int:
    host, port = config.server.host, config.server.port
    try:
        # Bound first: "cannot listen" means exactly that, and nothing else.
        sock = listen(host, port, reuse_port=reuse_port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
        return 1
    if use_uvloop():
        log.debug("using uvloop")
    try:
        asyncio.run(_serve(config, sock))
    except DatabaseUnavailable as exc:
        log.error("%s", exc)
        return 1
    finally:
        sock.close()
    return 0


async def _serve(config: Config, sock: socket.socket) -> None:
    """Serve on `sock` until SIGINT/SIGTERM, then stop gracefully, each step bounded."""
    runner = GatewayRunner(
        create_app(config),
        access_log=access_logger(config.log),
        access_log_class=AccessLogger,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    # Before startup: a stop asked for while it runs is a clean stop, after it.
    stop = stop_signals()
    try:
        await runner.setup()  # app startup: database, pool, listeners
    except DatabaseUnavailable:
        if not stop.is_set():
            raise
        # Asked to stop while it waited for a database that does not answer:
        # the stop is what happened, not a failure to start.
        log.info("stopped before the database answered")
        return
    try:
        await web.SockSite(runner, sock).start()
        await stop.wait()
        log.info("stopping: finishing requests in flight (up to %.0f s)", SHUTDOWN_TIMEOUT)
    finally:
        # In-flight requests get SHUTDOWN_TIMEOUT; each cleanup step (pool,
        # listener, flushes) has a bound of its own (app.py), so a hung
        # database cannot hold the exit, nor turn it into a failure.
        await runner.cleanup()


def _worker_main(config: Config) -> None:
    setup_logging(config.log)
    sys.exit(_run_worker(config, reuse_port=True))


def _check_port(host: str, port: int) -> None:
    """Fail in the parent, with one message, when the port is taken."""
    listen(host, port, reuse_port=True).close()


def _supervise(config: Config, workers: int) -> int:
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_main, args=(config,), name=f"gateway-worker-{i}")
        for i in range(workers)
    ]
    deadline: float | None = None  # set once we are stopping

    def stop(_signum: int = 0, _frame: object = None) -> None:
        nonlocal deadline
        if deadline is None:
            deadline = time.monotonic() + SHUTDOWN_TIMEOUT + 5
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: each worker finishes its in-flight requests

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for proc in procs:
        proc.start()
    log.info("%d workers share http://%s:%d", workers, config.server.host, config.server.port)
    failed = False
    while any(proc.is_alive() for proc in procs):
        time.sleep(0.2)
        if deadline is None and any(not proc.is_alive() for proc in procs):
            # A worker died on its own: stop the rest rather than run short-handed.
            log.error("a worker exited unexpectedly; stopping")
            failed = True
            stop()
        if deadline is not None and time.monotonic() > deadline:
            for proc in procs:
                proc.kill()
    # A worker we stopped before it had set up its own handler dies of the
    # SIGTERM itself: that is the stop we asked for, not a failure.
    stopped = (0, -signal.SIGTERM)
    return 1 if failed or any(proc.exitcode not in stopped for proc in procs) else 0


def serve(config: Config, workers: int = 1) -> int:
    """Serve until SIGINT/SIGTERM. The embedded database, if any, stops with us."""
    with database_url(config.database.url, config.database.data_dir) as url:
        config = config.with_database_url(url)
        log.info(
            "gateway listening on http://%s:%d (public URL %s)",
            config.server.host,
            config.server.port,
            config.server.public_url,
        )
        if workers == 1:
            return _run_worker(config, reuse_port=False)
        try:
            asyncio.run(prepare_database(url, config.secret_key))
            _check_port(config.server.host, config.server.port)
        except DatabaseUnavailable as exc:
            log.error("%s", exc)
            return 1
        except OSError as exc:
            log.error(
                "cannot listen on %s:%d: %s",
                config.server.host,
                config.server.port,
                exc.strerror or exc,
            )
            return 1
        # Workers write their metrics to files here; a scrape sums them all.
        with tempfile.TemporaryDirectory(prefix="gateway-metrics-") as metrics_dir:
            os.environ[MULTIPROC_ENV] = metrics_dir
            return _supervise(config, workers)
