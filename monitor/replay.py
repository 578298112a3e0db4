"""`finsent replay`: stream a file of texts into a Kafka topic at a steady rate.

Optionally injects a negative surge about one company: for a time span, a
share of the messages is replaced by negative rows of the file rewritten
to name the company, so the demo and tests have a known surge in real
financial language. The message sequence is built by a pure generator
(testable without Kafka); the producer is at the edge.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.cli import CliError
from monitor.settings import Settings

csv.field_size_limit(16 * 1024 * 1024)


@dataclass(frozen=True)
class Surge:
    ticker: str
    name: str
    start_s: float = 30.0
    duration_s: float = 60.0
    share: float = 0.5


@dataclass
class ReplayStats:
    sent: int = 0
    injected: int = 0
    seconds: float = 0.0


def load_rows(path: Path, text_col: str = "text", id_col: str = "id", label_col: str = "label") -> list[dict[str, Any]]:
    """Rows with at least a text; CSV or JSONL. A file that cannot be used raises CliError (one line)."""
    if not path.is_file():
        raise CliError(f"input file {path} does not exist")
    rows: list[dict[str, Any]] = []
    try:
        if path.suffix in (".jsonl", ".ndjson", ".json"):
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            obj = json.loads(line)
                        except ValueError:
                            raise CliError(f"{path}:{n} is not a JSON line") from None
                        if isinstance(obj, dict):
                            rows.append(obj)
        else:
            with open(path, encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh)
                if reader.fieldnames is None or text_col not in reader.fieldnames:
                    raise CliError(f"{path} has no '{text_col}' column (columns: {reader.fieldnames})")
                rows = list(reader)
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    out = []
    for i, r in enumerate(rows):
        text = r.get(text_col)
        if not isinstance(text, str) or not text.strip():
            continue
        out.append(
            {
                "id": str(r.get(id_col) or f"{path.stem}-{i}"),
                "text": text,
                "label": r.get(label_col),
                "source": r.get("source") or path.stem,
            }
        )
    if not out:
        raise CliError(f"{path} holds no rows with text in column '{text_col}'")
    return out


def iter_messages(
    rows: list[dict[str, Any]],
    *,
    surge: Surge | None = None,
    loop: bool = False,
    limit: int | None = None,
    rate: float = 50.0,
    seed: int = 7,
    timestamps: str = "now",
    start_ms: int | None = None,
) -> Iterator[tuple[float, dict[str, Any]]]:
    """Yield (offset seconds from start, message) at the planned pace.

    Timestamps "now" stamps published_at as start + offset (the live stream);
    "preserve" keeps the file's published_at if any.
    """
    rng = random.Random(seed)
    negatives = [r for r in rows if str(r.get("label")).lower() in ("negative", "bearish", "0")]
    base_ms = start_ms if start_ms is not None else int(time.time() * 1000)
    n = 0
    lap = 0
    while True:
        for row in rows:
            if limit is not None and n >= limit:
                return
            t = n / rate if rate > 0 else 0.0
            msg: dict[str, Any] = {"id": row["id"] if lap == 0 else f"{row['id']}-r{lap}", "text": row["text"]}
            if row.get("source"):
                msg["source"] = row["source"]
            if (
                surge
                and negatives
                and surge.start_s <= t < surge.start_s + surge.duration_s
                and rng.random() < surge.share
            ):
                neg = rng.choice(negatives)
                msg = {
                    "id": f"surge-{surge.ticker}-{n}",
                    "text": f"{surge.name} ${surge.ticker}: {neg['text']}",
                    "source": "injected",
                    "tickers": [surge.ticker],
                    "injected": True,
                }
            if timestamps == "now":
                msg["published_at"] = base_ms + int(t * 1000)
            elif row.get("published_at") is not None:
                msg["published_at"] = row["published_at"]
            yield t, msg
            n += 1
        lap += 1
        if not loop:
            return


def replay(
    settings: Settings,
    path: Path,
    topic: str,
    *,
    rate: float = 50.0,
    limit: int | None = None,
    loop: bool = False,
    timestamps: str = "now",
    surge: Surge | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
    text_col: str = "text",
    id_col: str = "id",
) -> ReplayStats:
    """Produce the file into `topic`, paced by wall clock; stops early when `stop` is set."""
    from kafka import KafkaProducer

    rows = load_rows(path, text_col=text_col, id_col=id_col)
    try:
        producer = KafkaProducer(**settings.kafka.kafka_python_config(), linger_ms=5, max_request_size=4 * 1024 * 1024)
    except Exception as exc:
        raise CliError(f"cannot connect to Kafka at {settings.kafka.bootstrap}: {exc}") from None
    stats = ReplayStats()
    started = time.monotonic()
    try:
        for offset, msg in iter_messages(rows, surge=surge, loop=loop, limit=limit, rate=rate, timestamps=timestamps):
            if stop is not None and stop.is_set():
                break
            delay = started + offset - time.monotonic()
            if delay > 0:
                if stop is not None:
                    if stop.wait(delay):
                        break
                else:
                    time.sleep(delay)
            producer.send(topic, key=str(msg["id"]).encode(), value=json.dumps(msg).encode())
            stats.sent += 1
            stats.injected += bool(msg.get("injected"))
            if progress:
                progress(1)
        producer.flush()
    finally:
        producer.close()
    stats.seconds = time.monotonic() - started
    return stats


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "replay",
        help="stream a CSV/JSONL file of texts into a topic at a given rate",
        description=(
            "Replay a labeled or unlabeled file (CSV with a text column, or JSON lines) into a Kafka topic "
            "at a steady rate, stamping publication times as now (live) or keeping the file's. Optionally "
            "inject a negative surge about one company."
        ),
    )
    p.add_argument("file", type=Path, help="CSV (with a header) or JSONL file")
    p.add_argument("--topic", default=None, help="target topic (default: the first input topic)")
    p.add_argument("--rate", type=float, default=50.0, help="messages per second (default 50; 0 = as fast as possible)")
    p.add_argument("--limit", type=int, help="stop after this many messages")
    p.add_argument("--loop", action="store_true", help="start again at the end of the file")
    p.add_argument("--timestamps", choices=["now", "preserve"], default="now", help="published_at: now or the file's")
    p.add_argument("--text-col", default="text", help="text column name (default text)")
    p.add_argument("--id-col", default="id", help="id column name (default id; else file-row ids)")
    p.add_argument("--surge-entity", metavar="TICKER", help="inject a negative surge about this company")
    p.add_argument("--surge-name", help="company name for the surge text (default: from the watchlist)")
    p.add_argument("--surge-start", type=float, default=30.0, help="seconds after start (default 30)")
    p.add_argument("--surge-duration", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--surge-share", type=float, default=0.5, help="share of messages replaced (default 0.5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.rate < 0:
        raise CliError("--rate must be >= 0")
    if not 0 < args.surge_share <= 1:
        raise CliError("--surge-share must be in (0, 1]")
    surge = None
    if args.surge_entity:
        from monitor.entities import default_watchlist

        ticker = args.surge_entity.strip().lstrip("$").upper()
        name = args.surge_name or default_watchlist().name_of(ticker)
        surge = Surge(ticker, name, args.surge_start, args.surge_duration, args.surge_share)
    topic = args.topic or settings.topics.inputs[0]
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=args.limit, unit="msg", desc=f"replay -> {topic}")
    try:
        stats = replay(
            settings, args.file, topic, rate=args.rate, limit=args.limit, loop=args.loop,
            timestamps=args.timestamps, surge=surge, progress=bar.update if bar else None,
            text_col=args.text_col, id_col=args.id_col,
        )  # fmt: skip
    finally:
        if bar:
            bar.close()
    print(f"sent {stats.sent} messages ({stats.injected} injected) to {topic} in {stats.seconds:.1f} s")
    return 0
