"""The gateway's own forms: reading them, and the CSRF check every POST passes.

A form carries a token signed over this browser's nonce cookie
(policy.csrf); where the browser says where a POST came from
(Sec-Fetch-Site, else Origin), that must be us. Refusals are logged and
counted, never with the token.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..counters import CSRF_REFUSED
from ..policy.csrf import FIELD, CsrfSigner, check, origin_of
from .exchange import CONFIG, COOKIE_NAMES, exchange

log = logging.getLogger(__name__)

CSRF = web.AppKey("csrf", CsrfSigner)


def csrf_token(request: web.Request, response_cookies: dict[str, str]) -> str:
    """A form token for this browser; its nonce is made (and put in
    `response_cookies`, for session_cookie.set_csrf_cookies) if it has none."""
    name = request.app[COOKIE_NAMES].csrf
    nonce = exchange(request).own_cookie(name)
    if not CsrfSigner.is_nonce(nonce):
        nonce = CsrfSigner.new_nonce()
        response_cookies[name] = nonce
    return request.app[CSRF].token(nonce)


def csrf_refused(request: web.Request, form: dict[str, str]) -> bool:
    """True (logged and counted) when this POST may not proceed."""
    ex = exchange(request)
    config = request.app[CONFIG]
    own = {origin_of(config.server.public_url)}
    if request.host:
        own.add(f"{'https' if config.server.https else request.scheme}://{request.host}".lower())
    refusal = check(
        request.app[CSRF],
        origin=request.headers.get("Origin"),
        fetch_site=request.headers.get("Sec-Fetch-Site"),
        own_origins=own,
        nonce=ex.own_cookie(request.app[COOKIE_NAMES].csrf),
        token=form.get(FIELD),
    )
    if refusal is None:
        return False
    CSRF_REFUSED.inc(refusal.kind)
    log.warning(
        "refused %s %s from %s: %s", request.method, request.path, ex.client_ip(), refusal.detail
    )
    return True


class BadForm(Exception):
    """A posted form that cannot be taken at its word: the message says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def read_form(request: web.Request) -> dict[str, str]:
    """The urlencoded form as str values. Raises BadForm.

    A field sent twice is refused, not resolved: with `username=mallory&
    username=alice`, whichever copy "wins" is a form nobody filled in.
    """
    try:
        data = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise BadForm("The form is larger than any form of ours can be.", 413) from None
    except (ValueError, LookupError, HttpProcessingError):
        # Bad encoding, a charset Python does not know, broken multipart framing.
        raise BadForm("The form could not be read.") from None
    fields: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in data.items():
        if name in seen:
            raise BadForm(f"The form has more than one {name[:40]!r} field.")
        seen.add(name)
        if isinstance(value, str):
            fields[name] = value
    return fields
