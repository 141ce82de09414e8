"""Which upstream serves a request: host match, then longest path prefix. Pure."""

from __future__ import annotations

from ..config import Upstream


class UpstreamTable:
    def __init__(self, upstreams: tuple[Upstream, ...]) -> None:
        # Host-specific before catch-all, then longest prefix, so the first hit wins.
        self._ordered = sorted(upstreams, key=lambda u: (bool(u.host), len(u.path)), reverse=True)

    def match(self, host: str, path: str) -> Upstream | None:
        host = host.lower().rstrip(".")
        for upstream in self._ordered:
            if upstream.host and upstream.host != host:
                continue
            if _prefix_match(path, upstream.path):
                return upstream
        return None


def _prefix_match(path: str, prefix: str) -> bool:
    """'/app' serves '/app' and '/app/x' but not '/apple'."""
    if prefix == "/" or path == prefix:
        return True
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path.startswith(prefix + "/")
