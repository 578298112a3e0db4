from __future__ import annotations

import json

from monitor.windows import Watermark, WindowConfig, add_event, close_due

CFG = WindowConfig(size_ms=1000, allowed_lateness_ms=500, evidence_size=2)


def add(st: dict | None, t: int, i: str, s: str = "neutral", score: float = 0.0) -> tuple[dict, str]:
    return add_event(st, event_ms=t, item_id=i, sentiment=s, score=score, evidence={"id": i, "text": i}, cfg=CFG)


def test_counts_boundaries_and_close_order() -> None:
    st = None
    for t, i, s, sc in [(0, "a", "negative", -0.9), (999, "b", "positive", 0.8), (1000, "c", "negative", -0.5),
                        (2500, "d", "neutral", 0.0), (1001, "e", "negative", -0.99)]:  # fmt: skip
        st, out = add(st, t, i, s, sc)
        assert out == "accepted"
    st, closed = close_due(st, watermark_ms=1499, cfg=CFG)
    assert closed == []
    st, closed = close_due(st, watermark_ms=2500, cfg=CFG)
    assert [(c.window_start, c.count) for c in closed] == [(0, 2), (1000, 2)]
    w0, w1 = closed
    assert (w0.negative, w0.neutral, w0.positive) == (1, 0, 1)
    assert w0.negative_share == 0.5 and abs(w0.mean_score - (-0.05)) < 1e-9
    assert [e["id"] for e in w1.evidence] == ["e", "c"]  # most negative first
    json.dumps(st)  # state stays plain JSON for the changelog


def test_late_items_counted_not_lost_and_duplicates_ignored() -> None:
    st, _ = add(None, 100, "a")
    st, out = add(st, 200, "a")
    assert out == "duplicate"
    st, closed = close_due(st, watermark_ms=1500, cfg=CFG)
    assert closed[0].count == 1
    st, out = add(st, 300, "late-one")
    assert out == "late"
    st, _ = add(st, 1200, "b")
    st, closed = close_due(st, watermark_ms=3000, cfg=CFG)
    assert closed[0].late_count == 1 and closed[0].count == 1


def test_evidence_keeps_only_the_most_negative() -> None:
    st = None
    for i, sc in enumerate([-0.1, -0.9, -0.5, -0.7]):
        st, _ = add(st, 10 + i, f"n{i}", "negative", sc)
    _, closed = close_due(st, watermark_ms=10_000, cfg=CFG)
    assert [e["score"] for e in closed[0].evidence] == [-0.9, -0.7]


def test_watermark_event_time_then_idle_advance_and_restart_grace() -> None:
    wm = Watermark(idle_ms=1000, started_ms=0)
    assert wm.current(500) is None  # just started, redeliveries may still arrive
    assert wm.current(5000) == 4000  # idle since start: wall clock - idle
    wm.observe(100, wall_ms=10_000)
    wm.observe(50, wall_ms=10_001)  # older events do not move it back
    assert wm.current(10_500) == 100
    assert wm.current(12_001) == 100 + (12_001 - 10_001 - 1000)
