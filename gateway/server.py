"""Running the gateway process: database first, then the listening socket."""

from __future__ import annotations

import logging

from aiohttp import web

from .app import create_app
from .config import Config
from .db import DatabaseUnavailable, database_url

log = logging.getLogger(__name__)


def serve(config: Config) -> int:
    """Serve until SIGINT/SIGTERM. The embedded database, if any, stops with us."""
    with database_url(config.database.url, config.database.data_dir) as url:
        app = create_app(config.with_database_url(url))
        host, port = config.server.host, config.server.port
        log.info(
            "gateway listening on http://%s:%d (public URL %s)",
            host,
            port,
            config.server.public_url,
        )
        try:
            web.run_app(app, host=host, port=port, print=None, access_log=None, shutdown_timeout=10)
        except DatabaseUnavailable as exc:
            log.error("%s", exc)
            return 1
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
            return 1
    return 0
