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
import logging
import sys
from pathlib import Path
from typing import Any

from monitor.cli.errors import CliError
from monitor.feed.replay import ReplayStats, replay
from monitor.feed.rows import load_rows
from monitor.feed.surges import Surge, company_name, surge_key
from monitor.settings import Settings

log = logging.getLogger(__name__)


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
        ticker = surge_key(args.surge_entity)
        if ticker is None:
            raise CliError(f"--surge-entity {args.surge_entity!r} is not a ticker symbol or stock code")
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
