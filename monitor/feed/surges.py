"""A known negative surge to inject into a replayed stream, made of real negative rows.

For a company surge these are real negative headlines about one company:
rows that already name it, as they are, and rows whose `entity` column
names the company a headline is about, with the surge company put in its
place. A headline is never prefixed with a company it does not talk about:
the evidence an alert shows must read like news about that company.
Market-wide and one-topic surges use negative rows as they are.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.core.entities import Watchlist

from monitor.feed.rows import Row, SurgeKind

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- surge


@dataclass(frozen=True)
class Surge:
    """A negative surge to inject: what it is about, when, and how strong.

    kind "entity": negative rows about one company, put in the surge company's
    name where they name another (key = ticker; see `rewrite_for`);
    "all": negative rows as they are (a market-wide surge, key ignored);
    "topic": negative rows whose topic column equals `key`, as they are.
    """

    kind: SurgeKind = "entity"
    key: str = ""
    name: str = ""
    start_s: float = 30.0
    duration_s: float = 60.0
    share: float = 0.8

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError("surge share must be in (0, 1]")
        if self.start_s < 0 or self.duration_s <= 0:
            raise ValueError("surge start must be >= 0 and duration > 0")
        if self.kind in ("entity", "topic") and not self.key:
            raise ValueError(f"a {self.kind} surge needs a key")

    @classmethod
    def entity(cls, ticker: str, name: str | None = None, **kw: Any) -> Surge:
        t = ticker.strip().lstrip("$").upper()
        return cls("entity", t, name or t, **kw)

    def active(self, elapsed_s: float) -> bool:
        return self.start_s <= elapsed_s < self.start_s + self.duration_s

    def label(self) -> str:
        return {"entity": f"entity {self.key}", "topic": f"topic {self.key}", "all": "all"}[self.kind]


def surge_items(rows: Sequence[Row], surge: Surge) -> list[tuple[Row, str, list[str]]]:
    """(row, text, tickers) of every negative row the surge can inject, texts rewritten once."""
    neg = [r for r in rows if r.negative]
    if surge.kind == "topic":
        want = surge.key.strip().lower()
        neg = [r for r in neg if (r.topic or "").strip().lower() == want]
    items: list[tuple[Row, str, list[str]]] = []
    for r in neg:
        rewritten = rewrite_for(r, surge)
        if rewritten is not None:
            items.append((r, *rewritten))
    return items


def surge_pool(rows: Sequence[Row], surge: Surge) -> list[Row]:
    """The negative rows a surge draws from (for a company surge: the rows `rewrite_for` accepts)."""
    return [r for r, _, _ in surge_items(rows, surge)]


def company_name(ticker: str) -> str:
    """The watchlist name of a ticker ("TSLA" -> "Tesla"); the ticker itself when unknown."""
    t = ticker.strip().lstrip("$").upper()
    watchlist = _watchlist()
    return watchlist.name_of(t) if watchlist is not None else t


def surge_key(symbol: str) -> str | None:
    """A ticker, cashtag or stock code as the worker's entity key ("$tsla" -> "TSLA", "sh600519" ->
    "600519.SH", "1211.HK" -> "002594.SZ"); None when it is not a symbol."""
    watchlist = _watchlist()
    if watchlist is not None:
        return watchlist.canonical(symbol)
    t = symbol.strip().lstrip("$").upper()
    return t if re.fullmatch(r"[A-Z]{1,6}(\.[A-Z]{1,2})?", t) else None


def _watchlist() -> Watchlist | None:
    """The shipped watchlist, or None when it cannot be loaded (then only cashtags name companies)."""
    try:
        from monitor.core.entities import default_watchlist

        return default_watchlist()
    except (ImportError, AttributeError, ValueError, OSError):
        return None


_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,6}(?:\.[A-Za-z]{1,2})?)\b")


def named_companies(text: str, tickers: Iterable[str] = ()) -> set[str]:
    """Tickers a text names (cashtags, watchlist names, given tickers), as the worker would find them."""
    watchlist = _watchlist()
    if watchlist is not None:
        from monitor.core.entities import extract_entities

        return set(extract_entities(text, tickers, watchlist))
    return {t.upper() for t in tickers} | {m.group(1).upper() for m in _CASHTAG.finditer(text)}


def rewrite_for(row: Row, surge: Surge) -> tuple[str, list[str]] | None:
    """Text and tickers of an injected message, or None when the row cannot be about the surge company.

    A company surge takes a negative row (1) as it is when the surge company
    is the only company it names, or (2) with the surge company's name in
    place of the row's `entity` when the text names that entity and, once
    rewritten, no other company. Rows naming no company, or another company
    without an `entity` annotation, are not used: putting "Tesla:" in front
    of a headline about someone else would make the evidence an alert shows
    read as nonsense. Market-wide and topic surges keep the row as it is.
    """
    if surge.kind != "entity":
        return row.text, list(row.tickers)
    key = surge.key
    if named_companies(row.text, row.tickers) == {key}:
        return row.text, [key]
    entity = (row.entity or "").strip()
    if not entity:
        return None
    # A bare apostrophe after a name ending in s ("United Spirits' shares") is its possessive. Word
    # boundaries only where the name starts or ends with a Latin letter or digit: Chinese writes no spaces.
    before = r"(?<![\w$])" if entity[0].isascii() else ""
    after = r"(?!\w)" if entity[-1].isascii() else ""
    pattern = re.compile(rf"{before}{re.escape(entity)}(?P<poss>['\u2019](?![A-Za-z]))?{after}")
    if not pattern.search(row.text):
        return None
    name = surge.name or key
    if name.upper() == key:  # no company name known: the cashtag makes the text name it
        name = f"${key}"

    def put(m: re.Match[str]) -> str:
        poss = m.group("poss") or ""
        return name + (poss + "s" if poss and not name.endswith("s") else poss)

    text = pattern.sub(put, row.text)
    if not named_companies(text) <= {key}:
        return None
    return text, [key]
