"""Every kind of bad input gets its reason; odd but good input becomes an Item."""

from __future__ import annotations

import base64
import json

import pytest

from monitor.core.validate import (
    DEADLETTER_RAW_BYTES,
    REASONS,
    Invalid,
    Item,
    dead_letter_record,
    event_time_ms,
    parse_timestamp,
    validate,
)

NOW = 1_795_000_000_000
T = 1_795_341_600_000  # 2026-11-22T10:00:00Z


def v(obj: object, **kw: int) -> Item | Invalid:
    raw = obj if isinstance(obj, bytes) or obj is None else json.dumps(obj).encode()
    return validate(raw, kafka_ts_ms=NOW - 5, now_ms=NOW, **kw)  # type: ignore[arg-type]


def ok(**fields: object) -> dict[str, object]:
    return {"id": "a", "text": "ok", **fields}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"not json", "not_json"),
        (b'{"id": "a", "text": "unterminated', "not_json"),
        (b'{"id": "a", "text": "x", "v": NaN}', "not_json"),
        (b'{"id": "a", "text": "x", "v": -Infinity}', "not_json"),
        (b'{"id": "a", "text": "x", "v": 1e999}', "not_json"),
        (b'{"id": "a", "text": "x", "v": ' + b"9" * 5000 + b"}", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'"just a string"', "not_object"),
        (b"null", "not_object"),
        (b"42", "not_object"),
        (b"\xff\xfe bad", "not_utf8"),
        (b'{"id": "a", "text": "caf\xe9"}', "not_utf8"),  # latin-1, not UTF-8
        (b"[" * 100_000, "too_deep"),
        (b'{"a":' * 100_000, "too_deep"),
        (b'{"a":' * 50 + b"1" + b"}" * 50, "too_deep"),
        ({"text": "no id"}, "missing_id"),
        ({"id": None, "text": "null id"}, "missing_id"),
        ({"id": True, "text": "bool id"}, "bad_id"),
        ({"id": 1.5, "text": "float id"}, "bad_id"),
        ({"id": {"x": 1}, "text": "object id"}, "bad_id"),
        ({"id": ["a"], "text": "list id"}, "bad_id"),
        ({"id": "   ", "text": "blank id"}, "bad_id"),
        ({"id": "", "text": "empty id"}, "bad_id"),
        ({"id": "x" * 257, "text": "long id"}, "bad_id"),
        (b'{"id": "\\ud800", "text": "lone surrogate id"}', "bad_id"),
        ({"id": "a"}, "missing_text"),
        ({"id": "a", "text": None}, "missing_text"),
        ({"id": "a", "text": ""}, "empty_text"),
        ({"id": "a", "text": " \n\t "}, "empty_text"),
        ({"id": "a", "text": "\u3000\u00a0"}, "empty_text"),  # Unicode spaces
        ({"id": "a", "text": "\x00\x00\u200b\ufeff"}, "empty_text"),  # nothing visible at all
        ({"id": "a", "text": 42}, "bad_type"),
        ({"id": "a", "text": ["x"]}, "bad_type"),
        ({"id": "a", "text": {"body": "x"}}, "bad_type"),
        (ok(title=5), "bad_type"),
        (ok(source=["x"]), "bad_type"),
        (ok(url={"href": "x"}), "bad_type"),
        (ok(lang=True), "bad_type"),
        (ok(author=1.0), "bad_type"),
        (ok(tickers="AAPL"), "bad_type"),
        (ok(tickers=[1, 2]), "bad_type"),
        (ok(tickers=["AAPL", None]), "bad_type"),
        (ok(published_at="yesterday"), "bad_timestamp"),
        (ok(published_at=""), "bad_timestamp"),
        (ok(published_at=-5), "bad_timestamp"),
        (ok(published_at=True), "bad_timestamp"),
        (ok(published_at=[2026, 11, 22]), "bad_timestamp"),
        (ok(published_at={"s": 1}), "bad_timestamp"),
        (ok(published_at=10**21), "bad_timestamp"),
        (ok(published_at="0001-01-01T00:00:00Z"), "bad_timestamp"),  # before 1970
        (ok(published_at="1969-12-31T23:59:59Z"), "bad_timestamp"),
        (ok(published_at="2026-13-45T99:00:00Z"), "bad_timestamp"),
        (ok(published_at="9" * 100), "bad_timestamp"),
    ],
)
def test_bad_input_reasons(raw: object, reason: str) -> None:
    res = v(raw)
    assert isinstance(res, Invalid), res
    assert res.reason == reason and res.reason in REASONS
    assert res.detail and "\n" not in res.detail and len(res.detail) < 300


def test_reasons_are_a_small_stable_label_set() -> None:
    assert len(REASONS) == len(set(REASONS)) <= 20
    assert all(r.isidentifier() and r.islower() for r in REASONS)


def test_size_limit_and_huge_text() -> None:
    big = json.dumps({"id": "big", "text": "x" * 10_000_000}).encode()  # 10 MB of text
    res = v(big)
    assert isinstance(res, Invalid) and res.reason == "too_large" and str(len(big)) in res.detail
    # Under the limit a huge text is valid: the model truncates it, it is never dropped.
    res = v(big, max_bytes=20_000_000)
    assert isinstance(res, Item) and len(res.text) == 10_000_000
    assert isinstance(v(b"x" * 1001, max_bytes=1000), Invalid)
    assert isinstance(v(json.dumps({"id": "a", "text": "y" * 977}).encode(), max_bytes=1000), Item)


def test_depth_limit_is_exact() -> None:
    def nested(depth: int) -> bytes:  # the item object itself is depth 1
        inner = "1"
        for _ in range(depth - 1):
            inner = f"[{inner}]"
        return f'{{"id": "a", "text": "t", "x": {inner}}}'.encode()

    assert isinstance(v(nested(32)), Item)
    res = v(nested(33))
    assert isinstance(res, Invalid) and res.reason == "too_deep"
    assert isinstance(v(nested(5), max_depth=5), Item)
    assert isinstance(v(nested(6), max_depth=5), Invalid)


@pytest.mark.parametrize(
    "obj",
    [
        {"id": "a", "text": "NUL \x00 and \x1b[31m control chars \x7f\x85"},
        {"id": "b", "text": "股市大跌 📉 Tesla falls; Аэрофлот; مرحبا; 🚀🚀"},
        {"id": 7, "text": "int id becomes a string"},
        {"id": -12345678901234567890, "text": "big negative int id"},
        {"id": "x" * 256, "text": "id at the length limit"},
        {"id": "c", "text": "big " * 200_000},
        {"id": "d", "text": "ok", "extra": {"nested": [1, 2]}, "score": 3, "topic": "spoofed"},
        {"id": "e", "text": "ok", "title": None, "url": None, "tickers": None, "published_at": None},
        {"id": "f", "text": "ok", "title": "", "source": "reuters", "lang": "en", "author": "A. N. Other"},
        {"id": "\x00 odd id ✓", "text": "control char in id is fine (it is still UTF-8)"},
    ],
)
def test_odd_but_valid_input(obj: dict) -> None:
    res = v(obj)
    assert isinstance(res, Item), res
    assert res.id == str(obj["id"]) and res.text == obj["text"]
    json.dumps(res.to_dict(), allow_nan=False)


def test_lone_surrogate_in_text_is_valid_and_bom_tolerated() -> None:
    res = v(b'{"id": "a", "text": "bad \\udc00 surrogate"}')
    assert isinstance(res, Item) and "\udc00" in res.text
    res = v(b'\xef\xbb\xbf{"id": "a", "text": "with BOM"}')
    assert isinstance(res, Item) and res.text == "with BOM"


def test_unknown_fields_pass_through_and_tickers_normalised() -> None:
    res = v(ok(tickers=[" $aapl", "MSFT", "msft", "bad ticker!", "", "$", "brk.b", "7203"], x={"y": [1, None]}))
    assert isinstance(res, Item)
    assert res.tickers == ("AAPL", "MSFT", "BRK.B", "7203")
    d = res.to_dict()
    assert d == {"x": {"y": [1, None]}, "id": "a", "text": "ok", "tickers": ["AAPL", "MSFT", "BRK.B", "7203"]}
    assert res.extra == {"x": {"y": [1, None]}}


def test_stock_code_tickers_fit_the_grammar() -> None:
    # Every spelling of an A-share or Hong Kong code is a valid symbol here (upper-cased only); the
    # entity extractor maps them to one canonical key ("600519.SH", "0700.HK"), which fits too.
    codes = ["600519.SH", "sh600519", "600519.ss", "000001.SZ", "SZ000001", "688981", "00700.HK", "0700.HK",
             "700.hk", "HK00700", "HK.00700", "00700", "830799.BJ"]  # fmt: skip
    res = v(ok(tickers=[*codes, "贵州茅台", "６００５１９", "600519.SH "]))
    assert isinstance(res, Item)
    assert res.tickers == tuple(c.upper() for c in codes)  # names and full-width digits are not symbols


def test_to_dict_keeps_known_fields_and_published_at_as_sent() -> None:
    res = v({"id": 7, "text": "t", "title": "T", "source": "s", "url": "u", "lang": "en", "author": "au",
             "published_at": "2026-11-22T10:00:00Z"})  # fmt: skip
    assert isinstance(res, Item) and res.published_ms == T
    assert res.to_dict() == {"id": "7", "text": "t", "title": "T", "source": "s", "url": "u", "lang": "en",
                             "author": "au", "published_at": "2026-11-22T10:00:00Z"}  # fmt: skip


def test_tickers_capped_at_50() -> None:
    res = v(ok(tickers=[f"T{i}" for i in range(80)]))
    assert isinstance(res, Item) and len(res.tickers) == 50 and res.tickers[-1] == "T49"


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("2026-11-22T10:00:00Z", T),
        ("2026-11-22T10:00:00z", T),
        ("2026-11-22T10:00:00", T),  # naive = UTC
        ("2026-11-22 10:00:00", T),
        ("2026-11-22T11:00:00+01:00", T),
        ("2026-11-22T10:00:00.250Z", T + 250),
        ("20261122T100000Z", T),
        ("2026-11-22", T - 10 * 3_600_000),
        ("Sun, 22 Nov 2026 10:00:00 GMT", T),  # RSS pubDate
        ("Sun, 22 Nov 2026 11:00:00 +0100", T),
        (T, T),  # epoch ms
        (T // 1000, T),  # epoch seconds
        (T // 1000 + 0.5, T + 500),  # float seconds
        (T * 1000, T),  # microseconds
        (T * 1_000_000, T),  # nanoseconds
        (str(T), T),
        (str(T // 1000), T),
        (" 1795341600 ", T),
        (0, 0),  # ancient but valid: counted late by the windows, not dropped
        (99_999_999_999, 99_999_999_999_000),  # largest seconds value
        (100_000_000_000, 100_000_000_000),  # smallest ms value
    ],
)
def test_timestamps(value: object, ms: int) -> None:
    assert parse_timestamp(value) == ms
    res = v(ok(published_at=value))
    assert isinstance(res, Item) and res.published_ms == ms and res.raw_published == value


def test_event_time_sources() -> None:
    def item(pub: int | None) -> Item:
        return Item(id="a", text="t", published_ms=pub)

    assert event_time_ms(item(NOW - 1000), NOW - 5, NOW) == (NOW - 1000, "published")
    assert event_time_ms(item(0), NOW - 5, NOW) == (0, "published")  # ancient: counted as late, not dropped
    assert event_time_ms(item(NOW + 300_000), NOW - 5, NOW) == (NOW + 300_000, "published")  # at the limit
    assert event_time_ms(item(NOW + 300_001), NOW - 5, NOW) == (NOW - 5, "future_clamped")
    assert event_time_ms(item(NOW + 86_400_000), None, NOW) == (NOW, "future_clamped")
    assert event_time_ms(item(NOW + 86_400_000), NOW + 86_400_000, NOW) == (NOW, "future_clamped")
    assert event_time_ms(item(None), NOW - 5, NOW) == (NOW - 5, "kafka")
    assert event_time_ms(item(None), NOW + 86_400_000, NOW) == (NOW, "future_clamped")
    assert event_time_ms(item(None), None, NOW) == (NOW, "now")
    assert event_time_ms(item(None), 0, NOW) == (NOW, "now")
    assert event_time_ms(item(None), -1, NOW) == (NOW, "now")  # Kafka's "no timestamp"
    assert event_time_ms(item(NOW + 10_000), NOW, NOW, max_future_ms=0) == (NOW, "future_clamped")


def test_dead_letter_record_keeps_bytes_and_origin() -> None:
    raw = b"\xff\xfe" + b"x" * 100_000
    rec = dead_letter_record(raw, Invalid("not_utf8", "bad"), topic="t", partition=2, offset=9, kafka_ts_ms=5, now_ms=6)
    assert rec["raw_encoding"] == "base64" and rec["raw_truncated"] is True and rec["raw_bytes"] == len(raw)
    assert base64.b64decode(rec["raw"]) == raw[:DEADLETTER_RAW_BYTES]
    assert rec["origin"] == {"topic": "t", "partition": 2, "offset": 9, "timestamp": 5}
    assert (rec["error"], rec["detail"], rec["failed_at"]) == ("not_utf8", "bad", 6)
    assert len(json.dumps(rec)) < 100_000
    ok_rec = dead_letter_record(b"plain", Invalid("not_json", "x"), topic="t", partition=0, offset=1,
                                kafka_ts_ms=None, now_ms=1)  # fmt: skip
    assert ok_rec["raw"] == "plain" and ok_rec["raw_encoding"] == "utf-8" and ok_rec["raw_truncated"] is False
    empty = dead_letter_record(None, Invalid("empty", "x"), topic="t", partition=0, offset=1, kafka_ts_ms=None,
                               now_ms=1)  # fmt: skip
    assert (empty["raw"], empty["raw_encoding"], empty["raw_bytes"]) == ("", "utf-8", 0)


def test_dead_letter_cut_inside_a_character_stays_text() -> None:
    raw = ("€" * 30_000).encode()  # 3 bytes each: 64 KiB falls inside a character
    rec = dead_letter_record(raw, Invalid("too_large", "x"), topic="t", partition=0, offset=0, kafka_ts_ms=1,
                             now_ms=2)  # fmt: skip
    assert rec["raw_encoding"] == "utf-8" and rec["raw_truncated"] is True
    assert rec["raw"] == "€" * (DEADLETTER_RAW_BYTES // 3) and rec["raw_bytes"] == 90_000
    # A complete message that merely ends mid-character is not valid UTF-8: base64.
    rec = dead_letter_record("€".encode()[:2], Invalid("not_utf8", "x"), topic="t", partition=0, offset=0,
                             kafka_ts_ms=1, now_ms=2)  # fmt: skip
    assert rec["raw_encoding"] == "base64"


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"\xff" * 70_000,
        ('{"id": "a", "text": "' + "\x00" * 70_000 + '"}').encode(),
        b"[" * 100_000,
    ],
)
def test_every_invalid_message_has_a_json_dead_letter_record(raw: bytes) -> None:
    res = validate(raw, kafka_ts_ms=None, now_ms=NOW, max_bytes=50_000)
    assert isinstance(res, Invalid)
    rec = dead_letter_record(raw, res, topic="in", partition=0, offset=0, kafka_ts_ms=None, now_ms=NOW)
    assert len(json.dumps(rec, allow_nan=False).encode()) < 1_000_000  # fits a default broker limit
