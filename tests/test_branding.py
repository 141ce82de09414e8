"""policy.branding: any accent colour becomes stylesheet variables that stay readable.

The pages' CSP keeps the colour out of the page, so it is a stylesheet; axe-core
checks one colour in Chromium (tests/test_browser_account.py). Here every colour
is held to the same bar, as plain functions: the accent as text on the card and
on the tinted tab background, and the button text on the accent, at WCAG AA
(4.5:1), in light and dark.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.branding import (
    AA,
    DARK_SURFACES,
    LIGHT_SURFACES,
    accent_stylesheet,
    contrast,
    mix,
)

_VARIABLE = re.compile(r"--([a-z-]+): (#[0-9a-f]{6});")


def variables(css: str) -> tuple[dict[str, str], dict[str, str]]:
    """(light, dark) --name: #rrggbb pairs of the generated stylesheet."""
    light, _, dark = css.partition("@media (prefers-color-scheme: dark)")
    return dict(_VARIABLE.findall(light)), dict(_VARIABLE.findall(dark))


def assert_readable(values: dict[str, str], surfaces: tuple[str, ...]) -> None:
    brand = values["brand"]
    for surface in surfaces:
        assert contrast(brand, surface) >= AA, (brand, surface)
    for state in ("brand", "brand-hover", "brand-active"):
        assert contrast(values["brand-contrast"], values[state]) >= AA - 0.01, (state, values)


@pytest.mark.parametrize(
    ("a", "b", "ratio"),
    [("#000000", "#ffffff", 21.0), ("#ffffff", "#ffffff", 1.0), ("#777777", "#ffffff", 4.48)],
)
def test_contrast_is_wcags(a, b, ratio):
    assert contrast(a, b) == pytest.approx(ratio, abs=0.01)
    assert contrast(b, a) == contrast(a, b)


def test_mix_moves_part_of_the_way():
    assert mix("#000000", "#ffffff", 0.5) == "#808080"
    assert mix("#0b7285", "#000000", 0) == "#0b7285"


def test_a_readable_accent_is_used_as_given_in_light():
    light, dark = variables(accent_stylesheet("#0b7285"))
    assert light["brand"] == "#0b7285"
    assert light["brand-contrast"] == "#ffffff"
    # Too dark to read on the dark card: lightened, and buttons take dark text.
    assert dark["brand"] != "#0b7285"
    assert dark["brand-contrast"] == "#0d1117"


@pytest.mark.parametrize(
    "accent", ["#ffff00", "#ffffff", "#000000", "#ff0000", "#00ff00", "#3b4fd8", "#777777"]
)
def test_hard_accents_are_pushed_until_they_read(accent):
    light, dark = variables(accent_stylesheet(accent))
    assert_readable(light, LIGHT_SURFACES)
    assert_readable(dark, DARK_SURFACES)


@given(st.from_regex(r"#[0-9a-f]{6}", fullmatch=True))
def test_every_accent_reads_in_light_and_dark(accent):
    light, dark = variables(accent_stylesheet(accent))
    assert_readable(light, LIGHT_SURFACES)
    assert_readable(dark, DARK_SURFACES)
