"""policy.cookies.split_cookies: the gateway's own cookies out of a Cookie header,
the rest passed on byte for byte.

(tests/test_cookies.py is the same promise end to end, through a gateway.)
"""

from __future__ import annotations

import pytest

from gateway.policy.cookies import split_cookies

OURS = frozenset({"gateway_session", "gateway_csrf"})


@pytest.mark.parametrize(
    ("header", "mine", "rest"),
    [
        ("", {}, ""),
        ("a=1", {}, "a=1"),
        ("gateway_session=tok", {"gateway_session": "tok"}, ""),
        ("a=1; gateway_session=tok; b=2", {"gateway_session": "tok"}, "a=1; b=2"),
        ("a=1;gateway_session=tok;b=2", {"gateway_session": "tok"}, "a=1; b=2"),
        ("  a=1 ;  gateway_session=tok  ; b=2  ", {"gateway_session": "tok"}, "a=1; b=2"),
        ("a=1;; ;b=2", {}, "a=1; b=2"),
        (";gateway_session=tok;", {"gateway_session": "tok"}, ""),
        ('gateway_session="tok"', {"gateway_session": "tok"}, ""),
        # Ours twice: ambiguous (None), never "first wins"; neither value goes on.
        (
            "gateway_session=first; gateway_session=second",
            {"gateway_session": None},
            "",
        ),
        ("gateway_session=same; a=1; gateway_session=same", {"gateway_session": None}, "a=1"),
        # Look-alikes make ours ambiguous too, and are cut like ours.
        ("GATEWAY_SESSION=m; gateway_session=t", {"gateway_session": None}, ""),
        ("gateway_session=t; \u2000gateway_session=m", {"gateway_session": None}, ""),
        ("\ufeffgateway_csrf=m; x=1", {"gateway_csrf": None}, "x=1"),
        ("\uff47ateway_session=m", {"gateway_session": None}, ""),  # fullwidth g
        # Only ASCII space and tab are trimmed; names otherwise compare byte for byte.
        ("\tgateway_session=t\t", {"gateway_session": "t"}, ""),
        ("gateway_session =t", {"gateway_session": "t"}, ""),
        (
            "gateway_csrf=n1; x=y; gateway_session=t1",
            {"gateway_csrf": "n1", "gateway_session": "t1"},
            "x=y",
        ),
        # other cookies keep their exact bytes: quotes, '=' in values, odd chars
        ('pref="a b"; gateway_session=t', {"gateway_session": "t"}, 'pref="a b"'),
        ("jwt=a.b=c==; gateway_session=t", {"gateway_session": "t"}, "jwt=a.b=c=="),
        ("flag; gateway_session=t; x=", {"gateway_session": "t"}, "flag; x="),
        ("x=%7B%22a%22%7D; y=caf\u00e9", {}, "x=%7B%22a%22%7D; y=caf\u00e9"),
        # names are exact: a longer or shorter name is someone else's cookie
        ("gateway_session_old=u", {}, "gateway_session_old=u"),
        ("xgateway_session=t", {}, "xgateway_session=t"),
        ("gateway=t; session=u", {}, "gateway=t; session=u"),
    ],
)
def test_split_cookies(header, mine, rest):
    assert split_cookies(header, OURS) == (mine, rest)


# The Unicode spaces str.strip() removes: each once made "X__Host-..." our cookie.
UNICODE_SPACES = [
    "\u00a0", "\u0085", "\u1680", *(chr(c) for c in range(0x2000, 0x200B)),
    "\u2028", "\u2029", "\u202f", "\u205f", "\u3000",
]  # fmt: skip
HOST = frozenset({"__Host-gateway_session", "__Host-gateway_session_csrf"})


@pytest.mark.parametrize("space", UNICODE_SPACES, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize(
    ("header", "rest"),
    [
        # Alone: not our cookie, and not passed on either.
        ("{planted}=mallory; x=1", "x=1"),
        # Beside the real one, in either order: neither wins.
        ("{planted}=mallory; __Host-gateway_session=alice", ""),
        ("__Host-gateway_session=alice; {planted}=mallory", ""),
    ],
    ids=["alone", "planted-first", "planted-last"],
)
def test_a_unicode_space_never_makes_a_cookie_ours(space, where, header, rest):
    planted = (
        f"{space}__Host-gateway_session" if where == "before" else f"__Host-gateway_session{space}"
    )
    assert space.strip() == ""  # str.strip() would have removed it
    assert split_cookies(header.format(planted=planted), HOST) == (
        {"__Host-gateway_session": None},
        rest,
    )


def test_split_cookies_our_value_never_forwarded():
    header = "a=1; gateway_session=SECRET; b=2; gateway_session=SECRET2"
    _, rest = split_cookies(header, OURS)
    assert "SECRET" not in rest
    assert "gateway_session" not in rest
