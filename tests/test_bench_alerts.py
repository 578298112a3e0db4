"""The surge-detector benchmark runs, reports what it should, and its verdicts are real.

`--quick` replays half a simulated day per set with strong surges only, so
the assertions are ones the shipped defaults must meet: strong surges are
found within about a window, a surge-free stream is quiet. The scoring is
also checked on hand-made alerts, so a broken scorer cannot pass.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.alert_replay import AlertRec, Windowed, detect, window_stream
from bench.alert_scenarios import Item, Pool, Row, SurgeSpec, stream
from bench.alert_scoring import score_quiet, score_surges, summarize
from bench.alerts import main
from monitor.core.surge import SurgeConfig
from monitor.core.windows import ClosedWindow, WindowConfig

MIN = 60_000


def test_quick_run_writes_the_report_detects_strong_surges_and_is_quiet_without_them(tmp_path: Path) -> None:
    out = tmp_path / "alerts.json"
    assert main(["--quick", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert set(rep["sets"]) == {"tuning", "held_out"}
    assert rep["config"] == SurgeConfig().__dict__
    for name, s in rep["sets"].items():
        for field in ("recall", "ttd_windows_median", "ttd_windows_p90", "ttd_s_median", "ttr_windows_median",
                      "pages_per_surge", "pages_per_surge_grouped"):  # fmt: skip
            assert field in s["qualifying"], field
        assert {"fa_per_key_day_max", "fa_per_key_day_mean"} <= set(s["quiet"])
        assert s["nab"] is not None and 0 < s["nab"] <= 100 and s["precision"] is not None
        q = s["qualifying"]
        assert q["surges"] >= 8, name
        # Strong surges (half or more of a key's items, >= 40 a window, >= 3 windows): found, and fast.
        assert q["recall"] >= 0.85, (name, q)
        assert q["ttd_windows_median"] <= 1.5, (name, q)
        # Grouping never adds pages.
        assert q["pages_per_surge_grouped"] <= q["pages_per_surge"]
        # Quiet: half a day is too short to check the one-per-key-per-day bar (the full run does),
        # but a detector that fires on noise (k = 2.5, or no binomial term: 10+ per key per day) fails.
        assert s["quiet"]["fa_per_key_day_max"] <= 6 and s["quiet"]["false_alerts_per_day"] <= 10, (name, s["quiet"])
    assert rep["sets"]["tuning"]["items_quiet"] > 50_000


def _pool() -> Pool:
    rows = [Row(f"r{i}", "t", "negative" if i % 5 == 0 else "neutral", "Macro", ("ACME",) if i % 10 < 4 else ())
            for i in range(200)]  # fmt: skip
    return Pool(rows)


def test_a_strong_injected_surge_is_detected_on_its_key_and_a_quiet_replay_is_silent() -> None:
    pool = _pool()
    wcfg = WindowConfig(evidence_size=0)
    cfg = SurgeConfig()
    quiet = window_stream(stream(pool, days=0.1, rate=2.0, seed=1), wcfg)
    assert score_quiet(quiet, detect(quiet, cfg, wcfg), min_volume=cfg.min_volume, days=0.1)["false_alerts"] == 0
    surge = SurgeSpec(0, "topic", "Macro", start_ms=90 * MIN + 123, duration_windows=4, share=0.8, volume=60,
                      size_ms=MIN)  # fmt: skip
    data = window_stream(stream(pool, days=0.1, rate=2.0, seed=1, surges=[surge]), wcfg)
    assert {"topic:Macro", "all:all"} <= data.surge_keys[0]
    res = score_surges([surge], data, detect(data, cfg, wcfg), pool, min_volume=cfg.min_volume, size_ms=MIN,
                       lateness_ms=wcfg.allowed_lateness_ms)  # fmt: skip
    [o] = res["outcomes"]
    assert o.qualifying and o.detected and o.ttd_windows is not None and 0 < o.ttd_windows <= 2


def test_scoring_counts_misses_false_positives_and_inhibited_pages() -> None:
    """Hand-made alerts: one surge detected late-ish with a derived page, one missed, one false alarm."""
    pool = _pool()
    s1 = SurgeSpec(0, "entity", "ACME", start_ms=10 * MIN, duration_windows=3, share=0.8, volume=40, size_ms=MIN)
    s2 = SurgeSpec(1, "entity", "ACME", start_ms=100 * MIN, duration_windows=3, share=0.8, volume=40, size_ms=MIN)
    wins = [ClosedWindow(i * MIN, (i + 1) * MIN, 40, 32, 8, 0, 0.8, -0.8) for i in (10, 11, 12, 100, 101, 102)]
    data = Windowed(closed={"entity:ACME": wins}, surge_keys={0: {"entity:ACME", "all:all"}, 1: {"entity:ACME"}})

    def a(state: str, key: str, w: int, derived: str | None = None, aid: str = "") -> AlertRec:
        dim, _, k = key.partition(":")
        return AlertRec(state, dim, k, w * MIN, (w + 1) * MIN, "warning", derived, aid or f"{key}:{w}")

    alerts = [
        a("firing", "entity:ACME", 11), a("resolved", "entity:ACME", 14, aid="entity:ACME:11"),
        a("firing", "all:all", 11, "entity:ACME"),  # derived, while ACME fires: inhibited
        a("firing", "all:all", 50),  # nowhere near a surge: a false positive
    ]  # fmt: skip
    res = score_surges([s1, s2], data, alerts, pool, min_volume=20, size_ms=MIN, lateness_ms=10_000)
    o1, o2 = res["outcomes"]
    assert o1.detected and o1.ttd_windows == 2.0 and o1.ttr_windows == 2.0
    assert (o1.pages, o1.pages_grouped) == (2, 1)
    assert not o2.detected and o2.nab == -1.0
    assert res["false_positives"] == 1 and res["precision"] == 2 / 3
    assert 0 < res["nab"] < 50  # one of two found, late in its window, one false alarm
    summary = summarize(res["outcomes"])
    assert summary["recall"] == 0.5 and summary["ttd_windows_median"] == 2.0


def test_items_reach_the_keys_the_worker_would_count_them_towards() -> None:
    wcfg = WindowConfig(size_ms=MIN, allowed_lateness_ms=0, evidence_size=0)
    items = [Item(1000, "a", "negative", "Macro", ("ACME", "BETA")), Item(2000, "b", "neutral", None, ())]
    data = window_stream(items, wcfg)
    assert {k: [w.count for w in v] for k, v in data.closed.items()} == {
        "all:all": [2], "topic:Macro": [1], "entity:ACME": [1], "entity:BETA": [1]
    }  # fmt: skip
    assert data.closed["all:all"][0].negative_by_entity == {"ACME": 1, "BETA": 1}
    assert data.closed["entity:ACME"][0].negative_by_entity == {}
