"""Every kind of bad input gets a reason; good input becomes an Item (issue 6's table)."""

from __future__ import annotations

import base64
import json

import pytest

from monitor.validate import REASONS, Invalid, Item, dead_letter_record, event_time_ms, validate

NOW = 1_795_000_000_000


def v(obj: object) -> Item | Invalid:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return validate(raw, kafka_ts_ms=NOW - 5, now_ms=NOW)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"not json", "not_json"),
        (b'{"id": "a", "text": "unterminated', "not_json"),
        (b"[1, 2]", "not_object"),
        (b'"just a string"', "not_object"),
        (b"\xff\xfe bad", "not_utf8"),
        (b"[" * 100_000, "too_deep"),
        (b'{"a":' * 50 + b"1" + b"}" * 50, "too_deep"),
        ({"text": "no id"}, "missing_id"),
        ({"id": None, "text": "null id"}, "missing_id"),
        ({"id": True, "text": "bool id"}, "bad_id"),
        ({"id": 1.5, "text": "float id"}, "bad_id"),
        ({"id": {"x": 1}, "text": "object id"}, "bad_id"),
        ({"id": "   ", "text": "blank id"}, "bad_id"),
        ({"id": "x" * 300, "text": "long id"}, "bad_id"),
        ({"id": "a"}, "missing_text"),
        ({"id": "a", "text": ""}, "empty_text"),
        ({"id": "a", "text": " \n\t "}, "empty_text"),
        ({"id": "a", "text": 42}, "bad_type"),
        ({"id": "a", "text": ["x"]}, "bad_type"),
        ({"id": "a", "text": "ok", "title": 5}, "bad_type"),
        ({"id": "a", "text": "ok", "tickers": "AAPL"}, "bad_type"),
        ({"id": "a", "text": "ok", "tickers": [1, 2]}, "bad_type"),
        ({"id": "a", "text": "ok", "published_at": "yesterday"}, "bad_timestamp"),
        ({"id": "a", "text": "ok", "published_at": -5}, "bad_timestamp"),
        ({"id": "a", "text": "ok", "published_at": True}, "bad_timestamp"),
    ],
)
def test_bad_input_reasons(raw: object, reason: str) -> None:
    res = v(raw)
    assert isinstance(res, Invalid), res
    assert res.reason == reason and res.reason in REASONS
    assert res.detail and "\n" not in res.detail


def test_too_large() -> None:
    res = validate(b"x" * 2_000, max_bytes=1_000, now_ms=NOW)
    assert isinstance(res, Invalid) and res.reason == "too_large"


@pytest.mark.parametrize(
    "obj",
    [
        {"id": "a", "text": "NUL \x00 and \x1b[31m control chars"},
        {"id": "b", "text": "股市大跌 📉 Tesla falls"},
        {"id": 7, "text": "int id becomes a string"},
        {"id": "c", "text": "big " * 200_000},
        {"id": "d", "text": "ok", "extra": {"nested": [1, 2]}, "score": 3},
        {"id": "e", "text": "ok", "title": None, "url": None},
    ],
)
def test_odd_but_valid_input(obj: dict) -> None:
    res = v(obj)
    assert isinstance(res, Item), res
    assert res.id == str(obj["id"])


def test_unknown_fields_pass_through_and_tickers_normalised() -> None:
    res = v({"id": "a", "text": "t", "tickers": ["$aapl", "MSFT", "msft", "bad ticker!"], "x": {"y": 1}})
    assert isinstance(res, Item)
    assert res.tickers == ("AAPL", "MSFT")
    d = res.to_dict()
    assert d["x"] == {"y": 1} and d["tickers"] == ["AAPL", "MSFT"]


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("2026-11-22T10:00:00Z", 1795341600000),
        ("2026-11-22T10:00:00", 1795341600000),
        ("2026-11-22T11:00:00+01:00", 1795341600000),
        (1795341600000, 1795341600000),
        (1795341600, 1795341600000),
        ("1795341600000", 1795341600000),
    ],
)
def test_timestamps(value: object, ms: int) -> None:
    res = v({"id": "a", "text": "t", "published_at": value})
    assert isinstance(res, Item) and res.published_ms == ms


def test_event_time_sources() -> None:
    def item(pub: int | None) -> Item:
        return Item(id="a", text="t", published_ms=pub)

    assert event_time_ms(item(NOW - 1000), NOW - 5, NOW) == (NOW - 1000, "published")
    assert event_time_ms(item(0), NOW - 5, NOW) == (0, "published")  # ancient: counted as late, not dropped
    assert event_time_ms(item(NOW + 86_400_000), NOW - 5, NOW) == (NOW - 5, "future_clamped")
    assert event_time_ms(item(None), NOW - 5, NOW) == (NOW - 5, "kafka")
    assert event_time_ms(item(None), None, NOW) == (NOW, "now")


def test_dead_letter_record_keeps_bytes_and_origin() -> None:
    raw = b"\xff\xfe" + b"x" * 100_000
    rec = dead_letter_record(raw, Invalid("not_utf8", "bad"), topic="t", partition=2, offset=9, kafka_ts_ms=5, now_ms=6)
    assert rec["raw_encoding"] == "base64" and rec["raw_truncated"] is True and rec["raw_bytes"] == len(raw)
    assert base64.b64decode(rec["raw"]) == raw[: 64 * 1024]
    assert rec["origin"] == {"topic": "t", "partition": 2, "offset": 9, "timestamp": 5}
    ok = dead_letter_record(b"plain", Invalid("not_json", "x"), topic="t", partition=0, offset=1, kafka_ts_ms=None,
                            now_ms=1)  # fmt: skip
    assert ok["raw"] == "plain" and ok["raw_encoding"] == "utf-8" and ok["raw_truncated"] is False
    json.dumps(rec)
