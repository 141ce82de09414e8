"""policy.passwords: Argon2id hashing, verification in a bounded pool, the rules
for a new password, and the rehash of old parameters.
"""

from __future__ import annotations

import hashlib

import argon2
import pytest

from gateway.policy.passwords import (
    MAX_PASSWORD_BYTES,
    PasswordRejected,
    PasswordRules,
    Passwords,
    common_passwords,
)
from gateway.resources import common_passwords_file

PW = "correct horse battery staple"


@pytest.fixture(scope="module")
def passwords():
    p = Passwords(workers=1)
    yield p
    p.close()


@pytest.fixture(scope="module")
def stored(passwords) -> str:
    return passwords.hash(PW)


def test_hash_is_argon2id_with_owasp_parameters(stored):
    assert stored.startswith("$argon2id$")
    params = argon2.extract_parameters(stored)
    assert params.type is argon2.Type.ID
    assert params.memory_cost >= 19456
    assert params.time_cost >= 2
    assert params.parallelism >= 1
    assert params.salt_len >= 16


def test_hash_is_salted(passwords, stored):
    assert passwords.hasher.hash(PW) != stored


def test_verify_ok(passwords, stored):
    result = passwords.verify_sync(stored, PW)
    assert result.ok is True
    assert result.new_hash is None


@pytest.mark.parametrize("attempt", ["wrong password", PW.upper(), PW + " ", "", PW[:-1]])
def test_verify_mismatch(passwords, stored, attempt):
    result = passwords.verify_sync(stored, attempt)
    assert result.ok is False
    assert result.new_hash is None


def test_verify_unknown_user_is_not_ok(passwords):
    assert passwords.verify_sync(None, PW).ok is False
    assert passwords.verify_sync("", PW).ok is False


@pytest.mark.parametrize("stored_hash", [None, ""])
def test_verify_unknown_user_with_the_dummy_password_is_not_ok(passwords, stored_hash):
    # The dummy hash's own password must not sign anyone in, nor crash the login.
    result = passwords.verify_sync(stored_hash, "dummy password for unknown users")
    assert result.ok is False
    assert result.new_hash is None


@pytest.mark.parametrize("stored_hash", ["garbage", "$argon2id$v=19$m=1,t=1,p=1$x$y", "$2b$12$x"])
def test_verify_bad_stored_hash_is_not_ok(passwords, stored_hash):
    assert passwords.verify_sync(stored_hash, PW).ok is False


@pytest.mark.parametrize(
    "password",
    [
        "a" * (MAX_PASSWORD_BYTES + 1),
        "é" * (MAX_PASSWORD_BYTES // 2 + 1),
        "a" * 100_000,
    ],
)
def test_verify_overlong_password_is_not_ok(passwords, stored, password):
    assert len(password.encode("utf-8")) > MAX_PASSWORD_BYTES
    assert passwords.verify_sync(stored, password).ok is False


def test_verify_lone_surrogate_does_not_raise(passwords, stored):
    assert passwords.verify_sync(stored, "\ud800" * 10).ok is False


async def test_verify_async_in_pool(passwords, stored):
    assert (await passwords.verify(stored, PW)).ok is True
    assert (await passwords.verify(stored, "nope")).ok is False
    assert (await passwords.verify(None, PW)).ok is False


COMMON = common_passwords(common_passwords_file())
RULES = PasswordRules(min_length=10, common=COMMON)


def test_the_common_password_list_is_the_one_data_sources_names():
    """data/SOURCES.md: Royce Williams' 20k list as Django ships it (19,640 lines)."""
    digest = hashlib.sha256(common_passwords_file().read_bytes()).hexdigest()
    assert digest == "3c1baed62596de36860824eb3f436d5932d37ca8b06e59df78f5a44ec175afe4"
    assert len(COMMON) == 19_640
    assert {"123456", "password", "qwerty", "iloveyou"} <= COMMON


@pytest.mark.parametrize(
    ("password", "username", "why"),
    [
        ("", "", "at least 10 characters"),
        ("a", "", "at least 10 characters"),
        ("123456789", "", "at least 10 characters"),  # 9: one short
        ("a" * (MAX_PASSWORD_BYTES + 1), "", "at most 1024 bytes"),
        ("é" * 513, "", "at most 1024 bytes"),  # 513 characters, 1026 bytes
        ("\ud800" * 12, "", "not valid text"),
        ("alice.smith", "alice.smith", "not be your username"),
        ("Alice.Smith", "alice.smith", "not be your username"),
        ("1234567890", "", "most common"),
        ("Password123", "", "most common"),  # compared lower-case
        ("qwertyuiop", "", "most common"),
    ],
)
def test_a_new_password_is_refused_with_a_reason(password, username, why):
    with pytest.raises(PasswordRejected, match=why):
        RULES.check(password, username)


@pytest.mark.parametrize(
    "password", ["a" * MAX_PASSWORD_BYTES, "é" * 512, PW, "ten chars!", "alice.smith2"]
)
def test_a_new_password_is_accepted(passwords, password):
    assert RULES.check(password, "alice.smith") is None
    # Accepted means usable: it hashes, and that hash signs this password in.
    assert passwords.verify_sync(passwords.hash(password), password).ok is True


def test_min_length_is_the_operators():
    assert PasswordRules(min_length=20).check("x" * 20) is None
    with pytest.raises(PasswordRejected, match="at least 20 characters"):
        PasswordRules(min_length=20).check("x" * 19)


def test_hash_refuses_only_what_it_cannot_take(passwords):
    """Hashing checks the size; the rules are the caller's (page or CLI)."""
    with pytest.raises(PasswordRejected):
        passwords.hash("x" * (MAX_PASSWORD_BYTES + 1))
    assert passwords.hash("short").startswith("$argon2id$")


def test_rehash_weak_hash_on_successful_verify(passwords):
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8192).hash(PW)
    assert passwords.hasher.check_needs_rehash(weak)
    result = passwords.verify_sync(weak, PW)
    assert result.ok is True
    assert result.new_hash is not None
    assert result.new_hash.startswith("$argon2id$")
    params = argon2.extract_parameters(result.new_hash)
    assert params.time_cost == passwords.hasher.time_cost
    assert params.memory_cost == passwords.hasher.memory_cost
    assert not passwords.hasher.check_needs_rehash(result.new_hash)
    assert passwords.verify_sync(result.new_hash, PW) == type(result)(True)


def test_no_rehash_on_failed_verify(passwords):
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8192).hash(PW)
    result = passwords.verify_sync(weak, "wrong password")
    assert result.ok is False
    assert result.new_hash is None
