"""policy.totp and policy.recovery as plain functions: codes, steps, sealing.

The codes are computed here with pyotp, as an authenticator app would; the
store's consuming of steps and codes is tests/test_factors.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest

from gateway.policy import recovery, totp

NOW = datetime(2026, 1, 1, 9, 0, 10, tzinfo=UTC)  # 10 s into a 30 s step
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def code_at(at: datetime, secret: str = SECRET) -> str:
    return pyotp.TOTP(secret).at(at)


def test_a_new_secret_is_160_random_bits_in_base32():
    secrets = {totp.new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert len(secret) == 32 and set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        assert pyotp.TOTP(secret).now().isdigit()


@pytest.mark.parametrize(
    ("offset", "steps_from_now"),
    [(0, 0), (-30, -1), (30, 1), (-10, 0), (19, 0), (-11, -1), (20, 1)],
)
def test_a_code_within_one_step_of_now_names_its_step(offset, steps_from_now):
    code = code_at(NOW + timedelta(seconds=offset))
    assert totp.matching_step(SECRET, code, NOW) == totp.step_at(NOW) + steps_from_now


@pytest.mark.parametrize("offset", [-60, 60, -3600, 86400])
def test_a_code_further_off_is_refused(offset):
    assert totp.matching_step(SECRET, code_at(NOW + timedelta(seconds=offset)), NOW) is None


@pytest.mark.parametrize(
    "typed",
    ["", "12345", "1234567", "12345a", "１２３４５６", "12 34 5", "abcdef", " ", "123456\n7"],
)
def test_a_malformed_code_is_refused_before_any_comparison(typed):
    assert totp.normalize_code(typed) is None
    assert totp.matching_step(SECRET, typed, NOW) is None


@pytest.mark.parametrize("spelling", ["{a} {b}", "{a}-{b}", " {a}{b} "])
def test_a_code_typed_in_groups_is_the_code(spelling):
    code = code_at(NOW)
    typed = spelling.format(a=code[:3], b=code[3:])
    assert totp.matching_step(SECRET, typed, NOW) == totp.step_at(NOW)


def test_another_secrets_code_is_refused():
    other = totp.new_secret()
    assert totp.matching_step(SECRET, code_at(NOW, other), NOW) is None


def test_the_provisioning_uri_names_the_issuer_and_user():
    uri = totp.provisioning_uri(SECRET, "alice", "ACME Portal")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    query = parse_qs(parts.query)
    assert query["secret"] == [SECRET]
    assert query["issuer"] == ["ACME Portal"]
    assert parts.path == "/ACME%20Portal:alice"


def test_a_sealed_secret_opens_only_with_its_key_and_for_its_user():
    box = totp.SecretBox(b"k" * 32)
    sealed = box.seal(SECRET, 7)
    assert SECRET.encode() not in sealed
    assert box.seal(SECRET, 7) != sealed  # a fresh nonce each time
    assert box.unseal(sealed, 7) == SECRET
    assert box.unseal(sealed, 8) is None  # copied to another user's row
    assert totp.SecretBox(b"j" * 32).unseal(sealed, 7) is None  # another gateway's key
    assert box.unseal(sealed[:-1] + bytes([sealed[-1] ^ 1]), 7) is None  # tampered
    assert box.unseal(b"short", 7) is None


def test_recovery_codes_are_ten_of_sixty_bits_without_look_alikes():
    codes = recovery.new_codes()
    assert len(codes) == len(set(codes)) == 10
    for code in codes:
        groups = code.split("-")
        assert [len(g) for g in groups] == [4, 4, 4]
        assert set("".join(groups)) <= set(recovery.ALPHABET)
    assert len(recovery.ALPHABET) == 32  # 12 symbols x 5 bits = 60 bits
    assert not set("OILU") & set(recovery.ALPHABET)


@pytest.mark.parametrize("typed", ["{c}", "{lower}", " {spaced} ", "{c_no_dashes}", "{with_o}"])
def test_a_recovery_code_is_forgiving_of_how_it_is_typed(typed):
    hasher = recovery.CodeHasher(b"k" * 32)
    code = "0A1B-2C3D-4E5F"
    variants = {
        "c": code,
        "lower": code.lower(),
        "spaced": code.replace("-", " "),
        "c_no_dashes": code.replace("-", ""),
        "with_o": code.replace("0", "O").replace("1", "I"),
    }
    assert hasher.hash(typed.format(**variants)) == hasher.hash(code)


@pytest.mark.parametrize("typed", ["", "0A1B-2C3D", "0A1B-2C3D-4E5F-6", "0A1B-2C3D-4E5U", "ÄÖÜ"])
def test_what_cannot_be_a_recovery_code_has_no_hash(typed):
    assert recovery.CodeHasher(b"k" * 32).hash(typed) is None


def test_recovery_code_hashes_are_keyed():
    code = recovery.new_codes(1)[0]
    assert recovery.CodeHasher(b"k" * 32).hash(code) != recovery.CodeHasher(b"j" * 32).hash(code)
