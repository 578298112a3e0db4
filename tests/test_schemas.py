"""docs/schemas/ against the code that builds each Kafka record: real records pass, broken ones fail by field."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from monitor import schemas
from monitor.core import surge
from monitor.core import validate as val
from monitor.core import windows as win
from monitor.core.entities import default_watchlist, extract_entities
from monitor.core.records import RESERVED, scored_record, trend_event, trend_keys, trend_record
from monitor.core.scores import TaskScore
from monitor.model.bundle import SENTIMENT_LABELS
from monitor.testing import TopicReader

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MODEL = {"name": "finsent-minilm-l6", "version": "1.2.0", "sha256": "ab" * 32}
WATCHLIST = default_watchlist()
SIZE = 60_000


def _scores(sentiment: str, topic: str = "Earnings") -> dict[str, TaskScore]:
    p = {"negative": 0.05, "neutral": 0.15, "positive": 0.05}
    p[sentiment] = 0.8
    return {
        "topic": TaskScore(topic, 0.71234567, {topic: 0.71235, "Macro": 0.28765}),
        "sentiment": TaskScore(sentiment, 0.8, p),
    }


def _scored(
    raw: dict[str, Any], sentiment: str = "negative", kafka_ts: int | None = NOW, now: int = NOW
) -> dict[str, Any]:
    """What the score stage writes for one input (monitor/stream/scoring.py finish_item)."""
    item = val.validate(json.dumps(raw).encode(), kafka_ts_ms=kafka_ts, now_ms=now)
    assert isinstance(item, val.Item), item
    entities = extract_entities(f"{item.title or ''} {item.text}", item.tickers, WATCHLIST)
    event_ms, source = val.event_time_ms(item, kafka_ts, now)
    return scored_record(item.to_dict(), _scores(sentiment), entities, MODEL,
                         event_ms=event_ms, event_time_source=source, scored_at_ms=NOW + 40, stream="finsent.news")  # fmt: skip


def _run_key(dim: str, key: str, shares: list[float], n: int = 50) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Windows of `n` items at each negative share through windows.py and surge.advance: (trends, alerts)."""
    cfg_w, cfg_s = win.WindowConfig(size_ms=SIZE, allowed_lateness_ms=0), surge.SurgeConfig()
    wst: dict[str, Any] | None = None
    sst: dict[str, Any] | None = None
    trends: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    for w, share in enumerate(shares):
        start = NOW + w * SIZE
        negatives = round(share * n)
        for i in range(n):
            label = "negative" if i < negatives else ("positive" if i % 3 == 0 else "neutral")
            rec = _scored({"id": f"{w}-{i}", "text": f"$ACME item {i}", "title": "Acme", "source": "wire",
                           "published_at": start + i * 100, "tickers": ["$acme", "MSFT" if i % 2 else "AAPL"]},
                          label, kafka_ts=start, now=start + SIZE)  # fmt: skip
            assert (dim, key) in trend_keys(rec)
            ev = trend_event(rec, dim, key)
            wst, _ = win.add_event(wst, event_ms=ev["event_ms"], item_id=ev["id"], sentiment=ev["sentiment"],
                                   score=ev["score"], evidence=ev["evidence"], cfg=cfg_w)  # fmt: skip
        wst, closed = win.close_due(wst, watermark_ms=start + SIZE, cfg=cfg_w)
        sst, evaluated, quiet = surge.advance(sst, closed, watermark_ms=start + SIZE, size_ms=SIZE,
                                              allowed_lateness_ms=0, cfg=cfg_s, now_ms=start + SIZE + 5, dimension=dim,
                                              key=key)  # fmt: skip
        for cw, stats, alert in evaluated:
            trends.append(trend_record(cw, dim, key, stats))
            if alert is not None:
                alerts.append(alert.to_dict())
        alerts.extend(a.to_dict() for a in quiet)
    # The key goes quiet: empty windows resolve a surge still firing.
    end = NOW + len(shares) * SIZE
    sst, _, quiet = surge.advance(sst, [], watermark_ms=end + 5 * SIZE, size_ms=SIZE, allowed_lateness_ms=0,
                                  cfg=cfg_s, now_ms=end + 5 * SIZE, dimension=dim, key=key)  # fmt: skip
    alerts.extend(a.to_dict() for a in quiet)
    return trends, alerts


SURGE = [0.1] * 8 + [0.8, 0.8] + [0.1] * 3


@pytest.fixture(scope="module")
def entity_run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return _run_key("entity", "ACME", SURGE)


@pytest.fixture(scope="module")
def topic_run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return _run_key("topic", "Earnings", SURGE)


def _dead(raw: bytes | None, reason: str = "not_json", detail: str = "not JSON: Expecting value") -> dict[str, Any]:
    return val.dead_letter_record(raw, val.Invalid(reason, detail), topic="finsent.news", partition=2, offset=17,
                                  kafka_ts_ms=NOW, now_ms=NOW + 3)  # fmt: skip


def _fails(kind: str, record: Any, *fragments: str) -> str:
    with pytest.raises(schemas.RecordInvalid) as exc:
        schemas.validate_record(kind, record)
    msg = str(exc.value)
    for f in fragments:
        assert f in msg, msg
    assert isinstance(exc.value, AssertionError) and isinstance(exc.value, ValueError)
    return msg


# --- the schema files themselves ------------------------------------------------------------------


@pytest.mark.parametrize("kind", schemas.KINDS)
def test_every_schema_is_a_valid_draft_2020_12_schema(kind: str) -> None:
    schema = schemas.load_schema(kind)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:finsent:schema:{kind}"
    assert schema["title"] and schema["description"] and schema["required"] and schema["type"] == "object"
    assert set(schema["required"]) <= set(schema["properties"])


def test_schema_dir_holds_exactly_the_known_kinds() -> None:
    files = sorted(p.name for p in schemas.SCHEMA_DIR.glob("*.json"))
    assert files == sorted(f"{k}.schema.json" for k in schemas.KINDS)
    assert (schemas.REPO / "docs" / "SCHEMAS.md").is_file()
    with pytest.raises(ValueError, match="unknown schema kind"):
        schemas.load_schema("trends")


def test_enums_match_the_code() -> None:
    scored, trend, alert = (schemas.load_schema(k) for k in ("scored", "trend", "alert"))
    assert tuple(scored["properties"]["sentiment"]["properties"]["label"]["enum"]) == SENTIMENT_LABELS == win.SENTIMENTS
    assert set(scored["properties"]["input_fields"]["propertyNames"]["enum"]) == {*RESERVED, "lang"}
    assert set(trend["properties"]["dimension"]["enum"]) == set(alert["properties"]["dimension"]["enum"])
    assert set(alert["properties"]["evidence"]["items"]["properties"]) == {*win.EVIDENCE_FIELDS, "score"}


def test_dead_letter_reasons_are_every_reason_the_code_emits() -> None:
    enum = set(schemas.load_schema("deadletter")["properties"]["error"]["enum"])
    assert set(val.REASONS) <= enum
    emitted: set[str] = set()
    for path in (schemas.REPO / "monitor").rglob("*.py"):
        src = path.read_text(encoding="utf-8")
        emitted |= set(re.findall(r"Invalid\(\s*\"(\w+)\"", src))
        emitted |= set(re.findall(r"\.dead\(\s*[\w.]+,\s*\"(\w+)\"", src))
    assert {"processing_error", "aggregation_error", "not_json", "bad_timestamp"} <= emitted
    assert emitted <= enum, emitted - enum
    assert enum <= emitted | set(val.REASONS)


# --- real records validate ------------------------------------------------------------------------


def test_inputs_the_validator_accepts_match_the_input_schema() -> None:
    good = [
        {"id": "n-1", "text": "Acme beats estimates", "title": None, "source": "wire", "url": "https://x.test/1",
         "lang": "en", "author": "desk", "published_at": "2026-01-01T09:30:00Z", "tickers": ["$acme", "brk.b", "??"],
         "injected": True, "meta": {"feed": 3}},
        {"id": 7, "text": "x", "published_at": 1_767_225_600},
        {"id": "7", "text": " 茅台 ", "published_at": "1767225600000", "tickers": None},
    ]  # fmt: skip
    for raw in good:
        assert isinstance(val.validate(json.dumps(raw).encode(), now_ms=NOW), val.Item)
        schemas.validate_record("input", raw)


@pytest.mark.parametrize(
    ("raw", "reason", "path"),
    [
        ({"text": "t"}, "missing_id", "$.id"),
        ({"id": None, "text": "t"}, "missing_id", "$.id"),
        ({"id": True, "text": "t"}, "bad_id", "$.id"),
        ({"id": 1.5, "text": "t"}, "bad_id", "$.id"),
        ({"id": "  ", "text": "t"}, "bad_id", "$.id"),
        ({"id": "x" * 257, "text": "t"}, "bad_id", "$.id"),
        ({"id": "a"}, "missing_text", "$.text"),
        ({"id": "a", "text": 3}, "bad_type", "$.text"),
        ({"id": "a", "text": " \u200b\t\x00 "}, "empty_text", "$.text"),
        ({"id": "a", "text": "t", "title": 5}, "bad_type", "$.title"),
        ({"id": "a", "text": "t", "tickers": "AAPL"}, "bad_type", "$.tickers"),
        ({"id": "a", "text": "t", "tickers": ["AAPL", 3]}, "bad_type", "$.tickers[1]"),
        ({"id": "a", "text": "t", "published_at": True}, "bad_timestamp", "$.published_at"),
        ({"id": "a", "text": "t", "published_at": -5}, "bad_timestamp", "$.published_at"),
    ],
)
def test_inputs_the_validator_refuses_fail_the_input_schema(raw: dict[str, Any], reason: str, path: str) -> None:
    got = val.validate(json.dumps(raw).encode(), now_ms=NOW)
    assert isinstance(got, val.Invalid) and got.reason == reason
    _fails("input", raw, f"{path}:")
    _fails("input", [raw], "$:")  # not an object


def test_scored_records_validate() -> None:
    plain = _scored({"id": 42, "text": "Acme Corp cuts guidance; $MSFT flat"})
    full = _scored({"id": "n-2", "text": "Apple shares slide", "title": "Apple", "source": "wire", "url": "u",
                    "lang": "en", "author": "a", "published_at": "2026-01-01T00:00:00Z", "tickers": ["aapl", "$tsla"],
                    "sentiment": "their own", "scored_at": 1, "feed": {"id": 3}}, "positive")  # fmt: skip
    future = _scored({"id": "f", "text": "t", "published_at": NOW + 3_600_000}, "neutral", kafka_ts=None)
    assert plain["id"] == "42" and "title" not in plain and plain["event_time_source"] == "kafka"
    assert full["input_fields"] == {"sentiment": "their own", "scored_at": 1} and full["feed"] == {"id": 3}
    assert full["entities"][:2] == ["AAPL", "TSLA"] and future["event_time_source"] == "future_clamped"
    only_sentiment = scored_record({"id": "s", "text": "t"}, {"sentiment": _scores("neutral")["sentiment"]}, [],
                                   MODEL, event_ms=NOW, event_time_source="now", scored_at_ms=NOW - 5, stream="c")  # fmt: skip
    for rec in (plain, full, future, only_sentiment):
        schemas.validate_record("scored", json.loads(json.dumps(rec, allow_nan=False)))


def test_trend_records_validate(entity_run: Any, topic_run: Any) -> None:
    for trends, _ in (entity_run, topic_run):
        assert len(trends) == len(SURGE)
        for t in trends:
            schemas.validate_record("trend", json.loads(json.dumps(t, allow_nan=False)))
    topic_trends = topic_run[0]
    assert topic_trends[8]["negative_by_entity"]["ACME"] == 40  # every item names ACME
    assert all(t["negative_by_entity"] == {} for t in entity_run[0])
    assert any(t["zscore"] < 0 for t in topic_trends)  # below normal is negative, not clipped


def test_alerts_firing_and_resolved_validate(entity_run: Any, topic_run: Any) -> None:
    for dim, (_, alerts) in (("entity", entity_run), ("topic", topic_run)):
        assert [a["state"] for a in alerts] == ["firing", "resolved"], (dim, alerts)
        firing, resolved = alerts
        assert firing["evidence"] and resolved["evidence"] == []
        for a in alerts:
            schemas.validate_record("alert", json.loads(json.dumps(a, allow_nan=False)))
    topic_firing = topic_run[1][0]
    assert topic_firing["derived_from"] == "entity:ACME" and topic_firing["drivers"][0]["key"] == "entity:ACME"


def test_dead_letters_validate() -> None:
    records = [
        _dead(b'{"id": 1, "text": '),
        _dead(b"\xff\xfe not utf-8", "not_utf8", "invalid UTF-8 at byte 0"),
        _dead(None, "empty", "message value is empty"),
        _dead(b"x" * (val.DEADLETTER_RAW_BYTES + 10), "too_large", "message is 65546 bytes, limit 1000"),
        _dead(b'{"key": "entity:ACME", "state": {}}', "aggregation_error", "key entity:ACME: KeyError: 'n'"),
    ]
    records.append(
        val.dead_letter_record(
            b'{"id":"a","text":"t"}',
            val.Invalid("processing_error", "model: RuntimeError: x"),
            topic="finsent.news",
            partition=0,
            offset=0,
            kafka_ts_ms=None,
            now_ms=NOW,
        )  # fmt: skip
    )
    assert records[1]["raw_encoding"] == "base64" and records[3]["raw_truncated"] is True
    for rec in records:
        schemas.validate_record("deadletter", json.loads(json.dumps(rec)))


# --- broken records fail, naming the field --------------------------------------------------------


def test_broken_scored_records_name_the_field() -> None:
    good = _scored({"id": "a", "text": "Acme falls"})
    missing = {k: v for k, v in good.items() if k != "sentiment"}
    _fails("scored", missing, "$.sentiment:", "'sentiment' is a required property")
    two = {k: v for k, v in good.items() if k not in ("model", "lag_ms")}
    _fails("scored", two, "$.model: 'model' is a required", "$.lag_ms: 'lag_ms' is a required")
    _fails("scored", {**good, "sentiment": {**good["sentiment"], "label": "bullish"}}, "$.sentiment.label:", "bullish")
    _fails("scored", {**good, "lag_ms": "40"}, "$.lag_ms:", "is not of type 'integer'")
    _fails("scored", {**good, "lag_ms": -1}, "$.lag_ms:")
    _fails("scored", {**good, "event_time_source": "guess"}, "$.event_time_source:")
    _fails("scored", {**good, "entities": ["ACME", 3]}, "$.entities[1]:")
    _fails("scored", {**good, "model": {"name": "m", "version": "1"}}, "$.model.sha256:")
    _fails("scored", {**good, "sentiment": {**good["sentiment"], "score": 1.5}}, "$.sentiment.score:")
    # Several problems are all listed.
    msg = _fails("scored", {**good, "id": 5, "stream": None}, "$.id:", "$.stream:")
    assert msg.startswith("scored record does not match docs/schemas/scored.schema.json")
    # Passthrough fields are allowed at the top level only.
    schemas.validate_record("scored", {**good, "anything": [1, {"x": None}]})
    _fails("scored", {**good, "topic": {**good["topic"], "extra": 1}}, "$.topic:", "'extra' was unexpected")


def test_broken_trends_alerts_and_dead_letters_name_the_field(entity_run: Any) -> None:
    trend = entity_run[0][0]
    _fails("trend", {k: v for k, v in trend.items() if k != "zscore"}, "$.zscore:", "required")
    _fails("trend", {**trend, "count": "50"}, "$.count:", "'50' is not of type 'integer'")
    _fails("trend", {**trend, "dimension": "sector"}, "$.dimension:", "'sector' is not one of")
    _fails("trend", {**trend, "dimension": "all", "key": "ACME"}, "$.key:")
    _fails("trend", {**trend, "evidence": []}, "$:", "'evidence' was unexpected")

    firing, resolved = entity_run[1]
    _fails("alert", {**firing, "state": "pending"}, "$.state:", "'pending' is not one of")
    _fails("alert", {**firing, "severity": "page"}, "$.severity:")
    _fails("alert", {k: v for k, v in firing.items() if k != "alert_id"}, "$.alert_id:")
    _fails("alert", {**resolved, "evidence": firing["evidence"]}, "$.evidence:")
    _fails("alert", {**firing, "evidence": [{**firing["evidence"][0], "score": "low"}]}, "$.evidence[0].score:")
    _fails("alert", {**firing, "derived_from": "entity:X"}, "$.derived_from:")  # an entity surge derives from none

    dead = _dead(b"{")
    _fails("deadletter", {**dead, "error": "bad_json"}, "$.error:", "'bad_json' is not one of")
    _fails("deadletter", {**dead, "origin": {**dead["origin"], "offset": "17"}}, "$.origin.offset:")
    _fails("deadletter", {k: v for k, v in dead.items() if k != "raw"}, "$.raw:")
    _fails("deadletter", {**dead, "raw_encoding": "base64", "raw": "not base64!"}, "$.raw:")


# --- topics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "kind"),
    [
        ("finsent.scored", "scored"),
        ("finsent.trends", "trend"),
        ("finsent.alerts", "alert"),
        ("finsent.deadletter", "deadletter"),
        ("scored-1a2b3c4d", "scored"),
        ("trends-1a2b3c4d", "trend"),
        ("alerts-1a2b3c4d", "alert"),
        ("dead-1a2b3c4d", "deadletter"),
        ("finsent.news", None),
        ("finsent.comments", None),
        ("finsent.trend-events", None),
        ("news-1a2b3c4d", None),
        ("comments-1a2b3c4d", None),
        ("events-1a2b3c4d", None),
        ("scored-", None),
        ("other", None),
    ],
)
def test_kind_of_topic(topic: str, kind: str | None) -> None:
    assert schemas.kind_of_topic(topic) == kind


def test_kind_of_topic_covers_every_test_topic_name() -> None:
    from monitor.testing import TopicNames

    names = TopicNames("abc")
    got = {t: schemas.kind_of_topic(t) for t in names.all()}
    assert got == {names.news: None, names.comments: None, names.scored: "scored", names.trends: "trend",
                   names.alerts: "alert", names.deadletter: "deadletter", names.trend_events: None}  # fmt: skip


def _reader(topic: str, values: list[Any]) -> TopicReader:
    """A TopicReader without a broker: records as the consumer would have polled them."""
    reader = TopicReader.__new__(TopicReader)
    reader.records = [
        SimpleNamespace(topic=topic, partition=1, offset=i, value=json.dumps(v).encode()) for i, v in enumerate(values)
    ]
    reader.kind = schemas.kind_of_topic(topic)
    reader._checked = 0
    return reader


def test_topic_reader_checks_each_record_once_and_names_the_bad_one() -> None:
    good = _scored({"id": "a", "text": "t"})
    reader = _reader("scored-x", [good, good])
    assert reader.values() == [good, good] and reader._checked == 2
    reader.records.append(SimpleNamespace(topic="scored-x", partition=1, offset=2,
                                          value=json.dumps({**good, "sentiment": None}).encode()))  # fmt: skip
    with pytest.raises(schemas.RecordInvalid, match=r"scored-x\[1\]@2[\s\S]*\$\.sentiment:"):
        reader.values()
    # Input and internal topics are not checked.
    assert _reader("events-x", [{"whatever": 1}]).values() == [{"whatever": 1}]
    assert _reader("news-x", [{"id": None}]).values() == [{"id": None}]


def test_schemas_are_read_from_the_checkout() -> None:
    root = Path(schemas.__file__).resolve().parent.parent
    assert root / "docs" / "schemas" == schemas.SCHEMA_DIR
    assert schemas.validator("scored") is schemas.validator("scored")  # compiled once
