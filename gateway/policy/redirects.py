"""Where a post-login redirect may go. Pure: strings in, a safe target out.

Accepted: a path on our origin that starts with exactly one '/', or an
absolute http(s) URL whose host is ours or in allowed_redirect_hosts (exact
names, or '.example.com' for every subdomain). Anything else becomes '/'.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

MAX_REDIRECT_LENGTH = 4096
DEFAULT_TARGET = "/"

# Control characters, space and backslash are never part of a redirect we
# issue: browsers strip or reinterpret them (`/\evil.com`, `/\t/evil.com`).
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\]")
# After decoding, an encoded space (`?q=a%20b`) is a legitimate search.
_FORBIDDEN_DECODED = re.compile(r"[\x00-\x1f\x7f\\]")
_HOST = re.compile(r"^[a-z0-9.-]+$")


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    for entry in allowed:
        if entry.startswith("."):
            if host.endswith(entry) and len(host) > len(entry):
                return True
        elif host == entry:
            return True
    return False


def safe_redirect(rd: str | None, own_host: str, allowed_hosts: tuple[str, ...] = ()) -> str:
    """`rd` if it is safe to send the browser to, else '/'.

    `own_host` is our public host (with port when not default), lower-case.
    """
    if not rd or len(rd) > MAX_REDIRECT_LENGTH:
        return DEFAULT_TARGET
    # Judge the decoded form too: a target that only turns hostile after one
    # round of percent-decoding (`/%2F%2Fevil.com`, `/%5Cevil.com`) is refused.
    decoded = unquote(rd)
    if _FORBIDDEN.search(rd) or _FORBIDDEN_DECODED.search(decoded) or not rd.isascii():
        return DEFAULT_TARGET
    if rd.startswith("/"):
        if rd.startswith("//") or decoded.startswith("//"):
            return DEFAULT_TARGET
        return rd
    try:
        parts = urlsplit(rd)
        port = parts.port
    except ValueError:
        return DEFAULT_TARGET
    if parts.scheme not in ("http", "https") or not rd.startswith(parts.scheme + "://"):
        return DEFAULT_TARGET
    if "@" in parts.netloc or not parts.hostname:
        return DEFAULT_TARGET
    host = parts.hostname.rstrip(".")
    if not _HOST.match(host):
        return DEFAULT_TARGET
    default_port = 443 if parts.scheme == "https" else 80
    netloc = host if port in (None, default_port) else f"{host}:{port}"
    if netloc == own_host.lower() or _host_allowed(host, allowed_hosts):
        return rd
    return DEFAULT_TARGET
