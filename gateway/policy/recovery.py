"""Recovery codes: what a person keeps on paper for the day the phone is lost.

Pure module. Ten codes of 60 random bits each, written in groups of four
from an alphabet without look-alikes (no 0/O, 1/I/L, U), so a code read off
paper is typed right. Only a keyed hash is stored (HMAC-SHA-256 under a key
derived from the gateway's secret key): 60 bits would resist a plain
offline search only so long; keyed, a leaked table alone cannot be searched.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

COUNT = 10
# Crockford's base32 without U: 32 symbols, 5 bits each; 12 symbols = 60 bits.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
SYMBOLS = 12
GROUP = 4
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})


def new_codes(count: int = COUNT) -> list[str]:
    """Fresh codes as shown to the person: 'ABCD-EFGH-JKMN'."""
    codes = ("".join(secrets.choice(ALPHABET) for _ in range(SYMBOLS)) for _ in range(count))
    return [_format(code) for code in codes]


def _format(symbols: str) -> str:
    return "-".join(symbols[i : i + GROUP] for i in range(0, len(symbols), GROUP))


def normalize(typed: str) -> str | None:
    """A typed code as its 12 symbols (case, spaces, dashes and look-alikes forgiven),
    or None when it cannot be one."""
    symbols = "".join(typed.split()).replace("-", "").upper().translate(_READ_AS)
    if len(symbols) != SYMBOLS or any(c not in ALPHABET for c in symbols):
        return None
    return symbols


class CodeHasher:
    def __init__(self, gateway_secret: bytes) -> None:
        self._key = hashlib.sha256(b"gateway-recovery\x00" + gateway_secret).digest()

    def hash(self, typed: str) -> bytes | None:
        """The stored form of a code, or None when `typed` cannot be a code."""
        symbols = normalize(typed)
        if symbols is None:
            return None
        return hmac.new(self._key, symbols.encode("ascii"), hashlib.sha256).digest()
