"""Entity extraction: cashtags, given tickers, watchlist aliases with careful word boundaries."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.entities import Company, Watchlist, default_watchlist, extract_entities

WL = default_watchlist()


@pytest.mark.parametrize(
    ("text", "tickers", "want"),
    [
        # Names and aliases, case-insensitive, on word boundaries.
        ("Apple's iPhone sales beat estimates", [], ["AAPL"]),
        ("Apple’s iPhone sales beat estimates", [], ["AAPL"]),
        ("APPLE SHARES FALL", [], ["AAPL"]),
        ("apple stock is tanking", [], ["AAPL"]),
        ("Applebee's sales slump", [], []),
        ("Pineapple prices rise", [], []),
        ("the iPhone maker said", [], ["AAPL"]),
        ("Goldman Sachs and JP Morgan raise targets", [], ["GS", "JPM"]),
        ("J.P. Morgan's desk", [], ["JPM"]),
        ("JPMorgan Chase & Co reports", [], ["JPM"]),
        ("Bank of America Merrill Lynch cuts", [], ["BAC"]),
        ("Exxon Mobil and Chevron drop as oil falls", [], ["XOM", "CVX"]),
        ("Coca-Cola and Johnson & Johnson", [], ["KO", "JNJ"]),
        ("Amazon.com outage; Amazon Web Services", [], ["AMZN"]),
        ("Alphabet, the parent of Google", [], ["GOOGL"]),
        # Mixed scripts: a CJK neighbour is a boundary, a Latin letter is not.
        ("Tesla股价大跌 📉", [], ["TSLA"]),
        ("特斯拉 Tesla 和 Nvidia", [], ["TSLA", "NVDA"]),
        ("Teslaé", [], []),
        # Short or all-caps aliases and bare tickers count only as written.
        ("MS upgrades GE", [], ["MS", "GE"]),
        ("ms word and c programming; ge", [], []),
        ("FB shares up", [], ["META"]),
        ("fb shares up", [], []),
        ("HSBC and UBS", [], ["HSBC", "UBS"]),
        ("hsbc and ubs", [], []),  # an all-caps name is an acronym: as written only
        ("AWS outage", [], ["AMZN"]),
        ("C and V are letters", [], []),  # one-letter tickers only as cashtags
        # Common words listed as exact aliases.
        ("a meta-analysis of shell companies on a visa", [], []),
        ("Meta and Shell and Visa", [], ["META", "SHEL", "V"]),
        ("META FALLS; SHELL OIL", [], ["META", "SHEL"]),
        ("Meta Platforms Inc", [], ["META"]),
        # Cashtags.
        ("$TSLA and $brk.b rally; a $5bn deal and $3.2 bonus", [], ["TSLA", "BRK.B"]),
        ("US$5 and $ 10 and $$ and $AAPL123", [], []),
        ("$TSLA. Then $NVDA's $AMD,", [], ["TSLA", "NVDA", "AMD"]),
        ("$GOOG and $goog", [], ["GOOGL"]),  # ticker-shaped alias -> canonical ticker
        ("$C $V", [], ["C", "V"]),
        ("$XYZ is not on the watchlist", [], ["XYZ"]),
        ("$TOOLONGX", [], []),
        # Given tickers: first, canonical, de-duplicated; junk ignored.
        ("no companies here", ["aapl", "$msft"], ["AAPL", "MSFT"]),
        ("Tesla says Tesla cars", ["TSLA"], ["TSLA"]),
        ("Nvidia then Apple", ["goog", "bad ticker!", "", "$"], ["GOOGL", "NVDA", "AAPL"]),
        ("", [], []),
    ],
)
def test_extract(text: str, tickers: list[str], want: list[str]) -> None:
    assert extract_entities(text, tickers, WL) == want


def test_order_is_first_appearance_and_output_bounded() -> None:
    assert extract_entities("Nvidia, then $AAPL, then Nvidia again, then Tesla", [], WL) == ["NVDA", "AAPL", "TSLA"]
    text = " ".join(f"${chr(65 + i % 26)}{chr(65 + i // 26)}X" for i in range(100))
    assert len(extract_entities(text, [], WL, max_entities=20)) == 20
    assert extract_entities(text, [f"T{i}" for i in range(30)], WL, max_entities=5) == [f"T{i}" for i in range(5)]
    assert extract_entities("Apple", ["MSFT"], WL, max_entities=0) == []


def test_default_watchlist() -> None:
    assert len(WL.companies) >= 40
    for t in ("AAPL", "MSFT", "TSLA", "JPM", "GS", "HSBC", "UBS", "DB", "CS", "BLK", "COIN", "BRK.B"):
        assert WL.contains(t)
    assert not WL.contains("XYZ") and not WL.contains("aapl")
    assert WL.name_of("TSLA") == "Tesla" and WL.name_of("XYZ") == "XYZ"
    assert WL.canonical("$goog") == "GOOGL" and WL.canonical("xyz") == "XYZ" and WL.canonical("no way") is None
    assert default_watchlist() is WL  # compiled once per process


def test_prefix_aliases_longest_wins_and_boundaries() -> None:
    wl = Watchlist([Company("ACME", "Acme", ("Acme Corp", "Acme Corporation", "Acme Bank")),
                    Company("ACMB", "Acmeb", ())])  # fmt: skip
    assert wl.find("Acme Corporation, Acme Corp., Acme Bank; Acmeb; Acmex") == [
        (0, "ACME"), (18, "ACME"), (30, "ACME"), (41, "ACMB")]  # fmt: skip
    assert extract_entities("acme corporate", [], wl) == ["ACME"]  # "Acme" then a word boundary


def test_alias_with_regex_characters_is_literal() -> None:
    wl = Watchlist([Company("WEIRD", "A+B (Holdings)", ("x.y*z",))])
    assert extract_entities("A+B (Holdings) and x.y*z", [], wl) == ["WEIRD"]
    assert extract_entities("AAB (Holdings) and xxy*z", [], wl) == []


def test_empty_watchlist_still_finds_cashtags() -> None:
    wl = Watchlist([])
    assert extract_entities("$AAPL and Apple", ["msft"], wl) == ["MSFT", "AAPL"]
    assert not wl.contains("AAPL")


def test_watchlist_files(tmp_path: Path) -> None:
    t = tmp_path / "w.toml"
    t.write_text('[[companies]]\nticker = "acme"\nname = "Acme Corp"\naliases = ["Acme"]\nexact = ["Road"]\n')
    wl = Watchlist.from_file(t)
    assert wl.contains("ACME") and extract_entities("Acme shares fall on the Road, not the road", [], wl) == ["ACME"]
    j = tmp_path / "w.json"
    j.write_text('{"companies": [{"ticker": "$zz", "aliases": ["Zedco"]}]}')
    wl = Watchlist.from_file(j)
    assert wl.contains("ZZ") and wl.name_of("ZZ") == "ZZ" and extract_entities("ZEDCO zedco", [], wl) == ["ZZ"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.json", None, "does not exist"),
        ("bad.json", "{not json", "cannot be read"),
        ("bad.toml", "[[companies]\n", "cannot be read"),
        ("list.json", "[1, 2]", "must hold an object"),
        ("nocompanies.json", '{"firms": []}', "'companies' list"),
        ("noticker.json", '{"companies": [{"name": "no ticker"}]}', "ticker"),
        ("badticker.json", '{"companies": [{"ticker": "not a ticker"}]}', "ticker"),
        ("row.json", '{"companies": ["AAPL"]}', "must be an object"),
        ("aliases.json", '{"companies": [{"ticker": "A", "aliases": "Apple"}]}', "'aliases' must be a list"),
        ("exact.json", '{"companies": [{"ticker": "A", "exact": [1]}]}', "'exact' must be a list"),
        ("name.json", '{"companies": [{"ticker": "A", "name": 5}]}', "'name' must be a string"),
        ("dup.json", '{"companies": [{"ticker": "A"}, {"ticker": "a"}]}', "twice"),
        (
            "clash.json",
            '{"companies": [{"ticker": "AA", "aliases": ["Foo"]}, {"ticker": "BB", "aliases": ["foo"]}]}',
            "names both",
        ),  # fmt: skip
    ],
)
def test_bad_watchlist_files_give_one_line_errors(tmp_path: Path, name: str, content: str | None, message: str) -> None:
    p = tmp_path / name
    if content is not None:
        p.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        Watchlist.from_file(p)
    assert "\n" not in str(err.value) and str(p) in str(err.value)
