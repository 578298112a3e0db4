"""Language of an item: the producer's tag folded to a code, else the text's script."""

from __future__ import annotations

import pytest

from monitor.core.language import detect_script, item_language, normalize_lang, served_language
from monitor.core.records import scored_record
from monitor.core.scores import TaskScore


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Shares fell sharply after the company cut its forecast", "en"),
        ("贵州茅台三季度净利润同比增长15%", "zh"),
        ("600519跌停了，茅台 Moutai 怎么回事？", "zh"),
        ("Kweichow Moutai (贵州茅台) cut its dividend for the first time", "en"),
        ("腾讯控股（00700.HK）发布公告 Tencent", "zh"),
        ("トヨタ自動車の株価が下落した", "ja"),
        ("삼성전자 주가가 하락했다", "ko"),
        ("Siemens Energy: Aktie stürzt ab", "en"),  # Latin script: the one Latin language the models know
        ("", "en"),
        ("123 456 %", "en"),
    ],
)
def test_script_decides(text: str, lang: str) -> None:
    assert detect_script(text) == lang


def test_only_the_beginning_is_read() -> None:
    assert detect_script("x" * 10_000 + "中文" * 1000) == "en"


@pytest.mark.parametrize(
    ("tag", "code"),
    [("zh", "zh"), ("zh-CN", "zh"), ("zh_Hans_CN", "zh"), ("ZH-hk", "zh"), ("zho", "zh"), ("chi", "zh"),
     ("Chinese", "zh"), ("中文", "zh"), ("en-US", "en"), ("EN", "en"), ("eng", "en"), ("fr-CA", "fr"),
     ("de", "de"), (" en ", "en"), ("", None), ("x", None), ("not a tag!", None), ("1234", None), (None, None),
     ("toolongprimarytag-x", None)],
)  # fmt: skip
def test_producer_tags_fold_to_codes(tag: str | None, code: str | None) -> None:
    assert normalize_lang(tag) == code


def test_tag_wins_over_script_and_script_fills_in() -> None:
    assert item_language("en", "贵州茅台三季度净利润同比增长") == ("en", "input")
    assert item_language("garbage!", "贵州茅台三季度净利润同比增长") == ("zh", "script")
    assert item_language(None, "Apple beats estimates") == ("en", "script")


def test_an_undeclared_language_is_served_by_the_first_declared_one() -> None:
    assert served_language("zh", ("en", "zh")) == "zh"
    assert served_language("fr", ("en", "zh")) == "en"
    assert served_language(None, ["zh", "en"]) == "zh"


def _record(item: dict[str, str], lang: str, source: str) -> dict[str, object]:
    scores = {"sentiment": TaskScore("neutral", 0.9, {"negative": 0.05, "neutral": 0.9, "positive": 0.05})}
    return scored_record(item, scores, [], {"name": "m", "version": "1", "sha256": "x"}, event_ms=1, event_time_source="kafka",
                         scored_at_ms=2, stream="s", lang=lang, lang_source=source)  # fmt: skip


def test_scored_record_carries_the_language_and_keeps_a_differently_spelled_tag() -> None:
    r = _record({"id": "1", "text": "t", "lang": "zh-CN"}, "zh", "input")
    assert (r["lang"], r["lang_source"], r["input_fields"]) == ("zh", "input", {"lang": "zh-CN"})
    same = _record({"id": "1", "text": "t", "lang": "zh"}, "zh", "input")
    assert same["lang"] == "zh" and "input_fields" not in same
    detected = _record({"id": "1", "text": "t"}, "en", "script")
    assert (detected["lang"], detected["lang_source"]) == ("en", "script")
