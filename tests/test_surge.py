"""The surge rule: one alert per surge, nothing on low volume, warm-up, cooldown, hysteresis."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field

import pytest

from monitor.surge import SurgeConfig, evaluate, evaluate_quiet, new_state, severity_of

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
    st, stats, _ = evaluate(None, W(0, 50, 0.5), CFG, 0)
    assert (stats.baseline_mean, stats.baseline_std) == (CFG.prior_mean, CFG.min_std)
    assert math.isclose(stats.zscore, (0.5 - 0.15) / 0.05)
    assert st["mean"] > CFG.prior_mean  # then the window updates it


def test_flat_baseline_uses_the_std_floor() -> None:
    st = None
    for i in range(20):
        st, stats, _ = evaluate(st, W(i * 1000, 50, 0.15), CFG, 0)
    assert stats.baseline_std == CFG.min_std and math.isfinite(stats.zscore)
    _, stats, _ = evaluate(st, W(20_000, 50, 0.15), CFG, 0)
    assert abs(stats.zscore) < 1e-6


def test_small_windows_move_the_baseline_less() -> None:
    base = new_state(CFG)
    base.update(n=10, mean=0.1, var=0.0025)
    small, _, _ = evaluate(dict(base), W(0, 2, 0.3), CFG, 0)
    large, _, _ = evaluate(dict(base), W(0, 200, 0.3), CFG, 0)
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
