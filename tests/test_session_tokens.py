"""store.sessions' token helpers: new_token, is_token, hash_token (what the
cookie holds and what the database keeps of it).

(tests/test_sessions.py is the session lifecycle end to end.)
"""

from __future__ import annotations

import hashlib
import re

import pytest

from gateway.store.sessions import hash_token, is_token, new_token


def test_new_token_shape():
    token = new_token()
    assert len(token) == 43
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    assert is_token(token)


def test_new_tokens_are_unique():
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000


def test_hash_token_is_sha256():
    token = new_token()
    digest = hash_token(token)
    assert isinstance(digest, bytes)
    assert len(digest) == 32
    assert digest == hashlib.sha256(token.encode("ascii")).digest()
    assert hash_token(token) == digest
    assert hash_token(new_token()) != digest


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a" * 42,
        "a" * 44,
        "a" * 86,
        "a" * 42 + "+",
        "a" * 42 + "/",
        "a" * 42 + "=",
        "a" * 42 + " ",
        "a" * 42 + ".",
        "a" * 42 + "é",
        "a" * 43 + "\n",
        " " + "a" * 42,
        "a" * 21 + "\x00" + "a" * 21,
    ],
)
def test_is_token_rejects(value):
    assert is_token(value) is False


@pytest.mark.parametrize("value", ["a" * 43, "_" * 43, "-" * 43, "A0_-" * 10 + "xyz"])
def test_is_token_accepts(value):
    assert is_token(value) is True
