"""Company and ticker mentions: cashtags, stock codes, given tickers, watchlist aliases.

This runs on every message, so a watchlist compiles once into a single
regular expression (aliases folded into a character trie, so the engine
never tries alias after alias at a position) and a text is scanned once.
Output is canonical uppercase keys (tickers such as `AAPL`, stock codes such
as `600519.SH` and `0700.HK`); the worker bounds Prometheus label values with
`Watchlist.contains`. docs/ENTITIES.md has the rules with examples.

Watchlist format (JSON, or TOML with `[[companies]]` tables)::

    {"companies": [
        {"ticker": "AAPL", "name": "Apple", "aliases": ["Apple Inc", "iPhone maker"]},
        {"ticker": "META", "name": "Meta Platforms", "aliases": ["Facebook", "FB"], "exact": ["Meta"]},
        {"ticker": "002594.SZ", "name": "比亚迪", "aliases": ["BYD", "1211.HK"]},
        {"ticker": "1810.HK", "name": "小米集团", "exact": ["小米"], "ignore": ["小米粥"]}
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
* A word of one or two letters right next to a CJK ideograph ("MA均线",
  "下调25个BP", "GE医疗") is an abbreviation in Chinese text, not a ticker;
  with a space or punctuation between ("MA 均线", "关注 GE，") or as a
  cashtag ("$MA均线") it counts as above.
* Cashtags: `$` then 1-6 letters, optionally `.` and 1-2 letters (`$AAPL`,
  `$brk.b`); `$5`, `$3.2bn` and `US$` are amounts, not tickers. Cashtags and
  given tickers written as a listed ticker-shaped alias map to the company's
  ticker (`$GOOG` -> `GOOGL` when "GOOG" is an alias); others pass through
  in capitals (`$XYZ` -> `XYZ`).
* Chinese names (any alias holding a CJK ideograph) match anywhere, with no
  word boundaries, because written Chinese has none ("贵州茅台股价大跌",
  "XD贵州茅台", "比亚迪H股"). So that a name inside an unrelated word does
  not count, a CJK alias under three characters ("茅台", "腾讯") must also be
  listed in `exact`, which marks it as checked (the loader refuses it
  otherwise: "工行" hides in "加工行业"), and `ignore` lists longer phrases
  that contain a name but mean something else ("平安夜", "中国银行业",
  "小米粥", "化工行业"). The longest listed phrase at a position wins, so
  "京东方" (BOE) is not "京东" (JD.com), and a phrase that starts earlier
  wins over a name inside it, the text being read from the left: "北京东路"
  is not "京东", "其中免税" not "中免".
* Stock codes. Keys: A-shares `NNNNNN.SH|SZ|BJ`, Hong Kong `NNNN.HK` (four
  digits, zero-padded: HKEX's five-digit "00700" and Yahoo's "0700.HK" both
  become `0700.HK`). Spellings with an exchange mark always count:
  `600519.SH`, `600519.SS` (Yahoo), `SH600519`, `sh600519`, `SH.600519`,
  `000001.SZ`, `SZ000001`, `00700.HK`, `700.HK`, `HK00700`. A number without
  one counts only where it is plainly a code, never as a price, year, volume
  or phone number:
  - in brackets, `(600519)` or `（00700）`: six digits whose prefix is an
    A-share board's (60x/688 Shanghai, 00x/30x Shenzhen, 43/83/87/920
    Beijing), five digits starting with 0 (HKEX style), or four starting
    with 0 that are a watchlist Hong Kong code ("(0700)", not the area
    code "(0755)"; "(2020)" is a year even though 2020.HK is listed);
  - after 代码, 股票, 港股, 港股通, H股, A股, 沪市 or 深市 (an optional colon or
    space between): six digits as above, four or five starting with 0, or
    a watchlist Hong Kong code ("港股9988"), but not a year: 19xx or 20xx
    followed by 至今, 迄今, 以来, 以前/之前, 以后/之后 or a range to another
    year ("港股2020至今跌了一半", "港股2019-2021");
  - on its own, only a watchlist company's six-digit A-share code or
    five-digit zero-led Hong Kong code ("600519涨停", "00700"); a code next
    to a digit, a decimal point, a currency sign or a unit (元, 万, 亿, 手,
    股 but not 股价/股票/股份/股东, %, 年, ...) is a number, not a code.
  A code that is not on the watchlist passes through canonical
  (`600000.SH`), like a cashtag. A watchlist alias written as a code
  ("1211.HK" for BYD, "9988.HK" for BABA) maps to the company's ticker:
  one key per company, whichever listing the text names.
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

from monitor.core.language import HAN_CLASS
from monitor.core.validate import TICKER_RE

__all__ = [
    "DEFAULT_WATCHLIST",
    "TICKER_RE",
    "Company",
    "Watchlist",
    "code_key",
    "default_watchlist",
    "extract_entities",
]

DEFAULT_WATCHLIST = Path(__file__).parent.parent / "data" / "watchlist.json"
# Aliases this short are only trusted as written ("GE", "MS"), never "ge"/"ms".
_SHORT_ALIAS = 3
# CJK aliases shorter than this hide inside other words ("工行" in "加工行业"): only via `exact`.
_MIN_CJK = 3
# A Latin word this short touching a CJK ideograph is an abbreviation ("MA均线", "25个BP"), not a ticker.
_ABBREVIATION = 2
# Characters that continue a word: a match must not have one on either side.
_WORD = r"0-9A-Za-z_\u00c0-\u024f"
_CJK_RE = re.compile(HAN_CLASS)
_CASHTAG = r"\$(?P<cash>[A-Za-z]{1,6}(?:\.[A-Za-z]{1,2})?)"
# A bare number followed by one of these is an amount, a decimal or a date part, not a code.
_NUM_AFTER = r"(?![.,，][0-9]|[%％‰万亿元块手张份次人年月日号点倍只家个吨]|股(?![价票份东]))"
# Words after which a number is a stock code ("股票代码：600519", "港股00700").
_CODE_CONTEXT = ("代码", "股票", "港股通", "港股", "H股", "A股", "沪市", "深市")
# A year-shaped number after a code word is a year when one of these follows ("港股2020至今跌了一半",
# "港股2015以来", "港股2019-2021"); "年" (年初, 年底) is already in `_NUM_AFTER`.
_YEAR = re.compile(r"(?:19|20)[0-9]{2}")
_AFTER_YEAR = re.compile(r"至今|迄今|以来|以前|之前|以后|之后|[至到~～\-－–—]\s?(?:19|20)[0-9]{2}(?![0-9])")
# Stock codes in text. Each alternative starts by consuming a plain character class and only then
# opens its group, so the engine skips it at a word that cannot start a code without entering it
# (see `_trie_branches`); the first digit is outside the group, so the number is m.group(). Digits
# are [0-9], never \d, so keys stay ASCII (full-width digits are not read as codes).
_CODE = [
    r"[0-9](?P<sn>[0-9]{0,5})\.(?P<sx>(?i:SH|SS|SZ|BJ|HK))",  # 600519.SH 600519.ss 00700.HK 700.HK
    r"[0-9](?<=[(（][0-9])(?P<par>[0-9]{3,5})(?=[)）](?![0-9]))",  # (600519) （00700）, not "(0755)8888 1234"
    rf"[0-9](?<![.,:/+\-¥￥€£#][0-9])(?P<bare>[0-9]{{4,5}}){_NUM_AFTER}",  # 600519, 00700: listed codes only
    r"[SsBbHh][HhZzJjKk]\.?(?P<pn>[0-9]{4,6})",  # SH600519 sh600519 HK00700 SH.600519 (pair checked later)
]
# After a code word ("股票代码：600519", "港股00700"), one alternative per word so each starts with a
# plain literal (see `_trie_branches`); groups ctx0, ctx1, ... since a group name cannot repeat.
_CODE_IN_CONTEXT = [
    rf"{word}[:：\s]{{0,2}}(?P<ctx{i}>[0-9]{{4,6}}){_NUM_AFTER}" for i, word in enumerate(_CODE_CONTEXT)
]
_CODE_SYMBOL = re.compile(r"([0-9]{1,6})\.(SH|SS|SZ|BJ|HK)|(SH|SZ|BJ|HK)\.?([0-9]{1,6})")
# A-share boards by code prefix: Shanghai main 600-605 and STAR 688/689; Shenzhen main 000-003 and
# ChiNext 300/301; Beijing 43x/83x/87x and 920. B shares (900/200) are left out: "200601" is a month.
_A_BOARDS = (("SH", re.compile(r"60[0-5]|68[89]")), ("SZ", re.compile(r"00[0-3]|30[01]")),
             ("BJ", re.compile(r"4[3]|8[37]|920")))  # fmt: skip


@dataclass(frozen=True)
class Company:
    """One watchlist entry; `exact` aliases match case-sensitively, `ignore` phrases name nobody (see module doc)."""

    ticker: str
    name: str
    aliases: tuple[str, ...] = ()
    exact: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()


def _trie_branches(words: Iterable[str], fold: bool = False) -> list[str]:
    """Many words as regex alternatives factored by common prefix ("Apple(?: Inc)?"), one per initial.

    At each trie node the branches start with different characters, so the
    engine rejects a position after one character test instead of one per
    word. Greedy `?` makes the longest word win. `fold` (for lower-cased
    words) writes a letter as `[aA]` rather than using `(?i)`, and callers
    splice the branches straight into their own alternation: the engine
    skips an alternative that starts with a plain literal or class without
    entering it, but enters a group, a lookaround or a case-insensitive
    literal, so either would cost one step per alias initial at every word.
    """
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def char(ch: str) -> str:
        up = ch.upper()
        if fold and up != ch and len(up) == 1:
            return f"[{re.escape(ch)}{re.escape(up)}]"
        return re.escape(ch)

    def build(node: dict[str, Any]) -> str:
        branches = [char(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return [char(ch) + build(child) for ch, child in sorted(trie.items()) if ch]


def _touches_cjk(text: str, m: re.Match[str]) -> bool:
    """Does a CJK ideograph stand right before or right after this match?"""
    start, end = m.span()
    return bool(start and _CJK_RE.match(text, start - 1)) or _CJK_RE.match(text, end) is not None


def _is_acronym(alias: str) -> bool:
    return alias.upper() == alias and any(c.isalpha() for c in alias)


def _symbol(raw: str) -> str | None:
    sym = raw.strip().lstrip("$").upper()
    return sym if TICKER_RE.fullmatch(sym) else None


def _a_board(num: str) -> str | None:
    """The exchange of a six-digit A-share code from its board prefix, None when no board uses it."""
    for exchange, prefix in _A_BOARDS:
        if prefix.match(num):
            return exchange
    return None


def code_key(num: str, exchange: str) -> str | None:
    """The canonical key of a stock code and its exchange mark ("00700", "hk" -> "0700.HK"); None if malformed.

    Shanghai is `SH` whichever way it was written (Yahoo writes `SS`), the
    mark Chinese sources use. Hong Kong codes drop HKEX's leading zeros to
    four digits, so every spelling of one code is one key.
    """
    if not num.isascii() or not num.isdigit():
        return None
    exchange = exchange.upper()
    if exchange == "HK":
        return f"{int(num):04d}.HK" if len(num) <= 5 and int(num) > 0 else None
    if exchange in ("SH", "SS", "SZ", "BJ") and len(num) == 6:
        return f"{num}.{'SH' if exchange == 'SS' else exchange}"
    return None


def _code_of(raw: str) -> str | None:
    """A symbol spelled as a code with its exchange ("sh600519", "$00700.HK") as its key, else None."""
    m = _CODE_SYMBOL.fullmatch(raw.strip().lstrip("$").upper())
    if m is None:
        return None
    return code_key(m[1], m[2]) if m[1] else code_key(m[4], m[3])


class Watchlist:
    """Companies to recognise; compiled once, then `find`/`extract_entities` per message."""

    def __init__(self, companies: Iterable[Company]) -> None:
        self.companies: tuple[Company, ...] = tuple(companies)
        self._by_ticker: dict[str, Company] = {}
        folded: dict[str, str] = {}  # lower-cased alias -> ticker (case-insensitive matches)
        strict: dict[str, str] = {}  # alias as written -> ticker (case-sensitive matches)
        cjk: dict[str, str] = {}  # CJK alias -> ticker, "" for an ignored phrase (no word boundaries)
        self._symbols: dict[str, str] = {}  # ticker-shaped or code alias -> ticker (cashtags, codes, given)
        self._bare: dict[str, str] = {}  # a watchlist code without its exchange ("600519") -> its key
        for c in self.companies:
            if c.ticker in self._by_ticker:
                raise ValueError(f"watchlist lists ticker {c.ticker} twice")
            self._by_ticker[c.ticker] = c
            # The bare ticker in capitals; one letter ("C", "V") is too ambiguous in text.
            if len(c.ticker) >= 2 and re.fullmatch(r"[A-Z]+(?:\.[A-Z]+)?", c.ticker):
                strict[c.ticker] = c.ticker
        for c in self.companies:
            self._add_code(c.ticker)
            exact = {a.strip() for a in c.exact if a.strip()}
            for alias in {c.name, *c.aliases, *exact}:
                a = alias.strip()
                if not a:
                    continue
                code = _code_of(a)
                if code is not None:
                    if code in self._by_ticker and code != c.ticker:
                        raise ValueError(f"watchlist alias {alias!r} names both {code} and {c.ticker}")
                    if code != c.ticker:
                        self._claim(self._symbols, code, c.ticker, alias)
                    self._add_code(code)
                elif _CJK_RE.search(a):
                    if len(a) < _MIN_CJK and a not in exact:
                        raise ValueError(
                            f"{c.ticker} alias {alias!r} is under {_MIN_CJK} characters: list it in 'exact'"
                        )
                    self._claim(cjk, a, c.ticker, alias)
                elif a in exact or len(a) <= _SHORT_ALIAS or _is_acronym(a):
                    for form in {a, a.upper()}:
                        self._claim(strict, form, c.ticker, alias)
                    sym = _symbol(a)
                    if sym and _is_acronym(a) and sym not in self._by_ticker:
                        self._symbols.setdefault(sym, c.ticker)
                else:
                    self._claim(folded, a.lower(), c.ticker, alias)
        for c in self.companies:
            for phrase in c.ignore:
                p = phrase.strip()
                if p:
                    table, key = (cjk, p) if _CJK_RE.search(p) else (folded, p.lower())
                    self._claim(table, key, "", phrase)
        self._folded = folded
        self._strict = strict
        self._cjk = cjk
        # Folded words before strict ones: where both match, the case-insensitive alias wins, and
        # `_word` looks a match up in that order. Neither sits in a group (see `_trie_branches`).
        words = [*_trie_branches(folded, fold=True), *_trie_branches(strict)]
        # Two compilations of one pattern. Text without a CJK ideograph (most English posts) can hold
        # no CJK name and no code word, so it is scanned without those alternatives, which the engine
        # would otherwise try at every position. Either way a text is scanned once by one of them.
        ascii_part = "|".join([_CASHTAG, *_CODE, *words])
        self._latin_pattern = re.compile(rf"(?<![{_WORD}$])(?:{ascii_part})(?![{_WORD}])")
        pattern = rf"(?<![{_WORD}$])(?:{'|'.join([ascii_part, *_CODE_IN_CONTEXT])})(?![{_WORD}])"
        if cjk:
            # No word boundaries around a CJK name; the class test first keeps other positions cheap.
            first = "".join(sorted({re.escape(a[0]) for a in cjk}))
            pattern += f"|(?=[{first}])(?P<zh>(?:{'|'.join(_trie_branches(cjk))}))"
        self._pattern = re.compile(pattern)

    @staticmethod
    def _claim(table: dict[str, str], key: str, ticker: str, alias: str) -> None:
        owner = table.setdefault(key, ticker)
        if owner != ticker:
            owners = " and ".join(t or "an 'ignore' phrase" for t in (owner, ticker))
            raise ValueError(f"watchlist alias {alias!r} names both {owners}")

    def _add_code(self, key: str) -> None:
        """Remember the bare spelling of a watchlist code that is safe to read as that code in text.

        Six-digit A-share codes whose prefix matches their exchange (not the
        index 000001.SH, which would shadow Ping An Bank's 000001.SZ), and
        Hong Kong codes under 10000 in HKEX's zero-led five digits ("00700").
        Four-digit forms ("1211", "2020") stay out: they read as prices and years.
        """
        num, _, exchange = key.partition(".")
        if not num.isdigit():
            return
        if exchange == "HK" and int(num) < 10000:
            self._bare.setdefault(f"{int(num):05d}", key)
        elif exchange in ("SH", "SZ", "BJ") and _a_board(num) == exchange:
            self._bare.setdefault(num, key)

    def contains(self, ticker: str) -> bool:
        """Is this a watchlist company? (the worker gives only these their own metric labels)"""
        return ticker in self._by_ticker

    def name_of(self, ticker: str) -> str:
        c = self._by_ticker.get(ticker)
        return c.name if c else ticker

    def _word(self, span: str) -> str | None:
        """The ticker of a watchlist word the pattern matched: case-insensitive aliases first, as matched."""
        low = span.lower()
        return self._folded[low] if low in self._folded else self._strict.get(span)

    def _known(self, key: str) -> bool:
        return key in self._by_ticker or key in self._symbols

    def canonical(self, symbol: str) -> str | None:
        """A given ticker, cashtag or code as the watchlist's key; None if not a symbol.

        "$goog" -> "GOOGL", "sh600519" -> "600519.SH", "1211.HK" -> "002594.SZ"
        (an alias). A bare number is a code only when it is a watchlist
        code's bare spelling ("600519", "00700", "9988"): "7203" stays "7203".
        """
        sym = _symbol(symbol)
        if sym is None:
            return None
        key = _code_of(sym)
        if key is None and sym.isdigit():
            key = self._bare.get(sym)
            if key is None and len(sym) <= 5 and self._known(hk := f"{int(sym):04d}.HK"):
                key = hk
        key = key or sym
        return self._symbols.get(key, key)

    def _code(self, kind: str, m: re.Match[str]) -> str | None:
        """The key of a code found in text by alternative `kind` of the pattern (see module doc)."""
        if kind == "sx":
            return code_key(m.group().partition(".")[0], m["sx"])
        if kind == "pn":
            return code_key(m["pn"], m.group()[:2])
        if kind == "bare":
            return self._bare.get(m.group())
        num = m.group() if kind == "par" else m[kind]  # in brackets, or after a code word
        if kind != "par" and _YEAR.fullmatch(num) and _AFTER_YEAR.match(m.string, m.end(kind)):
            return None  # "港股2020至今": a year, though 2020.HK is listed
        if len(num) == 6:
            exchange = _a_board(num)
            return f"{num}.{exchange}" if exchange else None
        key = code_key(num, "HK")
        if key is None:
            return None
        zero_led, known = num[0] == "0", self._known(key)
        if kind == "par" and len(num) == 4:
            # Brackets hold years ("(2020)", though 2020.HK is listed) and area codes ("(0755)").
            return key if zero_led and known else None
        return key if zero_led or known else None

    def find(self, text: str) -> list[tuple[int, str]]:
        """(position, canonical key) of every cashtag, stock code and company mention, in text order."""
        found: list[tuple[int, str]] = []
        has_cjk = not text.isascii() and _CJK_RE.search(text) is not None
        pattern = self._pattern if has_cjk else self._latin_pattern
        for m in pattern.finditer(text):
            kind = m.lastgroup
            if kind == "cash":
                ticker = self.canonical(m.group("cash"))
            elif kind is None:
                ticker = self._word(m.group())
                if ticker and has_cjk and len(m.group()) <= _ABBREVIATION and _touches_cjk(text, m):
                    ticker = None  # "MA均线", "25个BP": an abbreviation in Chinese text
            elif kind == "zh":
                ticker = self._cjk.get(m.group("zh"))
            else:
                key = self._code(kind, m)
                ticker = self._symbols.get(key, key) if key else None
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
            raw = row.get("ticker")
            ticker = (_code_of(raw) or _symbol(raw)) if isinstance(raw, str) else None
            if ticker is None:
                raise ValueError(
                    f"watchlist company #{i + 1} needs a 'ticker' symbol such as AAPL, BRK.B, 600519.SH or 0700.HK"
                )
            name = row.get("name", ticker)
            if not isinstance(name, str):
                raise ValueError(f"watchlist company {ticker}: 'name' must be a string")
            lists = {}
            for f in ("aliases", "exact", "ignore"):
                v = row.get(f, [])
                if not isinstance(v, list) or not all(isinstance(a, str) for a in v):
                    raise ValueError(f"watchlist company {ticker}: '{f}' must be a list of strings")
                lists[f] = tuple(v)
            companies.append(Company(ticker, name.strip() or ticker, lists["aliases"], lists["exact"], lists["ignore"]))
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
    """Canonical uppercase keys (tickers, stock codes) an item names, unique, at most `max_entities`.

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
