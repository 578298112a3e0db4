from __future__ import annotations

import pytest

from monitor.normalize import normalize_text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Exxon &amp;amp; more", "Exxon & more"),
        ("Apple  beats\n\testimates", "Apple beats estimates"),
        ("see https://t.co/abc123 now", "see url now"),
        ("Sepp\u00c3\u00a4l\u00c3\u00a4 wins", "Seppälä wins"),
        ("bad\x00byte\x1b[31m", "badbyte[31m"),
        ("ｆｕｌｌｗｉｄｔｈ", "fullwidth"),
        ("股市大跌 📉", "股市大跌 📉"),
        ("  ", ""),
    ],
)
def test_normalize(raw: str, clean: str) -> None:
    assert normalize_text(raw) == clean


def test_idempotent() -> None:
    s = "Tesla &amp; $TSLA fall https://x.y/z  \u200b"
    once = normalize_text(s)
    assert normalize_text(once) == once
