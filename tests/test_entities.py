from __future__ import annotations

from pathlib import Path

import pytest

from monitor.entities import Watchlist, default_watchlist, extract_entities

WL = default_watchlist()


@pytest.mark.parametrize(
    ("text", "tickers", "want"),
    [
        ("Apple's iPhone sales beat estimates", [], ["AAPL"]),
        ("Applebee's sales slump", [], []),
        ("$TSLA and $brk.b rally; a $5bn deal and $3.2 bonus", [], ["TSLA", "BRK.B"]),
        ("Goldman Sachs and JP Morgan raise targets", [], ["GS", "JPM"]),
        ("MS upgrades stock", [], ["MS"]),
        ("ms word and c programming", [], []),
        ("no companies here", ["aapl", "$msft"], ["AAPL", "MSFT"]),
        ("Tesla says Tesla cars", ["TSLA"], ["TSLA"]),
        ("Exxon Mobil and Chevron drop as oil falls", [], ["XOM", "CVX"]),
    ],
)
def test_extract(text: str, tickers: list[str], want: list[str]) -> None:
    assert extract_entities(text, tickers, WL) == want


def test_bounded() -> None:
    text = " ".join(f"${chr(65 + i % 26)}{chr(65 + i // 26)}X" for i in range(100))
    assert len(extract_entities(text, [], WL, max_entities=20)) == 20


def test_watchlist_files(tmp_path: Path) -> None:
    t = tmp_path / "w.toml"
    t.write_text('[[companies]]\nticker = "acme"\nname = "Acme Corp"\naliases = ["Acme"]\n')
    wl = Watchlist.from_file(t)
    assert wl.contains("ACME") and extract_entities("Acme shares fall", [], wl) == ["ACME"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"companies": [{"name": "no ticker"}]}')
    with pytest.raises(ValueError, match="ticker"):
        Watchlist.from_file(bad)
    with pytest.raises(ValueError, match="does not exist"):
        Watchlist.from_file(tmp_path / "missing.json")
