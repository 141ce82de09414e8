"""The Cookie header, split into the gateway's cookies and everyone else's. Pure.

Names compare byte for byte; one of ours sent twice, or beside a look-alike
of it, is ambiguous and so counts as absent (docs/security.md).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from ..config import Config


@dataclass(frozen=True)
class CookieNames:
    session: str
    csrf: str
    all: frozenset[str] = frozenset()  # both names; filled in by cookie_names()


def cookie_names(config: Config) -> CookieNames:
    """On https with a host-only cookie, '__Host-' makes the browser refuse any
    copy set by a sibling subdomain or over plain http (cookie tossing)."""
    base = config.session.cookie_name
    prefix = "__Host-" if config.server.https and not config.session.cookie_domain else ""
    session, csrf = prefix + base, prefix + base + "_csrf"
    return CookieNames(session=session, csrf=csrf, all=frozenset((session, csrf)))


# Cookie names and values are trimmed of these and only these: Python's
# str.strip() also removes Unicode spaces (U+00A0, U+2000-200A, U+3000, ...),
# which turned "\u2000__Host-gateway_session" into our cookie, a name no
# browser would ever let a sibling subdomain set (the "__Host-" bypass).
ASCII_SPACE = " \t"


def split_cookies(header: str, own: frozenset[str]) -> tuple[dict[str, str | None], str]:
    """Our cookies, and the Cookie header without them.

    A name of ours matches only byte for byte (after trimming ASCII space and
    tab). One of ours sent twice, or beside a look-alike of it (see
    `lookalike`), maps to None: ambiguous, so treated as absent, never "the
    first one wins" (a planted copy must not choose the session). Look-alikes
    are cut from the forwarded header like our own cookies.

    Parsed by hand because the forwarded header must keep every other cookie
    byte for byte, which a parse-and-reserialise round trip would not.
    """
    folded, lengths = _folded(own)
    mine: dict[str, str | None] = {}
    rest = []
    for raw in header.split(";"):
        part = raw.strip(ASCII_SPACE)
        if not part:
            continue
        name, _, value = part.partition("=")
        name = name.rstrip(ASCII_SPACE)
        if name in own:
            mine[name] = None if name in mine else value.strip(ASCII_SPACE).strip('"')
            continue
        twin = _twin(name, own, folded, lengths)
        if twin is not None:
            mine[twin] = None
            continue
        rest.append(part)
    return mine, "; ".join(rest)


def lookalike(name: str, own: frozenset[str]) -> str | None:
    """The name of ours that `name` imitates without being it, or None.

    Imitates: equal after Unicode normalisation (NFKC), dropping invisible
    format characters (U+200B, U+FEFF, ...), trimming any space, and ignoring
    case. Browsers keep such names apart from ours, but an app or another
    proxy may not, and nothing honest sends them.
    """
    folded = unicodedata.normalize("NFKC", name)
    # Format characters (category Cf: U+200B, U+FEFF, ...) render as nothing.
    key = "".join(ch for ch in folded if unicodedata.category(ch) != "Cf").strip().casefold()
    twin = _folded(own)[0].get(key)
    return twin if twin != name else None


def _twin(
    name: str, own: frozenset[str], folded: dict[str, str], lengths: frozenset[int]
) -> str | None:
    """`lookalike` for a name that is not exactly ours, with a cheap way out for
    the common ASCII name: a look-alike of that kind differs from ours only in
    case (so has our length) or by surrounding white space."""
    if name.isascii():
        if len(name) in lengths:
            return folded.get(name.lower())
        if name == name.strip():
            return None
    return lookalike(name, own)


def is_own_cookie(name: str, own: frozenset[str]) -> bool:
    """Is a cookie called this one of ours, or a look-alike of one (names as sent)?"""
    name = name.strip(ASCII_SPACE)
    return name in own or _twin(name, own, *_folded(own)) is not None


def _folded(own: frozenset[str]) -> tuple[dict[str, str], frozenset[int]]:
    """Our names case-folded, and their lengths: made once per set of names.

    Memoised (bench/cpu.py, no-memo-cookie-names: ~+6 µs per proxied request,
    +9 µs per /auth). A plain dict, not lru_cache: this runs on every request,
    and lru_cache's call costs a third of the whole split.
    """
    found = _FOLDED.get(own)
    if found is None:
        if len(_FOLDED) >= 64:  # one set per app; tests make many apps
            _FOLDED.clear()
        found = _FOLDED[own] = (
            {name.casefold(): name for name in own},
            frozenset(len(name) for name in own),
        )
    return found


_FOLDED: dict[frozenset[str], tuple[dict[str, str], frozenset[int]]] = {}
