"""`finsent tail`: print scored items, trends, alerts or dead letters readably."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from monitor.cli import CliError
from monitor.settings import Settings

KINDS = ("scored", "trends", "alerts", "deadletter")


def _ts(ms: Any) -> str:
    try:
        return time.strftime("%H:%M:%S", time.localtime(int(ms) / 1000))
    except (TypeError, ValueError, OverflowError, OSError):
        return "--:--:--"


def format_scored(v: dict[str, Any]) -> str:
    s = v.get("sentiment") or {}
    t = v.get("topic") or {}
    ents = ",".join(v.get("entities") or [])
    text = " ".join(str(v.get("title") or v.get("text") or "").split())[:100]
    return f"{_ts(v.get('scored_at'))}  {str(s.get('label', '?'))[:3].upper()}({float(s.get('score', 0)):+.2f})  " \
           f"{str(t.get('label', '-'))[:24]:24}  {ents[:20]:20}  {text}"  # fmt: skip


def format_trend(v: dict[str, Any]) -> str:
    return (
        f"{_ts(v.get('window_start'))}-{_ts(v.get('window_end'))}  {v.get('dimension')}:{v.get('key')}  "
        f"n={v.get('count')}  neg={float(v.get('negative_share') or 0):.2f}  "
        f"base={float(v.get('baseline_mean') or 0):.2f}  z={float(v.get('zscore') or 0):+.1f}  "
        f"mean={float(v.get('mean_score') or 0):+.2f}"
    )


def format_alert(v: dict[str, Any]) -> str:
    head = (
        f"{str(v.get('state', '?')).upper()} {v.get('severity')} {v.get('dimension')}:{v.get('key')} "
        f"window {_ts(v.get('window_start'))}-{_ts(v.get('window_end'))}  "
        f"neg share {float(v.get('negative_share') or 0):.2f} vs baseline {float(v.get('baseline_mean') or 0):.2f}  "
        f"z={float(v.get('zscore') or 0):+.1f}  n={v.get('count')}"
    )
    lines = [head]
    for e in v.get("evidence") or []:
        lines.append(
            f"    {float(e.get('score') or 0):+.2f}  {str(e.get('text'))[:120]}  {e.get('url') or ''}".rstrip()
        )
    return "\n".join(lines)


def format_deadletter(v: dict[str, Any]) -> str:
    o = v.get("origin") or {}
    raw = str(v.get("raw", ""))[:80].replace("\n", " ")
    return f"{v.get('error')}: {v.get('detail')}  [{o.get('topic')}/{o.get('partition')}@{o.get('offset')}]  {raw!r}"


FORMATTERS = {"scored": format_scored, "trends": format_trend, "alerts": format_alert, "deadletter": format_deadletter}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "tail",
        help="print scored items, trends, alerts or dead letters",
        description="Follow an output topic and print its records readably (or as JSON lines with --json).",
    )
    p.add_argument("what", nargs="?", default="alerts", help=f"one of {', '.join(KINDS)} or a topic name")
    p.add_argument("--from-beginning", action="store_true", help="start at offset 0 instead of the end")
    p.add_argument("--max", type=int, help="stop after this many records")
    p.add_argument("--timeout", type=float, help="stop after this many seconds without a record")
    p.add_argument("--json", action="store_true", help="print raw JSON lines")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace, settings: Settings) -> int:
    from kafka import KafkaConsumer, TopicPartition

    kind = args.what if args.what in KINDS else None
    topic = getattr(settings.topics, kind) if kind else args.what
    fmt = FORMATTERS.get(kind or "", lambda v: json.dumps(v, ensure_ascii=False))
    try:
        consumer = KafkaConsumer(**settings.kafka.kafka_python_config(), enable_auto_commit=False, group_id=None)
        parts = consumer.partitions_for_topic(topic)
    except Exception as exc:
        raise CliError(f"cannot connect to Kafka at {settings.kafka.bootstrap}: {exc}") from None
    if not parts:
        consumer.close()
        raise CliError(f"topic {topic} does not exist")
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    skip_until: dict[TopicPartition, int] = {}
    if not args.from_beginning:
        # tansu's ListOffsets("latest") is wrong; the highwater after one fetch is right.
        consumer.poll(timeout_ms=500, max_records=1)
        for tp in tps:
            hw = consumer.highwater(tp)
            if hw is not None:
                skip_until[tp] = hw
        consumer.seek_to_beginning(*tps)
    shown = 0
    last = time.monotonic()
    try:
        while True:
            batch = consumer.poll(timeout_ms=500)
            for tp, recs in batch.items():
                for r in recs:
                    if r.offset < skip_until.get(tp, 0):
                        continue
                    try:
                        value = json.loads(r.value)
                    except (ValueError, TypeError):
                        value = {"raw": repr(r.value)[:200]}
                    print(json.dumps(value, ensure_ascii=False) if args.json else fmt(value), flush=True)
                    shown += 1
                    last = time.monotonic()
                    if args.max and shown >= args.max:
                        return 0
            if args.timeout and time.monotonic() - last > args.timeout:
                return 0
    except KeyboardInterrupt:
        return 0
    finally:
        consumer.close()
