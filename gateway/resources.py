"""Where templates/ and sql/ live: inside the installed wheel, or the checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The wheel maps templates/ and sql/ into the package; a checkout keeps them beside it."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"gateway resource directory {name!r} is missing from the install")
