from __future__ import annotations

from monitor.core.records import scored_record, trend_event, trend_keys
from monitor.core.scores import TaskScore


def test_scored_record_fields_and_clashing_input_kept() -> None:
    scores = {
        "topic": TaskScore("Earnings", 0.9, {"Earnings": 0.9, "Macro": 0.1}),
        "sentiment": TaskScore("negative", 0.8, {"negative": 0.8, "neutral": 0.15, "positive": 0.05}),
    }
    item = {"id": "a", "text": "t", "sentiment": "their own label", "extra": 1}
    rec = scored_record(item, scores, ["TSLA"], {"name": "m", "version": "1", "sha256": "x"},
                        event_ms=1000, event_time_source="kafka", scored_at_ms=1500, stream="news")  # fmt: skip
    assert rec["sentiment"]["label"] == "negative" and rec["sentiment"]["score"] == -0.75
    assert rec["input_fields"] == {"sentiment": "their own label"} and rec["extra"] == 1
    assert rec["lag_ms"] == 500 and rec["entities"] == ["TSLA"]
    assert trend_keys(rec) == [("all", "all"), ("topic", "Earnings"), ("entity", "TSLA")]
    ev = trend_event(rec, "entity", "TSLA")
    assert ev["event_ms"] == 1000 and ev["sentiment"] == "negative" and ev["evidence"]["id"] == "a"
