"""Company and ticker mentions: cashtags, given tickers, watchlist aliases.

This runs on every message, so a watchlist compiles once into a single
regular expression (aliases folded into a character trie, so the engine
never tries alias after alias at a position) and a text is scanned once.
Output is canonical uppercase tickers; the worker bounds Prometheus label
values with `Watchlist.contains`.

Watchlist format (JSON, or TOML with `[[companies]]` tables)::

    {"companies": [
        {"ticker": "AAPL", "name": "Apple", "aliases": ["Apple Inc", "iPhone maker"]},
        {"ticker": "META", "name": "Meta Platforms", "aliases": ["Facebook", "FB"], "exact": ["Meta"]}
    ]}

Matching rules:

* `name` and `aliases` match case-insensitively on word boundaries:
  "Apple's" names Apple, "Applebee's" does not. A boundary is any
  character that is not a Latin letter, digit or `_`, so "Tesla股价" in
  mixed-language text still names Tesla.
* An alias written all in capitals ("GE", "MS", "HSBC", "FB"), any alias of
  three characters or fewer, and any alias listed in `exact` (common words
  such as "Meta", "Shell", "Visa") match only as written (or in full
  capitals): "ms word" or "meta-analysis" name nobody.
* The bare ticker in capitals counts ("MS upgrades GE"), except one-letter
  tickers ("C", "V"), which count only as cashtags or given tickers.
* Cashtags: `$` then 1-6 letters, optionally `.` and 1-2 letters (`$AAPL`,
  `$brk.b`); `$5`, `$3.2bn` and `US$` are amounts, not tickers. Cashtags and
  given tickers written as a listed ticker-shaped alias map to the company's
  ticker (`$GOOG` -> `GOOGL` when "GOOG" is an alias); others pass through
  in capitals (`$XYZ` -> `XYZ`).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from monitor.validate import TICKER_RE

__all__ = ["DEFAULT_WATCHLIST", "TICKER_RE", "Company", "Watchlist", "default_watchlist", "extract_entities"]

DEFAULT_WATCHLIST = Path(__file__).parent / "data" / "watchlist.json"
# Aliases this short are only trusted as written ("GE", "MS"), never "ge"/"ms".
_SHORT_ALIAS = 3
# Characters that continue a word: a match must not have one on either side.
_WORD = r"0-9A-Za-z_\u00c0-\u024f"
_CASHTAG = r"\$(?P<cash>[A-Za-z]{1,6}(?:\.[A-Za-z]{1,2})?)"


@dataclass(frozen=True)
class Company:
    """One watchlist entry; `exact` aliases match case-sensitively (see module doc)."""

    ticker: str
    name: str
    aliases: tuple[str, ...] = ()
    exact: tuple[str, ...] = ()


def _trie_regex(words: Iterable[str]) -> str:
    """One regex alternation for many words, factored by common prefix ("Apple(?: Inc)?").

    At each trie node the branches start with different characters, so the
    engine rejects a position after one character test instead of one per
    alias. Greedy `?` makes the longest alias win.
    """
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:
            return f"(?:{body})?"
        return body

    return build(trie)


def _is_acronym(alias: str) -> bool:
    return alias.upper() == alias and any(c.isalpha() for c in alias)


def _symbol(raw: str) -> str | None:
    sym = raw.strip().lstrip("$").upper()
    return sym if TICKER_RE.fullmatch(sym) else None


class Watchlist:
    """Companies to recognise; compiled once, then `find`/`extract_entities` per message."""

    def __init__(self, companies: Iterable[Company]) -> None:
        self.companies: tuple[Company, ...] = tuple(companies)
        self._by_ticker: dict[str, Company] = {}
        folded: dict[str, str] = {}  # lower-cased alias -> ticker (case-insensitive matches)
        strict: dict[str, str] = {}  # alias as written -> ticker (case-sensitive matches)
        self._symbols: dict[str, str] = {}  # ticker-shaped alias -> ticker (cashtags, given tickers)
        for c in self.companies:
            if c.ticker in self._by_ticker:
                raise ValueError(f"watchlist lists ticker {c.ticker} twice")
            self._by_ticker[c.ticker] = c
            # The bare ticker in capitals; one letter ("C", "V") is too ambiguous in text.
            if len(c.ticker) >= 2 and re.fullmatch(r"[A-Z]+(?:\.[A-Z]+)?", c.ticker):
                strict[c.ticker] = c.ticker
        for c in self.companies:
            exact = {a.strip() for a in c.exact if a.strip()}
            for alias in {c.name, *c.aliases, *exact}:
                a = alias.strip()
                if not a:
                    continue
                if a in exact or len(a) <= _SHORT_ALIAS or _is_acronym(a):
                    for form in {a, a.upper()}:
                        self._claim(strict, form, c.ticker, alias)
                    sym = _symbol(a)
                    if sym and _is_acronym(a) and sym not in self._by_ticker:
                        self._symbols.setdefault(sym, c.ticker)
                else:
                    self._claim(folded, a.lower(), c.ticker, alias)
        self._folded = folded
        self._strict = strict
        parts = [_CASHTAG]
        if folded:
            parts.append(f"(?i:(?P<ci>{_trie_regex(folded)}))")
        if strict:
            parts.append(f"(?P<cs>{_trie_regex(strict)})")
        self._pattern = re.compile(rf"(?<![{_WORD}$])(?:{'|'.join(parts)})(?![{_WORD}])")

    @staticmethod
    def _claim(table: dict[str, str], key: str, ticker: str, alias: str) -> None:
        owner = table.setdefault(key, ticker)
        if owner != ticker:
            raise ValueError(f"watchlist alias {alias!r} names both {owner} and {ticker}")

    def contains(self, ticker: str) -> bool:
        """Is this a watchlist company? (the worker gives only these their own metric labels)"""
        return ticker in self._by_ticker

    def name_of(self, ticker: str) -> str:
        c = self._by_ticker.get(ticker)
        return c.name if c else ticker

    def canonical(self, symbol: str) -> str | None:
        """A given ticker or cashtag as the watchlist's ticker ("$goog" -> "GOOGL"); None if not a symbol."""
        sym = _symbol(symbol)
        if sym is None:
            return None
        return self._symbols.get(sym, sym)

    def find(self, text: str) -> list[tuple[int, str]]:
        """(position, canonical ticker) of every cashtag and company mention, in text order."""
        found: list[tuple[int, str]] = []
        for m in self._pattern.finditer(text):
            kind = m.lastgroup
            if kind == "cash":
                ticker = self.canonical(m.group("cash"))
            elif kind == "ci":
                ticker = self._folded.get(m.group("ci").lower())
            else:
                ticker = self._strict.get(m.group("cs"))
            if ticker:
                found.append((m.start(), ticker))
        return found

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Watchlist:
        rows = data.get("companies")
        if not isinstance(rows, list):
            raise ValueError("watchlist needs a 'companies' list")
        companies = []
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise ValueError(f"watchlist company #{i + 1} must be an object")
            ticker = _symbol(row["ticker"]) if isinstance(row.get("ticker"), str) else None
            if ticker is None:
                raise ValueError(f"watchlist company #{i + 1} needs a 'ticker' symbol such as AAPL or BRK.B")
            name = row.get("name", ticker)
            if not isinstance(name, str):
                raise ValueError(f"watchlist company {ticker}: 'name' must be a string")
            lists = {}
            for f in ("aliases", "exact"):
                v = row.get(f, [])
                if not isinstance(v, list) or not all(isinstance(a, str) for a in v):
                    raise ValueError(f"watchlist company {ticker}: '{f}' must be a list of strings")
                lists[f] = tuple(v)
            companies.append(Company(ticker, name.strip() or ticker, lists["aliases"], lists["exact"]))
        return cls(companies)

    @classmethod
    def from_file(cls, path: str | Path) -> Watchlist:
        """Load JSON, or TOML when the name ends in .toml; any problem is one-line ValueError."""
        p = Path(path)
        try:
            raw = p.read_bytes()
            data = tomllib.loads(raw.decode("utf-8")) if p.suffix.lower() == ".toml" else json.loads(raw)
        except FileNotFoundError:
            raise ValueError(f"watchlist {p} does not exist") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"watchlist {p} cannot be read: {detail}") from None
        if not isinstance(data, Mapping):
            raise ValueError(f"watchlist {p} must hold an object with a 'companies' list")
        try:
            return cls.from_mapping(data)
        except ValueError as exc:
            raise ValueError(f"watchlist {p}: {exc}") from None


@cache
def default_watchlist() -> Watchlist:
    """The shipped watchlist (monitor/data/watchlist.json), compiled once per process."""
    return Watchlist.from_file(DEFAULT_WATCHLIST)


def extract_entities(text: str, tickers: Iterable[str], watchlist: Watchlist, max_entities: int = 20) -> list[str]:
    """Canonical uppercase tickers an item names, unique, at most `max_entities`.

    Order is stable: the item's given tickers first (the producer said so),
    then mentions in order of first appearance in the text. Given tickers
    that are not symbols are ignored.
    """
    out: dict[str, None] = {}
    for t in tickers:
        sym = watchlist.canonical(t) if isinstance(t, str) else None
        if sym:
            out.setdefault(sym)
    for _, sym in watchlist.find(text):
        if len(out) >= max_entities:
            break
        out.setdefault(sym)
    return list(out)[: max(0, max_entities)]
