"""The page's star controls against WCAG 2.x non-text contrast (1.4.11: 3:1 against
what is next to them), in the light and the dark scheme, read from the page's CSS."""

from __future__ import annotations

import re
from importlib import resources

import pytest


def _luminance(colour: str) -> float:
    hexes = colour.lstrip("#")
    if len(hexes) == 3:
        hexes = "".join(c * 2 for c in hexes)
    channels = [int(hexes[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_the_contrast_formula_gives_wcags_known_values() -> None:
    assert contrast("#000", "#fff") == pytest.approx(21.0)
    assert contrast("#777", "#fff") == pytest.approx(4.48, abs=0.01)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_star_stands_out_from_the_panel(scheme: str) -> None:
    page = resources.files("metarec.service").joinpath("static/index.html").read_text()
    roots = re.findall(r":root\s*\{([^}]*)\}", page)
    assert len(roots) == 2, "expected a light :root and a dark one"
    colours = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{3,6})", roots[scheme == "dark"]))
    for star in ("star", "star-off"):
        # the unlit star, the only control on an unrated row, was 1.7:1 against white
        assert contrast(colours[star], colours["panel"]) >= 3.0, (scheme, star, colours[star])
