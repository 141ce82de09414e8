"""Where templates/, sql/ and data/ live: inside the installed wheel, or the checkout."""

from __future__ import annotations

import functools
from pathlib import Path
from urllib.parse import quote

from .config import Config
from .policy.passwords import PasswordRules, common_passwords

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The wheel maps templates/, sql/ and data/ into the package; a checkout has them beside it."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"gateway resource directory {name!r} is missing from the install")


@functools.cache
def favicon_uri() -> str:
    """The brand mark as a data: URI: pages link it inline (the CSP allows data:
    images), so no page costs the browser a /favicon.ico request to the app."""
    svg = (resource_dir("templates") / "static" / "favicon.svg").read_text("utf-8")
    return "data:image/svg+xml," + quote(" ".join(svg.split()), safe=" /:=.,-")


def common_passwords_file() -> Path:
    """The shipped list of common passwords (data/SOURCES.md says where it is from)."""
    return resource_dir("data") / "common-passwords.txt.gz"


def password_rules(config: Config) -> PasswordRules:
    """[password]'s rules, with the shipped common-password list."""
    return PasswordRules(config.password.min_length, common_passwords(common_passwords_file()))
