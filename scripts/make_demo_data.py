"""Build the demo's input files in monitor/data/demo/ from two MIT-licensed labelled sets.

The demo must run on a fresh machine without ../shared, so small,
stratified samples of real financial text are committed to the repository;
this script rebuilds them byte for byte (fixed seed, deterministic order):

* `headlines.csv`: finance tweets (Twitter Financial News Sentiment), the
  social-comment side of the stream;
* `news.csv`: news headlines (SEntFiN 1.0), the news side. About half of
  real input is news, and headlines read differently from tweets.

Stratified means proportional: each label keeps its share of its source
(about 15 % negative tweets, 28 % negative headlines), so the demo's
baseline looks like a normal stream and the injected surge stands out the
way a real one would.

`news.csv` has an `entity` column: the one company a headline is about
(from SEntFiN's entity-level annotation), filled only when the annotated
entity is a company named in the headline. `finsent replay` uses it to
build an injected company surge from real negative headlines by putting
the surge company in place of the company the headline names.

    python scripts/make_demo_data.py [TWEETS_CSV] [--news-dir DIR] [--rows 3000] [--news-rows 2000] [--seed 2026]
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO.parent / "shared" / "datasets"
SRC = DATASETS / "twitter_financial_news_sentiment" / "train.csv"
NEWS_DIR = DATASETS / "sentfin_headlines"
OUT_DIR = REPO / "monitor" / "data" / "demo"
# The source labels are words in the shared copy and 0/1/2 in the original upload.
LABELS = {
    "bearish": "negative",
    "bullish": "positive",
    "neutral": "neutral",
    "0": "negative",
    "1": "positive",
    "2": "neutral",
}
MIN_CHARS, MAX_CHARS = 20, 280
MAX_BYTES = 1_000_000
T = TypeVar("T", tuple[str, str], tuple[str, str, str])

# SEntFiN annotates indices, currencies, commodities and sectors as entities
# too ("Sensex", "Rupee", "crude palm oil", "railway related stocks"). Only a
# company can stand in for another company in a headline, so an entity counts
# when it is capitalised, is not one of these market words, and the headline
# talks the way headlines about one company do (results, shares, stake...).
_MARKET_WORD = re.compile(
    r"\b(Sensex|Nifty|markets?|Rupee|Dollar|Gold|Silver|Oil|Crude|Index|indices|stocks|shares|futures|prices?|"
    r"Yen|Euro|Sugar|economy|GDP|inflation|bonds?|FIIs?|Govt|Government|RBI|banks|sector|smallcaps?|midcaps?|"
    r"caps|Asian|European|US|China|India|exchange|bourses?|board|companies|canal|won|S&P|Nasdaq|SEBI|IT|"
    r"Zinc|Copper|Aluminium|Nickel|Cotton|Pepper|Cardamom|Jeera|Wheat|Rice|Soybean|Guar|Chana)\b",
    re.IGNORECASE,
)
# Companies whose names contain one of those words; listed so they stay.
_COMPANIES_WITH_MARKET_WORDS = frozenset({"Bombay Stock Exchange", "Indian Energy Exchange", "UAE Exchange"})
_COMPANY_CONTEXT = re.compile(
    r"\b(Q[1-4]|FY\d*|net|profit|loss|shares?|stock|mcap|m-cap|posts|reports|revenue|sales|IPO|CEO|MD|chairman|"
    r"board|stake|promoters?|results?|downgrades?|rating)\b",
    re.IGNORECASE,
)

PROVENANCE = """\
# Demo data: provenance

The demo (`finsent demo`) replays these three files: English news
headlines and Chinese news flashes and forum comments into `finsent.news`,
tweets into `finsent.comments`. The two English files are rebuilt byte for
byte by `python scripts/make_demo_data.py` (needs `../shared/datasets`);
the Chinese one was written for the demo and is kept as written.

## headlines.csv: finance tweets

{total:,} rows; columns `id,text,label,source`. A stratified random sample
of the training split of the **Twitter Financial News Sentiment** data set
(Hugging Face `zeroshot/twitter-financial-news-sentiment`), released by its
author under the **MIT License**. The tweets themselves remain subject to
X/Twitter's terms.

- Labels mapped Bearish -> negative, Bullish -> positive, Neutral -> neutral.
- Stratified: each label keeps its share of the source ({counts}).
- Kept: texts of {min_chars}-{max_chars} characters after collapsing runs of
  whitespace (184 source tweets contain line breaks) and dropping duplicates.
- Seed {seed}; `source` is `twitter` for every row; ids `demo-00000`...

## news.csv: news headlines

{news_total:,} rows; columns `id,text,label,source,entity`. A stratified
random sample of the development part of **SEntFiN 1.0** (Sinha, Kedas,
Kumar, Malo, "SEntFiN 1.0: Entity-aware sentiment analysis for financial
news", JASIST 2022, doi:10.1002/asi.24634; github.com/pyRis/SEntFiN,
**MIT License**, Copyright (c) 2021 Ankur Sinha, Satishwar Kedas, Rishu
Kumar, Pekka Malo). Indian financial news headlines.

- Headlines whose entities all carry one sentiment, labelled with it.
- Stratified: each label keeps its share of the source ({news_counts}).
- `entity`: the headline's single annotated entity when it is a company named
  in the headline ({news_entities:,} rows), else empty. Indices, currencies,
  commodities and sectors are left out.
- Whitespace collapsed, duplicates dropped; seed {seed}; `source` is `news`;
  ids `news-00000`...

## How the labels are used

The demo and `finsent replay` use `label` only to choose negative texts for
an injected surge; the model never sees the labels. A company surge
(`--surge-entity TSLA`) injects negative rows that already name the company
as they are, and negative rows with an `entity` with that company's name in
place of the entity, so every injected item is a real negative headline
about one company.

Both English files are drawn from training splits that the shipped English
bundle was trained on (the tweets and the SEntFiN headlines). The demo shows
the pipeline at work, not how well the model reads text it has never seen:
that is measured on validation sets (`models/*/eval.md`, training/README.md).
"""

# Written for the demo, not sampled (no Chinese data set here may be redistributed): kept as written.
ZH_SECTION = """\
## zh.csv: Chinese news flashes and forum comments

420 rows; columns `id,text,label,source,entity`. Written in Simplified
Chinese for this project's demo, not collected from any source and not
made by `scripts/make_demo_data.py` (the file is kept as written). The
items are fictional: they name real listed companies from the watchlist
(`monitor/data/watchlist.json`, 68 companies), but describe nothing that
happened and are neither news nor investment information. Released under
the repository's licence (Apache-2.0).

- `source`: `news` (170 rows, flashes in the style of Chinese financial
  wire services) or `forum` (250 rows, retail-investor stock-forum comments).
- Labels assigned by the author, as the sentiment an investor reading the
  item would give it: 147 negative, 139 neutral, 134 positive (news 57/56/57,
  forum 90/83/77).
- Texts distinct, 12-113 characters; 42 rows write a stock code
  (`600519.SH`, `（00700）`, `港股9988`, ...), 16 of them without the name.
- `entity`: as in news.csv, the company's name exactly as the text writes
  it (its watchlist name or a Chinese alias such as `茅台` or `招行`) when the
  item is about one watchlist company and names no other (327 rows, 118 of
  them negative, over 60 companies), else empty. Market, sector and
  multi-company items leave it empty. The negative rows with an `entity` are
  worded to read naturally for any company, and none of them writes a code,
  so a company surge can put the surge company's name in place of the entity.
- ids `zh-00000`...; rows in shuffled order (seed 2026).
"""


def clean(text: str) -> str:
    """One line per row keeps the CSV greppable and the tail output tidy."""
    return " ".join(text.split())


def read_source(path: Path) -> list[tuple[str, str]]:
    """(text, label) pairs, cleaned, unique by text, within the length limits."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            label = LABELS.get(str(row.get("label", "")).strip().lower())
            text = clean(row.get("text") or "")
            if label is None or not MIN_CHARS <= len(text) <= MAX_CHARS or text in seen:
                continue
            seen.add(text)
            out.append((text, label))
    return out


def is_company(entity: str, text: str) -> bool:
    """Does this SEntFiN entity name a company that the headline names word for word?"""
    if not entity[:1].isupper() and not entity[:1].isdigit():
        return False
    if _MARKET_WORD.search(entity) and entity not in _COMPANIES_WITH_MARKET_WORDS:
        return False
    if not re.search(rf"(?<!\w){re.escape(entity)}(?!\w)", text):
        return False
    return bool(_COMPANY_CONTEXT.search(text))


def read_news(news_dir: Path) -> list[tuple[str, str, str]]:
    """(text, label, entity) triples from SEntFiN's headline-level and entity-level training files."""
    entities: dict[str, set[str]] = defaultdict(set)
    with open(news_dir / "entity_level_train.csv", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            entities[clean(row["text"])].add(row["entity"].strip())
    seen: set[str] = set()
    out: list[tuple[str, str, str]] = []
    with open(news_dir / "train.csv", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            text, label = clean(row["text"]), row["label"].strip().lower()
            if label not in ("negative", "neutral", "positive") or not MIN_CHARS <= len(text) <= MAX_CHARS:
                continue
            if text in seen:
                continue
            seen.add(text)
            named = entities.get(text, set())
            entity = next(iter(named)) if row.get("n_entities") == "1" and len(named) == 1 else ""
            out.append((text, label, entity if entity and is_company(entity, text) else ""))
    return out


def allocate(counts: Counter[str], total: int) -> dict[str, int]:
    """Proportional allocation with largest remainders, so the parts add up to `total` exactly."""
    n = sum(counts.values())
    exact = {k: total * v / n for k, v in counts.items()}
    alloc = {k: int(x) for k, x in exact.items()}
    for k in sorted(exact, key=lambda k: (alloc[k] - exact[k], k))[: total - sum(alloc.values())]:
        alloc[k] += 1
    return alloc


def sample(rows: list[T], total: int, seed: int) -> list[T]:
    """A stratified (by label, the second field) random sample, shuffled."""
    rng = random.Random(seed)
    counts = Counter(r[1] for r in rows)
    picked: list[T] = []
    for label, k in sorted(allocate(counts, min(total, len(rows))).items()):
        pool = [r for r in rows if r[1] == label]
        picked += rng.sample(pool, k)
    rng.shuffle(picked)
    return picked


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> int:
    """Write rows with LF endings; returns the size in bytes."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path.stat().st_size


def _counts(labels: Counter[str]) -> str:
    return ", ".join(f"{labels[k]:,} {k}" for k in ("negative", "neutral", "positive"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", type=Path, default=SRC, help="tweets CSV (Twitter Financial News train.csv)")
    ap.add_argument("--news-dir", type=Path, default=NEWS_DIR, help="SEntFiN directory (sentfin_headlines)")
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--news-rows", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    for need in (args.source, args.news_dir / "train.csv", args.news_dir / "entity_level_train.csv"):
        if not need.is_file():
            print(f"make_demo_data: source {need} not found", file=sys.stderr)
            return 2
    picked = sample(read_source(args.source), args.rows, args.seed)
    news = sample(read_news(args.news_dir), args.news_rows, args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / "headlines.csv"
    size = write_csv(
        out,
        ["id", "text", "label", "source"],
        [[f"demo-{i:05d}", text, label, "twitter"] for i, (text, label) in enumerate(picked)],
    )
    news_out = args.out_dir / "news.csv"
    news_size = write_csv(
        news_out,
        ["id", "text", "label", "source", "entity"],
        [[f"news-{i:05d}", text, label, "news", entity] for i, (text, label, entity) in enumerate(news)],
    )
    for path, n in ((out, size), (news_out, news_size)):
        if n >= MAX_BYTES:
            print(f"make_demo_data: {path} is {n} bytes, over the {MAX_BYTES} budget", file=sys.stderr)
            return 1
    counts = Counter(label for _, label in picked)
    news_counts = Counter(label for _, label, _ in news)
    (args.out_dir / "PROVENANCE.md").write_text(
        PROVENANCE.format(
            total=len(picked),
            counts=_counts(counts),
            min_chars=MIN_CHARS,
            max_chars=MAX_CHARS,
            seed=args.seed,
            news_total=len(news),
            news_counts=_counts(news_counts),
            news_entities=sum(1 for *_, e in news if e),
        )
        + "\n"
        + ZH_SECTION,
        encoding="utf-8",
    )
    print(f"wrote {len(picked)} rows ({size:,} bytes) to {out}: {dict(sorted(counts.items()))}")
    print(f"wrote {len(news)} rows ({news_size:,} bytes) to {news_out}: {dict(sorted(news_counts.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
