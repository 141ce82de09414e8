"""The README's config reference, rendered from gateway.settings.SETTINGS.

`python -m gateway.config --markdown` prints it; a test fails when the README's
copy between the config-reference markers differs.
"""

from __future__ import annotations

import json
from typing import Any

from .settings import REPEATABLE, SECTIONS, Setting

# Variables that override no single key.
ENV_ONLY = {
    "GATEWAY_CONFIG": "config file path (`-c` wins over it)",
    "GATEWAY_UPSTREAM_URL": "replaces every `[[upstream]]` with one catch-all upstream named "
    "`app` (for a sidecar run on environment variables alone)",
    "GATEWAY_SECRET_KEY": "the key that signs CSRF tokens. It must be at least 32 characters. "
    "If it is unset, Gateway generates a key once, stores it in the database's `settings` "
    "table, and every instance on that database uses it.",
}

# What the reference says after a section's table.
NOTES = {
    "login": """Counted in PostgreSQL, so the limits hold across workers and replicas. Over
either limit, a sign-in gets `429` with `Retry-After` and a generic message,
before any password is hashed; unknown usernames are counted like real ones, so
a 429 says nothing about whether an account exists. Each attempt is recorded
before its password is checked, so parallel guesses cannot slip past the
limit together. A successful sign-in forgives the username's earlier failures
(not the IP's). The client IP comes from `X-Forwarded-For` only when the peer
is in `trusted_proxies`.""",
    "identity_headers": """The four names must be distinct, and none may be a header the
gateway sets itself or one that frames the message (`Cookie`, `X-Forwarded-For/-Proto/-Host`,
`X-Request-ID`, `Host`, `Content-Length`, `Content-Type`, hop-by-hop headers):
`check-config` names the offending one. Client-sent copies are always removed
([see below](#what-the-proxy-does-to-requests)).""",
    "upstream": """Host-specific upstreams are tried before catch-all ones, and the longest
`path` wins. If no upstream matches, the answer is 404.""",
    "rule": """Rules are checked in file order, and the first rule whose every given field
matches decides. A request that matches no rule needs a signed-in user. Rules
apply to proxied paths (and to `/auth` questions), not to the gateway's own
pages under the prefix. The same rules serve the built-in proxy and
forward-auth.

**Paths are normalised before matching**, so no spelling of a path slips past
a `deny` or `groups` rule: the path is percent-decoded once (`/%61dmin` is
`/admin`, and so is `/admin%2F`), `;` parameters are cut from each segment
(`/admin;jsessionid=1`), backslashes count as slashes, `.` and `..` segments
are resolved (`/public/../admin`) and repeated slashes merged (`//admin`). A
path that does not decode to UTF-8 or holds control characters is refused with
400. Hosts are compared lower-case, without port and trailing dot.

**Path matching is case-sensitive**, as URLs are. If the app behind the
gateway treats `/ADMIN` like `/admin`, say so in the rule: `path =
"(?i)^/admin(/|$)"` with `regex = true`.""",
}


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    # JSON and TOML spell ints and plain strings alike.
    return json.dumps(value)


def default_cell(setting: Setting) -> str:
    """The default column: the TOML literal, unless the row says otherwise."""
    return setting.shown or f"`{_toml(setting.default)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference_markdown() -> str:
    """The README's config reference: the environment table, then one table per section."""
    lines = ["### Environment overrides", "", "| variable | overrides |", "|---|---|"]
    env_rows = {
        s.env: f"`{s.section}.{s.key}`" + (" (when non-empty)" if s.env_if_set else "")
        for settings in SECTIONS.values()
        for s in settings.values()
        if s.env
    }
    for variable, text in sorted({**env_rows, **ENV_ONLY}.items()):
        lines.append(f"| `{variable}` | {_cell(text)} |")
    for section, settings in SECTIONS.items():
        title = f"[[{section}]]` (repeatable)" if section in REPEATABLE else f"[{section}]`"
        lines += ["", f"### `{title}", "", "| key | default | meaning |", "|---|---|---|"]
        for key, s in settings.items():
            lines.append(f"| `{key}` | {_cell(default_cell(s))} | {_cell(s.help)} |")
        if section in NOTES:
            lines += ["", NOTES[section]]
    return "\n".join(lines) + "\n"


def main(args: list[str]) -> int | str:
    if args != ["--markdown"]:
        return "usage: python -m gateway.config --markdown"
    print(reference_markdown(), end="")
    return 0
