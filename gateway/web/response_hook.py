"""What every answer goes through just before its headers are sent.

A signal, not a middleware: streamed proxy responses are prepared inside the
handler, and a middleware would see them only after their headers had gone.
One handler calling plain functions: a coroutine per step costs more than the
steps.
"""

from __future__ import annotations

from aiohttp import web

from . import errors, logs, metrics
from .exchange import exchange
from .session_cookie import clear_stale_cookie

STEPS = (
    errors.add_security_headers,
    clear_stale_cookie,
    metrics.count_response,
    logs.tag_response,
)


async def before_headers(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp's on_response_prepare: each step, with the request's Exchange."""
    ex = exchange(request)
    for step in STEPS:
        step(request, response, ex)
