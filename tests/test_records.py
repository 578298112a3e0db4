from __future__ import annotations

from monitor.core.records import scored_record, trend_event, trend_keys, trend_record
from monitor.core.scores import TaskScore
from monitor.core.surge import TrendStats
from monitor.core.windows import ClosedWindow


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


def test_trend_record_is_rounded_like_the_alert_and_leaves_the_evidence_to_alerts() -> None:
    cw = ClosedWindow(window_start=0, window_end=60_000, count=3, negative=2, neutral=1, positive=0,
                      negative_share=2 / 3, mean_score=-0.4444444444, evidence=[{"id": "a"}])  # fmt: skip
    stats = TrendStats(baseline_mean=0.1234567891, baseline_std=0.0500000123, zscore=10.6913580246)
    rec = trend_record(cw, "entity", "TSLA", stats)
    assert rec["dimension"] == "entity" and rec["key"] == "TSLA" and "evidence" not in rec
    assert rec["negative_share"] == 0.666667 and rec["mean_score"] == -0.444444
    assert (rec["baseline_mean"], rec["baseline_std"], rec["zscore"]) == (0.123457, 0.05, 10.6914)
