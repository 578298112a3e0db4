"""Company and ticker mentions: cashtags, given tickers, watchlist aliases.

Runs on every message, so a watchlist compiles to one regular expression.
Output is canonical uppercase tickers: entity keys and Prometheus label
values stay bounded to what the watchlist and cashtags name.
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

DEFAULT_WATCHLIST = Path(__file__).parent / "data" / "watchlist.json"
# $AAPL, $BRK.B — letters only so "$5" or "$3.2bn" are amounts, not tickers.
_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,6}(?:\.[A-Za-z]{1,2})?)\b")
# Aliases this short are only trusted in capitals ("GE", "MS"), never "ge"/"ms".
_SHORT_ALIAS = 3


@dataclass(frozen=True)
class Company:
    ticker: str
    name: str
    aliases: tuple[str, ...]


class Watchlist:
    def __init__(self, companies: Iterable[Company]) -> None:
        self.companies = tuple(companies)
        self._tickers = {c.ticker for c in self.companies}
        alias_map: dict[str, str] = {}
        strict: dict[str, str] = {}
        for c in self.companies:
            # The bare ticker in capitals ("MS upgrades GE") counts; one letter ("C", "V") is too ambiguous.
            bare = {c.ticker} if len(c.ticker) >= 2 and c.ticker.isalpha() else set()
            for alias in {c.name, *c.aliases}:
                a = alias.strip()
                if not a:
                    continue
                if len(a) <= _SHORT_ALIAS:
                    strict[a] = c.ticker
                else:
                    alias_map[a.lower()] = c.ticker
            for a in bare:
                strict.setdefault(a, c.ticker)
        self._alias = alias_map
        self._strict = strict
        parts = sorted(alias_map, key=len, reverse=True)
        # Word boundary on both sides; a possessive "'s" is allowed, "Applebee's" is not "Apple".
        self._ci = (
            re.compile(r"(?<![\w])(" + "|".join(re.escape(p) for p in parts) + r")(?![\w])", re.I) if parts else None
        )
        sparts = sorted(strict, key=len, reverse=True)
        self._cs = re.compile(r"(?<![\w])(" + "|".join(re.escape(p) for p in sparts) + r")(?![\w])") if sparts else None

    def contains(self, ticker: str) -> bool:
        return ticker in self._tickers

    def name_of(self, ticker: str) -> str:
        for c in self.companies:
            if c.ticker == ticker:
                return c.name
        return ticker

    def find(self, text: str) -> list[tuple[int, str]]:
        found: list[tuple[int, str]] = []
        if self._ci is not None:
            found += [(m.start(), self._alias[m.group(1).lower()]) for m in self._ci.finditer(text)]
        if self._cs is not None:
            found += [(m.start(), self._strict[m.group(1)]) for m in self._cs.finditer(text)]
        return found

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Watchlist:
        rows = data.get("companies")
        if not isinstance(rows, list):
            raise ValueError("watchlist needs a 'companies' list")
        companies = []
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping) or not isinstance(row.get("ticker"), str):
                raise ValueError(f"watchlist company #{i + 1} needs a string 'ticker'")
            aliases = row.get("aliases", [])
            if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
                raise ValueError(f"watchlist company {row['ticker']}: 'aliases' must be a list of strings")
            ticker = row["ticker"].strip().lstrip("$").upper()
            companies.append(Company(ticker, str(row.get("name") or ticker), tuple(aliases)))
        return cls(companies)

    @classmethod
    def from_file(cls, path: str | Path) -> Watchlist:
        p = Path(path)
        try:
            raw = p.read_bytes()
            data = tomllib.loads(raw.decode()) if p.suffix == ".toml" else json.loads(raw)
        except FileNotFoundError:
            raise ValueError(f"watchlist {p} does not exist") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"watchlist {p} cannot be read: {exc}") from None
        if not isinstance(data, Mapping):
            raise ValueError(f"watchlist {p} must hold an object with 'companies'")
        return cls.from_mapping(data)


@cache
def default_watchlist() -> Watchlist:
    return Watchlist.from_file(DEFAULT_WATCHLIST)


def extract_entities(text: str, tickers: Iterable[str], watchlist: Watchlist, max_entities: int = 20) -> list[str]:
    """Canonical tickers named by the item: given tickers first, then mentions in text order."""
    out: list[str] = []
    for t in tickers:
        sym = str(t).strip().lstrip("$").upper()
        if sym and sym not in out:
            out.append(sym)
    hits = [(m.start(), m.group(1).upper()) for m in _CASHTAG.finditer(text)]
    hits += watchlist.find(text)
    for _, sym in sorted(hits):
        if sym not in out:
            out.append(sym)
    return out[:max_entities]
