"""The surge rule: one alert per surge, nothing on low volume, warm-up, cooldown, hysteresis."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field

import pytest

from monitor.core.surge import SurgeConfig, advance, evaluate, evaluate_quiet, new_state, severity_of

CFG = SurgeConfig(k=3.0, min_volume=20, min_share=0.4, alpha=0.2, warmup_windows=5, resolve_k=1.5,
                  resolve_windows=2, cooldown_ms=10_000, min_std=0.05)  # fmt: skip
CALM, SPIKE = (0.1, 50), (0.8, 50)


@dataclass
class W:
    window_start: int
    count: int
    negative_share: float
    evidence: list = field(default_factory=list)

    @property
    def window_end(self) -> int:
        return self.window_start + 1000


def run(shares: list[tuple[float, int]], cfg: SurgeConfig = CFG, st: dict | None = None) -> list[tuple[int, str]]:
    alerts = []
    for i, (share, count) in enumerate(shares):
        st, _stats, alert = evaluate(st, W(i * 1000, count, share), cfg, now_ms=i, dimension="entity", key="ACME")
        if alert:
            alerts.append((i, alert.state))
    return alerts


def test_one_firing_and_one_resolution_per_surge() -> None:
    assert run([CALM] * 10 + [SPIKE] * 4 + [CALM] * 6) == [(10, "firing"), (15, "resolved")]


def test_alert_records_carry_the_design_fields() -> None:
    st = None
    ev = [{"id": "x1", "text": "Acme fraud probe", "source": "wire", "url": None, "score": -0.97}]
    got = []
    for i, (share, count) in enumerate([CALM] * 10 + [SPIKE] * 3 + [CALM] * 2):
        w = W(i * 1000, count, share, ev if share > 0.5 else [])
        st, stats, alert = evaluate(st, w, CFG, now_ms=1_000_000 + i, dimension="entity", key="ACME")
        if alert:
            got.append(alert.to_dict())
    firing, resolved = got
    assert set(firing) >= {"state", "severity", "dimension", "key", "window_start", "window_end", "negative_share",
                           "baseline_mean", "zscore", "count", "evidence", "alert_id", "started_at"}  # fmt: skip
    assert (firing["state"], firing["dimension"], firing["key"]) == ("firing", "entity", "ACME")
    assert (firing["window_start"], firing["window_end"], firing["count"]) == (10_000, 11_000, 50)
    assert firing["negative_share"] == 0.8 and firing["severity"] == "critical" and firing["evidence"] == ev
    assert math.isclose(firing["baseline_mean"], 0.1, abs_tol=0.01) and firing["zscore"] >= 3
    assert firing["alert_id"] == resolved["alert_id"] == "entity:ACME:10000"
    assert firing["started_at"] == resolved["started_at"] == 10_000 and firing["at"] == 1_000_010
    assert resolved["state"] == "resolved" and resolved["window_start"] == 14_000 and resolved["evidence"] == []
    json.dumps(got, allow_nan=False)


def test_low_volume_spike_fires_nothing() -> None:
    assert run([CALM] * 10 + [(0.9, 10)] * 3 + [CALM] * 3) == []
    assert run([CALM] * 10 + [(0.9, 19)] * 3) == []
    assert run([CALM] * 10 + [(0.9, 20)]) == [(10, "firing")]  # exactly min_volume fires


def test_below_min_share_fires_nothing() -> None:
    assert run([(0.02, 50)] * 10 + [(0.3, 50)] * 3) == []


def test_no_alert_during_warmup() -> None:
    assert run([CALM] * 2 + [(0.9, 50)] * 2) == []
    assert run([CALM] * 5 + [(0.9, 50)]) == [(5, "firing")]  # the sixth window may fire


def test_flapping_around_the_threshold_gives_one_alert_and_cooldown_blocks_refire() -> None:
    shares = [CALM] * 10 + [SPIKE, (0.3, 50), SPIKE, (0.3, 50), SPIKE] + [CALM] * 3
    shares += [SPIKE]  # within the 10 s cooldown after resolution
    assert run(shares) == [(10, "firing"), (16, "resolved")]


def test_after_the_cooldown_a_new_surge_is_a_new_alert() -> None:
    st = None
    alerts = []
    plan = [CALM] * 10 + [SPIKE] * 2 + [CALM] * 2 + [SPIKE] + [CALM] * 14 + [SPIKE] * 2 + [CALM] * 2
    for i, (share, count) in enumerate(plan):
        st, _, alert = evaluate(st, W(i * 1000, count, share), CFG, 0, "topic", "Earnings")
        if alert:
            alerts.append((i, alert.state, alert.alert_id))
    # Resolved at 13 (end 14 s): cooldown until 24 s; the spike at 14 is held back, the one at 29 fires.
    assert alerts == [(10, "firing", "topic:Earnings:10000"), (13, "resolved", "topic:Earnings:10000"),
                      (29, "firing", "topic:Earnings:29000"), (32, "resolved", "topic:Earnings:29000")]  # fmt: skip


def test_a_calm_window_between_surging_ones_resets_the_resolve_count() -> None:
    shares = [CALM] * 10 + [SPIKE, CALM, SPIKE, CALM, SPIKE, CALM, CALM]
    assert run(shares) == [(10, "firing"), (16, "resolved")]


def test_low_volume_or_low_share_windows_count_as_calm_while_firing() -> None:
    assert run([CALM] * 10 + [SPIKE, (0.9, 5), (0.9, 5)]) == [(10, "firing"), (12, "resolved")]
    assert run([CALM] * 10 + [SPIKE, (0.35, 50), (0.35, 50)]) == [(10, "firing"), (12, "resolved")]


def test_baseline_frozen_while_firing_and_during_held_back_surges() -> None:
    st = None
    for i in range(10):
        st, _, _ = evaluate(st, W(i * 1000, 50, 0.1), CFG, 0)
    assert st is not None
    before = (st["mean"], st["var"], st["n"])
    for i in range(10, 14):
        st, _, _ = evaluate(st, W(i * 1000, 50, 0.8), CFG, 0)
    assert (st["mean"], st["var"], st["n"]) == before and st["firing"]
    for i in range(14, 16):
        st, _, alert = evaluate(st, W(i * 1000, 50, 0.1), CFG, 0)
    assert alert and alert.state == "resolved"
    before = (st["mean"], st["var"], st["n"])
    st, _, alert = evaluate(st, W(16_000, 50, 0.8), CFG, 0)  # in cooldown: no alert, no learning
    assert alert is None and (st["mean"], st["var"], st["n"]) == before


def test_zscore_is_against_the_baseline_before_the_window() -> None:
    st, stats, _ = evaluate(None, W(0, 500, 0.5), CFG, 0)
    assert (stats.baseline_mean, stats.baseline_std) == (CFG.prior_mean, CFG.min_std)
    assert math.isclose(stats.zscore, (0.5 - 0.15 - 0.5 / 500) / 0.05)  # continuity-corrected
    assert st["mean"] > CFG.prior_mean  # then the window updates it


def test_flat_baseline_uses_the_std_floor() -> None:
    st = None
    for i in range(20):
        st, stats, _ = evaluate(st, W(i * 1000, 500, 0.15), CFG, 0)
    assert stats.baseline_std == CFG.min_std and math.isfinite(stats.zscore)
    _, stats, _ = evaluate(st, W(20_000, 500, 0.15), CFG, 0)
    assert abs(stats.zscore) < 1e-6


def test_small_windows_move_the_baseline_less() -> None:
    base = new_state(CFG)
    base.update(n=10, items=10_000, mean=0.1, var=0.0025)
    small, _, _ = evaluate(dict(base), W(0, 2, 0.2), CFG, 0)
    large, _, _ = evaluate(dict(base), W(0, 200, 0.2), CFG, 0)
    assert 0.1 < small["mean"] < large["mean"]
    assert math.isclose(large["mean"] - 0.1, 10 * (small["mean"] - 0.1))


@pytest.mark.parametrize(
    ("z", "share", "want"),
    [(3.0, 0.5, "warning"), (5.99, 0.74, "warning"), (6.0, 0.5, "critical"), (3.0, 0.75, "critical")],
)
def test_severity(z: float, share: float, want: str) -> None:
    assert severity_of(z, share, CFG) == want


def test_warning_severity_for_a_moderate_surge() -> None:
    st = None
    for i in range(10):
        st, _, _ = evaluate(st, W(i * 1000, 50, 0.2 if i % 2 else 0.1), CFG, 0)
    st, stats, alert = evaluate(st, W(10_000, 50, 0.45), CFG, 0)
    assert alert is not None and alert.severity == "warning" and 3 <= stats.zscore < 6


def test_quiet_key_resolves_and_quiet_windows_do_not_teach_the_baseline() -> None:
    st = None
    for i in range(10):
        st, _, _ = evaluate(st, W(i * 1000, 50, 0.1), CFG, 0, "entity", "X")
    st, a0 = evaluate_quiet(st, 10_000, 11_000, CFG, 0, "entity", "X")
    assert a0 is None and st["n"] == 10 and st["last_end"] == 11_000
    st, _, alert = evaluate(st, W(11_000, 50, 0.9), CFG, 0, "entity", "X")
    assert alert and alert.state == "firing" and alert.severity == "critical"
    st, a1 = evaluate_quiet(st, 12_000, 13_000, CFG, 0, "entity", "X")
    st, a2 = evaluate_quiet(st, 13_000, 14_000, CFG, 0, "entity", "X")
    assert a1 is None and a2 is not None and a2.state == "resolved" and a2.alert_id == alert.alert_id
    assert (a2.count, a2.negative_share, st["last_end"], st["cooldown_until"]) == (0, 0.0, 14_000, 24_000)
    assert evaluate_quiet(None, 0, 1000, CFG, 0)[1] is None


def test_state_survives_a_json_round_trip_mid_surge() -> None:
    st = None
    for i, (share, count) in enumerate([CALM] * 10 + [SPIKE]):
        st, _, _ = evaluate(st, W(i * 1000, count, share), CFG, 0, "all", "all")
    st = json.loads(json.dumps(st))  # restored from the changelog after a restart
    st, _, a1 = evaluate(st, W(11_000, *CALM[::-1]), CFG, 0, "all", "all")
    st, _, a2 = evaluate(st, W(12_000, *CALM[::-1]), CFG, 0, "all", "all")
    assert a1 is None and a2 is not None and (a2.state, a2.alert_id) == ("resolved", "all:all:10000")


def test_noisy_baseline_has_no_false_alarm_and_a_real_surge_fires_once() -> None:
    rng = random.Random(7)
    cfg = SurgeConfig()  # shipped defaults
    plan = [(min(1.0, max(0.0, rng.gauss(0.15, 0.04))), rng.randint(30, 80)) for _ in range(200)]
    assert run(plan, cfg) == []
    surge = [(0.6, 60)] * 5 + [(0.15, 60)] * 5
    assert run(plan + surge, cfg) == [(200, "firing"), (206, "resolved")]


def test_non_finite_share_is_treated_as_zero_and_config_checked() -> None:
    st, stats, alert = evaluate(None, W(0, 50, float("nan")), CFG, 0)
    assert math.isfinite(stats.zscore) and math.isfinite(st["mean"]) and alert is None
    with pytest.raises(ValueError):
        SurgeConfig(min_std=0)
    with pytest.raises(ValueError):
        SurgeConfig(alpha=0)


@dataclass
class TW(W):
    """A topic/all window that also counts its negatives per entity (monitor/core/windows.py)."""

    negative_by_entity: dict = field(default_factory=dict)


def fire_topic(by_entity: dict, share: float = 0.8, count: int = 50, cfg: SurgeConfig = CFG) -> dict | None:
    st = None
    for i in range(10):
        st, _stats, _a = evaluate(st, TW(i * 1000, 50, 0.1), cfg, 0, "topic", "Stock Movement")
    _st, _stats, alert = evaluate(st, TW(10_000, count, share, [], by_entity), cfg, 0, "topic", "Stock Movement")
    assert alert is not None and alert.state == "firing"
    return alert.to_dict()


def test_a_topic_surge_one_company_explains_is_derived_from_it() -> None:
    # 40 negatives of 50 against a 10 % baseline: excess 35; TSLA's 30 explain more than half.
    body = fire_topic({"TSLA": 30, "AAPL": 2})
    assert body["derived_from"] == "entity:TSLA"
    assert body["drivers"] == [{"key": "entity:TSLA", "negative": 30}, {"key": "entity:AAPL", "negative": 2}]
    json.dumps(body)


def test_a_spread_out_surge_is_not_derived_but_names_its_drivers() -> None:
    body = fire_topic({"TSLA": 10, "AAPL": 9, "MSFT": 8, "NFLX": 1})
    assert body["derived_from"] is None and len(body["drivers"]) == 3
    # Too few negatives for the company to fire on its own (min_share * min_volume = 8): not derived either.
    assert fire_topic({"TSLA": 7}, share=0.45, count=40)["derived_from"] is None
    assert fire_topic({})["derived_from"] is None and fire_topic({})["drivers"] == []


def test_entity_alerts_and_their_resolution_keep_the_attribution() -> None:
    st = None
    for i in range(10):
        st, _s, _a = evaluate(st, TW(i * 1000, 50, 0.1), CFG, 0, "entity", "TSLA")
    st, _s, fired = evaluate(st, TW(10_000, 50, 0.8, [], {"AAPL": 40}), CFG, 0, "entity", "TSLA")
    assert fired is not None and fired.derived_from is None and fired.drivers == []
    st = None
    for i in range(10):
        st, _s, _a = evaluate(st, TW(i * 1000, 50, 0.1), CFG, 0, "all", "all")
    st, _s, fired = evaluate(st, TW(10_000, 50, 0.8, [], {"TSLA": 40}), CFG, 0, "all", "all")
    json.loads(json.dumps(st))
    resolved = None
    for i in range(11, 15):
        st, _s, a = evaluate(st, TW(i * 1000, 50, 0.1), CFG, 0, "all", "all")
        resolved = resolved or a
    assert fired and resolved and resolved.state == "resolved" and resolved.derived_from == "entity:TSLA"


def test_advance_is_the_workers_per_key_step_including_quiet_windows() -> None:
    st = None
    st, res, quiet = advance(st, [W(i * 1000, 50, 0.1) for i in range(10)], watermark_ms=10_500, size_ms=1000,
                             allowed_lateness_ms=500, cfg=CFG, now_ms=0)  # fmt: skip
    assert len(res) == 10 and quiet == [] and all(a is None for _w, _s, a in res)
    st, res, quiet = advance(st, [W(10_000, 50, 0.8)], watermark_ms=11_500, size_ms=1000, allowed_lateness_ms=500,
                             cfg=CFG, now_ms=0)  # fmt: skip
    assert res[0][2] is not None and res[0][2].state == "firing" and quiet == []
    # The key goes silent: two empty windows are calm, the surge resolves on the second.
    st, res, quiet = advance(st, [], watermark_ms=13_500, size_ms=1000, allowed_lateness_ms=500, cfg=CFG, now_ms=0)
    assert res == [] and [(a.state, a.window_end) for a in quiet] == [("resolved", 13_000)]


def test_count_aware_std_keeps_a_sparse_keys_baseline_honest_and_lets_it_fire() -> None:
    """A company named about once a window has shares of 0 or 1. Judged by its own binomial
    noise, each such window is ordinary, so the baseline learns the true 15 %; judged by the
    key's learned spread alone, every negative tweet is a clipped outlier and the baseline
    sinks far below the truth (a later ordinary window would look like a surge)."""
    plain = SurgeConfig(**{**CFG.__dict__, "count_aware_std": False})
    got = {}
    for cfg in (CFG, plain):
        rng = random.Random(3)
        st = None
        for i in range(300):
            st, _s, _a = evaluate(st, W(i * 1000, 1, float(rng.random() < 0.15)), cfg, 0)
        _st, stats, alert = evaluate(st, W(300_000, 70, 0.8), cfg, 0)
        got[cfg.count_aware_std] = (stats, alert)
    (aware, fired), (naive, _a) = got[True], got[False]
    assert fired is not None and aware.zscore >= 2 * CFG.k
    assert abs(aware.baseline_mean - 0.15) < 0.05 and naive.baseline_mean < 0.08


def test_an_outlier_too_thin_to_fire_does_not_widen_the_baseline() -> None:
    st = None
    for i in range(20):
        st, _s, _a = evaluate(st, W(i * 1000, 50, 0.1 + 0.02 * (i % 2)), CFG, 0)
    before = dict(st)
    st, stats, alert = evaluate(st, W(20_000, 16, 0.9), CFG, 0)  # the surge's first, partial window
    assert alert is None and stats.zscore >= CFG.k
    assert before["mean"] < st["mean"] < 0.2  # a clipped step only
    assert st["var"] <= before["var"] + CFG.alpha * 16 / 20 * (2 * stats.baseline_std) ** 2
    _st, _stats, alert = evaluate(st, W(21_000, 60, 0.75), CFG, 0)
    assert alert is not None and alert.state == "firing"


def test_a_young_keys_far_out_window_teaches_the_baseline_at_the_volume_rate_only() -> None:
    """The running mean of a young key is for escaping the prior on ordinary windows; a window already
    far above the baseline (z >= resolve_k: a surge's first, partial window) must not take a third of it."""
    base = new_state(CFG)
    base.update(n=6, items=17, mean=0.29, var=0.0)
    calm, stats, _ = evaluate(dict(base), W(0, 12, 0.3), CFG, 0)
    assert stats.zscore < CFG.resolve_k and calm["mean"] > 0.29 + 0.3 * 0.001  # running-mean weight 12/49
    assert math.isclose(calm["mean"] - 0.29, 12 / (17 + 12 + 20) * 0.01)
    far, stats, _ = evaluate(dict(base), W(0, 12, 0.67), CFG, 0)
    assert stats.zscore >= CFG.resolve_k
    assert math.isclose(far["mean"] - 0.29, CFG.alpha * 12 / 20 * (0.67 - 0.29))


def test_a_sparse_companys_surge_fires_though_its_history_is_a_few_items() -> None:
    """A company named by 1-5 items a window, then a surge at 80 % negative (the demo's BYD surge, window by
    window as a demo run saw it). Its few history items must not make its spread wide (one negative item in
    a 1-item window once counted as much as a full window), nor may the surge's partial first window move
    its baseline a third of the way up: either hid this surge (z 2.3, then 3.3 against k 3.5)."""
    cfg = SurgeConfig(warmup_windows=3, min_volume=8, cooldown_ms=60_000)
    seq = [(0, 1), (1, 4), (1, 4), (1, 1), (2, 3), (1, 4), (8, 12), (43, 53), (38, 48), (37, 50)]
    st, fired = None, []
    for i, (neg, n) in enumerate(seq):
        st, _, alert = evaluate(st, W(i * 10_000, n, neg / n), cfg, 0)
        fired += [i] if alert and alert.state == "firing" else []
    assert fired == [7]
