"""`finsent tail`: pure formatters, kind detection, and following a real topic.

The `slow` tests check the tansu-safe start at the end: records produced
in multi-record batches before the tail started must not be shown (tansu's
ListOffsets "latest" points inside the last batch), new ones must.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from monitor import cli
from monitor.cli import tail as tail_module
from monitor.cli.tail import (
    decode,
    detect_kind,
    fmt_time,
    follow,
    format_alert,
    format_deadletter,
    format_item,
    format_record,
    format_scored,
    format_trend,
    one_line,
    resolve_target,
    trend_header,
)
from monitor.settings import Settings
from monitor.stream.broker import EmbeddedBroker
from tests.conftest import produce, settings_for

T0 = 1_700_000_000_000  # 22:13:20 UTC

SCORED = {
    "id": "demo-1",
    "text": "Tesla $TSLA: recall of 2M cars\nover autopilot " + "x" * 300,
    "source": "twitter",
    "topic": {"label": "Company | Product News", "confidence": 0.9},
    "sentiment": {"label": "negative", "confidence": 0.95, "score": -0.8312},
    "entities": ["TSLA"],
    "event_time": T0,
    "scored_at": T0 + 40,
}
TREND = {
    "dimension": "entity",
    "key": "TSLA",
    "window_start": T0,
    "window_end": T0 + 60_000,
    "count": 42,
    "negative": 30,
    "neutral": 10,
    "positive": 2,
    "negative_share": 0.714,
    "mean_score": -0.6,
    "baseline_mean": 0.15,
    "baseline_std": 0.05,
    "zscore": 5.24,
}
ALERT = {
    "state": "firing",
    "severity": "critical",
    "dimension": "entity",
    "key": "TSLA",
    "window_start": T0,
    "window_end": T0 + 60_000,
    "negative_share": 0.714,
    "baseline_mean": 0.15,
    "zscore": 5.24,
    "count": 42,
    "evidence": [
        {"id": "a", "text": "Tesla $TSLA: shares slump", "source": "twitter", "url": "http://x/a", "score": -0.97},
        {"id": "b", "text": "Tesla $TSLA: guidance cut", "source": None, "url": None, "score": -0.9},
    ],
}
DEAD = {
    "raw": "{not json",
    "raw_encoding": "utf-8",
    "raw_bytes": 9,
    "raw_truncated": False,
    "error": "not_json",
    "detail": "Expecting property name enclosed in double quotes",
    "origin": {"topic": "finsent.news", "partition": 2, "offset": 17, "timestamp": T0},
    "failed_at": T0,
}


def styles(text: Any) -> set[str]:
    return {str(span.style) for span in text.spans} | ({str(text.style)} if text.style else set())


def test_scored_line_has_time_sentiment_topic_entities_and_cut_text() -> None:
    t = format_scored(SCORED, tz=UTC)
    plain = t.plain
    assert plain.startswith("22:13:20  NEG(-0.83)  Company | Product News  TSLA")
    assert "recall of 2M cars over autopilot" in plain  # newline collapsed
    assert "\n" not in plain and plain.endswith("…") and len(plain) < 200
    assert "bold red" in styles(t)
    pos = format_scored({**SCORED, "sentiment": {"label": "positive", "score": 0.5}}, tz=UTC)
    assert "POS(+0.50)" in pos.plain and "bold green" in styles(pos)


def test_scored_line_survives_missing_fields() -> None:
    assert format_scored({"id": "x", "text": "hello"}).plain.endswith("hello")
    assert "?(+0.00)" in format_scored({"text": "t", "sentiment": "weird", "topic": None}).plain


def test_trend_row_lines_up_with_the_header() -> None:
    row = format_trend(TREND, tz=UTC).plain
    head = trend_header().plain
    assert row.startswith("22:13:20-22:14:20  entity:TSLA")
    assert "30/10/2" in row and "71%" in row and "15%" in row and "+5.2" in row and "-0.60" in row
    assert len(row) == len(head)
    for col in ("window", "key", "neg%", "z", "mean"):
        assert col in head
    assert "bold red" in styles(format_trend(TREND))  # z at or above the surge rule's k: highlighted
    assert not styles(format_trend({**TREND, "zscore": 0.4}))


def test_alert_firing_red_with_evidence_and_resolved_green() -> None:
    t = format_alert(ALERT, tz=UTC)
    lines = t.plain.split("\n")
    assert lines[0].startswith(" FIRING  critical  entity:TSLA  window 22:13:20-22:14:20")
    assert "negative 71% vs baseline 15%" in lines[0] and "z=+5.2" in lines[0] and "n=42" in lines[0]
    assert lines[1].strip().startswith("-0.97  Tesla $TSLA: shares slump  (twitter http://x/a)")
    assert lines[2].strip() == "-0.90  Tesla $TSLA: guidance cut"
    assert "bold white on red" in styles(t)
    r = format_alert({**ALERT, "state": "resolved", "evidence": []})
    assert r.plain.startswith(" RESOLVED ") and "\n" not in r.plain and "bold green" in styles(r)


def test_deadletter_shows_reason_origin_and_raw() -> None:
    plain = format_deadletter(DEAD, tz=UTC).plain
    assert plain.startswith("22:13:20  not_json  Expecting property name")
    assert "[finsent.news/2@17]" in plain and "'{not json'" in plain
    b64 = format_deadletter({**DEAD, "raw": "//79", "raw_encoding": "base64", "raw_truncated": True, "raw_bytes": 9})
    assert "base64://79 (9 bytes)" in b64.plain


def test_kind_detection_and_fallbacks() -> None:
    assert detect_kind(SCORED) == "scored"
    assert detect_kind(TREND) == "trends"
    assert detect_kind(ALERT) == "alerts"
    assert detect_kind(DEAD) == "deadletter"
    assert detect_kind({"id": "1", "text": "x"}) == "item"
    assert detect_kind([1]) == detect_kind("text") == detect_kind({"a": 1}) == "raw"
    assert format_record(ALERT).plain.startswith(" FIRING ")
    assert format_record({"id": "1", "text": "hi", "tickers": ["AAPL"], "published_at": T0}, tz=UTC).plain.startswith(
        "22:13:20  1"
    )
    assert format_record(["not", "a", "dict"]).plain == '["not", "a", "dict"]'
    # A known kind with a record of the wrong shape falls back to JSON instead of crashing the tail.
    assert format_record({"evidence": 5, "state": "firing"}, "alerts").plain == '{"evidence": 5, "state": "firing"}'
    assert format_record({"weird": object()}, "trends").plain


def test_small_helpers() -> None:
    assert fmt_time(T0, UTC) == "22:13:20"
    assert fmt_time(None) == fmt_time("soon") == fmt_time(10**20) == "--:--:--"
    assert one_line(" a\n\tb ", 10) == "a b"
    assert one_line("abcdef", 4) == "abc…"
    assert decode(b'{"a": 1}') == {"a": 1}
    assert decode(b"plain") == "plain"
    assert decode(b"\xff") == "b'\\xff'"
    assert decode(None) is None
    assert format_item({"id": "x", "text": "t", "injected": True}).plain.count("[inj]") == 1


def test_resolve_target_maps_kinds_and_topic_names() -> None:
    s = Settings()
    assert resolve_target("alerts", s) == ("finsent.alerts", "alerts")
    assert resolve_target("finsent.trends", s) == ("finsent.trends", "trends")
    assert resolve_target("finsent.news", s) == ("finsent.news", "item")
    assert resolve_target("other.topic", s) == ("other.topic", None)


def test_cli_validates_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["tail", "--max", "0"]) == cli.EXIT_USAGE
    assert "--max" in capsys.readouterr().err


# --------------------------------------------------------------------------- Kafka


def _settings(broker: EmbeddedBroker, topics: dict[str, Any]) -> Settings:
    return settings_for(broker, topics=topics)


@pytest.mark.slow
def test_tail_from_beginning_prints_every_record(
    broker: EmbeddedBroker, topics: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitor.feed.replay import replay

    topic = topics["inputs"][0]
    demo = Path(__file__).resolve().parent.parent / "monitor" / "data" / "demo" / "headlines.csv"
    stats = replay(_settings(broker, topics), demo, topic, rate=0, limit=200)
    assert stats.sent == 200
    common = ["--bootstrap", broker.bootstrap, "--profile", "embedded"]
    assert cli.main(["tail", topic, "--from-beginning", "--max", "200", "--json", "--timeout", "15", *common]) == 0
    lines = capsys.readouterr().out.splitlines()
    values = [json.loads(x) for x in lines]
    assert len(values) == 200 and len({v["id"] for v in values}) == 200
    # Readable form: an input topic prints as items, one line each.
    assert cli.main(["tail", topic, "--from-beginning", "--max", "5", "--timeout", "15", *common]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5 and all("twitter" in line for line in out)


@pytest.mark.slow
def test_tail_from_the_end_skips_old_batched_records(
    broker: EmbeddedBroker, topics: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = topics["scored"]
    produce(broker, topic, [{**SCORED, "id": f"old-{i}"} for i in range(100)])  # batched: tansu's end offset lies
    settings = _settings(broker, topics)
    stop = threading.Event()
    got: list[Any] = []
    errors: list[Exception] = []
    # `follow` is a generator: it connects and looks for the end only once iterated. Know when it has
    # found the end (instead of guessing how long that takes) by wrapping the step that finds it.
    at_end = threading.Event()
    start_at_end = tail_module._start_at_end

    def start_at_end_then_signal(*args: Any, **kwargs: Any) -> list[Any]:
        pending = start_at_end(*args, **kwargs)
        at_end.set()
        return pending

    monkeypatch.setattr(tail_module, "_start_at_end", start_at_end_then_signal)

    def run() -> None:
        try:
            for rec in follow(settings, topic, stop=stop, idle_timeout=20):
                got.append(rec.value)
                if len(got) >= 5:
                    break
        except Exception as exc:  # reported by the assertions below, not lost in the thread
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert at_end.wait(30), f"the tail did not find the end of {topic} in 30 s: {errors}"
    produce(broker, topic, [{**SCORED, "id": f"new-{i}"} for i in range(5)])
    t.join(30)
    stop.set()
    assert not t.is_alive(), f"the tail showed {len(got)} of the 5 new records in 30 s: {[v['id'] for v in got]}"
    assert not errors, errors
    assert sorted(v["id"] for v in got) == [f"new-{i}" for i in range(5)]


@pytest.mark.slow
def test_tail_timeout_and_missing_topic(
    broker: EmbeddedBroker, topics: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--bootstrap", broker.bootstrap, "--profile", "embedded"]
    t = time.monotonic()
    assert cli.main(["tail", topics["alerts"], "--timeout", "1", *common]) == 0
    assert time.monotonic() - t < 10
    assert capsys.readouterr().out == ""
    assert cli.main(["tail", "no.such.topic", "--timeout", "1", *common]) == cli.EXIT_USAGE
    assert "topic no.such.topic does not exist" in capsys.readouterr().err
