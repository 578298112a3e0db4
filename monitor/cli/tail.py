"""`finsent tail`: follow an output topic and print its records readably.

For people watching a running monitor: scored items as
one line each, trend windows as table rows, alerts highlighted with their
evidence headlines, dead letters with reason and origin. Formatting is
pure (`format_*` return `rich.text.Text`, unit-tested); `follow()` is the
kafka-python edge.

Starting "at the end" is tansu-safe: tansu's ListOffsets("latest") answers
the base offset of the last batch + 1, so `end_offsets` is only
a cheap lower bound; the high-water mark of the first fetch is the real end,
and records below it are dropped.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from rich.text import Text

from monitor.cli.errors import CliError, kafka_unreachable
from monitor.core.surge import SurgeConfig
from monitor.settings import Settings
from monitor.stream.clients import BOOTSTRAP_TIMEOUT_MS, is_unreachable

KINDS = ("scored", "trends", "alerts", "deadletter")
SENTIMENT_STYLE = {"negative": "bold red", "neutral": "dim", "positive": "bold green"}
SENTIMENT_TAG = {"negative": "NEG", "neutral": "NEU", "positive": "POS"}
TEXT_CHARS = 120


# --------------------------------------------------------------------------- formatting (pure)


def fmt_time(ms: Any, tz: tzinfo | None = None) -> str:
    """HH:MM:SS of epoch milliseconds (local time unless `tz`); '--:--:--' when not a time."""
    try:
        return datetime.fromtimestamp(int(ms) / 1000, tz).strftime("%H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return "--:--:--"


def _num(v: Any, default: float = 0.0) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def _mapping(v: Any) -> Mapping[str, Any]:
    """`v` if it is a mapping (a record's nested object), else an empty one."""
    return v if isinstance(v, Mapping) else {}


def one_line(text: Any, limit: int = TEXT_CHARS) -> str:
    """Whitespace collapsed and cut with an ellipsis, so one record stays one line."""
    s = " ".join(str(text or "").split())
    return s if len(s) <= limit else s[: max(0, limit - 1)] + "…"


def format_scored(item: Mapping[str, Any], *, tz: tzinfo | None = None, text_chars: int = TEXT_CHARS) -> Text:
    """`time  SENT(+0.83)  topic  entities  text…` for one scored item."""
    sent = _mapping(item.get("sentiment"))
    topic = _mapping(item.get("topic"))
    label = str(sent.get("label") or "?")
    when = item.get("event_time") or item.get("published_at") or item.get("scored_at")
    entities = ",".join(str(e) for e in item.get("entities") or [])
    out = Text()
    out.append(fmt_time(when, tz), style="cyan")
    out.append("  ")
    out.append(f"{SENTIMENT_TAG.get(label, label[:3].upper())}({_num(sent.get('score')):+.2f})",
               style=SENTIMENT_STYLE.get(label, ""))  # fmt: skip
    out.append(f"  {one_line(topic.get('label') or '-', 22):<22}", style="magenta")
    out.append(f"  {one_line(entities or '-', 16):<16}", style="yellow")
    if item.get("injected"):
        out.append("  [inj]", style="dim")
    out.append("  " + one_line(item.get("title") or item.get("text"), text_chars))
    return out


TREND_COLUMNS = (
    ("window", 17),
    ("key", 24),
    ("n", 5),
    ("neg/neu/pos", 13),
    ("neg%", 5),
    ("base%", 5),
    ("z", 6),
    ("mean", 6),
)


def trend_header() -> Text:
    """Column titles matching `format_trend`, printed once before the rows."""
    return Text("  ".join(f"{name:>{w}}" if i >= 2 else f"{name:<{w}}" for i, (name, w) in
                          enumerate(TREND_COLUMNS)), style="bold underline")  # fmt: skip


def format_trend(window: Mapping[str, Any], *, tz: tzinfo | None = None, zscore_alert: float = SurgeConfig().k) -> Text:
    """One closed window as a table row; a high z-score is highlighted."""
    z = _num(window.get("zscore"))
    counts = (
        f"{int(_num(window.get('negative')))}/{int(_num(window.get('neutral')))}/{int(_num(window.get('positive')))}"
    )
    key = one_line(f"{window.get('dimension', '?')}:{window.get('key', '?')}", 24)
    cells = [
        f"{fmt_time(window.get('window_start'), tz)}-{fmt_time(window.get('window_end'), tz)}"[:17],
        f"{key:<24}",
        f"{int(_num(window.get('count'))):>5}",
        f"{counts:>13}",
        f"{100 * _num(window.get('negative_share')):>4.0f}%",
        f"{100 * _num(window.get('baseline_mean')):>4.0f}%",
        f"{z:>+6.1f}",
        f"{_num(window.get('mean_score')):>+6.2f}",
    ]
    out = Text("  ".join(cells))
    if z >= zscore_alert:
        out.stylize("bold red")
    return out


def format_alert(alert: Mapping[str, Any], *, tz: tzinfo | None = None, evidence: int = 5) -> Text:
    """Headline (red when firing, green when resolved) and the evidence headlines below it."""
    state = str(alert.get("state") or "?")
    style = {"firing": "bold white on red", "resolved": "bold green"}.get(state, "bold")
    out = Text()
    out.append(f" {state.upper()} ", style=style)
    out.append(f" {alert.get('severity') or '-'}", style="red" if state == "firing" else "")
    out.append(f"  {alert.get('dimension', '?')}:{alert.get('key', '?')}", style="bold")
    out.append(
        f"  window {fmt_time(alert.get('window_start'), tz)}-{fmt_time(alert.get('window_end'), tz)}"
        f"  negative {100 * _num(alert.get('negative_share')):.0f}%"
        f" vs baseline {100 * _num(alert.get('baseline_mean')):.0f}%"
        f"  z={_num(alert.get('zscore')):+.1f}  n={int(_num(alert.get('count')))}"
    )
    for ev in list(alert.get("evidence") or [])[:evidence]:
        if not isinstance(ev, Mapping):
            continue
        out.append("\n    ")
        out.append(f"{_num(ev.get('score')):+.2f}", style="red")
        out.append("  " + one_line(ev.get("title") or ev.get("text"), TEXT_CHARS))
        extra = " ".join(str(x) for x in (ev.get("source"), ev.get("url")) if x)
        if extra:
            out.append(f"  ({extra})", style="dim")
    return out


def format_deadletter(record: Mapping[str, Any], *, tz: tzinfo | None = None) -> Text:
    """Reason, detail, where it came from, and the start of the raw bytes."""
    origin = _mapping(record.get("origin"))
    out = Text()
    out.append(fmt_time(record.get("failed_at"), tz), style="cyan")
    out.append(f"  {record.get('error') or '?'}", style="bold red")
    out.append(f"  {one_line(record.get('detail'), 80)}")
    out.append(f"  [{origin.get('topic', '?')}/{origin.get('partition', '?')}@{origin.get('offset', '?')}]",
               style="dim")  # fmt: skip
    raw = one_line(record.get("raw"), 60)
    if record.get("raw_encoding") == "base64":
        raw = "base64:" + raw
    if record.get("raw_truncated"):
        raw += f" ({record.get('raw_bytes')} bytes)"
    out.append(f"  {raw!r}", style="dim")
    return out


def format_item(item: Mapping[str, Any], *, tz: tzinfo | None = None) -> Text:
    """An input item (not scored yet): time, id, source, tickers, text."""
    out = Text()
    out.append(fmt_time(item.get("published_at"), tz), style="cyan")
    out.append(f"  {one_line(item.get('id'), 24):<24}", style="dim")
    out.append(f"  {one_line(item.get('source') or '-', 10):<10}")
    tickers = ",".join(str(t) for t in item.get("tickers") or [])
    out.append(f"  {one_line(tickers or '-', 12):<12}", style="yellow")
    if item.get("injected"):
        out.append("  [inj]", style="red")
    out.append("  " + one_line(item.get("title") or item.get("text")))
    return out


def detect_kind(value: Any) -> str:
    """Which formatter fits a record read from an arbitrary topic (by its fields)."""
    if not isinstance(value, Mapping):
        return "raw"
    if "sentiment" in value and "text" in value:
        return "scored"
    if "state" in value and "dimension" in value:
        return "alerts"
    if "window_start" in value and "dimension" in value:
        return "trends"
    if "error" in value and "origin" in value:
        return "deadletter"
    if "text" in value:
        return "item"
    return "raw"


FORMATTERS: dict[str, Callable[..., Text]] = {
    "scored": format_scored,
    "trends": format_trend,
    "alerts": format_alert,
    "deadletter": format_deadletter,
    "item": format_item,
}


def format_record(value: Any, kind: str | None = None, *, tz: tzinfo | None = None) -> Text:
    """Format any record; `kind` None detects it. Never raises on odd data: tail must keep going."""
    kind = kind or detect_kind(value)
    fmt = FORMATTERS.get(kind) if isinstance(value, Mapping) else None
    if fmt is not None:
        try:
            return fmt(value, tz=tz)
        except Exception:  # a record of the wrong shape on a known topic: show it as JSON below
            fmt = None
    return Text(one_line(json.dumps(value, ensure_ascii=False, default=str), 400), style="dim")


def decode(raw: bytes | None) -> Any:
    """JSON value of a record; the text (or its repr) when it is not JSON."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return repr(raw)


# --------------------------------------------------------------------------- Kafka edge


@dataclass(frozen=True)
class TailRecord:
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: Any


def resolve_target(what: str, settings: Settings) -> tuple[str, str | None]:
    """(topic, kind) for a kind name or a topic name; kind None means detect per record."""
    t = settings.topics
    if what in KINDS:
        return str(getattr(t, what)), what
    by_topic = {t.scored: "scored", t.trends: "trends", t.alerts: "alerts", t.deadletter: "deadletter"}
    by_topic.update({name: "item" for name in t.inputs})
    return what, by_topic.get(what)


def _start_at_end(consumer: Any, tps: list[Any], wait_s: float) -> list[Any]:
    """Position every partition at its true end; return records that arrived after it.

    Seek to `end_offsets` (exact on Kafka, at most one batch short on tansu),
    poll until every partition has reported a high-water mark, and keep only
    records at or beyond that first mark.
    """
    ends = consumer.end_offsets(tps)
    for tp in tps:
        consumer.seek(tp, ends.get(tp) or 0)
    first_hw: dict[Any, int] = {}
    pending: list[Any] = []
    deadline = time.monotonic() + wait_s
    while len(first_hw) < len(tps) and time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=200)
        for tp in tps:
            hw = consumer.highwater(tp)
            if hw is not None and tp not in first_hw:
                first_hw[tp] = hw
        for tp, recs in batch.items():
            pending.extend(r for r in recs if r.offset >= first_hw.get(tp, ends.get(tp) or 0))
    return pending


def follow(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool = False,
    stop: threading.Event | None = None,
    idle_timeout: float | None = None,
    poll_ms: int = 250,
    start_wait_s: float = 5.0,
) -> Generator[TailRecord, None, None]:
    """Yield records of `topic` as they arrive, until `stop` is set or nothing came for `idle_timeout` s.

    Reads all partitions with `assign` (no consumer group: nothing to
    join, nothing committed, any number of tails side by side).
    """
    from kafka import KafkaConsumer, TopicPartition

    try:
        consumer = KafkaConsumer(
            **settings.kafka.kafka_python_config(),
            group_id=None,
            enable_auto_commit=False,
            allow_auto_create_topics=False,
            fetch_max_wait_ms=min(500, poll_ms),
            bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
        )
    except Exception as exc:
        if is_unreachable(exc):
            raise kafka_unreachable(settings) from None
        raise CliError(f"cannot connect to Kafka at {settings.kafka.bootstrap}: {exc}") from None
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise CliError(f"topic {topic} does not exist on {settings.kafka.bootstrap}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        if from_beginning:
            consumer.seek_to_beginning(*tps)
            pending = []
        else:
            pending = _start_at_end(consumer, tps, start_wait_s)
        last = time.monotonic()
        while not (stop is not None and stop.is_set()):
            for r in pending:
                yield TailRecord(r.partition, r.offset, r.timestamp, r.key, decode(r.value))
                last = time.monotonic()
            if idle_timeout is not None and time.monotonic() - last >= idle_timeout:
                return
            batch = consumer.poll(timeout_ms=poll_ms)
            pending = sorted((r for recs in batch.values() for r in recs), key=lambda r: r.timestamp or 0)
    finally:
        consumer.close()


# --------------------------------------------------------------------------- CLI


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "tail",
        help="print scored items, trends, alerts or dead letters as they arrive",
        description=(
            "Follow an output topic and print its records readably: scored items one per line, trend windows "
            "as table rows, alerts highlighted with their evidence, dead letters with reason and origin. "
            "Starts at the current end unless --from-beginning. Ctrl-C stops."
        ),
    )
    p.add_argument("what", nargs="?", default="scored", help=f"{', '.join(KINDS)} (default scored) or any topic name")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record instead of the end")
    p.add_argument("--max", type=int, metavar="N", help="stop after N records")
    p.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds without a new record")
    p.add_argument("--json", action="store_true", help="print each record as one JSON line (for scripts)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    if args.max is not None and args.max < 1:
        raise CliError("--max must be >= 1")
    if args.timeout is not None and args.timeout <= 0:
        raise CliError("--timeout must be > 0")
    topic, kind = resolve_target(args.what, settings)
    console = Console(highlight=False, soft_wrap=True)
    shown = 0
    records = follow(settings, topic, from_beginning=args.from_beginning, idle_timeout=args.timeout)
    try:
        for rec in records:
            if args.json:
                print(json.dumps(rec.value, ensure_ascii=False), flush=True)
            else:
                rec_kind = kind or detect_kind(rec.value)
                if rec_kind == "trends" and shown == 0:
                    console.print(trend_header())
                console.print(format_record(rec.value, rec_kind))
            shown += 1
            if args.max is not None and shown >= args.max:
                break
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a tail normally ends
    finally:
        records.close()  # closes the consumer now, not at garbage collection
    return 0
