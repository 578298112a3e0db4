from __future__ import annotations

from monitor.cli.notify import AlertCache, format_notification

AM = {
    "status": "firing",
    "labels": {"alertname": "NegativeSentimentSurge", "dimension": "entity", "key": "TSLA", "severity": "critical"},
    "annotations": {
        "summary": "Negative opinion surge about entity TSLA",
        "dashboard": "/d/finsent-company?var-entity=TSLA",
    },
}
FA = {
    "state": "firing", "dimension": "entity", "key": "TSLA", "negative_share": 0.82, "baseline_mean": 0.12,
    "zscore": 7.4, "count": 57, "window_start": 1795341600000, "window_end": 1795341660000,
    "evidence": [{"id": "1", "text": "Tesla recalls 2m cars", "source": "news", "url": "https://x/1", "score": -0.97}],
}  # fmt: skip


def test_notification_carries_numbers_window_and_evidence() -> None:
    msg = format_notification(AM, FA)
    text = msg["text"]
    for part in ("FIRING", "TSLA", "82%", "12%", "z-score 7.4", "57 items", "2026-11-22 10:00:00 UTC",
                 "Tesla recalls 2m cars", "https://x/1", "Dashboard: /d/finsent-company"):  # fmt: skip
        assert part in text, part
    assert msg["evidence"][0]["id"] == "1" and msg["severity"] == "critical"


def test_without_worker_alert_falls_back_to_annotations() -> None:
    msg = format_notification({**AM, "annotations": {**AM["annotations"], "description": "desc"}}, None)
    assert "desc" in msg["text"] and msg["evidence"] == []


def test_cache_keeps_evidence_for_resolution() -> None:
    cache = AlertCache()
    cache.put(FA)
    cache.put({**FA, "state": "resolved", "evidence": []})
    got = cache.get("entity", "TSLA")
    assert got and got["state"] == "resolved" and got["evidence"] == FA["evidence"]
