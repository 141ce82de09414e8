"""Second factors in the store: TOTP enrolment, one use per time step, sealed secrets,
recovery codes kept only as keyed hashes, and the purges and resets around them.

Real PostgreSQL (each test its own migrated schema), real pyotp codes, explicit
datetimes; the races run on separate connections, as separate workers would.
"""

from __future__ import annotations

import asyncio
import base64
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pyotp
import pytest
from helpers import create_user

from gateway.policy.recovery import ALPHABET, CodeHasher, new_codes, normalize
from gateway.policy.totp import SecretBox, matching_step, new_secret, step_at
from gateway.store import factors, users
from gateway.store.factors import PENDING_LIFETIME, FactorError, TotpFactor

KEY = b"k" * 32
NOW = datetime(2026, 1, 1, 9, tzinfo=UTC)
STEP = 58908600  # step_at(NOW): 2026-01-01T09:00:00Z // 30 s
# A fixed secret, so the codes of each step are the same on every run.
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
PARALLEL = 20

EMPTY_NAME = "Give the authenticator a name, such as \u201cWork phone\u201d."
BAD_NAME = "The name must be plain text of at most 64 characters."


@pytest.fixture
async def bob(db: asyncpg.Connection) -> int:
    return await create_user(db, "bob")


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(KEY)


@pytest.fixture
def hasher() -> CodeHasher:
    return CodeHasher(KEY)


async def totp_rows(db: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT * FROM totp_factors ORDER BY id")
    return [dict(r) for r in rows]


async def code_rows(db: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT * FROM recovery_codes ORDER BY id")
    return [dict(r) for r in rows]


def totp_row(
    id: int,
    user_id: int,
    name: str,
    sealed: bytes,
    created_at: datetime,
    *,
    confirmed_at: datetime | None = None,
    last_step: int | None = None,
    last_used_at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "id": id,
        "user_id": user_id,
        "name": name,
        "secret_sealed": sealed,
        "created_at": created_at,
        "confirmed_at": confirmed_at,
        "last_step": last_step,
        "last_used_at": last_used_at,
    }


async def confirmed_factor(
    db: asyncpg.Connection,
    box: SecretBox,
    user_id: int,
    *,
    name: str = "Phone",
    secret: str = SECRET,
    created_at: datetime = NOW,
    step: int = STEP,
) -> tuple[int, bytes]:
    """A factor enrolled at `created_at` and confirmed a minute later with `step`."""
    sealed = box.seal(secret, user_id)
    factor_id = await factors.add_pending_totp(db, user_id, name, sealed, created_at)
    confirmed = await factors.confirm_totp(
        db, factor_id, user_id, step, created_at + timedelta(minutes=1)
    )
    assert confirmed is True
    return factor_id, sealed


async def race(db_url: str, call) -> list[Any]:
    """`call(conn)` on PARALLEL connections of their own, all started together."""
    conns = [await asyncpg.connect(db_url) for _ in range(PARALLEL)]
    try:
        return await asyncio.gather(*(call(conn) for conn in conns))
    finally:
        for conn in conns:
            await conn.close()


# -- TOTP enrolment ---------------------------------------------------------------------


async def test_a_pending_factor_is_not_listed_and_is_readable_only_by_its_owner(
    db, alice, bob, box
):
    secret = new_secret()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    sealed = box.seal(secret, alice)

    factor_id = await factors.add_pending_totp(db, alice, "Work phone", sealed, NOW)

    assert await totp_rows(db) == [totp_row(factor_id, alice, "Work phone", sealed, NOW)]
    assert await factors.totp_factors(db, alice) == []
    assert await factors.pending_totp(db, factor_id, alice, NOW) == sealed
    assert box.unseal(await factors.pending_totp(db, factor_id, alice, NOW), alice) == secret
    assert await factors.pending_totp(db, factor_id, bob, NOW) is None
    assert await factors.pending_totp(db, factor_id + 1000, alice, NOW) is None
    just_before = NOW + PENDING_LIFETIME - timedelta(microseconds=1)
    assert await factors.pending_totp(db, factor_id, alice, just_before) == sealed
    assert await factors.pending_totp(db, factor_id, alice, NOW + PENDING_LIFETIME) is None
    assert await factors.pending_totp(db, factor_id, alice, NOW + timedelta(hours=1)) is None
    # Reading changes nothing.
    assert await totp_rows(db) == [totp_row(factor_id, alice, "Work phone", sealed, NOW)]


async def test_confirming_with_a_real_code_lists_the_factor_and_consumes_the_step(
    db, alice, bob, box
):
    secret = new_secret()
    sealed = box.seal(secret, alice)
    factor_id = await factors.add_pending_totp(db, alice, "Work phone", sealed, NOW)
    at = NOW + timedelta(minutes=2)
    # The enrolment page: unseal, check the code the person typed, confirm its step.
    pending = await factors.pending_totp(db, factor_id, alice, at)
    assert pending == sealed
    opened = box.unseal(pending, alice)
    assert opened == secret
    code = pyotp.TOTP(opened).at(at)
    step = matching_step(opened, code, at)
    assert step is not None and abs(step - step_at(at)) <= 1

    assert await factors.confirm_totp(db, factor_id, bob, step, at) is False
    assert await totp_rows(db) == [totp_row(factor_id, alice, "Work phone", sealed, NOW)]
    assert await factors.confirm_totp(db, factor_id, alice, step, at) is True
    later = at + timedelta(seconds=5)
    assert await factors.confirm_totp(db, factor_id, alice, step + 1, later) is False

    confirmed = totp_row(
        factor_id,
        alice,
        "Work phone",
        sealed,
        NOW,
        confirmed_at=at,
        last_step=step,
        last_used_at=at,
    )
    assert await totp_rows(db) == [confirmed]
    assert await factors.totp_factors(db, alice) == [
        TotpFactor(factor_id, "Work phone", sealed, NOW, at)
    ]
    assert await factors.totp_factors(db, bob) == []
    # Confirmed, it is no longer pending.
    assert await factors.pending_totp(db, factor_id, alice, at) is None
    # The confirming code was consumed: it cannot also sign in.
    assert await factors.consume_totp_step(db, factor_id, alice, step, later) is False
    assert await totp_rows(db) == [confirmed]
    assert await factors.consume_totp_step(db, factor_id, alice, step + 1, later) is True
    assert await totp_rows(db) == [
        totp_row(
            factor_id,
            alice,
            "Work phone",
            sealed,
            NOW,
            confirmed_at=at,
            last_step=step + 1,
            last_used_at=later,
        )
    ]


async def test_a_factor_cannot_be_confirmed_once_its_enrolment_is_stale(db, alice, box):
    sealed = box.seal(SECRET, alice)
    factor_id = await factors.add_pending_totp(db, alice, "Phone", sealed, NOW)
    pending = [totp_row(factor_id, alice, "Phone", sealed, NOW)]

    stale = NOW + PENDING_LIFETIME
    assert await factors.confirm_totp(db, factor_id, alice, step_at(stale), stale) is False
    much_later = NOW + timedelta(days=1)
    assert (
        await factors.confirm_totp(db, factor_id, alice, step_at(much_later), much_later) is False
    )
    assert await totp_rows(db) == pending
    assert await factors.totp_factors(db, alice) == []
    assert await factors.consume_totp_step(db, factor_id, alice, step_at(stale), stale) is False
    assert await totp_rows(db) == pending


async def test_a_factor_is_still_confirmable_just_before_its_enrolment_goes_stale(db, alice, box):
    sealed = box.seal(SECRET, alice)
    factor_id = await factors.add_pending_totp(db, alice, "Phone", sealed, NOW)
    at = NOW + PENDING_LIFETIME - timedelta(microseconds=1)

    assert await factors.confirm_totp(db, factor_id, alice, step_at(at), at) is True
    assert await totp_rows(db) == [
        totp_row(
            factor_id,
            alice,
            "Phone",
            sealed,
            NOW,
            confirmed_at=at,
            last_step=step_at(at),
            last_used_at=at,
        )
    ]


async def test_parallel_confirms_of_one_factor_confirm_it_once(db, db_url, alice, box):
    sealed = box.seal(SECRET, alice)
    factor_id = await factors.add_pending_totp(db, alice, "Phone", sealed, NOW)
    at = NOW + timedelta(minutes=1)

    results = await race(
        db_url, lambda conn: factors.confirm_totp(conn, factor_id, alice, STEP + 2, at)
    )

    assert sorted(results) == [False] * (PARALLEL - 1) + [True]
    assert await totp_rows(db) == [
        totp_row(
            factor_id,
            alice,
            "Phone",
            sealed,
            NOW,
            confirmed_at=at,
            last_step=STEP + 2,
            last_used_at=at,
        )
    ]


# -- no replay --------------------------------------------------------------------------


async def test_each_step_is_taken_once_and_never_an_older_one(db, alice, bob, box):
    factor_id, sealed = await confirmed_factor(db, box, alice)
    confirmed_at = NOW + timedelta(minutes=1)
    s = STEP + 10
    t1, t2, t3 = (NOW + timedelta(minutes=m) for m in (5, 6, 7))

    def row(last_step: int, last_used_at: datetime) -> list[dict[str, Any]]:
        return [
            totp_row(
                factor_id,
                alice,
                "Phone",
                sealed,
                NOW,
                confirmed_at=confirmed_at,
                last_step=last_step,
                last_used_at=last_used_at,
            )
        ]

    assert await totp_rows(db) == row(STEP, confirmed_at)
    assert await factors.consume_totp_step(db, factor_id, alice, s, t1) is True
    assert await totp_rows(db) == row(s, t1)
    assert await factors.consume_totp_step(db, factor_id, alice, s, t2) is False
    assert await factors.consume_totp_step(db, factor_id, alice, s - 1, t2) is False
    assert await factors.consume_totp_step(db, factor_id, alice, STEP, t2) is False
    assert await totp_rows(db) == row(s, t1)
    assert await factors.consume_totp_step(db, factor_id, alice, s + 1, t3) is True
    assert await totp_rows(db) == row(s + 1, t3)
    assert await factors.consume_totp_step(db, factor_id, alice, s, t3) is False
    assert await factors.totp_factors(db, alice) == [
        TotpFactor(factor_id, "Phone", sealed, NOW, t3)
    ]


async def test_another_users_factor_and_an_unconfirmed_one_take_no_step(db, alice, bob, box):
    bobs_id, bobs_sealed = await confirmed_factor(db, box, bob, name="Bob's phone")
    pending_sealed = box.seal(SECRET, alice)
    pending_id = await factors.add_pending_totp(db, alice, "Tablet", pending_sealed, NOW)
    before = await totp_rows(db)
    at = NOW + timedelta(minutes=2)

    assert await factors.consume_totp_step(db, bobs_id, alice, STEP + 5, at) is False
    assert await factors.consume_totp_step(db, pending_id, alice, STEP + 5, at) is False
    assert await factors.consume_totp_step(db, pending_id, bob, STEP + 5, at) is False
    assert (
        await factors.consume_totp_step(db, bobs_id + pending_id + 1000, bob, STEP + 5, at) is False
    )
    assert await totp_rows(db) == before
    assert before == [
        totp_row(
            bobs_id,
            bob,
            "Bob's phone",
            bobs_sealed,
            NOW,
            confirmed_at=NOW + timedelta(minutes=1),
            last_step=STEP,
            last_used_at=NOW + timedelta(minutes=1),
        ),
        totp_row(pending_id, alice, "Tablet", pending_sealed, NOW),
    ]
    # Bob's own use still works: the refusals above took nothing from him.
    assert await factors.consume_totp_step(db, bobs_id, bob, STEP + 5, at) is True


async def test_one_code_typed_by_twenty_workers_at_once_is_taken_once(db, db_url, alice, box):
    factor_id, sealed = await confirmed_factor(db, box, alice)
    at = NOW + timedelta(minutes=3)
    s = step_at(at)

    results = await race(
        db_url, lambda conn: factors.consume_totp_step(conn, factor_id, alice, s, at)
    )

    assert sorted(results) == [False] * (PARALLEL - 1) + [True]
    assert await totp_rows(db) == [
        totp_row(
            factor_id,
            alice,
            "Phone",
            sealed,
            NOW,
            confirmed_at=NOW + timedelta(minutes=1),
            last_step=s,
            last_used_at=at,
        )
    ]


async def test_a_real_code_signs_in_once_and_an_older_code_never_after(db, alice, box):
    factor_id, sealed = await confirmed_factor(db, box, alice)
    totp = pyotp.TOTP(SECRET)
    at = NOW + timedelta(minutes=5)  # exactly on a step boundary
    assert step_at(at) == STEP + 10

    code = totp.at(at)
    assert matching_step(SECRET, code, at) == STEP + 10
    assert await factors.consume_totp_step(db, factor_id, alice, STEP + 10, at) is True
    # The same code again, a few seconds on, still matches its step: and is refused.
    again = at + timedelta(seconds=10)
    assert matching_step(SECRET, code, again) == STEP + 10
    assert await factors.consume_totp_step(db, factor_id, alice, STEP + 10, again) is False
    # The code of the step before (clock drift) matches, but its step is older.
    older = totp.at(at - timedelta(seconds=30))
    assert matching_step(SECRET, older, again) == STEP + 9
    assert await factors.consume_totp_step(db, factor_id, alice, STEP + 9, again) is False
    # A code from two steps back is outside the drift: no step at all.
    assert matching_step(SECRET, totp.at(at - timedelta(seconds=60)), again) is None
    # Typed with a space, the next step's code is taken.
    nxt = at + timedelta(seconds=30)
    typed = totp.at(nxt)[:3] + " " + totp.at(nxt)[3:]
    assert matching_step(SECRET, typed, nxt) == STEP + 11
    assert await factors.consume_totp_step(db, factor_id, alice, STEP + 11, nxt) is True
    assert await totp_rows(db) == [
        totp_row(
            factor_id,
            alice,
            "Phone",
            sealed,
            NOW,
            confirmed_at=NOW + timedelta(minutes=1),
            last_step=STEP + 11,
            last_used_at=nxt,
        )
    ]


# -- secrets at rest ----------------------------------------------------------------------


async def test_the_table_holds_no_usable_secret(db, alice, bob, box):
    secret = new_secret()
    factor_id, sealed = await confirmed_factor(db, box, alice, secret=secret)

    stored = await db.fetchval("SELECT secret_sealed FROM totp_factors WHERE id = $1", factor_id)
    assert stored == sealed
    assert secret.encode() not in stored
    assert secret.lower().encode() not in stored
    assert base64.b32decode(secret) not in stored
    assert box.unseal(stored, alice) == secret
    assert SecretBox(b"j" * 32).unseal(stored, alice) is None
    assert box.unseal(stored, bob) is None
    # Tampered, truncated or empty: nothing opens.
    assert box.unseal(stored[:-1] + bytes([stored[-1] ^ 1]), alice) is None
    assert box.unseal(stored[:20], alice) is None
    assert box.unseal(stored[:5], alice) is None
    assert box.unseal(b"", alice) is None
    # Each seal has its own nonce: the same secret never seals the same twice.
    assert box.seal(secret, alice) != sealed


async def test_a_sealed_secret_copied_to_another_users_row_opens_nothing(db, alice, bob, box):
    secret = new_secret()
    alices_id, alices_sealed = await confirmed_factor(db, box, alice, secret=secret)
    bobs_id, _ = await confirmed_factor(db, box, bob, secret=new_secret())

    await db.execute(
        "UPDATE totp_factors SET secret_sealed = $1 WHERE id = $2", alices_sealed, bobs_id
    )

    [bobs] = await factors.totp_factors(db, bob)
    assert bobs.id == bobs_id and bobs.secret_sealed == alices_sealed
    assert box.unseal(bobs.secret_sealed, bob) is None
    [alices] = await factors.totp_factors(db, alice)
    assert alices.id == alices_id and alices.secret_sealed == alices_sealed
    assert box.unseal(alices.secret_sealed, alice) == secret


# -- removing and naming ------------------------------------------------------------------


async def test_remove_totp_removes_only_the_owners_factor(db, alice, bob, box):
    alices_id, _ = await confirmed_factor(db, box, alice, name="Work phone")
    bobs_id, bobs_sealed = await confirmed_factor(db, box, bob, name="Bob's phone")
    pending_sealed = box.seal(SECRET, alice)
    pending_id = await factors.add_pending_totp(db, alice, "Tablet", pending_sealed, NOW)
    everything = await totp_rows(db)

    assert await factors.remove_totp(db, alices_id, bob) is None
    assert await factors.remove_totp(db, 999_999, alice) is None
    assert await totp_rows(db) == everything

    assert await factors.remove_totp(db, alices_id, alice) == "Work phone"
    assert await factors.remove_totp(db, alices_id, alice) is None
    assert await factors.remove_totp(db, pending_id, alice) == "Tablet"
    used = NOW + timedelta(minutes=1)
    assert await totp_rows(db) == [
        totp_row(
            bobs_id,
            bob,
            "Bob's phone",
            bobs_sealed,
            NOW,
            confirmed_at=used,
            last_step=STEP,
            last_used_at=used,
        )
    ]
    assert await factors.totp_factors(db, alice) == []
    assert await factors.totp_factors(db, bob) == [
        TotpFactor(bobs_id, "Bob's phone", bobs_sealed, NOW, used)
    ]


@pytest.mark.parametrize(
    ("typed", "name"),
    [
        ("Work phone", "Work phone"),
        ("  Work   phone  ", "Work phone"),
        ("Work\tphone\n", "Work phone"),
        ("Téléphone \u00e9 ☎", "Téléphone \u00e9 ☎"),
        ("x" * 64, "x" * 64),
        ("  " + "x" * 64 + "   ", "x" * 64),
        ("a" + " " * 100 + "b", "a b"),
        ("Work\u3000phone", "Work phone"),  # an ideographic space is a space
    ],
)
def test_check_name_trims_and_collapses_spaces(typed, name):
    assert factors.check_name(typed) == name


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("", EMPTY_NAME),
        ("   ", EMPTY_NAME),
        ("\t\n \r", EMPTY_NAME),
        ("x" * 65, BAD_NAME),
        ("x" * 1000, BAD_NAME),
        ("Work phone " + "x" * 54, BAD_NAME),
        ("Work\x00phone", BAD_NAME),
        ("Work\x07phone", BAD_NAME),
        ("\x1b[31mred", BAD_NAME),
        ("Work\x7fphone", BAD_NAME),
        ("Work\x9bphone", BAD_NAME),
        # Control characters Python would split on as whitespace are still refused,
        # and so are invisible format characters that make a name read otherwise.
        ("Work\x1fphone", BAD_NAME),
        ("Work phone\x85", BAD_NAME),
        ("\u2028Work phone", BAD_NAME),
        ("\u202eenohp kroW", BAD_NAME),  # right-to-left override
        ("Work\u200bphone", BAD_NAME),  # zero-width space
    ],
)
def test_check_name_refuses_empty_long_and_control_characters(typed, message):
    with pytest.raises(FactorError) as caught:
        factors.check_name(typed)
    assert str(caught.value) == message


async def test_add_pending_totp_saves_the_checked_name_and_refuses_a_bad_one(db, alice, box):
    sealed = box.seal(SECRET, alice)

    for typed, message in [("  ", EMPTY_NAME), ("x" * 65, BAD_NAME), ("a\x00b", BAD_NAME)]:
        with pytest.raises(FactorError) as caught:
            await factors.add_pending_totp(db, alice, typed, sealed, NOW)
        assert str(caught.value) == message
    assert await totp_rows(db) == []

    factor_id = await factors.add_pending_totp(db, alice, "  Work \t phone ", sealed, NOW)
    assert await totp_rows(db) == [totp_row(factor_id, alice, "Work phone", sealed, NOW)]


# -- recovery codes -----------------------------------------------------------------------


async def test_recovery_codes_are_stored_only_as_keyed_hashes(db, alice, hasher):
    codes = new_codes()
    assert len(codes) == 10 and len(set(codes)) == 10
    symbol = f"[{ALPHABET}]"
    for code in codes:
        assert re.fullmatch(f"{symbol}{{4}}-{symbol}{{4}}-{symbol}{{4}}", code), code
    hashes = [hasher.hash(code) for code in codes]
    assert all(isinstance(h, bytes) and len(h) == 32 for h in hashes)

    await factors.replace_recovery_codes(db, alice, hashes, NOW)

    rows = await code_rows(db)
    assert [(r["user_id"], r["created_at"], r["used_at"]) for r in rows] == [
        (alice, NOW, None)
    ] * 10
    assert sorted(r["code_hash"] for r in rows) == sorted(hashes)
    for row in rows:
        for value in row.values():
            stored = value if isinstance(value, bytes) else str(value).encode()
            for code in codes:
                for form in (code, code.replace("-", ""), code.lower()):
                    assert form.encode() != stored
                    assert form.encode() not in stored
    assert await factors.recovery_codes_left(db, alice) == 10
    # Another key hashes every code differently: the table alone cannot be searched.
    other = CodeHasher(b"j" * 32)
    assert not {other.hash(code) for code in codes} & set(hashes)


async def test_a_recovery_code_works_once(db, alice, hasher):
    codes = new_codes()
    await factors.replace_recovery_codes(db, alice, [hasher.hash(c) for c in codes], NOW)
    at = NOW + timedelta(days=3)

    assert await factors.consume_recovery_code(db, alice, hasher.hash(codes[4]), at) is True
    later = at + timedelta(hours=1)
    assert await factors.consume_recovery_code(db, alice, hasher.hash(codes[4]), later) is False
    assert await factors.recovery_codes_left(db, alice) == 9
    used = [r for r in await code_rows(db) if r["used_at"] is not None]
    assert [(r["code_hash"], r["used_at"]) for r in used] == [(hasher.hash(codes[4]), at)]


async def test_a_recovery_code_is_forgiven_case_spaces_and_look_alikes(db, alice, hasher):
    codes = ["0A1B-2C3D-4E5F", "1010-0101-ZZZZ", *new_codes(8)]
    await factors.replace_recovery_codes(db, alice, [hasher.hash(c) for c in codes], NOW)
    at = NOW + timedelta(days=1)

    for typed in (
        "0a1b-2c3d-4e5f",
        "0A1B 2C3D 4E5F",
        " 0a1b2c3d4e5f ",
        "OA1B-2C3D-4E5F",
        "oaib2c3d4e5f",
    ):
        assert normalize(typed) == "0A1B2C3D4E5F"
        assert hasher.hash(typed) == hasher.hash(codes[0])
    for typed in ("IOLO-OIOI-zzzz", "lolo olol zzzz", "i0l0-0i01-ZzZz"):
        assert hasher.hash(typed) == hasher.hash(codes[1])
    # Not a code at all: wrong length or a symbol outside the alphabet.
    for typed in ("", "0A1B-2C3D-4E5", "0A1B-2C3D-4E5F-0", "UA1B-2C3D-4E5F", "0A1B_2C3D_4E5F"):
        assert normalize(typed) is None
        assert hasher.hash(typed) is None
        assert await factors.consume_recovery_code(db, alice, hasher.hash(typed), at) is False

    assert await factors.consume_recovery_code(db, alice, hasher.hash("oa1b 2c3d 4e5f"), at) is True
    assert await factors.consume_recovery_code(db, alice, hasher.hash(codes[0]), at) is False
    assert await factors.consume_recovery_code(db, alice, hasher.hash("lolo-olol-zzzz"), at) is True
    assert await factors.consume_recovery_code(db, alice, hasher.hash(codes[1]), at) is False
    assert await factors.recovery_codes_left(db, alice) == 8
    used = {r["code_hash"]: r["used_at"] for r in await code_rows(db) if r["used_at"]}
    assert used == {hasher.hash(codes[0]): at, hasher.hash(codes[1]): at}


async def test_another_users_recovery_code_is_refused(db, alice, bob, hasher):
    alices = new_codes()
    bobs = new_codes()
    await factors.replace_recovery_codes(db, alice, [hasher.hash(c) for c in alices], NOW)
    await factors.replace_recovery_codes(db, bob, [hasher.hash(c) for c in bobs], NOW)
    before = await code_rows(db)
    at = NOW + timedelta(days=1)

    for code in alices:
        assert await factors.consume_recovery_code(db, bob, hasher.hash(code), at) is False
    for code in bobs:
        assert await factors.consume_recovery_code(db, alice, hasher.hash(code), at) is False
    assert await code_rows(db) == before
    assert await factors.recovery_codes_left(db, alice) == 10
    assert await factors.recovery_codes_left(db, bob) == 10
    assert await factors.consume_recovery_code(db, bob, hasher.hash(bobs[0]), at) is True
    assert await factors.recovery_codes_left(db, alice) == 10
    assert await factors.recovery_codes_left(db, bob) == 9


async def test_a_new_set_of_codes_ends_every_old_one(db, alice, bob, hasher):
    old = new_codes()
    await factors.replace_recovery_codes(db, alice, [hasher.hash(c) for c in old], NOW)
    bobs = new_codes()
    await factors.replace_recovery_codes(db, bob, [hasher.hash(c) for c in bobs], NOW)
    bobs_rows = [r for r in await code_rows(db) if r["user_id"] == bob]
    used_at = NOW + timedelta(hours=1)
    assert await factors.consume_recovery_code(db, alice, hasher.hash(old[0]), used_at) is True
    assert await factors.consume_recovery_code(db, alice, hasher.hash(old[1]), used_at) is True
    assert await factors.recovery_codes_left(db, alice) == 8

    fresh = new_codes()
    replaced_at = NOW + timedelta(days=1)
    await factors.replace_recovery_codes(db, alice, [hasher.hash(c) for c in fresh], replaced_at)

    assert await factors.recovery_codes_left(db, alice) == 10
    rows = await code_rows(db)
    alices_rows = [r for r in rows if r["user_id"] == alice]
    assert sorted(r["code_hash"] for r in alices_rows) == sorted(hasher.hash(c) for c in fresh)
    assert {(r["created_at"], r["used_at"]) for r in alices_rows} == {(replaced_at, None)}
    assert [r for r in rows if r["user_id"] == bob] == bobs_rows
    at = replaced_at + timedelta(minutes=1)
    for code in old:
        assert await factors.consume_recovery_code(db, alice, hasher.hash(code), at) is False
    assert await factors.recovery_codes_left(db, alice) == 10
    assert await factors.consume_recovery_code(db, alice, hasher.hash(fresh[9]), at) is True
    assert await factors.recovery_codes_left(db, alice) == 9
    assert await factors.recovery_codes_left(db, bob) == 10


async def test_one_recovery_code_typed_by_twenty_workers_at_once_is_taken_once(
    db, db_url, alice, hasher
):
    codes = new_codes()
    await factors.replace_recovery_codes(db, alice, [hasher.hash(c) for c in codes], NOW)
    code_hash = hasher.hash(codes[0])
    at = NOW + timedelta(days=2)

    results = await race(
        db_url, lambda conn: factors.consume_recovery_code(conn, alice, code_hash, at)
    )

    assert sorted(results) == [False] * (PARALLEL - 1) + [True]
    assert await factors.recovery_codes_left(db, alice) == 9
    used = [(r["code_hash"], r["used_at"]) for r in await code_rows(db) if r["used_at"]]
    assert used == [(code_hash, at)]


async def test_recovery_codes_left_counts_down_to_zero(db, alice, hasher):
    codes = new_codes()
    await factors.replace_recovery_codes(db, alice, [hasher.hash(c) for c in codes], NOW)

    for used, code in enumerate(codes, start=1):
        at = NOW + timedelta(days=used)
        assert await factors.consume_recovery_code(db, alice, hasher.hash(code), at) is True
        assert await factors.recovery_codes_left(db, alice) == 10 - used
    for code in codes:
        assert await factors.consume_recovery_code(db, alice, hasher.hash(code), NOW) is False
    assert await factors.recovery_codes_left(db, alice) == 0
    rows = await code_rows(db)
    assert sorted((r["code_hash"], r["used_at"]) for r in rows) == sorted(
        (hasher.hash(code), NOW + timedelta(days=i)) for i, code in enumerate(codes, start=1)
    )


async def test_a_user_without_codes_has_none_left(db, alice, hasher):
    assert await factors.recovery_codes_left(db, alice) == 0
    code_hash = hasher.hash(new_codes(1)[0])
    assert await factors.consume_recovery_code(db, alice, code_hash, NOW) is False
    assert await code_rows(db) == []


# -- purges, resets, deleted users ----------------------------------------------------


async def test_purge_removes_only_stale_unconfirmed_factors(db, alice, bob, box):
    async def pending(user_id: int, name: str, age: timedelta) -> int:
        return await factors.add_pending_totp(
            db, user_id, name, box.seal(SECRET, user_id), NOW - age
        )

    await pending(alice, "Old", PENDING_LIFETIME + timedelta(minutes=1))
    await pending(alice, "Exactly stale", PENDING_LIFETIME)
    young = await pending(alice, "Young", PENDING_LIFETIME - timedelta(microseconds=1))
    await pending(bob, "Bob's old", timedelta(days=2))
    confirmed_id, _ = await confirmed_factor(
        db, box, alice, name="Confirmed", created_at=NOW - timedelta(hours=1)
    )
    kept = [r for r in await totp_rows(db) if r["id"] in (young, confirmed_id)]

    assert await factors.purge_pending_totp(db, NOW) == 3

    assert await totp_rows(db) == kept
    assert [r["name"] for r in kept] == ["Young", "Confirmed"]
    assert await factors.purge_pending_totp(db, NOW) == 0
    assert await totp_rows(db) == kept
    # A microsecond later the young one is stale too; the confirmed one never is.
    assert await factors.purge_pending_totp(db, NOW + timedelta(microseconds=1)) == 1
    assert [r["id"] for r in await totp_rows(db)] == [confirmed_id]
    assert await factors.purge_pending_totp(db, NOW + timedelta(days=365)) == 0


async def test_reset_removes_every_factor_and_code_of_one_user_only(db, alice, bob, box, hasher):
    await confirmed_factor(db, box, alice, name="Phone")
    await confirmed_factor(db, box, alice, name="Tablet")
    await factors.add_pending_totp(db, alice, "Pending", box.seal(SECRET, alice), NOW)
    await factors.replace_recovery_codes(db, alice, [hasher.hash(c) for c in new_codes()], NOW)
    await confirmed_factor(db, box, bob, name="Bob's phone")
    await factors.replace_recovery_codes(db, bob, [hasher.hash(c) for c in new_codes()], NOW)
    bobs_factors = [r for r in await totp_rows(db) if r["user_id"] == bob]
    bobs_codes = [r for r in await code_rows(db) if r["user_id"] == bob]
    assert len(bobs_factors) == 1 and len(bobs_codes) == 10

    await factors.reset(db, alice)

    assert await totp_rows(db) == bobs_factors
    assert await code_rows(db) == bobs_codes
    assert await factors.totp_factors(db, alice) == []
    assert await factors.recovery_codes_left(db, alice) == 0
    assert await factors.recovery_codes_left(db, bob) == 10
    await factors.reset(db, alice)  # nothing left: still fine
    assert await totp_rows(db) == bobs_factors
    assert await code_rows(db) == bobs_codes


async def test_deleting_a_user_deletes_their_factors_and_codes(db, alice, bob, box, hasher):
    await confirmed_factor(db, box, alice)
    await factors.add_pending_totp(db, alice, "Pending", box.seal(SECRET, alice), NOW)
    await factors.replace_recovery_codes(db, alice, [hasher.hash(c) for c in new_codes()], NOW)
    await confirmed_factor(db, box, bob, name="Bob's phone")
    await factors.replace_recovery_codes(db, bob, [hasher.hash(c) for c in new_codes()], NOW)
    bobs_factors = [r for r in await totp_rows(db) if r["user_id"] == bob]
    bobs_codes = [r for r in await code_rows(db) if r["user_id"] == bob]

    await users.delete_user(db, "alice")

    assert await db.fetchval("SELECT count(*) FROM users WHERE id = $1", alice) == 0
    assert await totp_rows(db) == bobs_factors
    assert await code_rows(db) == bobs_codes
    assert len(bobs_factors) == 1 and len(bobs_codes) == 10


async def wait_until_blocked(db: asyncpg.Connection, conn: asyncpg.Connection, task) -> None:
    """Return once `conn`'s backend waits on a lock (polling the server, not the clock)."""
    pid = conn.get_server_pid()
    query = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1"
    async with asyncio.timeout(30):
        while await db.fetchval(query, pid) != "Lock":
            assert not task.done(), "the second replacement did not wait for the first"


async def test_two_replacements_at_once_leave_only_the_last_set(db, db_url, alice, hasher):
    old, first_set, second_set = new_codes(), new_codes(), new_codes()
    await factors.replace_recovery_codes(db, alice, [hasher.hash(c) for c in old], NOW)
    at = NOW + timedelta(days=1)
    first = await asyncpg.connect(db_url)
    second = await asyncpg.connect(db_url)
    try:
        # Two tabs press "new recovery codes": the first is mid-transaction
        # when the second starts.
        tx = first.transaction()
        await tx.start()
        await factors.replace_recovery_codes(first, alice, [hasher.hash(c) for c in first_set], at)
        task = asyncio.create_task(
            factors.replace_recovery_codes(second, alice, [hasher.hash(c) for c in second_set], at)
        )
        await wait_until_blocked(db, second, task)
        await tx.commit()
        await task
    finally:
        await first.close()
        await second.close()

    rows = await code_rows(db)
    assert sorted(r["code_hash"] for r in rows) == sorted(hasher.hash(c) for c in second_set)
    assert await factors.recovery_codes_left(db, alice) == 10
    for code in old + first_set:
        assert await factors.consume_recovery_code(db, alice, hasher.hash(code), at) is False
