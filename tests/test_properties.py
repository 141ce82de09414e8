"""Property tests for the pure parsers a client's bytes go through first: cookie
splitting, path normalisation and the post-login redirect check.

Where the example tables (test_split_cookies.py, test_paths.py,
test_redirects.py) say what happens to the spellings someone thought of,
these say what must hold for every input hypothesis can make up. Seeded
(derandomized) so a run is repeatable.
"""

from __future__ import annotations

import string
from urllib.parse import unquote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy.cookies import ASCII_SPACE, lookalike, split_cookies
from gateway.policy.paths import BadPath, normalize_path
from gateway.policy.redirects import safe_redirect

settings.register_profile(
    "gateway", derandomize=True, max_examples=400, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("gateway")

OURS = frozenset({"__Host-gateway_session", "__Host-gateway_session_csrf"})

# Names and values as browsers and attackers send them: printable text, odd
# Unicode (spaces, invisibles, full-width look-alikes), and our own names.
# ('=' ends a name, ';' a cookie: neither can be inside one.)
TRICKY = st.sampled_from(
    ["\u2000", "\u00a0", "\u3000", "\u200b", "\ufeff", "\t", " ", "\uff3f", '"']
)
NAME_PIECES = st.one_of(
    st.sampled_from(sorted(OURS)),
    st.sampled_from([n.upper() for n in OURS] + [n.lower() for n in OURS]),
    st.text(string.ascii_letters + string.digits + "_-.", min_size=1, max_size=12),
    TRICKY,
)
NAMES = st.lists(NAME_PIECES, min_size=1, max_size=3).map("".join)
VALUES = st.text(st.characters(blacklist_characters=";", blacklist_categories=("Cs",)), max_size=20)
COOKIES = st.lists(st.tuples(NAMES, VALUES), max_size=6)


def header_of(pairs: list[tuple[str, str]]) -> str:
    return "; ".join(f"{n}={v}" for n, v in pairs)


@given(COOKIES)
def test_no_name_of_ours_or_like_ours_is_ever_passed_on(pairs):
    _, rest = split_cookies(header_of(pairs), OURS)
    for part in rest.split("; ") if rest else []:
        name = part.partition("=")[0].strip(ASCII_SPACE)
        assert name not in OURS
        assert lookalike(name, OURS) is None


@given(COOKIES)
def test_a_cookie_of_ours_has_a_value_only_when_it_came_once_and_alone(pairs):
    mine, _ = split_cookies(header_of(pairs), OURS)
    for name in OURS:
        exact = [v for n, v in pairs if n.strip(ASCII_SPACE) == name]
        alike = [n for n, _ in pairs if lookalike(n.strip(ASCII_SPACE), OURS) == name]
        if len(exact) == 1 and not alike:
            assert mine[name] == exact[0].strip(ASCII_SPACE).strip('"')
        elif exact or alike:
            assert mine[name] is None  # ambiguous: no session, never "first wins"
        else:
            assert name not in mine


@given(
    st.lists(
        st.tuples(
            st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=10),
            st.text(string.printable.replace(";", "").strip(), max_size=10).map(str.strip),
        ),
        max_size=6,
    )
)
def test_other_cookies_pass_byte_for_byte(pairs):
    others = [(n, v) for n, v in pairs if n.lower() not in {o.lower() for o in OURS}]
    assert split_cookies(header_of(others), OURS) == ({}, header_of(others))


PATH_PIECES = st.sampled_from(
    ["/", "//", "/./", "/../", "..", ".", "%2e", "%2E%2E", "%2F", "%5C", "\\", ";x=1", "a", "admin",
     "%61", "%ff", "%", "%00", "?q=1", "#f", "é", "%C3%A9"]
)  # fmt: skip
PATHS = st.lists(PATH_PIECES, max_size=10).map(lambda parts: "/" + "".join(parts))


@given(PATHS)
def test_a_normalised_path_is_canonical(raw):
    try:
        path = normalize_path(raw)
    except BadPath:
        return
    assert path.startswith("/")
    assert "//" not in path and "\\" not in path
    segments = path.split("/")[1:]
    assert "." not in segments and ".." not in segments
    assert not any(";" in s for s in segments)
    assert not any(ord(c) < 0x20 or c == "\x7f" for c in path)
    assert normalize_path(path) == path  # a second pass changes nothing


REDIRECTS = st.one_of(
    st.lists(
        st.sampled_from(
            ["/", "//", "\\", "%2F", "%5C", "http:", "https:", "//evil.example", "gw.example.com",
             "@", "evil.example", ":8080", "/x", "?a=1", "#", "%09", "\t", " ", "javascript:",
             "%00", "é", "."]
        ),
        max_size=8,
    ).map("".join),
    st.text(max_size=30),
)  # fmt: skip


@given(REDIRECTS)
def test_a_checked_redirect_stays_on_our_site(rd):
    target = safe_redirect(rd, "gw.example.com", (".example.org",))
    assert target == "/" or target == rd
    if target.startswith("/"):
        decoded = unquote(target)
        assert not target.startswith("//") and not decoded.startswith("//")
        assert "\\" not in decoded
    else:
        host = target.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        assert "@" not in host
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        assert name.rstrip(".") == "gw.example.com" or name.rstrip(".").endswith(".example.org")
    assert not any(ord(c) < 0x21 or c == "\x7f" for c in target)
