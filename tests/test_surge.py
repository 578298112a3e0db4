"""The surge rule: one alert per surge, nothing on low volume, cooldown, hysteresis."""

from __future__ import annotations

from dataclasses import dataclass, field

from monitor.surge import SurgeConfig, evaluate, evaluate_quiet

CFG = SurgeConfig(k=3.0, min_volume=20, min_share=0.4, alpha=0.2, warmup_windows=5, resolve_k=1.5,
                  resolve_windows=2, cooldown_ms=10_000, min_std=0.05)  # fmt: skip


@dataclass
class W:
    window_start: int
    count: int
    negative_share: float
    evidence: list = field(default_factory=list)

    @property
    def window_end(self) -> int:
        return self.window_start + 1000


def run(shares: list[tuple[float, int]], cfg: SurgeConfig = CFG) -> list[tuple[int, str]]:
    st = None
    alerts = []
    for i, (share, count) in enumerate(shares):
        st, _stats, alert = evaluate(st, W(i * 1000, count, share), cfg, now_ms=i, dimension="entity", key="ACME")
        if alert:
            alerts.append((i, alert.state))
            d = alert.to_dict()
            assert d["dimension"] == "entity" and d["key"] == "ACME" and d["alert_id"].startswith("entity:ACME:")
    return alerts


def test_one_firing_and_one_resolution_per_surge() -> None:
    shares = [(0.1, 50)] * 10 + [(0.8, 50)] * 4 + [(0.1, 50)] * 6
    assert run(shares) == [(10, "firing"), (15, "resolved")]


def test_low_volume_spike_fires_nothing() -> None:
    assert run([(0.1, 50)] * 10 + [(0.9, 10)] * 3 + [(0.1, 50)] * 3) == []


def test_below_min_share_fires_nothing() -> None:
    assert run([(0.02, 50)] * 10 + [(0.3, 50)] * 3) == []


def test_no_alert_during_warmup() -> None:
    assert run([(0.1, 50)] * 2 + [(0.9, 50)] * 2) == []


def test_flapping_around_threshold_gives_one_alert_and_cooldown_blocks_refire() -> None:
    shares = [(0.1, 50)] * 10 + [(0.8, 50), (0.3, 50), (0.8, 50), (0.3, 50), (0.8, 50)] + [(0.1, 50)] * 3
    shares += [(0.8, 50)]  # within the 10 s cooldown after resolution
    assert run(shares) == [(10, "firing"), (16, "resolved")]


def test_baseline_frozen_while_firing() -> None:
    st = None
    for i in range(10):
        st, stats, _ = evaluate(st, W(i * 1000, 50, 0.1), CFG, 0)
    mean_before = st["mean"]
    for i in range(10, 14):
        st, _stats, _ = evaluate(st, W(i * 1000, 50, 0.8), CFG, 0)
    assert st["mean"] == mean_before and st["firing"]


def test_quiet_key_resolves() -> None:
    st = None
    for i in range(10):
        st, _, _ = evaluate(st, W(i * 1000, 50, 0.1), CFG, 0, "entity", "X")
    st, _, alert = evaluate(st, W(10_000, 50, 0.9), CFG, 0, "entity", "X")
    assert alert and alert.state == "firing" and alert.severity == "critical"
    st, a1 = evaluate_quiet(st, 11_000, 12_000, CFG, 0, "entity", "X")
    st, a2 = evaluate_quiet(st, 12_000, 13_000, CFG, 0, "entity", "X")
    assert a1 is None and a2 is not None and a2.state == "resolved" and a2.alert_id == alert.alert_id
