"""Window maths: exact counts, boundaries, late items, duplicates, evidence, watermark."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from monitor.core.windows import ClosedWindow, Watermark, WindowConfig, add_event, close_due, new_state

CFG = WindowConfig(size_ms=1000, allowed_lateness_ms=500, evidence_size=2)


def add(st: dict | None, t: int, i: str, s: str = "neutral", score: float = 0.0, **kw: Any) -> tuple[dict, str]:
    ev = {"id": i, "text": f"text {i}", "title": None, "source": "src", "url": None, **kw}
    return add_event(st, event_ms=t, item_id=i, sentiment=s, score=score, evidence=ev, cfg=CFG)


def feed(events: list[tuple[int, str, str, float]], st: dict | None = None) -> tuple[dict, list[str]]:
    outcomes = []
    for t, i, s, sc in events:
        st, out = add(st, t, i, s, sc)
        outcomes.append(out)
    assert st is not None
    return st, outcomes


def test_counts_boundaries_and_close_order() -> None:
    st, outs = feed([(0, "a", "negative", -0.9), (999, "b", "positive", 0.8), (1000, "c", "negative", -0.5),
                     (2500, "d", "neutral", 0.0), (1001, "e", "negative", -0.99)])  # fmt: skip
    assert outs == ["accepted"] * 5
    st, closed = close_due(st, watermark_ms=1499, cfg=CFG)  # window [0, 1000) is due at 1500
    assert closed == []
    st, closed = close_due(st, watermark_ms=1500, cfg=CFG)
    assert [(c.window_start, c.window_end, c.count) for c in closed] == [(0, 1000, 2)]
    st, closed = close_due(st, watermark_ms=2500, cfg=CFG)
    assert [(c.window_start, c.count) for c in closed] == [(1000, 2)]
    w1 = closed[0]
    assert (w1.negative, w1.neutral, w1.positive) == (2, 0, 0) and w1.negative_share == 1.0
    assert math.isclose(w1.mean_score, -0.745)
    assert [e["id"] for e in w1.evidence] == ["e", "c"]  # most negative first
    assert list(st["open"]) == ["2000"]
    json.dumps(st)  # state stays plain JSON for the changelog


def test_shares_and_means_for_a_known_window() -> None:
    events = [(100 + i, f"n{i}", "negative", -0.5) for i in range(3)]
    events += [(200 + i, f"p{i}", "positive", 0.5) for i in range(5)]
    events += [(300 + i, f"z{i}", "neutral", 0.0) for i in range(2)]
    st, _ = feed(events)
    _, [w] = close_due(st, watermark_ms=10_000, cfg=CFG)
    assert (w.count, w.negative, w.neutral, w.positive) == (10, 3, 2, 5)
    assert w.negative_share == 0.3 and math.isclose(w.mean_score, 0.1)
    d = w.to_dict()
    assert d["negative_share"] == 0.3 and d["late_count"] == 0 and len(d["evidence"]) == 2
    json.dumps(d)


def test_windows_align_to_epoch_multiples_including_negative_times() -> None:
    cfg = WindowConfig(size_ms=60_000, allowed_lateness_ms=0)
    st, _ = add_event(None, event_ms=1_795_000_030_000, item_id="a", sentiment="neutral", score=0, evidence={},
                      cfg=cfg)  # fmt: skip
    st, _ = add_event(st, event_ms=-1, item_id="b", sentiment="neutral", score=0, evidence={}, cfg=cfg)
    assert sorted(st["open"], key=int) == ["-60000", "1795000020000"]


def test_late_items_counted_not_lost_and_duplicates_ignored() -> None:
    st, _ = add(None, 100, "a")
    st, out = add(st, 200, "a")
    assert out == "duplicate"
    st, closed = close_due(st, watermark_ms=1500, cfg=CFG)
    assert closed[0].count == 1 and closed[0].late_count == 0 and st["closed_until"] == 1000
    st, out = add(st, 300, "late-one")
    assert out == "late"
    st, out = add(st, 100, "a")  # a redelivery after its window closed is late too
    assert out == "late"
    st, _ = add(st, 1200, "b")
    st, _ = add(st, 2200, "c")
    st, closed = close_due(st, watermark_ms=3500, cfg=CFG)
    assert [(c.window_start, c.count, c.late_count) for c in closed] == [(1000, 1, 2), (2000, 1, 0)]
    assert st["late"] == 0


def test_allowed_lateness_still_counts_and_duplicate_detection_spans_the_open_window() -> None:
    st, _ = add(None, 900, "x")
    st, closed = close_due(st, watermark_ms=1400, cfg=CFG)  # past the end, within the lateness
    assert closed == []
    st, out = add(st, 950, "y")
    assert out == "accepted"
    st, out = add(st, 10, "x")  # same id, same window, other event time: still a duplicate
    assert out == "duplicate"
    _, [w] = close_due(st, watermark_ms=1500, cfg=CFG)
    assert w.count == 2


def test_closed_period_without_items_is_closed_too() -> None:
    st, closed = close_due(None, watermark_ms=10_500, cfg=CFG)
    assert closed == [] and st["closed_until"] == 10_000
    st, out = add(st, 9_999, "old")  # its window [9000, 10000) is past: late, never re-opened
    assert out == "late" and st["open"] == {}
    st, out = add(st, 10_000, "ok")
    assert out == "accepted"
    st, closed = close_due(st, watermark_ms=11_499, cfg=CFG)
    assert closed == [] and st["closed_until"] == 10_000  # never goes back
    st, [w] = close_due(st, watermark_ms=11_500, cfg=CFG)
    assert (w.window_start, w.count, w.late_count) == (10_000, 1, 1)


def test_no_watermark_closes_nothing() -> None:
    st, _ = add(None, 0, "a")
    st, closed = close_due(st, watermark_ms=None, cfg=CFG)
    assert closed == [] and "0" in st["open"] and st["closed_until"] is None


def test_evidence_keeps_only_the_most_negative_with_fields_cut() -> None:
    st = None
    for i, sc in enumerate([-0.1, -0.9, -0.5, -0.7, 0.9]):
        st, _ = add(st, 10 + i, f"n{i}", "negative" if sc < 0 else "positive", sc, text="x" * 1000, extra="drop me")
    _, [w] = close_due(st, watermark_ms=10_000, cfg=CFG)
    assert [(e["id"], e["score"]) for e in w.evidence] == [("n1", -0.9), ("n3", -0.7)]
    assert all(len(e["text"]) == 280 and set(e) == {"id", "text", "title", "source", "url", "score"}
               for e in w.evidence)  # fmt: skip


def test_odd_values_do_not_poison_the_window() -> None:
    st, _ = add(None, 0, "a", "angry", float("nan"))  # unknown label -> neutral, NaN score -> 0
    st, _ = add(st, 1, "b", "negative", float("-inf"))
    add_event(st, event_ms=2, item_id="c", sentiment="negative", score=-0.2, evidence={}, cfg=CFG)
    _, [w] = close_due(st, watermark_ms=10_000, cfg=CFG)
    assert (w.count, w.neutral, w.negative) == (3, 1, 2) and math.isclose(w.mean_score, -0.2 / 3)
    assert w.evidence[0]["id"] == "c"  # evidence without fields still names the item
    json.dumps(w.to_dict(), allow_nan=False)


def test_duplicate_memory_is_bounded() -> None:
    cfg = WindowConfig(size_ms=1000, max_ids=3)
    st = None
    for i in range(5):
        st, _ = add_event(st, event_ms=0, item_id=f"i{i}", sentiment="neutral", score=0, evidence={}, cfg=cfg)
    assert st is not None and len(st["open"]["0"]["ids"]) == 3
    assert add_event(st, event_ms=0, item_id="i0", sentiment="neutral", score=0, evidence={}, cfg=cfg)[1] == "duplicate"
    assert add_event(st, event_ms=0, item_id="i4", sentiment="neutral", score=0, evidence={}, cfg=cfg)[1] == "accepted"


def test_state_from_an_older_version_with_id_lists_still_deduplicates() -> None:
    st, _ = add(None, 0, "a")
    st["open"]["0"]["ids"] = list(st["open"]["0"]["ids"])
    st, out = add(st, 0, "a")
    assert out == "duplicate"


def test_state_survives_a_json_round_trip_mid_window() -> None:
    st, _ = feed([(0, "a", "negative", -0.5), (10, "b", "positive", 0.5)])
    st = json.loads(json.dumps(st))  # what the changelog restores after a restart
    st, outs = feed([(20, "a", "negative", -0.5), (30, "c", "negative", -0.9)], st)
    assert outs == ["duplicate", "accepted"]
    _, [w] = close_due(st, watermark_ms=10_000, cfg=CFG)
    assert (w.count, w.negative) == (3, 2)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        WindowConfig(size_ms=0)
    assert new_state() == {"open": {}, "closed_until": None, "late": 0}
    assert ClosedWindow(0, 1, 0, 0, 0, 0, 0.0, 0.0).to_dict()["evidence"] == []


def test_watermark_event_time_then_idle_advance_and_restart_grace() -> None:
    wm = Watermark(idle_ms=1000, started_ms=0)
    assert wm.current(500) is None  # just started: redeliveries may still arrive
    assert wm.current(1000) is None
    assert wm.current(5000) == 4000  # idle since start: wall clock - idle
    wm = Watermark(idle_ms=1000, started_ms=0)
    wm.observe(100, wall_ms=10_000)
    wm.observe(50, wall_ms=10_001)  # older events do not move it back
    assert wm.current(10_500) == 100
    assert wm.current(11_001) == 100  # exactly idle_ms: not idle yet
    assert wm.current(12_001) == 100 + (12_001 - 10_001 - 1000)
    wm.observe(200, wall_ms=12_002)  # input resumes with older times: the watermark never goes back
    assert wm.current(12_003) == 1100
    wm.observe(5_000, wall_ms=12_004)
    assert wm.current(12_005) == 5_000


def test_watermark_without_start_and_future_events() -> None:
    assert Watermark(idle_ms=1000).current(5000) == 4000
    wm = Watermark(idle_ms=1000)
    wm.observe(10_000 + 300_000, wall_ms=10_000)  # five minutes in the future: counts as "now"
    assert wm.current(10_001) == 10_000
    wm = Watermark(idle_ms=1000, max_ahead_ms=2_000)
    wm.observe(20_000, wall_ms=10_000)
    assert wm.current(10_000) == 12_000


def test_negatives_are_counted_per_entity_for_attribution() -> None:
    """A topic/all window knows which companies its negative items name (neutral/positive ones do not count)."""
    st = None
    for i in range(6):
        st, _ = add(st, 10 + i, f"t{i}", "negative", -0.9, entities=["TSLA"])
    st, _ = add(st, 20, "a1", "negative", -0.9, entities=["AAPL", "TSLA", "TSLA"])  # once per entity
    st, _ = add(st, 21, "a2", "positive", 0.9, entities=["AAPL"])
    st, _ = add_event(st, event_ms=22, item_id="x", sentiment="negative", score=-1.0, evidence={}, cfg=CFG,
                      entities=["MSFT"])  # fmt: skip
    json.dumps(st)
    _, [w] = close_due(st, watermark_ms=10_000, cfg=CFG)
    assert w.negative_by_entity == {"TSLA": 7, "AAPL": 1, "MSFT": 1}
    assert w.to_dict()["negative_by_entity"] == {"TSLA": 7, "AAPL": 1, "MSFT": 1}
    assert "entities" not in w.evidence[0]  # the list steers counting, it is not evidence


def test_entity_counts_are_bounded_and_keep_the_heavy_hitter() -> None:
    """Space-Saving: a window naming hundreds of companies keeps `entity_slots` of them, with lower bounds,
    and the one that dominates the negatives is never lost."""
    cfg = WindowConfig(size_ms=1000, allowed_lateness_ms=0, entity_slots=4)
    st = None
    for i in range(300):
        ents = ["TSLA"] if i % 3 == 0 else [f"R{i}"]
        st, _ = add_event(st, event_ms=i, item_id=str(i), sentiment="negative", score=-1.0, evidence={}, cfg=cfg,
                          entities=ents)  # fmt: skip
    assert len(st["open"]["0"]["neg_by"]) == 4
    _, [w] = close_due(st, watermark_ms=1000, cfg=cfg)
    top, n = next(iter(w.negative_by_entity.items()))
    assert top == "TSLA" and 0 < n <= 100
    assert all(v >= 0 for v in w.negative_by_entity.values())
    off = WindowConfig(size_ms=1000, allowed_lateness_ms=0, entity_slots=0)
    st, _ = add_event(None, event_ms=1, item_id="a", sentiment="negative", score=-1.0, evidence={}, cfg=off,
                      entities=["TSLA"])  # fmt: skip
    assert "neg_by" not in st["open"]["0"]
