"""Experiments behind bench/PROFILE.md: the gateway with parts of its hot path swapped out.

    python bench/variants.py VARIANT[,VARIANT...] serve -c CONFIG --workers 1
    python bench/cpu.py --variant VARIANT[,VARIANT...]     (measures it beside the bare proxy)

Never for production: it patches the gateway in this process only, to answer
"how much of the cost is X?". Variants:

- `bare-handler`: bench/bare_proxy.py's handler and client in place of
  gateway.web.proxy.handle, inside the gateway's own app, router, before-headers
  signal and process. What is left between it and the bare proxy is the
  gateway's environment; what is between it and the real gateway is the
  handler's duties (session, rules, headers, request id, timing).
- `no-before-headers`: the before-headers steps (security headers, stale
  cookie, request count, X-Request-ID) emptied; the signal itself stays.
- `no-memo-NAME`: one of the hot path's memos turned off (NAME: see MEMOS),
  to show what it saves; each memo in gateway/ names the figure it earned.
- `extra-headers` (with bare-handler): the bare handler also sends the eight
  headers the gateway adds upstream (X-Forwarded-*, X-Request-ID, identity),
  with fixed values: what aiohttp's client charges for them.
"""

from __future__ import annotations

import sys

import bare_proxy
from aiohttp import web

import gateway.app
import gateway.policy.cookies
import gateway.policy.paths
import gateway.policy.peers
import gateway.server
import gateway.web.forward_auth
import gateway.web.proxy
import gateway.web.response_hook
from gateway.cli import main


def _no_memo_trusted_peer() -> None:
    def trusted_peer_check(trusted):
        return lambda ip: gateway.policy.peers.is_trusted(ip, trusted)

    gateway.app.trusted_peer_check = trusted_peer_check


def _no_memo_cookie_names() -> None:
    folded = gateway.policy.cookies._folded

    def fresh(own):
        gateway.policy.cookies._FOLDED.clear()
        return folded(own)

    gateway.policy.cookies._folded = fresh


def _unwrap(module, name: str) -> None:
    setattr(module, name, getattr(module, name).__wrapped__)


MEMOS = {
    "trusted-peer": _no_memo_trusted_peer,
    "cookie-names": _no_memo_cookie_names,
    "original-request": lambda: _unwrap(gateway.web.forward_auth, "_original_request"),
    "host": lambda: _unwrap(gateway.policy.paths, "_request_host"),
}
VARIANTS = ("bare-handler", "no-before-headers", "extra-headers", *(f"no-memo-{m}" for m in MEMOS))
ADDED_UPSTREAM = (
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "X-Request-ID",
    "X-Remote-User",
    "X-Remote-Email",
    "X-Remote-Name",
    "X-Remote-Groups",
)


def bare_handler(extra_headers: bool) -> None:
    original_create_app = gateway.app.create_app
    if extra_headers:
        copy = bare_proxy._copy

        def request_copy(headers):
            out = copy(headers)
            if "Host" in headers:  # a request's headers, not the upstream's answer
                out.extend((name, "bench-variant-value") for name in ADDED_UPSTREAM)
            return out

        bare_proxy._copy = request_copy

    def create_app(config, **kwargs) -> web.Application:
        app = original_create_app(config, **kwargs)
        app[bare_proxy.UPSTREAM] = config.upstreams[0].url.rstrip("/")
        app.cleanup_ctx.append(bare_proxy._http_client)  # its own client, set up as in the floor
        return app

    # app.create_app reads proxy.handle when it builds the routes; server imported create_app.
    gateway.web.proxy.handle = bare_proxy.handle
    gateway.app.create_app = gateway.server.create_app = create_app


def apply(names: list[str]) -> None:
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or ("extra-headers" in names and "bare-handler" not in names):
        known = ", ".join(VARIANTS)
        sys.exit(f"variants: expected some of {known} (extra-headers needs bare-handler)")
    if "bare-handler" in names:
        bare_handler(extra_headers="extra-headers" in names)
    if "no-before-headers" in names:
        gateway.web.response_hook.STEPS = ()
    for name in names:
        if name.startswith("no-memo-"):
            MEMOS[name.removeprefix("no-memo-")]()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    apply(sys.argv[1].split(","))
    sys.exit(main(sys.argv[2:]))
