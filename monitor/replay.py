"""`finsent replay`: stream a file of texts into a Kafka topic at a steady rate.

The demo, the tests and anyone trying the monitor need a live stream made
of real financial language. This tool turns a CSV, JSON-lines or Parquet
file into input items (DESIGN.md) and produces them at a paced rate,
stamping publication times as "now" (a live stream) or keeping the file's.

It can also inject a *known* negative surge: from `start_s` for
`duration_s` seconds a share of the messages is replaced by rows labelled
negative in the file. For a company surge these are real negative
headlines about one company: rows that already name it, as they are, and
rows whose `entity` column names the company a headline is about, with the
surge company put in its place ("Bosch Q2 PAT declines 11.3%" becomes
"Tesla Q2 PAT declines 11.3%"). A headline is never prefixed with a
company it does not talk about: the evidence an alert shows must read like
news about that company. Market-wide and one-topic surges use negative
rows as they are. The surge detector then has something real to find, and
a test knows when.

Layout: reading files and building messages are pure (`load_rows`,
`iter_messages`, `Pacer` with an injectable clock) and tested without
Kafka; `replay()` is the kafka-python edge, safe to run in a background
thread and stopped by a `threading.Event`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from monitor.cli import CliError
from monitor.settings import Settings

if TYPE_CHECKING:
    from monitor.entities import Watchlist

log = logging.getLogger(__name__)

csv.field_size_limit(16 * 1024 * 1024)

Timestamps = Literal["now", "preserve"]
SurgeKind = Literal["entity", "all", "topic"]

# Optional DESIGN.md item fields copied from the file when present.
PASSTHROUGH_FIELDS = ("title", "url", "lang", "author")
NEGATIVE_LABELS = frozenset({"negative", "neg", "bearish"})
CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
# Fail fast with one line when no broker answers (kafka-python's default waits 30 s).
BOOTSTRAP_TIMEOUT_MS = 10_000


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Row:
    """One usable line of the input file, normalised to the fields replay needs."""

    id: str
    text: str
    label: str | None = None
    source: str | None = None
    published_at: int | str | None = None
    tickers: tuple[str, ...] = ()
    topic: str | None = None
    extra: tuple[tuple[str, Any], ...] = ()
    # The company the text is about, as the text writes it (an annotation, e.g. SEntFiN's entity).
    entity: str | None = None

    @property
    def negative(self) -> bool:
        return (self.label or "").strip().lower() in NEGATIVE_LABELS


@dataclass(frozen=True)
class RowSet:
    path: Path
    rows: list[Row]
    skipped: int  # rows without a usable text
    columns: list[str]


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=CSV_SUFFIXES[path.suffix.lower()])
        return list(reader.fieldnames or []), list(reader)


def _read_json_lines(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise CliError(f"{path} is not valid JSON: {exc}") from None
        records = [r for r in data if isinstance(r, dict)]
    else:
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                raise CliError(f"{path}:{n} is not a JSON line") from None
            if not isinstance(obj, dict):
                raise CliError(f"{path}:{n} is not a JSON object")
            records.append(obj)
    columns = list(dict.fromkeys(k for r in records for k in r))
    return columns, records


def _read_parquet(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        raise CliError(f"reading Parquet ({path.name}) needs pyarrow: pip install pyarrow") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types
        raise CliError(f"cannot read Parquet file {path}: {exc}") from None
    return list(table.column_names), table.to_pylist()


def _as_tickers(value: Any) -> tuple[str, ...]:
    """Tickers from a list, a JSON list in a CSV cell, or 'AAPL;MSFT' / 'AAPL,MSFT' / 'AAPL MSFT'."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                value = json.loads(s)
            except ValueError:
                value = re.split(r"[\s,;|]+", s.strip("[]"))
        else:
            value = re.split(r"[\s,;|]+", s)
    if not isinstance(value, list | tuple):
        value = [value]
    out = [str(v).strip().strip("'\"").lstrip("$").upper() for v in value]
    return tuple(dict.fromkeys(t for t in out if t))


def _as_time(value: Any) -> int | str | None:
    """Epoch milliseconds stay numbers (CSV gives strings); anything else passes as text (ISO-8601)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if hasattr(value, "timestamp"):  # datetime from Parquet
        return int(value.timestamp() * 1000)
    s = str(value).strip()
    return int(s) if s.isdigit() else s


def _cell(record: Mapping[str, Any], col: str | None) -> Any:
    if not col:
        return None
    v = record.get(col)
    return None if v is None or (isinstance(v, str) and not v.strip()) else v


def rows_from_records(
    records: Iterable[Mapping[str, Any]],
    *,
    stem: str = "rows",
    text_col: str = "text",
    id_col: str | None = "id",
    label_col: str | None = "label",
    time_col: str | None = "published_at",
    topic_col: str | None = "topic",
    entity_col: str | None = "entity",
    source: str | None = None,
) -> tuple[list[Row], int]:
    """Records (dicts) to `Row`s, plus how many were skipped for an empty text.

    Blank texts are skipped, not fatal: real exports have them. Rows without
    an id get `<stem>-<i>` (i = 0-based position in the file), stable across
    runs so a replayed item can be traced back to its line.
    """
    rows: list[Row] = []
    skipped = 0
    for i, rec in enumerate(records):
        text = rec.get(text_col)
        if not isinstance(text, str) or not text.strip():
            skipped += 1
            continue
        rid = _cell(rec, id_col)
        label = _cell(rec, label_col)
        topic = _cell(rec, topic_col)
        entity = _cell(rec, entity_col)
        src = _cell(rec, "source")
        rows.append(
            Row(
                id=str(rid) if rid is not None else f"{stem}-{i}",
                text=text,
                label=str(label) if label is not None else None,
                source=str(src) if src is not None else source,
                published_at=_as_time(_cell(rec, time_col)),
                tickers=_as_tickers(rec.get("tickers")),
                topic=str(topic) if topic is not None else None,
                extra=tuple((k, rec[k]) for k in PASSTHROUGH_FIELDS if _cell(rec, k) is not None),
                entity=str(entity).strip() if entity is not None else None,
            )
        )
    return rows, skipped


def load_rows(
    path: str | Path,
    *,
    text_col: str = "text",
    id_col: str | None = None,
    label_col: str | None = "label",
    time_col: str | None = "published_at",
    topic_col: str | None = "topic",
    entity_col: str | None = "entity",
    source: str | None = None,
) -> RowSet:
    """Read a CSV/TSV, JSONL (or JSON array) or Parquet file into `Row`s.

    A missing file, an unknown format, a missing named column or a file
    without any text is a `CliError` with one line. `id_col=None` uses an
    `id` column when there is one, else `<file-stem>-<row>` ids.
    """
    p = Path(path)
    if not p.is_file():
        raise CliError(f"input file {p} does not exist")
    suffix = p.suffix.lower()
    try:
        if suffix in CSV_SUFFIXES:
            columns, records = _read_csv(p)
        elif suffix in JSON_SUFFIXES:
            columns, records = _read_json_lines(p)
        elif suffix in PARQUET_SUFFIXES:
            columns, records = _read_parquet(p)
        else:
            raise CliError(f"{p}: unknown file type '{p.suffix}' (use .csv, .tsv, .jsonl, .json or .parquet)")
    except UnicodeDecodeError:
        raise CliError(f"{p} is not UTF-8 text") from None
    except csv.Error as exc:
        raise CliError(f"{p} is not valid CSV: {exc}") from None
    except OSError as exc:
        raise CliError(f"cannot read {p}: {exc}") from None
    if text_col not in columns:
        raise CliError(f"{p} has no '{text_col}' column (columns: {', '.join(columns) or 'none'}); use --text-col")
    if id_col is not None and id_col not in columns:
        raise CliError(f"{p} has no '{id_col}' column (columns: {', '.join(columns)}); use --id-col")
    rows, skipped = rows_from_records(
        records,
        stem=p.stem,
        text_col=text_col,
        id_col=id_col if id_col is not None else ("id" if "id" in columns else None),
        label_col=label_col,
        time_col=time_col,
        topic_col=topic_col,
        entity_col=entity_col,
        source=source,
    )
    if not rows:
        raise CliError(f"{p} holds no rows with text in column '{text_col}'")
    return RowSet(p, rows, skipped, columns)


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


def _watchlist() -> Watchlist | None:
    """The shipped watchlist, or None when it cannot be loaded (then only cashtags name companies)."""
    try:
        from monitor.entities import default_watchlist

        return default_watchlist()
    except (ImportError, AttributeError, ValueError, OSError):
        return None


_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,6}(?:\.[A-Za-z]{1,2})?)\b")


def named_companies(text: str, tickers: Iterable[str] = ()) -> set[str]:
    """Tickers a text names (cashtags, watchlist names, given tickers), as the worker would find them."""
    watchlist = _watchlist()
    if watchlist is not None:
        from monitor.entities import extract_entities

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
    # A bare apostrophe after a name ending in s ("United Spirits' shares") is its possessive.
    pattern = re.compile(rf"(?<![\w$]){re.escape(entity)}(?P<poss>['\u2019](?![A-Za-z]))?(?!\w)")
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


# --------------------------------------------------------------------------- pacing


class Clock(Protocol):
    """Time source: injectable so pacing and surge timing are tested without sleeping."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> bool:
        """Sleep; False when interrupted (stop requested)."""
        ...

    def wall_ms(self) -> int: ...


class SystemClock:
    """Real time; `sleep` returns early when `stop` is set so a replay thread stops promptly."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> bool:
        if self.stop is not None:
            return not self.stop.wait(max(0.0, seconds))
        if seconds > 0:
            time.sleep(seconds)
        return True

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000


class Pacer:
    """Token bucket: `rate` tokens per second, at most `burst` saved up.

    A per-message sleep of 1/rate drifts slow (every sleep overshoots and
    sending takes time); the bucket credits the overshoot back, so the mean
    rate is accurate from 1 to a few thousand msg/s. The default burst is
    a quarter second of messages: enough to make up the 20-90 ms stalls
    the kafka-python sender thread causes (measured), small enough that a
    long stall (broker down) does not end in a flood. rate <= 0: no pacing.
    """

    BURST_SECONDS = 0.25

    def __init__(self, rate: float, clock: Clock, burst: float | None = None) -> None:
        self.rate = float(rate)
        self.clock = clock
        self.burst = max(1.0, burst if burst is not None else self.rate * self.BURST_SECONDS)
        self._tokens = 1.0
        self._last = clock.monotonic()

    def _refill(self) -> None:
        now = self.clock.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def wait(self) -> bool:
        """Block (via the clock) until one message may be sent and take its token; False if stopped."""
        if self.rate <= 0:
            return True
        self._refill()
        while self._tokens < 1.0:
            if not self.clock.sleep((1.0 - self._tokens) / self.rate):
                return False
            before = self._tokens
            self._refill()
            if self._tokens == before:  # a clock that does not move would spin forever
                break
        self._tokens -= 1.0
        return True


# --------------------------------------------------------------------------- messages


def base_message(row: Row, msg_id: str) -> dict[str, Any]:
    msg: dict[str, Any] = {"id": msg_id, "text": row.text}
    if row.source:
        msg["source"] = row.source
    if row.tickers:
        msg["tickers"] = list(row.tickers)
    msg.update(row.extra)
    return msg


def iter_messages(
    rows: Sequence[Row],
    *,
    rate: float = 50.0,
    timestamps: Timestamps = "now",
    surge: Surge | None = None,
    seed: int = 0,
    clock: Clock | None = None,
    loop: bool = False,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the input items to send, each one when it is due.

    Pacing happens here (through `clock`), so the surge window and the
    `published_at` stamps follow the real send times; with a fake clock the
    whole sequence is deterministic for a given seed. Ids are stable: the
    row id, `<id>-r<lap>` on later laps of `--loop`, and
    `surge-<key>-<n>` for injected items (n = position in the stream).
    """
    if timestamps not in ("now", "preserve"):
        raise ValueError(f"timestamps must be 'now' or 'preserve', not {timestamps!r}")
    if not rows:
        return
    clock = clock or SystemClock()
    rng = random.Random(seed)
    pool = surge_items(rows, surge) if surge else []
    if surge and not pool:
        raise ValueError(f"no negative rows to inject for the {surge.label()} surge")
    order: list[tuple[Row, str, list[str]]] = []
    pacer = Pacer(rate, clock)
    t0 = clock.monotonic()
    n = 0
    lap = 0
    while True:
        for row in rows:
            if limit is not None and n >= limit:
                return
            if not pacer.wait():
                return
            elapsed = clock.monotonic() - t0
            if surge and surge.active(elapsed) and rng.random() < surge.share:
                if not order:  # a shuffled cycle: no repeat until the pool is used up
                    order = list(pool)
                    rng.shuffle(order)
                neg, text, tickers = order.pop()
                msg = base_message(neg, f"surge-{(surge.key or 'all').lower()}-{n}")
                msg.update(text=text, injected=True, injected_from=neg.id)
                if tickers:
                    msg["tickers"] = tickers
            else:
                msg = base_message(row, row.id if lap == 0 else f"{row.id}-r{lap}")
            if timestamps == "now":
                msg["published_at"] = clock.wall_ms()
            elif row.published_at is not None:
                # An injected item takes the time of the row it replaces, so a
                # preserved timeline still has the surge where it was injected.
                msg["published_at"] = row.published_at
            yield msg
            n += 1
        lap += 1
        if not loop:
            return


def encode(msg: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) bytes: keyed by id so a re-sent item lands on the same partition."""
    return str(msg["id"]).encode("utf-8"), json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --------------------------------------------------------------------------- Kafka edge


@dataclass
class ReplayStats:
    sent: int = 0
    injected: int = 0
    failed: int = 0
    skipped_rows: int = 0
    seconds: float = 0.0  # wall time of the whole replay, connect and final flush included
    send_seconds: float = 0.0  # first to last send: what the pacing controls
    topic: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Achieved send rate (messages per second between the first and the last send)."""
        return (self.sent - 1) / self.send_seconds if self.sent > 1 and self.send_seconds > 0 else 0.0

    def summary(self) -> str:
        s = (
            f"sent {self.sent} messages ({self.injected} injected) to {self.topic} "
            f"in {self.seconds:.1f} s ({self.rate:.1f} msg/s)"
        )
        if self.skipped_rows:
            s += f"; skipped {self.skipped_rows} rows without text"
        if self.failed:
            s += f"; {self.failed} failed: {self.errors[0] if self.errors else 'unknown error'}"
        return s


def _client_kwargs(settings: Settings) -> dict[str, Any]:
    cfg = {k: v for k, v in settings.kafka.kafka_python_config().items() if k != "bootstrap_servers"}
    return {**cfg, "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS}


def quiet_kafka_logs(settings: Settings) -> None:
    """kafka-python logs every reconnect attempt; the tools report failures as one line themselves."""
    if settings.log_level != "DEBUG":
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


def ensure_topic(settings: Settings, topic: str) -> bool:
    """Create the topic if it is missing (True when created).

    tansu auto-creates unknown topics with 4 partitions and a real cluster
    may refuse to: creating it here, with the configured partition count,
    gives both the same, predictable layout.
    """
    from monitor.broker import create_topics

    try:
        created = create_topics(
            settings.kafka.bootstrap,
            [topic],
            settings.topics.partitions,
            settings.topics.replication_factor,
            **_client_kwargs(settings),
        )
    except Exception as exc:
        raise CliError(f"cannot reach Kafka at {settings.kafka.bootstrap} or create topic {topic}: {exc}") from None
    return bool(created)


def make_producer(settings: Settings) -> Any:
    """A kafka-python producer; on the embedded broker without idempotence (tansu lacks it)."""
    from kafka import KafkaProducer

    extra: dict[str, Any] = {
        "linger_ms": 5,
        "max_block_ms": 15_000,
        "allow_auto_create_topics": False,
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
    }
    if settings.kafka.embedded:
        extra.update(enable_idempotence=False, acks=1)
    try:
        return KafkaProducer(**settings.kafka.kafka_python_config(), **extra)
    except Exception as exc:
        raise CliError(f"cannot connect to Kafka at {settings.kafka.bootstrap}: {exc}") from None


def replay(
    settings: Settings,
    path: str | Path | RowSet,
    topic: str,
    *,
    rate: float = 50.0,
    limit: int | None = None,
    loop: bool = False,
    timestamps: Timestamps = "now",
    surge: Surge | None = None,
    seed: int = 0,
    text_col: str = "text",
    id_col: str | None = None,
    label_col: str | None = "label",
    topic_col: str | None = "topic",
    entity_col: str | None = "entity",
    stop: threading.Event | None = None,
    progress: Callable[[ReplayStats], None] | None = None,
    create_topic: bool = True,
) -> ReplayStats:
    """Produce a file into `topic` at `rate` msg/s; returns what was sent.

    Runs until the file (or `limit`) is done, or until `stop` is set, which
    also interrupts the pacing sleep, so a demo thread stops within
    milliseconds. Send failures are counted, not raised: one bad record
    must not end a long replay. `progress` is called after every message.
    """
    rowset = path if isinstance(path, RowSet) else load_rows(
        path, text_col=text_col, id_col=id_col, label_col=label_col, topic_col=topic_col, entity_col=entity_col
    )  # fmt: skip
    if surge and not surge_pool(rowset.rows, surge):
        if surge.kind == "entity" and any(r.negative for r in rowset.rows):
            raise CliError(
                f"{rowset.path} has no negative rows about one company to inject the {surge.label()} surge: "
                f"none names {surge.key} alone, and none has an entity column naming the company to replace"
            )
        raise CliError(
            f"{rowset.path} has no rows labelled negative in column '{label_col}'"
            + (f" with topic '{surge.key}'" if surge.kind == "topic" else "")
            + f" to inject the {surge.label()} surge"
        )
    if create_topic:
        ensure_topic(settings, topic)
    from kafka.errors import KafkaError

    stats = ReplayStats(skipped_rows=rowset.skipped, topic=topic)
    lock = threading.Lock()
    late_failures = [0]  # failed after send() accepted them: counted in `sent` until the end

    def failed(exc: BaseException, late: bool = True) -> None:
        with lock:
            stats.failed += 1
            late_failures[0] += late
            if len(stats.errors) < 5:
                stats.errors.append(f"{type(exc).__name__}: {exc}")

    producer = make_producer(settings)
    clock = SystemClock(stop)
    started = time.monotonic()
    first_send: float | None = None
    try:
        messages = iter_messages(
            rowset.rows, rate=rate, timestamps=timestamps, surge=surge, seed=seed, clock=clock, loop=loop, limit=limit
        )
        for msg in messages:
            if stop is not None and stop.is_set():
                break
            key, value = encode(msg)
            try:
                producer.send(topic, key=key, value=value).add_errback(failed)
            except KafkaError as exc:  # e.g. a record over the size limit: refused before sending
                failed(exc, late=False)
                continue
            now = time.monotonic()
            first_send = now if first_send is None else first_send
            stats.send_seconds = now - first_send
            stats.sent += 1
            stats.injected += bool(msg.get("injected"))
            if progress is not None:
                progress(stats)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)
        stats.seconds = time.monotonic() - started
    stats.sent -= late_failures[0]
    return stats


def start_replay_thread(
    settings: Settings, path: str | Path | RowSet, topic: str, **kwargs: Any
) -> tuple[threading.Thread, threading.Event, dict[str, Any]]:
    """Run `replay` in a daemon thread (for the demo).

    Returns (thread, stop event, result): after `join`, `result` holds
    "stats" (ReplayStats) or "error" (the exception), because a thread
    cannot raise into its caller.
    """
    stop = kwargs.pop("stop", None) or threading.Event()
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["stats"] = replay(settings, path, topic, stop=stop, **kwargs)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, name=f"replay-{topic}", daemon=True)
    thread.start()
    return thread, stop, result


# --------------------------------------------------------------------------- CLI


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "replay",
        help="stream a CSV/JSONL/Parquet file of texts into a topic at a given rate",
        description=(
            "Replay a labeled or unlabeled file (CSV/TSV with a header, JSON lines, or Parquet with pyarrow) "
            "into a Kafka topic at a steady rate, as finsent input items keyed by id. published_at is stamped "
            "now (a live stream) or kept from the file. Optionally inject a negative surge about one company, "
            "one topic, or the whole market, using the rows labelled negative in the file."
        ),
    )
    p.add_argument("file", type=Path, help="input file: .csv, .tsv, .jsonl, .json or .parquet")
    p.add_argument("--topic", help="target topic (default: the first input topic)")
    p.add_argument("--rate", type=float, default=50.0, help="messages per second (default 50; 0 = unpaced)")
    p.add_argument("--limit", type=int, help="stop after this many messages")
    p.add_argument("--loop", action="store_true", help="start again at the end of the file (ids get -r<lap>)")
    p.add_argument(
        "--timestamps", choices=["now", "preserve"], default="now", help="published_at: send time or the file's"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed for the surge (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-create-topic", action="store_true", help="do not create the topic when it is missing")
    cols = p.add_argument_group("columns")
    cols.add_argument("--text-col", default="text", help="text column (default text)")
    cols.add_argument("--id-col", help="id column (default: 'id' if present, else <file-stem>-<row>)")
    cols.add_argument("--label-col", default="label", help="label column used to find negative rows (default label)")
    cols.add_argument("--topic-col", default="topic", help="topic column for --surge-topic (default topic)")
    cols.add_argument(
        "--entity-col",
        default="entity",
        help="column naming the company a row is about, replaced by the --surge-entity company (default entity)",
    )
    sg = p.add_argument_group("surge injection")
    which = sg.add_mutually_exclusive_group()
    which.add_argument(
        "--surge-entity",
        metavar="TICKER",
        help="inject a negative surge about this company: negative rows naming it, and negative rows with an "
        "entity column, the company's name put in place of that entity",
    )
    which.add_argument("--surge-topic", metavar="LABEL", help="inject negative rows of this topic (needs --topic-col)")
    which.add_argument("--surge-all", action="store_true", help="inject a market-wide negative surge")
    sg.add_argument("--surge-name", help="company name in the injected text (default: watchlist name)")
    sg.add_argument("--surge-start", type=float, default=30.0, help="seconds after start (default 30)")
    sg.add_argument("--surge-duration", type=float, default=60.0, help="seconds (default 60)")
    sg.add_argument("--surge-share", type=float, default=0.8, help="share of messages replaced (default 0.8)")
    p.set_defaults(func=run)
    return p


def surge_from_args(args: argparse.Namespace) -> Surge | None:
    """The Surge the flags ask for; bad values are one-line CliErrors."""
    if args.surge_name and not args.surge_entity:
        raise CliError("--surge-name needs --surge-entity")
    if not (args.surge_entity or args.surge_topic or args.surge_all):
        return None
    timing = {"start_s": args.surge_start, "duration_s": args.surge_duration, "share": args.surge_share}
    if not 0 < args.surge_share <= 1:
        raise CliError("--surge-share must be in (0, 1]")
    if args.surge_start < 0 or args.surge_duration <= 0:
        raise CliError("--surge-start must be >= 0 and --surge-duration > 0")
    if args.surge_entity:
        ticker = args.surge_entity.strip().lstrip("$").upper()
        if not re.fullmatch(r"[A-Z]{1,6}(\.[A-Z]{1,2})?", ticker):
            raise CliError(f"--surge-entity {args.surge_entity!r} is not a ticker symbol")
        return Surge.entity(ticker, args.surge_name or company_name(ticker), **timing)
    if args.surge_topic:
        return Surge("topic", args.surge_topic.strip(), args.surge_topic.strip(), **timing)
    return Surge("all", "", "", **timing)


def _progress_bar(args: argparse.Namespace, topic: str, total: int | None) -> Any:
    if args.quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="msg", desc=f"replay -> {topic}", dynamic_ncols=True, file=sys.stderr)


def run(args: argparse.Namespace, settings: Settings) -> int:
    quiet_kafka_logs(settings)
    if args.rate < 0:
        raise CliError("--rate must be >= 0")
    if args.limit is not None and args.limit < 1:
        raise CliError("--limit must be >= 1")
    surge = surge_from_args(args)
    topic = args.topic or settings.topics.inputs[0]
    rowset = load_rows(
        args.file,
        text_col=args.text_col,
        id_col=args.id_col,
        label_col=args.label_col,
        topic_col=args.topic_col,
        entity_col=args.entity_col,
    )
    total = args.limit if args.limit is not None else (None if args.loop else len(rowset.rows))
    bar = _progress_bar(args, topic, total)

    def progress(stats: ReplayStats) -> None:
        bar.update(stats.sent - bar.n)
        if stats.injected and stats.sent % 50 == 0:
            bar.set_postfix(injected=stats.injected, refresh=False)

    try:
        stats = replay(
            settings, rowset, topic, rate=args.rate, limit=args.limit, loop=args.loop,
            timestamps=args.timestamps, surge=surge, seed=args.seed, label_col=args.label_col,
            progress=progress if bar is not None else None, create_topic=not args.no_create_topic,
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    print(stats.summary(), flush=True)
    return 1 if stats.failed else 0
