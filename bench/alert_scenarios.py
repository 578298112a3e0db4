"""Streams for the surge-detector benchmark: real labelled items, Poisson arrivals, injected surges.

Why real items and not random shares: the detector's false alarms come from
how negative opinion actually clusters by topic and company (a topic that
is 40 % negative on a normal day, a ticker named in three tweets an hour),
which a synthetic Bernoulli stream would not have.

* Items: Twitter Financial News Sentiment and SEntFiN headlines with their
  gold sentiment labels. Neither set has topic labels for these rows (the
  Twitter topic set holds different tweets), so a topic is assigned the way
  the worker would, by a classifier: a small multinomial naive Bayes trained
  on the Twitter Financial News *topic* training split (gold topics).
  Entities come from the text through monitor.core.entities, as in the worker.
* Splits: the tuning set draws from the `train` files, the held-out set
  from the `valid` files (disjoint items), each with its own seed.
* Arrivals: a Poisson process of `rate` items/s over simulated days of
  event time; rows are drawn in shuffled cycles.
* Surges (`SurgeSpec`): about one entity, one topic or the whole stream
  ("all"), graded by `share` (the fraction of the key's items during the
  surge that are injected negatives), `volume` (items per window the key
  receives during the surge, at least its natural volume) and `duration`
  (windows). Natural items of the key are replaced with probability
  `share` (as `finsent replay --surge-*` does); when the key's natural
  volume is below `volume`, extra items about the key arrive so that it
  reaches it, negative with probability `share`. An entity surge rewrites
  clean rows as "Name $TICKER: <text>" (as replay does) and extracts the
  entities again, so a surge feeds its topic, all:all and any other company
  the text names, exactly as it would in the worker.

Everything here is pure and seeded: the same arguments give the same stream.
"""

from __future__ import annotations

import csv
import math
import os
import random
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from monitor.core.entities import default_watchlist, extract_entities

REPO = Path(__file__).resolve().parent.parent
DATASETS = Path(os.environ.get("FINSENT_DATASETS", REPO.parent / "shared" / "datasets"))
DEMO = REPO / "monitor" / "data" / "demo"
SENTIMENT = {"bearish": "negative", "bullish": "positive", "neutral": "neutral", "negative": "negative",
             "positive": "positive"}  # fmt: skip
_TOKEN = re.compile(r"[a-z][a-z']+|\$[a-z]+")
_CASHTAG = re.compile(r"(?<![\w$])\$[A-Za-z]{1,6}\b")
DAY_MS = 86_400_000
# Pseudo-items of the overall negative share in a key's normal share (Pool.negative_share_of).
PSEUDO_ITEMS = 20


@dataclass(frozen=True)
class Row:
    """One labelled item as the worker would see it after scoring."""

    id: str
    text: str
    sentiment: str  # negative | neutral | positive (gold)
    topic: str | None
    entities: tuple[str, ...]


@dataclass(frozen=True)
class SurgeSpec:
    """One injected surge (times in ms of event time)."""

    id: int
    kind: str  # entity | topic | all
    key: str  # ticker, topic label, or "all"
    start_ms: int
    duration_windows: int
    share: float
    volume: int
    size_ms: int

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.duration_windows * self.size_ms

    @property
    def dim_key(self) -> str:
        return f"{self.kind}:{self.key}"


@dataclass(frozen=True)
class Item:
    """One arrival: event time, gold sentiment, the keys it counts towards, and which surge injected it."""

    t_ms: int
    id: str
    sentiment: str
    topic: str | None
    entities: tuple[str, ...]
    surge: int | None = None


@dataclass
class Pool:
    """Rows of one split, indexed by what surges need."""

    rows: list[Row]
    by_entity: dict[str, list[int]] = field(default_factory=dict)
    by_topic: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i, r in enumerate(self.rows):
            for e in r.entities:
                self.by_entity.setdefault(e, []).append(i)
            if r.topic:
                self.by_topic.setdefault(r.topic, []).append(i)

    def share_of(self, kind: str, key: str) -> float:
        """Fraction of natural items that count towards `kind:key`."""
        n = len(self.rows)
        if kind == "all":
            return 1.0
        idx = self.by_entity.get(key, []) if kind == "entity" else self.by_topic.get(key, [])
        return len(idx) / n if n else 0.0

    def negative_share_of(self, kind: str, key: str) -> float:
        """The key's natural negative share (its normal level in the stream).

        Shrunk towards the split's overall share by PSEUDO_ITEMS pseudo-items: a
        company with 6 rows, none negative, is not "0 % negative" (and "at least
        double its normal share" must not be true of any share at all).
        """
        neg_all = sum(r.sentiment == "negative" for r in self.rows) / max(1, len(self.rows))
        if kind == "all":
            return neg_all
        idx = self.by_entity.get(key, []) if kind == "entity" else self.by_topic.get(key, [])
        neg = sum(self.rows[i].sentiment == "negative" for i in idx)
        return (neg + PSEUDO_ITEMS * neg_all) / (len(idx) + PSEUDO_ITEMS)


# --------------------------------------------------------------------------- data


class TopicClassifier:
    """Multinomial naive Bayes over lower-cased words: the stand-in for the worker's topic head."""

    def __init__(self, texts: Sequence[str], labels: Sequence[str]) -> None:
        self.labels = sorted(set(labels))
        counts: dict[str, Counter[str]] = {lab: Counter() for lab in self.labels}
        docs = Counter(labels)
        for t, lab in zip(texts, labels, strict=True):
            counts[lab].update(_TOKEN.findall(t.lower()))
        vocab = {w for c in counts.values() for w in c}
        v = len(vocab)
        self.prior = {lab: math.log(docs[lab] / len(labels)) for lab in self.labels}
        self.logp: dict[str, dict[str, float]] = {}
        self.unseen: dict[str, float] = {}
        for lab in self.labels:
            total = sum(counts[lab].values()) + v
            self.logp[lab] = {w: math.log((n + 1) / total) for w, n in counts[lab].items()}
            self.unseen[lab] = math.log(1 / total)

    def predict(self, text: str) -> str:
        words = _TOKEN.findall(text.lower())
        best, best_lp = self.labels[0], -math.inf
        for lab in self.labels:
            lp_w, miss = self.logp[lab], self.unseen[lab]
            lp = self.prior[lab] + sum(lp_w.get(w, miss) for w in words)
            if lp > best_lp:
                best, best_lp = lab, lp
        return best


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@cache
def topic_classifier(datasets: Path = DATASETS) -> TopicClassifier | None:
    path = datasets / "twitter_financial_news_topic" / "train.csv"
    if not path.exists():
        return None
    rows = _read_csv(path)
    return TopicClassifier([r["text"] for r in rows], [r["label"] for r in rows])


@cache
def load_pool(split: str, datasets: Path = DATASETS) -> Pool:
    """Rows of one split ("train" or "valid"): tweets and news headlines with gold sentiment.

    Without the shared data sets (a bare checkout), the demo files under
    monitor/data/demo stand in, split by row number (odd/even), with no topics.
    """
    wl = default_watchlist()
    raw: list[tuple[str, str, str]] = []
    tw = datasets / "twitter_financial_news_sentiment" / f"{split}.csv"
    if tw.exists():
        raw += [(f"tw-{split}-{i}", r["text"], r["label"]) for i, r in enumerate(_read_csv(tw))]
        sf = datasets / "sentfin_headlines" / f"{split}.csv"
        if sf.exists():
            raw += [(f"sf-{split}-{i}", r["text"], r["label"]) for i, r in enumerate(_read_csv(sf))]
        clf = topic_classifier(datasets)
    else:
        parity = 0 if split == "train" else 1
        for name in ("headlines.csv", "news.csv"):
            raw += [(r["id"], r["text"], r["label"]) for i, r in enumerate(_read_csv(DEMO / name)) if i % 2 == parity]
        clf = None
    rows = []
    for rid, text, label in raw:
        text = " ".join(text.split())
        sent = SENTIMENT.get(label.strip().lower())
        if not text or sent is None:
            continue
        topic = clf.predict(text) if clf else None
        rows.append(Row(rid, text, sent, topic, tuple(extract_entities(text, [], wl))))
    return Pool(rows)


def entity_keys(pool: Pool, n: int) -> list[str]:
    """The `n` entities named most often in the split: surges need a key with some history."""
    ranked = sorted(pool.by_entity.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return [k for k, _ in ranked[:n]]


def topic_keys(pool: Pool, min_rows: int = 30) -> list[str]:
    return sorted(k for k, v in pool.by_topic.items() if len(v) >= min_rows)


# --------------------------------------------------------------------------- surges


@dataclass(frozen=True)
class Grid:
    """What the surges are drawn from (uniformly, independently)."""

    kinds: tuple[tuple[str, float], ...] = (("entity", 0.5), ("topic", 0.3), ("all", 0.2))
    shares: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7)
    durations: tuple[int, ...] = (1, 2, 3, 5, 8)
    volumes: tuple[int, ...] = (10, 20, 40, 80, 160)
    entity_candidates: int = 30


def plan_surges(
    pool: Pool, *, days: float, size_ms: int, seed: int, grid: Grid, slot_windows: int = 40, lead_windows: int = 24
) -> list[SurgeSpec]:
    """One surge per slot of `slot_windows`, starting after at least `lead_windows` calm windows.

    The start falls at a random point inside a window (a real surge does
    not wait for a window boundary), which is why a detector that fires on
    the first full window has a time to detect of 1-2 windows, not 1.
    """
    rng = random.Random(seed)
    ents = entity_keys(pool, grid.entity_candidates)
    topics = topic_keys(pool)
    kinds = [k for k, _ in grid.kinds if k != "topic" or topics]
    weights = [w for k, w in grid.kinds if k != "topic" or topics]
    n_slots = int(days * DAY_MS // (slot_windows * size_ms))
    out = []
    for s in range(n_slots):
        kind = rng.choices(kinds, weights)[0]
        key = "all" if kind == "all" else rng.choice(ents if kind == "entity" else topics)
        start = (s * slot_windows + lead_windows + rng.randrange(4)) * size_ms + rng.randrange(size_ms)
        out.append(SurgeSpec(
            id=s, kind=kind, key=key, start_ms=start, duration_windows=rng.choice(grid.durations),
            share=rng.choice(grid.shares), volume=rng.choice(grid.volumes), size_ms=size_ms,
        ))  # fmt: skip
    return out


def _rewrite(row: Row, ticker: str) -> tuple[str, tuple[str, ...]]:
    """'Name $TICKER: <text>' and its entities, as `finsent replay --surge-entity` writes it."""
    wl = default_watchlist()
    name = wl.name_of(ticker)
    prefix = f"${ticker}" if name.upper() == ticker else f"{name} ${ticker}"
    text = f"{prefix}: {row.text}"
    return text, tuple(extract_entities(text, [ticker], wl))


class _Cycle:
    """Draw indices from a list in shuffled cycles (no repeat until the list is used up)."""

    def __init__(self, idx: Sequence[int], rng: random.Random) -> None:
        self.idx, self.rng, self.order = list(idx), rng, []  # type: ignore[var-annotated]

    def next(self) -> int:
        if not self.order:
            self.order = list(self.idx)
            self.rng.shuffle(self.order)
        return self.order.pop()


class _Injector:
    """Makes the injected items of each surge kind from the split's rows."""

    def __init__(self, pool: Pool, rng: random.Random) -> None:
        self.pool, self.rng = pool, rng
        neg = [i for i, r in enumerate(pool.rows) if r.sentiment == "negative"]
        non = [i for i, r in enumerate(pool.rows) if r.sentiment != "negative"]
        # Clean rows (no cashtag, no company) keep an entity surge about one company only.
        clean = [i for i, r in enumerate(pool.rows) if not r.entities and not _CASHTAG.search(r.text)]
        cs = set(clean)
        self.neg, self.non = _Cycle(neg, rng), _Cycle(non, rng)
        self.clean_neg = _Cycle([i for i in neg if i in cs] or neg, rng)
        self.clean_non = _Cycle([i for i in non if i in cs] or non, rng)
        self.topic_neg: dict[str, _Cycle] = {}
        self.topic_non: dict[str, _Cycle] = {}
        for t, idx in pool.by_topic.items():
            n = [i for i in idx if pool.rows[i].sentiment == "negative"]
            o = [i for i in idx if pool.rows[i].sentiment != "negative"]
            self.topic_neg[t] = _Cycle(n or idx, rng)
            self.topic_non[t] = _Cycle(o or idx, rng)

    def make(self, s: SurgeSpec, negative: bool, t_ms: int, n: int) -> Item:
        rows = self.pool.rows
        if s.kind == "entity":
            row = rows[(self.clean_neg if negative else self.clean_non).next()]
            _text, ents = _rewrite(row, s.key)
        elif s.kind == "topic":
            row = rows[(self.topic_neg if negative else self.topic_non)[s.key].next()]
            ents = row.entities
        else:
            row = rows[(self.neg if negative else self.non).next()]
            ents = row.entities
        return Item(t_ms, f"surge{s.id}-{n}", row.sentiment, row.topic, ents, s.id)


def _counts_towards(item: Row | Item, s: SurgeSpec) -> bool:
    if s.kind == "all":
        return True
    if s.kind == "topic":
        return item.topic == s.key
    return s.key in item.entities


def stream(
    pool: Pool, *, days: float, rate: float, seed: int, surges: Sequence[SurgeSpec] = (), size_ms: int = 60_000
) -> Iterator[Item]:
    """Items in event-time order: Poisson arrivals of natural rows, with the surges injected."""
    rng = random.Random(seed)
    inj = _Injector(pool, random.Random(seed + 1))
    end_ms = int(days * DAY_MS)
    natural = _Cycle(range(len(pool.rows)), rng)
    # Extra arrivals per surge: a Poisson process of its own at the rate that lifts the key to `volume`.
    extra: list[tuple[int, int]] = []  # (time, surge index), merged by time
    for si, s in enumerate(surges):
        nat_per_window = rate * (s.size_ms / 1000) * pool.share_of(s.kind, s.key)
        per_ms = max(0.0, s.volume - nat_per_window) / s.size_ms
        if per_ms <= 0:
            continue
        t = float(s.start_ms)
        while True:
            t += rng.expovariate(per_ms)
            if t >= s.end_ms:
                break
            extra.append((int(t), si))
    extra.sort()
    ei = 0
    t = 0.0
    per_ms_nat = rate / 1000
    active: list[SurgeSpec] = []
    n = 0
    si_next = 0
    by_start = sorted(surges, key=lambda s: s.start_ms)
    while True:
        t += rng.expovariate(per_ms_nat)
        if t >= end_ms:
            break
        now = int(t)
        while ei < len(extra) and extra[ei][0] <= now:
            et, si = extra[ei]
            s = surges[si]
            yield inj.make(s, rng.random() < s.share, et, n)
            n += 1
            ei += 1
        while si_next < len(by_start) and by_start[si_next].start_ms <= now:
            active.append(by_start[si_next])
            si_next += 1
        if active:
            active = [s for s in active if s.end_ms > now]
        row = pool.rows[natural.next()]
        for s in active:
            if _counts_towards(row, s) and rng.random() < s.share:
                yield inj.make(s, True, now, n)
                break
        else:
            yield Item(now, f"{row.id}-{n}", row.sentiment, row.topic, row.entities)
        n += 1
